"""The teacher of knowledge distillation (``method: kd``): which model, its prompt, and a tokenizer check.

``kd.teacher``:

- null: context distillation - the student's own starting model, prompted with
  :data:`~fairrl.data.teacher_prompt.CONTEXT_DISTILLATION_PROMPT` (unless ``kd.teacher_system_prompt``
  says otherwise). With LoRA it is the policy with its adapters disabled (no copy, as GRPO's KL
  reference); with full fine-tuning a frozen copy taken before the first step (twice the weights in memory);
- a built-in name, model folder or hub id: loaded as the policy is (safetensors only, ``model.dtype``);
- a fairrl run folder: its ``final/`` weights (an adapter loads onto the base model it names).

Both distillation modes compare or copy tokens, so teacher and student must share one tokenizer: the same
vocabulary (token -> id), the same ids for a probe text, and output layers of the same width
(TRL's GKD checks the last only). Otherwise :func:`load_teacher` raises a :class:`ConfigError` before the
teacher's weights load.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from fairrl.config.common import ModelConfig
from fairrl.config.methods import KDConfig
from fairrl.data.teacher_prompt import CONTEXT_DISTILLATION_PROMPT
from fairrl.errors import ConfigError
from fairrl.models.loading import load_model, load_tokenizer

PROBE = "Who was forgetful? Cannot be determined.\nAnswer: 12 + 7 = 19 (naïve café, 2024)"
"""Text both tokenizers must encode to the same ids."""


@dataclass
class Teacher:
    model: torch.nn.Module
    """The teacher's weights (the policy itself when ``adapter_off``)."""
    adapter_off: bool
    """The teacher is the policy with its LoRA adapters disabled."""
    system_prompt: str | None
    """Put before the teacher's system message (None: the prompt as the student sees it)."""
    name: str

    @contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """The model to call as the teacher, in eval mode, inside the block."""
        was_training = self.model.training
        with self.model.disable_adapter() if self.adapter_off else nullcontext():
            self.model.eval()
            try:
                yield self.model
            finally:
                self.model.train(was_training)


def teacher_path(name: str) -> str:
    """A fairrl run folder stands for its ``final/`` weights; anything else is returned as given."""
    final = Path(name) / "final"
    return str(final) if (Path(name) / "config.yaml").is_file() and final.is_dir() else name


def _output_width(model) -> int | None:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return None if out is None else int(out.weight.shape[0])


def tokenizer_difference(student, teacher) -> str | None:
    """Why two tokenizers differ (vocabulary, or the ids of :data:`PROBE`), or None when they agree."""
    a, b = student.get_vocab(), teacher.get_vocab()
    if a != b:
        only = sorted(set(b) - set(a))[:3] or sorted(set(a) - set(b))[:3]
        moved = next((t for t in a if t in b and a[t] != b[t]), None)
        detail = f"e.g. {only}" if only else f"e.g. {moved!r} has id {a[moved]} vs {b[moved]}"
        return f"their vocabularies differ ({len(a):,} vs {len(b):,} tokens; {detail})"
    ids_a = student(PROBE, add_special_tokens=False)["input_ids"]
    ids_b = teacher(PROBE, add_special_tokens=False)["input_ids"]
    if ids_a != ids_b:
        return f"they encode the same text differently ({len(ids_a)} vs {len(ids_b)} tokens for {PROBE!r})"
    return None


def load_teacher(kd: KDConfig, model_cfg: ModelConfig, policy, tokenizer, device: torch.device) -> Teacher:
    """The teacher ``kd.teacher`` names (module docstring), checked against the student's tokenizer."""
    if kd.teacher is None:
        prompt = CONTEXT_DISTILLATION_PROMPT if kd.teacher_system_prompt is None else kd.teacher_system_prompt
        name = f"{model_cfg.name_or_path} with the context-distillation prompt"
        if model_cfg.lora is not None and hasattr(policy, "disable_adapter"):
            return Teacher(policy, True, prompt or None, name)
        frozen = copy.deepcopy(policy).eval().requires_grad_(False)
        return Teacher(frozen, False, prompt or None, name)
    path = teacher_path(kd.teacher)
    kw = {"trust_remote_code": model_cfg.trust_remote_code}
    reason = tokenizer_difference(tokenizer, load_tokenizer(path, **kw))
    fix = ("distillation here needs one tokenizer: pick a teacher of the student's model family, or leave "
           "kd.teacher null for context distillation of the student's own model")  # fmt: skip
    if reason:
        raise ConfigError(
            f"kd.teacher {kd.teacher!r} does not share the student's tokenizer: {reason}; {fix}"
        )
    model = load_model(path, dtype=model_cfg.dtype, device=device, **kw).requires_grad_(False)
    widths = _output_width(policy), _output_width(model)
    if None not in widths and widths[0] != widths[1]:
        raise ConfigError(f"kd.teacher {kd.teacher!r} predicts over {widths[1]:,} tokens, the student over "
                          f"{widths[0]:,}; {fix}")  # fmt: skip
    return Teacher(model, False, kd.teacher_system_prompt or None, kd.teacher)
