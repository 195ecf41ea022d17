"""``bias_rm``: a trained reward model as a GRPO reward (BiasGRPO's compute-efficient bias reward).

Reddy, Yang & Zhai (BiasGRPO, Findings of ACL 2026) run GRPO against a small bias reward model (a
RoBERTa-base regressor) instead of an LLM judge. Here the reward is any model written by
``fairrl rm train`` (default backbone: MiniLM, 22.7M parameters), used as

    r_i = RM(x_i, y_i)

where y_i is the completion's text and x_i the text the reward model was trained to read: for BBQ rows
(``context`` and ``question`` columns) "context question", exactly as :func:`fairrl.data.preferences.bbq_pairs`
builds its prompts; otherwise the last user message of the prompt (or the prompt string).

Scores are computed in length-sorted batches without gradient, on ``device`` (``auto``: CUDA when
available, i.e. where the policy runs in auto mode; or ``cpu`` to keep the accelerator for the policy),
and cached per (x, y) text: GRPO samples the same short answer many times, and the cache is exact.

Deviations: BiasGRPO's reward model regresses a bias score; ours is a Bradley-Terry preference model,
so its values are log-odds differences with a free additive constant. GRPO's per-group normalisation
removes that constant, so it does not matter for the policy update.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from fairrl.errors import ConfigError
from fairrl.rewards.base import completion_text, register_reward_factory


def resolve_reward_model_dir(model: str | Path) -> Path:
    """A folder written by ``fairrl rm train``: the folder itself, or a run folder's ``final/``."""
    path = Path(model).expanduser()
    for candidate in (path, path / "final"):
        if (candidate / "reward_model.json").exists():
            return candidate
    raise ConfigError(
        f"bias_rm: {str(path)!r} holds no fairrl reward model (reward_model.json); train one with "
        "`fairrl rm train` and set options: {model: RUN_FOLDER}"
    )


def reward_model_input(prompt: Any, columns: dict[str, list], i: int) -> str:
    """The text x_i the reward model reads for sample i (see the module docstring)."""
    context, question = columns.get("context"), columns.get("question")
    if context is not None and question is not None and context[i] is not None and question[i] is not None:
        return f"{context[i]} {question[i]}".strip()
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return completion_text(users[-1] if users else prompt)
    return "" if prompt is None else str(prompt)


class BiasRewardModel:
    """TRL-contract reward function backed by a fairrl reward model, with a per-text cache."""

    def __init__(self, model: str, batch_size: int = 64, device: str = "auto", cache_size: int = 100_000,
                 sources: list[str] | None = None):  # fmt: skip
        import torch

        from fairrl.models.reward_model import load_reward_model

        if batch_size < 1 or cache_size < 0:
            raise ConfigError(f"bias_rm: batch_size must be >= 1 and cache_size >= 0, got {batch_size}, {cache_size}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.folder = resolve_reward_model_dir(model)
        self.model, self.tokenizer, info = load_reward_model(self.folder, device=device)
        self.max_length = int(info.get("max_length", 128))
        self.batch_size, self.cache_size = batch_size, cache_size
        self.sources = set(sources) if sources else None
        self.cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.hits = self.calls = 0
        self.__name__ = "bias_rm"

    def _remember(self, key: tuple[str, str], value: float) -> None:
        if self.cache_size == 0:
            return
        self.cache[key] = value
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float | None]:
        from fairrl.models.reward_model import score_texts

        n = len(completions)
        source = columns.get("source") or [None] * n
        keys: list[tuple[str, str] | None] = []
        for i in range(n):
            if self.sources is not None and source[i] not in self.sources:
                keys.append(None)
                continue
            prompt = prompts[i] if prompts is not None else None
            keys.append((reward_model_input(prompt, columns, i), completion_text(completions[i])))
        todo = list(dict.fromkeys(k for k in keys if k is not None and k not in self.cache))
        self.calls += sum(k is not None for k in keys)
        self.hits += sum(k is not None for k in keys) - len(todo)
        scores = score_texts(self.model, self.tokenizer, [k[0] for k in todo], [k[1] for k in todo],
                             self.max_length, self.batch_size) if todo else []  # fmt: skip
        fresh = dict(zip(todo, scores, strict=True))
        for k, v in fresh.items():
            self._remember(k, v)
        out: list[float | None] = []
        for k in keys:
            if k is None:
                out.append(None)
            else:
                value = fresh[k] if k in fresh else self.cache[k]
                if k in self.cache:
                    self.cache.move_to_end(k)
                out.append(value)
        return out


@register_reward_factory("bias_rm")
def bias_rm(model: str, batch_size: int = 64, device: str = "auto", cache_size: int = 100_000,
            sources: list[str] | None = None) -> BiasRewardModel:  # fmt: skip
    """r = RM(x, y) of a reward model trained with ``fairrl rm train`` (options: ``model`` = its run folder
    or ``final/``; ``batch_size``; ``device`` auto/cpu/cuda; ``cache_size`` in (x, y) pairs;
    ``sources``: only score rows of these data sources, None elsewhere). See the module docstring."""
    return BiasRewardModel(model, batch_size=batch_size, device=device, cache_size=cache_size, sources=sources)
