"""Token log-probabilities straight from the last hidden states, in chunks (the logits never exist whole).

For hidden states h_i (after the final norm), output layer W [V, d] (bias b) and targets y_i,

    z_i = (W h_i + b) / T,      log p_i = z_i[y_i] - logsumexp(z_i),      H_i = logsumexp(z_i) - sum_v p_iv z_iv

and, for an upstream gradient g_i of log p_i,

    dL/dz_i = g_i (onehot(y_i) - softmax(z_i)),   dL/dh_i = W^T dz_i / T,   dL/dW = sum_i dz_i h_i^T / T.

:class:`HeadLogprobs` computes these ``chunk`` rows at a time: the forward keeps only h, W and the
per-row logsumexp; the backward recomputes each chunk's logits. Peak memory for the output layer is
one chunk of float32 logits (``chunk x V``) instead of all N x V logits, their float32 copy and their
gradient (for 8 x 1,024 completion tokens and Qwen's 151,936-token vocabulary: ~15 GB -> ~0.5 GB),
at the price of one extra output-layer product in the backward. Only real (unpadded) tokens are
passed in. Entropy (no gradient) comes from the same chunks. Logits are computed in the weights'
dtype and upcast to float32, as the model's own output layer followed by ``.float()`` does.
"""

from __future__ import annotations

import torch

# Logit entries per chunk (float32: 256 MiB).
CHUNK_ELEMENTS = 1 << 26
# Largest softmax kept from the forward for the backward (else each chunk's logits are recomputed).
KEEP_PROBS_BYTES = 1 << 30


def chunk_rows(vocab: int) -> int:
    """Rows per chunk for a vocabulary of ``vocab`` tokens."""
    return max(1, CHUNK_ELEMENTS // max(vocab, 1))


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    z = (h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())).float()
    return z / temperature if temperature != 1.0 else z


class HeadLogprobs(torch.autograd.Function):
    """``(logp [n], entropy [n])`` for hidden ``[n, d]``; gradients flow to hidden, weight and bias.

    ``keep_probs``: store the softmax (``n x V`` float32) for the backward instead of recomputing the
    logits chunk by chunk (used when that fits :data:`KEEP_PROBS_BYTES`).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int, with_entropy: bool, keep_probs: bool):
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else None
        probs = torch.empty(n, weight.shape[0], dtype=torch.float32, device=hidden.device) if keep_probs else None
        for s in range(0, n, chunk):
            e = s + chunk
            z = _logits(hidden[s:e], weight, bias, temperature)  # [c, V]
            lse[s:e] = z.logsumexp(-1)
            logp[s:e] = z.gather(-1, targets[s:e, None]).squeeze(-1) - lse[s:e]
            if entropy is None and probs is None:
                continue
            p = torch.sub(z, lse[s:e, None], out=probs[s:e] if probs is not None else None).exp_()
            if entropy is not None:
                entropy[s:e] = lse[s:e] - (p * z).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, probs)
        ctx.temperature, ctx.chunk = temperature, chunk
        if entropy is None:
            entropy = torch.zeros(0, device=hidden.device)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, bias, targets, lse, probs = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if probs is not None:  # the softmax was kept: the whole gradient in one piece
            chunk = max(hidden.shape[0], 1)
        # one chunk: products in the weights' dtype, as the model's own backward; several: the weight
        # and bias gradients are summed over chunks in float32
        several = hidden.shape[0] > chunk
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = grad_b = None
        for s in range(0, hidden.shape[0], chunk):
            e = s + chunk
            h, g = hidden[s:e], grad_logp[s:e].float()
            if probs is not None:
                dz = probs[s:e] * -g[:, None]  # -g softmax(z)
            else:
                dz = (_logits(h, weight, bias, T) - lse[s:e, None]).exp_().mul_(-g[:, None])
            dz.scatter_add_(-1, targets[s:e, None], g[:, None])  # + g onehot(y)
            if T != 1.0:
                dz.div_(T)
            dz_w = dz.to(weight.dtype)
            if grad_h is not None:
                grad_h[s:e] = dz_w @ weight
            if not several:
                grad_w = dz_w.t() @ h if need_w else None
                grad_b = dz_w.sum(0) if need_b else None
                continue
            if need_w:
                h32 = h.float()
                grad_w = dz.t() @ h32 if grad_w is None else grad_w.addmm_(dz.t(), h32)
            if need_b:
                grad_b = dz.sum(0) if grad_b is None else grad_b.add_(dz.sum(0))
        if several:
            grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
            grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None, None


def head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    chunk: int | None = None,
    keep_probs: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [n] of ``targets`` [n] and, if asked, entropies [n] from ``hidden`` [n, d] (module docstring)."""
    chunk = chunk or chunk_rows(weight.shape[0])
    keep = torch.is_grad_enabled() and hidden.shape[0] * weight.shape[0] * 4 <= KEEP_PROBS_BYTES
    if keep_probs is not None:
        keep = keep_probs
    logp, entropy = HeadLogprobs.apply(
        hidden, weight, bias, targets, float(temperature), chunk, with_entropy, keep
    )
    return logp, (entropy if with_entropy else None)
