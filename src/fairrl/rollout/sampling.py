"""Logits controls of the rollout sampler, with the semantics of Hugging Face ``generate``.

One decode step turns the raw logits z [B, V] (float32) and each row's context (its prompt tokens and
the tokens generated so far, padding excluded) into the sampling distribution, in the order of
transformers' ``GenerationMixin._get_logits_processor`` (``transformers/generation/utils.py``): the
logits processors first, then the warpers that only sampling applies:

    z' = penalise_repeats(z)                  RepetitionPenaltyLogitsProcessor
    s  = z' / temperature                     TemperatureLogitsWarper
    s  = min_p(top_p(top_k(s)))               TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper
    token ~ softmax(s)

Greedy decoding (temperature 0) takes ``argmax z'``: as in transformers, the penalty applies and the
warpers do not. Each filter sets the logits it drops to -inf and keeps at least the most likely token
(transformers' ``min_tokens_to_keep=1``). The names and "off" values follow TRL's ``GRPOConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class SamplingControls:
    """Generation controls of :func:`fairrl.rollout.generate.sample_groups`; the defaults switch them off."""

    temperature: float = 1.0
    """Divides the (penalised) logits; 0 decodes greedily and ignores the three filters."""
    top_k: int = 0
    """Keep the k most likely tokens (and any tied with the k-th, as transformers does); 0 = off."""
    top_p: float = 1.0
    """Keep the smallest set of most likely tokens whose probability mass reaches top_p; 1 = off."""
    min_p: float = 0.0
    """Keep tokens whose probability is at least min_p times the most likely token's; 0 = off."""
    repetition_penalty: float = 1.0
    """Penalty on every token of the row's context (see :func:`penalise_repeats`); 1 = off."""

    def __post_init__(self):
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must lie in [0, 1] (0 = off), got {self.min_p!r}")
        if not self.repetition_penalty > 0.0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL repetition penalty (Keskar et al. 2019, arXiv:1909.05858, "penalized sampling").

        z'_v = z_v / penalty   if v in context and z_v >= 0
        z'_v = z_v * penalty   if v in context and z_v < 0
        z'_v = z_v             otherwise

    ``logits`` [B, V]; ``seen`` [B, V] bool, True where the token occurs in the row's context. A token
    is penalised once however often it occurs. Deviations: CTRL divides every logit by the penalty,
    which raises the probability of a context token with a negative logit; like transformers'
    ``RepetitionPenaltyLogitsProcessor`` we multiply those, so a penalty > 1 always lowers them.
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # [B, V]
    return torch.where(seen, penalised, logits)


def top_k_filter(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` highest scores of each row [B, V] (ties with the k-th included); 0 = off."""
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = scores.topk(top_k, dim=-1).values[..., -1:]  # [B, 1]
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches ``top_p``.

    Ascending by score, token i is dropped when the mass of it and every less likely token,
    ``sum_{j <= i} p_j``, is at most ``1 - top_p``; the most likely token always stays.
    """
    if top_p >= 1.0:
        return scores
    ascending, order = scores.sort(dim=-1)  # [B, V]
    mass_up_to = ascending.softmax(-1).cumsum(-1)  # [B, V]
    drop = mass_up_to <= 1 - top_p
    drop[..., -1] = False
    return scores.masked_fill(torch.empty_like(drop).scatter_(-1, order, drop), NEG_INF)


def min_p_filter(scores: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens with ``p_v < min_p * max_u p_u`` (probabilities of ``softmax(scores)``); 0 = off."""
    if min_p <= 0.0:
        return scores
    probs = scores.softmax(-1)  # [B, V]
    return scores.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), NEG_INF)


def filter_scores(scores: torch.Tensor, controls: SamplingControls) -> torch.Tensor:
    """top-k, then top-p, then min-p (each on what the previous one kept), as transformers orders them."""
    scores = top_k_filter(scores, controls.top_k)
    scores = top_p_filter(scores, controls.top_p)
    return min_p_filter(scores, controls.min_p)


def context_mask(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``seen`` [B, V] bool: which token ids occur among the real (``mask`` 1) tokens of each row.

    Ids at or past ``vocab_size`` (an embedding table larger than the output layer) cannot be sampled,
    so they are left out rather than penalised.
    """
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.int32, device=ids.device)
    counts.scatter_add_(-1, ids.clamp(max=vocab_size), mask.to(torch.int32))  # [B, V + 1]
    return counts[:, :vocab_size] > 0


def mark_seen(seen: torch.Tensor, tokens: torch.Tensor, alive: torch.Tensor) -> None:
    """Add each live row's new token (``tokens`` [B]) to ``seen`` [B, V] in place; padding stays out."""
    rows = torch.arange(seen.shape[0], device=seen.device)
    seen[rows, tokens] |= alive
