"""A scalar reward model: any transformers backbone, a pooling rule and a linear head, r(x, y) in R.

- Backbone: an encoder (default: the packaged all-MiniLM-L6-v2, 22.7M parameters, ``minilm``) or a
  decoder (a built-in causal LM such as ``smollm2-135m-instruct``, a folder or a hub id), loaded with
  ``AutoModel`` from safetensors only; ``trust_remote_code`` stays off unless asked.
- Input: an encoder reads the pair ``[CLS] prompt [SEP] response [SEP]`` (BERT's sentence-pair
  format; just the response when the prompt is empty); a decoder reads ``prompt \\n response``. When
  too long, the prompt loses its *beginning* (a BBQ question sits at the end of its context) and the
  response is kept.
- Pooling: ``mean`` over real tokens (how all-MiniLM-L6-v2 was trained as a sentence encoder), ``last``
  real token (decoders: the only position that has read everything), or ``cls``. ``auto`` picks mean
  for encoders and last for decoders.
- Head: ``Linear(hidden, 1)``, weight ~ N(0, 0.02^2) and bias 0 as transformers initialises its
  sequence-classification heads: margins start near 0 (loss near log 2) but not at exactly 0, where
  the backbone's gradient, which flows through the head's weight, would vanish.

Saved layout (:func:`save_reward_model`): ``backbone/`` (``save_pretrained``, safetensors; LoRA
merged in), ``head.safetensors``, the tokenizer, and ``reward_model.json`` (pooling, max_length,
encoder/decoder, the backbone's origin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fairrl.assets import asset_path
from fairrl.errors import ModelLoadError
from fairrl.models.loading import DTYPES, _offline_hint, _quiet_transformers, resolve_model_path

ENCODER_TYPES = {
    "albert", "bert", "deberta", "deberta-v2", "distilbert", "electra", "mpnet", "roberta",
    "xlm-roberta", "modernbert",
}  # fmt: skip
BUILTIN_ENCODERS = {"minilm": "minilm"}
FORMAT = "fairrl-reward-model"


def resolve_backbone_path(name_or_path: str) -> str:
    """``minilm`` -> the packaged MiniLM folder; built-in causal LMs -> their cache; else unchanged."""
    if name_or_path in BUILTIN_ENCODERS:
        return str(asset_path(BUILTIN_ENCODERS[name_or_path]))
    return resolve_model_path(name_or_path)


def is_decoder_config(config: Any) -> bool:
    """True for causal LMs (architecture ``*ForCausalLM`` or a non-encoder model type)."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    return getattr(config, "model_type", "") not in ENCODER_TYPES


