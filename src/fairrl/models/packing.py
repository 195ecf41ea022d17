"""Prompt and group completions packed in one sequence (Prefix-Grouper style attention).

A GRPO group is one prompt x of ``Lp`` tokens and G completions y_1..y_G. The training forward
needs, for every completion token, the model's output at the position before it. Packing puts the
group in one row

    [ x_1 .. x_Lp | y_1,1 .. y_1,S_1 | y_2,1 .. y_2,S_2 | ... | y_G,1 .. y_G,S_G ]      N = Lp + sum_g S_g,

with S_g = (real length of y_g) - 1 (a completion's last token is never an input, and padding after
an early end-of-sequence takes no room), and masks attention so that

    key j is visible to query i  <=>  j real  and  j <= i  and  (j in the prompt  or  seg(j) = seg(i)),

i.e. each completion sees the whole prompt and causally itself, never another completion; prompt
queries see only the prompt. Positions continue from the prompt's real length in every segment.
Every output then equals the one of the plain row ``[x | y_g]``, while the prompt is encoded once per
group (its FLOPs and activations shrink G times), and, unlike encoding the prompt first and the
completions on top of its cached keys and values, there is one forward: every weight gets one
gradient product and the input embedding one backward (on the 2-core CPU the two-forward version
spent ~0.6 s of a ~5 s update adding the prompt's and the completions' weight gradients).

The price is attention over the whole packed row, masked blocks included: ``N^2`` query-key
entries instead of ``Lp^2 + sum_g S_g (Lp + S_g)``. :func:`packing_pays` keeps packing where that extra
work is small next to the linear layers' (short completions); long ones use the cached-prompt path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fairrl.models.common import positions_from_mask

# Largest extra attention work, as a fraction of the linear layers' work, at which packing is used.
MAX_ATTENTION_OVERHEAD = 0.25


@dataclass
class PackedGroups:
    """P packed rows of length N, the longest group's (module docstring)."""

    ids: torch.Tensor  # [P, N]
    positions: torch.Tensor  # [P, N]
    keep: torch.Tensor  # [P, 1, N, N] bool, query i may attend key j
    columns: torch.Tensor  # [P*G, Lc] position in its prompt's row whose output predicts each completion token


def pack_groups(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
) -> PackedGroups:
    """Pack left-padded prompts ``[P, Lp]`` with their right-padded completions ``[P*G, Lc]``.

    Only real tokens go in: completion (p, g) of real length l contributes its first l - 1 tokens, so
    completions that stopped early take no room (rows are padded at the end to the longest). Padding
    is masked as a key; every query also sees itself, so a padding query never has an empty row (its
    output is unused).
    """
    P, Lp = prompt_ids.shape
    G, Lc = group_size, completion_ids.shape[1]
    device = prompt_ids.device
    lengths = completion_mask.sum(-1).view(P, G)
    S = (lengths - 1).clamp(min=0)  # inputs per completion
    offsets = Lp + S.cumsum(-1) - S  # [P, G] where each completion's inputs start
    N = Lp + int(S.sum(-1).max()) if P else Lp
    t = torch.arange(max(Lc - 1, 0), device=device)
    valid = t[None, None, :] < S[:, :, None]  # [P, G, Lc-1]
    p_of = torch.arange(P, device=device)[:, None, None].expand_as(valid)[valid]
    g_of = torch.arange(G, device=device)[None, :, None].expand_as(valid)[valid]
    at = (offsets[:, :, None] + t)[valid]
    ids = torch.zeros(P, N, dtype=prompt_ids.dtype, device=device)
    ids[:, :Lp] = prompt_ids
    ids[p_of, at] = completion_ids.view(P, G, Lc)[:, :, : Lc - 1][valid]
    positions = torch.zeros(P, N, dtype=torch.long, device=device)
    positions[:, :Lp] = positions_from_mask(prompt_mask)
    positions[p_of, at] = (prompt_mask.sum(-1)[:, None, None] + t).expand_as(valid)[valid]
    seg = torch.full((P, N), -2, dtype=torch.long, device=device)  # -1 prompt, g completion, -2 row padding
    seg[:, :Lp] = -1
    seg[p_of, at] = g_of
    real = torch.zeros(P, N, dtype=torch.bool, device=device)
    real[:, :Lp] = prompt_mask.bool()
    real[p_of, at] = True
    idx = torch.arange(N, device=device)
    causal = idx[None, :] <= idx[:, None]  # [N, N]: key j <= query i
    visible = (seg[:, None, :] == -1) | (seg[:, None, :] == seg[:, :, None])  # [P, N, N]
    keep = (causal[None] & visible & real[:, None, :]) | torch.eye(N, dtype=torch.bool, device=device)[None]
    # token 0 of completion (p, g) is predicted at the prompt's last position, token t >= 1 at the input
    # position of token t - 1 (padding tokens point at the prompt's last position; they are masked later)
    tc = torch.arange(Lc, device=device)
    inside = (tc[None, None, :] >= 1) & (tc[None, None, :] < lengths[:, :, None])
    columns = torch.where(inside, offsets[:, :, None] + tc - 1, Lp - 1).view(P * G, Lc)
    return PackedGroups(ids=ids, positions=positions, keep=keep[:, None], columns=columns)


def attention_mask_for(model, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """``keep`` [P, 1, N, N] in the form ``model``'s attention implementation takes, or None if it takes none.

    SDPA takes the boolean mask as is; eager attention adds a float mask (0 or the dtype's minimum).
    Other implementations (flash-attention kernels) accept no arbitrary 4D mask: packing is not used.
    """
    impl = getattr(model.config, "_attn_implementation", None)
    if impl == "sdpa":
        return keep
    if impl == "eager":
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)
    return None


def packing_pays(prompt_len: int, inputs: torch.Tensor, hidden_size: int) -> bool:
    """Whether the packed rows' extra attention work is at most ``MAX_ATTENTION_OVERHEAD`` of the linear work.

    ``inputs`` [P, G]: inputs per completion (its real length - 1). Per layer, a token costs ~12 d^2
    multiply-adds in the linear layers (attention projections and an MLP ~2.7x wider than d) and a
    query-key entry ~2 d (score and weighted value). A packed row of N_p = Lp + sum_g S_g tokens computes
    ``N_p^2`` entries where the cached-prompt path computes ``Lp^2 + sum_g S_g (Lp + S_g)``:

        overhead = 2 d sum_p (N_p^2 - Lp^2 - sum_g S_g (Lp + S_g)) / (12 d^2 sum_p N_p)
    """
    S = inputs.to(torch.float64)
    n = prompt_len + S.sum(-1)  # [P]
    needed = prompt_len**2 + (S * (prompt_len + S)).sum(-1)
    extra = float((n * n - needed).sum())
    return extra <= MAX_ATTENTION_OVERHEAD * 6 * hidden_size * max(float(n.sum()), 1.0)
