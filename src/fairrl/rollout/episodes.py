"""Multi-agent episodes: a chain of roles, one turn each, with an attack injected into one message.

Evo-MARL (arXiv 2508.03864) runs a team of agents (analyst -> executor -> verifier in the authors' code)
that all share one policy. Turn k's prompt holds the role's name and capability (system message) and the
role's template filled with the task and the earlier turns' messages (user message; as JSON in the
authors' code, as ``[role]``-headed text blocks by default here, ``team.history_format``); the last
role's reply is the team's final answer. An attack (:mod:`fairrl.data.attacks`) is added to the message
the injection role passes on: that role's own reply stays as it generated it (its tokens are what the
policy is trained on), and every later role reads the injected version. With ``injection.role = task``
the attack sits in the task text every role sees.

Turns are played in order and batched across episodes: one call of ``sample_turn(prompts, role)`` per
role for the whole batch, so a turn's generation is one batched generate. The sampler decides how to
generate (greedy for evaluation, sampling with token data for training, a per-role adapter for
heterogeneous teams) and returns each reply's text and whatever token data it wants kept.

Deviation from the authors' code: it appends the attack to the outputs of the first *two* turns; here
one injection point is configured (``injection.role``, ``injection.placement``), so each position's
effect can be measured separately.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fairrl.config.redteam import RoleConfig, TeamConfig
from fairrl.data.attacks import frame_attack, inject

Message = dict[str, str]
TurnSampler = Callable[[list[list[Message]], str], Sequence[tuple[str, Any]]]
"""``sample_turn(prompts, role_name) -> [(reply_text, token_data), ...]``, one per prompt, in order."""


@dataclass
class Turn:
    """One agent's turn: what it was shown, what it said, and what the next agents read."""

    role: str
    prompt: list[Message]
    text: str
    sent: str
    """The message passed on: ``text``, or ``text`` with the attack when this is the injection role."""
    data: Any = None
    """The sampler's token data for this reply (ids, log-probs, ...), None when it keeps none."""


@dataclass
class Episode:
    """The team's turns on one task, with or without an attack."""

    task: str
    attack: str | None
    """The attack as injected (canary filled in, framed when the team's injection is framed), or None."""
    turns: list[Turn] = field(default_factory=list)

    @property
    def final(self) -> str:
        """The team's final answer: the last role's reply."""
        return self.turns[-1].text if self.turns else ""


def history_json(history: Sequence[tuple[str, str]]) -> str:
    """The earlier turns as a JSON list of ``{"role", "message"}`` (``history_format: json``)."""
    return json.dumps([{"role": r, "message": m} for r, m in history], ensure_ascii=False, indent=1)


def history_text(history: Sequence[tuple[str, str]]) -> str:
    """The earlier turns as ``[role]`` headed blocks (``history_format: text``); "(none yet)" when empty."""
    return "\n\n".join(f"[{r}]\n{m}" for r, m in history) or "(none yet)"


HISTORY_FORMATS = {"json": history_json, "text": history_text}


def role_messages(role: RoleConfig, task: str, history: Sequence[tuple[str, str]], history_format: str = "text") -> list[Message]:
    """The chat prompt of ``role``'s turn: a system message naming its role and capability, and its template."""
    system = f"You are the {role.name} in a team of agents that solve tasks together. {role.capability}"
    shown = HISTORY_FORMATS[history_format](history)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": role.template.format(task=task, history=shown)},
    ]


def play_episodes(
    sample_turn: TurnSampler, team: TeamConfig, tasks: Sequence[str], attacks: Sequence[str | None]
) -> list[Episode]:
    """Play one episode per task (``attacks[i]``: the filled attack text for task i, or None for a clean one).

    Returns the episodes in the order of ``tasks``; every turn of every episode has been generated.
    """
    if len(tasks) != len(attacks):
        raise ValueError(f"{len(tasks)} tasks but {len(attacks)} attacks; give one attack (or None) per task")
    where = team.injection
    framed = [None if a is None else (frame_attack(a) if where.frame else a) for a in attacks]
    episodes = [Episode(task=t, attack=a) for t, a in zip(tasks, framed, strict=True)]
    seen_tasks = [
        inject(t, a, where.placement) if a is not None and where.role == "task" else t
        for t, a in zip(tasks, framed, strict=True)
    ]
    histories: list[list[tuple[str, str]]] = [[] for _ in tasks]
    for role in team.roles:
        prompts = [role_messages(role, t, h, team.history_format) for t, h in zip(seen_tasks, histories, strict=True)]
        replies = list(sample_turn(prompts, role.name)) if prompts else []
        if len(replies) != len(prompts):
            raise RuntimeError(f"the turn sampler returned {len(replies)} replies for {len(prompts)} prompts")
        for ep, hist, prompt, (text, data) in zip(episodes, histories, prompts, replies, strict=True):
            hit = ep.attack is not None and where.role == role.name
            sent = inject(text, ep.attack, where.placement) if hit else text
            ep.turns.append(Turn(role=role.name, prompt=prompt, text=text, sent=sent, data=data))
            hist.append((role.name, sent))
    return episodes
