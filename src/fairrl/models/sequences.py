"""Prompt + completion sequences for supervised and distillation losses: packed or padded rows, and the
model's outputs at the positions that predict completion tokens.

An example is a prompt x (token ids) and a completion y (ids, ending with the end-of-turn token). Only
the completion is learned (TRL's ``completion_only_loss``): the output at the position before y_t
predicts y_t, for t = 1..|y|; prompt positions predict nothing that counts.

- packed (``packing: true``; TRL's padding-free packing, with its position-id reset): examples share
  rows no longer than the batch's longest example, filled first-fit in decreasing length order, ``[x_1 y_1 | x_2
  y_2 | ...]``. Attention is block-diagonal and causal - key j is visible to query i iff both lie in the
  same example and j <= i - and position ids restart at 0 in every example, so each output equals the
  one of the example alone in its own row;
- padded (``packing: false``): one right-padded row per example.

Both give the same outputs up to float rounding, hence the same loss (tested). Packing saves the padding
of short examples next to long ones, and never lengthens a row beyond the longest example: with a dense
block mask every row pays attention for its full length squared, so rows of ``max_length`` (TRL's
choice, cheap with varlen flash attention) cost several times the padded layout on CPU (a DPO step of
16 sequences of ~250 tokens packed into 1,024-token rows: 28 s and 9.6 GB; measured); it needs an attention implementation that takes a 4D mask (SDPA or
eager, :func:`packing_supported`). An example longer than ``max_length`` loses prompt tokens from the
left, then completion tokens from the right (one prompt token always stays, to predict y_1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fairrl.models.common import unwrap_peft
from fairrl.models.head_logprobs import head_logprobs
from fairrl.models.logprobs import output_head, token_logprobs
from fairrl.models.packing import attention_mask_for


@dataclass
class SequenceBatch:
    """Rows of examples and where each completion token is predicted (module docstring)."""

    ids: torch.Tensor  # [R, N]
    positions: torch.Tensor  # [R, N]
    mask: torch.Tensor  # [R, N] 1 = real token
    segments: torch.Tensor | None  # [R, N] example of each packed token (-1 padding); None: padded rows
    index: torch.Tensor  # [T] flat position r * N + c whose output predicts each completion token
    targets: torch.Tensor  # [T] the completion tokens, example by example in input order
    lengths: list[int]  # completion tokens of each example (after truncation); T = sum

    def to(self, device: torch.device) -> SequenceBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SequenceBatch(move(self.ids), move(self.positions), move(self.mask), move(self.segments),
                             move(self.index), move(self.targets), self.lengths)  # fmt: skip


def truncate(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """At most ``max_length`` tokens: completion cut on the right to leave one prompt token, then the
    prompt cut on the left."""
    if not prompt:
        raise ValueError("an example needs at least one prompt token to predict its first completion token")
    completion = completion[: max_length - 1]
    return prompt[-(max_length - len(completion)) :], completion


def first_fit_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Example indices per row: longest first, each into the first row with room (first-fit decreasing);
    within a row, examples keep their input order."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([])
            room.append(max_length)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return [sorted(r) for r in rows]


def encode_sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, max_length: int, packing: bool
) -> SequenceBatch:
    """Rows holding every (prompt, completion) pair, packed or padded (module docstring)."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(
            f"need as many prompts as completions (at least one), got {len(prompts)}, {len(completions)}"
        )
    pairs = [truncate(p, c, max_length) for p, c in zip(prompts, completions, strict=True)]
    sizes = [len(p) + len(c) for p, c in pairs]
    rows = first_fit_rows(sizes, max(sizes)) if packing else [[i] for i in range(len(pairs))]
    N = max(sum(sizes[i] for i in row) for row in rows)
    ids = torch.full((len(rows), N), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), N), dtype=torch.long)
    segments = torch.full((len(rows), N), -1, dtype=torch.long)
    starts = [0] * len(pairs)  # flat position of each example's first token
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            p, c = pairs[i]
            ids[r, offset : offset + sizes[i]] = torch.tensor(p + c, dtype=torch.long)
            positions[r, offset : offset + sizes[i]] = torch.arange(sizes[i])
            segments[r, offset : offset + sizes[i]] = i
            starts[i] = r * N + offset
            offset += sizes[i]
    index = torch.cat([starts[i] + len(p) - 1 + torch.arange(len(c)) for i, (p, c) in enumerate(pairs)])
    targets = torch.tensor([t for _, c in pairs for t in c], dtype=torch.long)
    return SequenceBatch(ids, positions, (segments >= 0).long(), segments if packing else None, index, targets,
                         [len(c) for _, c in pairs])  # fmt: skip


def packing_supported(model) -> bool:
    """Whether ``model``'s attention takes the block-diagonal mask of packed rows (SDPA or eager)."""
    return getattr(unwrap_peft(model).config, "_attn_implementation", None) in ("sdpa", "eager")


def _inputs(model, batch: SequenceBatch) -> dict:
    kw = {"input_ids": batch.ids, "position_ids": batch.positions, "use_cache": False}
    if batch.segments is None:
        return {**kw, "attention_mask": batch.mask}
    seg = batch.segments
    N = seg.shape[1]
    causal = torch.ones(N, N, dtype=torch.bool, device=seg.device).tril()
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)  # [R, N, N] query i, key j
    keep = (same & causal) | torch.eye(
        N, dtype=torch.bool, device=seg.device
    )  # padding queries see themselves
    base = unwrap_peft(model)
    mask = attention_mask_for(base, keep[:, None], base.get_input_embeddings().weight.dtype)
    if mask is None:
        raise ValueError("this model's attention implementation takes no 4D mask; encode with packing=False")
    return {**kw, "attention_mask": mask}


def sequence_logprobs(model, batch: SequenceBatch, temperature: float = 1.0) -> torch.Tensor:
    """log p(y_t | x, y_<t) of every completion token, ``[T]`` (example-major), with gradient.

    Llama-family models go through the chunked output layer (:mod:`fairrl.models.head_logprobs`): only
    the T predicting positions ever get logits."""
    head = output_head(model)
    if head is None:
        logits = model(**_inputs(model, batch)).logits  # [R, N, V]
        flat = logits.reshape(-1, logits.shape[-1])[batch.index]  # [T, V]
        return token_logprobs(flat[None], batch.targets[None], temperature)[0]
    body, weight, bias = head
    hidden = body(**_inputs(model, batch)).last_hidden_state  # [R, N, d]
    h = hidden.reshape(-1, hidden.shape[-1])[batch.index]  # [T, d]
    return head_logprobs(h, weight, bias, batch.targets, temperature)[0]


def sequence_logits(model, batch: SequenceBatch) -> torch.Tensor:
    """Full next-token logits at every completion token's predicting position, ``[T, V]`` float32."""
    head = output_head(model)
    if head is None:
        logits = model(**_inputs(model, batch)).logits  # [R, N, V]
        return logits.reshape(-1, logits.shape[-1])[batch.index].float()
    body, weight, bias = head
    hidden = body(**_inputs(model, batch)).last_hidden_state  # [R, N, d]
    h = hidden.reshape(-1, hidden.shape[-1])[batch.index]  # [T, d]
    return torch.nn.functional.linear(h, weight, bias).float()