class RewardModel(nn.Module):
    """r(x, y) = w^T pool(h(x, y)) + b over a transformers backbone ``h``."""

    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str, decoder: bool):
        super().__init__()
        if pooling not in ("mean", "last", "cls"):
            raise ValueError(f"pooling must be mean, last or cls, got {pooling!r}")
        self.backbone, self.pooling, self.decoder = backbone, pooling, decoder
        self.head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.head.weight, std=0.02)  # transformers' initializer_range for score heads
        nn.init.zeros_(self.head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        """Rewards ``[B]`` of right-padded inputs ``[B, L]``."""
        kwargs = dict(extra)
        if self.decoder:  # explicit positions: a right-padded row needs none, but cached backbones may
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        h = out.last_hidden_state  # [B, L, H]
        mask = attention_mask.to(h.dtype)  # [B, L]
        if self.pooling == "mean":
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # [B, H]
        elif self.pooling == "last":
            last = attention_mask.long().sum(1) - 1  # [B]
            pooled = h[torch.arange(h.shape[0], device=h.device), last]  # [B, H]
        else:
            pooled = h[:, 0]  # [B, H]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)  # [B]


def load_backbone(name_or_path: str, *, dtype: str = "float32", trust_remote_code: bool = False,
                  revision: str | None = None):  # fmt: skip
    """(backbone, tokenizer, decoder?) from a built-in name, folder or hub id (safetensors only)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _quiet_transformers()
    path = resolve_backbone_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
        backbone = AutoModel.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, revision=revision,
            use_safetensors=True,
        )  # fmt: skip
    except (OSError, ValueError) as err:
        raise _offline_hint(name_or_path, err) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return backbone, tok, is_decoder_config(config)


def build_reward_model(name_or_path: str, pooling: str = "auto", **load: Any) -> tuple[RewardModel, Any]:
    """A fresh reward model (zero head) on a pretrained backbone, with its tokenizer."""
    backbone, tok, decoder = load_backbone(name_or_path, **load)
    if pooling == "auto":
        pooling = "last" if decoder else "mean"
    model = RewardModel(backbone, backbone.config.hidden_size, pooling, decoder)
    model.head.to(next(backbone.parameters()).dtype)
    return model, tok


def _trim(ids: list[int], keep: int, from_left: bool) -> list[int]:
    keep = max(keep, 0)
    if len(ids) <= keep:
        return ids
    return ids[len(ids) - keep :] if from_left else ids[:keep]


def encode_pair_texts(tokenizer, prompts: list[str], responses: list[str], max_length: int,
                      decoder: bool) -> dict[str, torch.Tensor]:  # fmt: skip
    """Right-padded ``input_ids``/``attention_mask`` (and ``token_type_ids`` for pair encoders) ``[B, L]``.

    The response keeps up to ``max_length - min(prompt, max_length // 2)`` tokens minus special
    tokens, and the prompt fills the rest from its end.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows: list[dict[str, list[int]]] = []
    for p, r in zip(prompts, responses, strict=True):
        if decoder:
            p = f"{p}\n" if p else ""
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"] if p else []
        r_ids = tokenizer(r, add_special_tokens=False)["input_ids"]
        n_special = tokenizer.num_special_tokens_to_add(pair=bool(p_ids)) if not decoder else 0
        budget = max_length - n_special
        fits = len(p_ids) + len(r_ids) <= budget
        r_ids = _trim(r_ids, budget - min(len(p_ids), budget // 2), from_left=False)
        p_ids = _trim(p_ids, budget - len(r_ids), from_left=True)
        if decoder:
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            ids = _trim(bos + p_ids + r_ids, max_length, from_left=True)
            rows.append({"input_ids": ids})
            continue
        if not fits:  # special tokens are placed by the tokenizer itself, so hand it the trimmed texts
            p, r = tokenizer.decode(p_ids) if p_ids else "", tokenizer.decode(r_ids)
        args = (p, r) if p else (r,)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        rows.append({k: list(v) for k, v in enc.items() if k in ("input_ids", "token_type_ids")})
    width = max(len(r["input_ids"]) for r in rows)
    pad = tokenizer.pad_token_id
    out = {
        "input_ids": torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]),
    }  # fmt: skip
    if rows and "token_type_ids" in rows[0]:
        out["token_type_ids"] = torch.tensor(
            [r["token_type_ids"] + [0] * (width - len(r["token_type_ids"])) for r in rows]
        )
    return out


def rewards_by_length(model: RewardModel, enc: dict[str, torch.Tensor], chunks: int = 4) -> torch.Tensor:
    """``model(**enc)`` ``[B]`` computed in ``chunks`` forwards over rows sorted by length, each cut to its
    own longest row. Exact (rows are right-padded and independent); mixed batches of short sentences and
    long BBQ contexts waste ~60% of their tokens on padding in one forward, ~25% in four."""
    lengths = enc["attention_mask"].sum(1)  # [B]
    order = torch.argsort(lengths)
    out = []
    for idx in torch.tensor_split(order, min(chunks, len(order))):
        width = int(lengths[idx].max())
        out.append(model(**{k: v[idx, :width] for k, v in enc.items()}))
    rewards = torch.cat(out)  # [B] in sorted order
    return rewards[torch.argsort(order)]  # [B] back in input order


def reward_device(model: RewardModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_texts(model: RewardModel, tokenizer, prompts: list[str], responses: list[str], max_length: int,
                batch_size: int = 64) -> list[float]:  # fmt: skip
    """Rewards of (prompt, response) pairs, in batches sorted by length (little padding), input order out."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(responses)), key=lambda i: len(prompts[i]) + len(responses[i]))
    out = [0.0] * len(responses)
    device = reward_device(model)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = encode_pair_texts(tokenizer, [prompts[i] for i in idx], [responses[i] for i in idx], max_length,
                                model.decoder)  # fmt: skip
        rewards = model(**{k: v.to(device) for k, v in enc.items()}).float().cpu().tolist()
        for i, r in zip(idx, rewards, strict=True):
            out[i] = r
    model.train(was_training)
    return out


def save_reward_model(model: RewardModel, tokenizer, folder: Path, meta: dict[str, Any]) -> None:
    """Write the model into ``folder`` (which the caller makes atomic); LoRA adapters are merged first."""
    _quiet_transformers()
    backbone = model.backbone
    if hasattr(backbone, "merge_and_unload"):
        import copy

        backbone = copy.deepcopy(backbone).merge_and_unload()
    backbone.save_pretrained(folder / "backbone", safe_serialization=True)
    tokenizer.save_pretrained(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
              str(folder / "head.safetensors"))  # fmt: skip
    info = {"format": FORMAT, "version": 1, "pooling": model.pooling, "decoder": model.decoder, **meta}
    (folder / "reward_model.json").write_text(json.dumps(info, indent=2))


def is_reward_model_dir(path: str | Path) -> bool:
    return (Path(path) / "reward_model.json").exists()


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", dtype: str = "float32"):
    """(model, tokenizer, info) of a folder written by :func:`save_reward_model` (e.g. a run's ``final/``)."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    folder = Path(path)
    if not is_reward_model_dir(folder):
        raise ModelLoadError(
            f"{str(folder)!r} is not a fairrl reward model (no reward_model.json); train one with "
            "`fairrl rm train CONFIG` and pass its run folder's final/ (or the run folder)"
        )
    info = json.loads((folder / "reward_model.json").read_text())
    try:
        backbone = AutoModel.from_pretrained(folder / "backbone", dtype=DTYPES[dtype], use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the reward model at {str(folder)!r}: {err}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = RewardModel(backbone, backbone.config.hidden_size, info["pooling"], info["decoder"])
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    return model.to(device=device, dtype=DTYPES[dtype]).eval(), tok, info
