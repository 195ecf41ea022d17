"""Prompt and group completions packed in one sequence (Prefix-Grouper style attention).

A GRPO group is one prompt x of ``Lp`` tokens and G completions y_1..y_G. The training forward
needs, for every completion token, the model's output at the position before it. Packing puts the
group in one row

    [ x_1 .. x_Lp | y_1,1 .. y_1,S | y_2,1 .. y_2,S | ... | y_G,1 .. y_G,S ]      N = Lp + G S,

with S = Lc - 1 (a completion's last token is never an input), and masks attention so that

    key j is visible to query i  <=>  j real  and  j <= i  and  (j in the prompt  or  seg(j) = seg(i)),

i.e. each completion sees the whole prompt and causally itself, never another completion; prompt
queries see only the prompt. Positions continue from the prompt's real length in every segment.
Every output then equals the one of the plain row ``[x | y_g]``, while the prompt is encoded once per
group (its FLOPs and activations shrink G times), and, unlike encoding the prompt first and the
completions on top of its cached keys and values, there is one forward: every weight gets one
gradient product and the input embedding one backward (on the 2-core CPU the two-forward version
spent ~0.6 s of a ~5 s update adding the prompt's and the completions' weight gradients).

The price is attention over the whole packed row, masked blocks included: ``N^2`` query-key
entries instead of ``Lp^2 + G S (Lp + S)``. :func:`packing_pays` keeps packing where that extra
work is small next to the linear layers' (short completions); long ones use the cached-prompt path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fairrl.rollout.generate import positions_from_mask

# Largest extra attention work, as a fraction of the linear layers' work, at which packing is used.
MAX_ATTENTION_OVERHEAD = 0.25


@dataclass
class PackedGroups:
    """P packed rows of length N (module docstring)."""

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

    Padding tokens are masked as keys; every query also sees itself, so a padding query never has an
    empty row (its output is unused).
    """
    P, Lp = prompt_ids.shape
    G, Lc = group_size, completion_ids.shape[1]
    S = max(Lc - 1, 0)
    device = prompt_ids.device
    ids = torch.cat([prompt_ids, completion_ids[:, :S].reshape(P, G * S)], dim=1)  # [P, N]
    real = torch.cat([prompt_mask, completion_mask[:, :S].reshape(P, G * S)], dim=1).bool()
    steps = torch.arange(S, device=device).repeat(G)  # [G*S]: 0..S-1 per completion
    positions = torch.cat([positions_from_mask(prompt_mask), prompt_mask.sum(-1, keepdim=True) + steps], dim=1)
    N = Lp + G * S
    seg = torch.cat([torch.full((Lp,), -1, device=device), torch.arange(G, device=device).repeat_interleave(S)])
    idx = torch.arange(N, device=device)
    allowed = (idx[None, :] <= idx[:, None]) & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))  # [N, N]
    keep = (allowed[None] & real[:, None, :]) | torch.eye(N, dtype=torch.bool, device=device)[None]
    # completion g of prompt p: token 0 is predicted at the prompt's last position, token t >= 1 at
    # the input position of token t - 1 in segment g
    t = torch.arange(Lc, device=device)
    g = torch.arange(G, device=device)
    within = torch.where(t[None, :] == 0, Lp - 1, Lp + g[:, None] * S + t[None, :] - 1)  # [G, Lc]
    return PackedGroups(ids=ids, positions=positions, keep=keep[:, None], columns=within.repeat(P, 1))


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


def packing_pays(prompt_len: int, completion_len: int, group_size: int, hidden_size: int) -> bool:
    """Whether the packed row's extra attention work is at most ``MAX_ATTENTION_OVERHEAD`` of the linear work.

    Per layer, a token costs ~12 d^2 multiply-adds in the linear layers (attention projections and an
    MLP ~2.7x wider than d) and a query-key entry ~2 d (score and weighted value). Packing computes
    ``N^2`` entries where the cached-prompt path computes ``Lp^2 + G S (Lp + S)``:

        overhead = 2 d (N^2 - Lp^2 - G S (Lp + S)) / (12 d^2 N) = (N^2 - ...) / (6 d N)
    """
    S = max(completion_len - 1, 0)
    n = prompt_len + group_size * S
    needed = prompt_len**2 + group_size * S * (prompt_len + S)
    return (n * n - needed) <= MAX_ATTENTION_OVERHEAD * 6 * hidden_size * max(n, 1)
