"""Supervised fine-tuning loss: negative log-likelihood of the completion tokens only.

For examples (x_i, y_i) with completion tokens y_{i,1..n_i} (the prompt x_i is context, never a target),

    L = - (1 / sum_i n_i) * sum_i sum_{t=1..n_i} log pi(y_{i,t} | x_i, y_{i,<t}),

the mean over every completion token of the batch - TRL ``SFTTrainer`` with ``completion_only_loss``
(labels -100 on prompt tokens, cross-entropy averaged over the labelled tokens), and the loss of
sequence-level KD (Kim & Rush 2016, "Sequence-Level Knowledge Distillation", arXiv 1606.07947) when y_i are the teacher's replies. A long
completion therefore weighs more than a short one, as in TRL; the per-sequence mean is not offered.
"""

from __future__ import annotations

import torch


def sft_loss(logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """``logp`` ``[T]``: log-probs of every completion token of the batch -> (L, stats).

    Stats: ``num_tokens`` (T) and ``mean_token_logprob`` (-L, detached)."""
    if logp.dim() != 1 or logp.numel() == 0:
        raise ValueError(
            f"logp must be a non-empty [T] tensor of completion-token log-probs, got {tuple(logp.shape)}"
        )
    loss = -logp.mean()  # []
    return loss, {"num_tokens": float(logp.numel()), "mean_token_logprob": -float(loss.detach())}
