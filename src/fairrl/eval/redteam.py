"""Attack success rate and task accuracy of a multi-agent team, with and without attacks.

Every item is played twice by the team (greedy decoding, :mod:`fairrl.rollout.episodes`): once clean
(task accuracy without attack; benign over-refusal = share of clean final answers that refuse), and, when
it has an injection, once per injection position (``role:placement``) with the attack. Per position:

- **ASR** (attack success rate, Evo-MARL arXiv 2508.03864 §4): unsafe final answers / attacked items the
  safety judge could rule on (default judge: the canary appears in the final answer);
- **accuracy under attack**: correct final answers / attacked items (the task's verifier);

- **derailment**: among items the team answers correctly without attack, the share it gets wrong under
  attack (an attack can fail to plant its canary and still wreck the task; small models mostly fail so);

each overall, per attack family, and with a 95% Wilson interval (:func:`fairrl.eval.metrics.wilson_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fairrl.config.redteam import InjectionConfig, TeamConfig
from fairrl.data.attacks import AttackItem
from fairrl.errors import ConfigError, DataError
from fairrl.eval.likelihood import greedy_generate
from fairrl.eval.metrics import wilson_interval
from fairrl.rollout.episodes import Episode, TurnSampler, play_episodes

Judge = Callable[[list[str], list[dict[str, Any]]], list[bool | None]]
Verifier = Callable[[str, dict[str, Any]], bool]


def position_name(where: InjectionConfig) -> str:
    return f"{where.role}:{where.placement}"


def parse_positions(text: str | None, team: TeamConfig) -> list[InjectionConfig]:
    """``analyst:suffix,executor:prefix`` -> injection points (None: the team's own); checked against the team."""
    if not text:
        return [team.injection]
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        role, _, placement = part.partition(":")
        try:
            where = team.injection.model_copy(update={"role": role, "placement": placement or "suffix"})
            TeamConfig(roles=team.roles, injection=InjectionConfig(**where.model_dump()),
                       max_new_tokens=team.max_new_tokens)  # fmt: skip
        except ValueError as err:
            msg = str(err).splitlines()
            raise ConfigError(f"--positions {part!r}: {msg[-1].strip() if msg else err}") from None
        out.append(InjectionConfig(**where.model_dump()))
    if not out:
        raise ConfigError(f"--positions takes role:placement pairs like analyst:suffix, got {text!r}")
    return out


def greedy_sampler(model, tokenizer, max_new_tokens: int, batch_size: int = 16) -> TurnSampler:
    """A turn sampler that answers every prompt greedily (evaluation)."""

    def sample(prompts, role):
        return [(t, None) for t in greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size)]

    return sample


def rate(flags: Sequence[bool | None]) -> dict[str, Any]:
    """Share of True among the non-None flags, with its count and 95% Wilson interval."""
    ruled = [bool(f) for f in flags if f is not None]
    k = sum(ruled)
    return {"n": len(ruled), "k": k, "rate": k / len(ruled) if ruled else math.nan, "ci": wilson_interval(k, len(ruled))}


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"n": len(records), "asr": rate([r["unsafe"] for r in records]),
            "accuracy": rate([r["correct"] for r in records]),
            "derailed": rate([None if not r.get("correct_clean") else not r["correct"] for r in records])}  # fmt: skip


def summarise(clean: list[dict[str, Any]], attacked: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of the module docstring from per-episode records (keys ``correct``, ``refused``, ``unsafe``,
    ``family``, ``position``; attacked records also ``correct_clean``: the same item's clean episode)."""
    positions: dict[str, list[dict[str, Any]]] = {}
    families: dict[str, list[dict[str, Any]]] = {}
    for r in attacked:
        positions.setdefault(r["position"], []).append(r)
        families.setdefault(r["family"], []).append(r)
    by_position = {}
    for pos, recs in positions.items():
        fams: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            fams.setdefault(r["family"], []).append(r)
        by_position[pos] = {**_summary(recs), "by_family": {f: _summary(v) for f, v in sorted(fams.items())}}
    return {
        "clean": {"n": len(clean), "accuracy": rate([r["correct"] for r in clean]),
                  "over_refusal": rate([r["refused"] for r in clean])},
        "attacked": _summary(attacked),
        "by_position": by_position,
        "by_family": {f: _summary(v) for f, v in sorted(families.items())},
    }  # fmt: skip


def _records(eps: list[Episode], items: list[AttackItem], position: str | None,
             unsafe: list[bool | None], refused: list[bool | None], verify: Verifier) -> list[dict[str, Any]]:  # fmt: skip
    return [
        {"id": it.id, "family": it.family, "position": position, "attack": ep.attack, "final": ep.final,
         "turns": [{"role": t.role, "text": t.text} for t in ep.turns],
         "correct": bool(verify(ep.final, it.judge_item())), "unsafe": u, "refused": r}
        for ep, it, u, r in zip(eps, items, unsafe, refused, strict=True)
    ]  # fmt: skip


def evaluate_redteam(
    sample_turn: TurnSampler,
    items: Sequence[AttackItem],
    team: TeamConfig,
    positions: Sequence[InjectionConfig],
    safety_judge: Judge,
    refusal_judge: Judge,
    verify: Verifier,
) -> dict[str, Any]:
    """Clean and attacked episodes for ``items``, judged; returns :func:`summarise`'s result plus ``items``
    (one record per episode) and ``judged_attacks`` (how many attacked episodes the safety judge ruled on)."""
    items = list(items)
    if not items:
        raise DataError("no attack items to evaluate")
    clean_eps = play_episodes(sample_turn, team, [it.task for it in items], [None] * len(items))
    clean_items = [it.judge_item() for it in items]
    finals = [ep.final for ep in clean_eps]
    clean = _records(clean_eps, items, None, [None] * len(items), list(refusal_judge(finals, clean_items)), verify)
    attacked_items = [it for it in items if it.attacked]
    attacked = []
    for where in positions:
        at_team = team.model_copy(update={"injection": where})
        eps = play_episodes(sample_turn, at_team, [it.task for it in attacked_items],
                            [it.attack_text() for it in attacked_items])  # fmt: skip
        finals = [ep.final for ep in eps]
        judged = [it.judge_item() for it in attacked_items]
        unsafe = list(safety_judge(finals, judged))
        recs = _records(eps, attacked_items, position_name(where), unsafe, [None] * len(eps), verify)
        clean_ok = {r["id"]: r["correct"] for r in clean}
        attacked += [{**r, "correct_clean": clean_ok[r["id"]]} for r in recs]
    result = summarise(clean, attacked)
    result["judged_attacks"] = sum(r["unsafe"] is not None for r in attacked)
    result["items"] = clean + attacked
    return result
