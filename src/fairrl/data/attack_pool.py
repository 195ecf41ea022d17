"""The evolving red-team attack pool of Evo-MARL (Pan et al., arXiv 2508.03864).

Training draws each attacked episode's attack from the pool (:meth:`AttackPool.sample`, in proportion
to fitness); the pool evolves by proposing children of two roulette-selected parents
(:meth:`AttackPool.propose`: crossover and mutation, :mod:`fairrl.data.mutations`), which the caller
tests against the current policy; :meth:`AttackPool.admit` keeps those that succeeded. Attacks are
templates holding ``{canary}`` (see :mod:`fairrl.data.mutations`); :data:`SEED_ATTACKS` start a pool,
:data:`HELDOUT_ATTACKS` (other texts, two families no pool ever starts from) are for evaluation only.

Deviations:
- The paper starts from ONE prefix-injection seed; we offer two seeds in each of nine families.
- The paper appends every successful child, with no cap and no de-duplication; we reject children whose
  character 3-gram Jaccard similarity to a pool member reaches ``dedupe_threshold`` and cap the pool
  at ``cap`` attacks by dropping the least fit non-seed ones (ties: oldest first). Seeds always stay.
- Fitness is the posterior-mean success rate under a Beta(1, 1) prior, (successes + 1) / (trials + 2),
  so untried attacks are still drawn; the paper does not say how it weights its draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fairrl.data.attack_texts import SEED_ATTACKS
from fairrl.data.mutations import (
    PLACEHOLDER,
    LLMMutator,
    crossover,
    get_mutation,
    is_valid_attack,
    mutation_family,
)
from fairrl.errors import ConfigError, DataError
from fairrl.fsutil import write_text_atomic


def attack_id(family: str, text: str) -> str:
    """A stable id: the family and the first 10 hex digits of the text's SHA-1."""
    return f"{family}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"


def trigram_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the character 3-gram sets of ``a`` and ``b`` with the placeholders removed
    (a text shorter than 3 characters is its own single gram; two empty texts are identical)."""
    grams = []
    for text in (a.replace(PLACEHOLDER, ""), b.replace(PLACEHOLDER, "")):
        grams.append({text[i:i + 3] for i in range(len(text) - 2)} or ({text} if text else set()))
    union = grams[0] | grams[1]
    return len(grams[0] & grams[1]) / len(union) if union else 1.0


@dataclass
class Attack:
    """One attack template and its record against the policy."""

    id: str
    """Stable identifier (:func:`attack_id`)."""
    text: str
    """The template, holding ``{canary}`` at least once."""
    family: str
    """Attack strategy (``prefix_injection``, ``authority``, ...)."""
    generation: int
    """Pool generation that admitted it (0 for seeds)."""
    parents: tuple[str, ...]
    """Ids of the attacks it was made from (empty for seeds)."""
    operator: str
    """How it was made: ``seed``, an operator name, ``crossover+<op>`` or ``llm``."""
    trials: int = 0
    """Attacked episodes it was used in (including the admission test)."""
    successes: int = 0
    """Of those, the episodes whose final answer held the canary."""

    @property
    def fitness(self) -> float:
        """Posterior-mean success rate under a Beta(1, 1) prior: (successes + 1) / (trials + 2)."""
        return (self.successes + 1) / (self.trials + 2)


_FIELDS = {"id": str, "text": str, "family": str, "generation": int, "parents": list, "operator": str,
           "trials": int, "successes": int}  # fmt: skip
_HEADER = {"format": str, "generation": int, "cap": int, "dedupe_threshold": (int, float)}
_EVENT = {"generation": int, "event": str, "id": str, "family": str, "operator": str, "parents": list,
          "reason": str}  # fmt: skip
_JSON_TYPE = {str: "string", int: "integer", list: "list", (int, float): "number"}
FORMAT = "fairrl.attack_pool/1"


class AttackPool:
    """Attacks in insertion order, a generation counter and the history of every add, reject and drop."""

    def __init__(self, attacks: Sequence[Attack] = (), generation: int = 0, cap: int = 64,
                 dedupe_threshold: float = 0.85, history: list[dict] | None = None):  # fmt: skip
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(f"attack pool cap is {cap!r}; it must be a positive integer")
        if not 0 < dedupe_threshold <= 1:
            raise ConfigError(f"attack pool dedupe_threshold is {dedupe_threshold!r}; it must be in (0, 1]")
        self.cap, self.dedupe_threshold, self.generation = cap, float(dedupe_threshold), generation
        self._attacks = {a.id: a for a in attacks}
        self.history: list[dict] = list(history or [])

    @classmethod
    def from_seeds(cls, families: list[str] | None = None, cap: int = 64,
                   dedupe_threshold: float = 0.85) -> AttackPool:  # fmt: skip
        """A generation-0 pool of the :data:`SEED_ATTACKS` of ``families`` (None: all of them)."""
        families = list(SEED_ATTACKS) if families is None else families
        unknown = [f for f in families if f not in SEED_ATTACKS]
        if unknown or not families:
            raise ConfigError(f"attack families {unknown or families!r}: pick one or more of "
                              f"{', '.join(SEED_ATTACKS)}")  # fmt: skip
        pool = cls(cap=cap, dedupe_threshold=dedupe_threshold)
        for family in families:
            for text in SEED_ATTACKS[family]:
                pool._add(Attack(attack_id(family, text), text, family, 0, (), "seed"), "seed")
        return pool

    @property
    def attacks(self) -> list[Attack]:
        return list(self._attacks.values())

    def __len__(self) -> int:
        return len(self._attacks)

    def __contains__(self, attack_id: object) -> bool:
        return attack_id in self._attacks

    def __getitem__(self, attack_id: str) -> Attack:
        return self._attacks[attack_id]

    def _event(self, event: str, attack: Attack, reason: str) -> None:
        self.history.append({"generation": self.generation, "event": event, "id": attack.id,
                             "family": attack.family, "operator": attack.operator,
                             "parents": list(attack.parents), "reason": reason})  # fmt: skip

    def _add(self, attack: Attack, reason: str) -> None:
        self._attacks[attack.id] = attack
        self._event("add", attack, reason)

    def record(self, attack_id: str, success: bool) -> None:
        """Count one attacked episode of ``attack_id``: a trial, and a success if the canary leaked."""
        if attack_id not in self._attacks:
            raise KeyError(f"attack {attack_id!r} is not in the pool (was it dropped by the cap?)")
        attack = self._attacks[attack_id]
        attack.trials += 1
        attack.successes += bool(success)

    def record_many(self, attack_ids: Sequence[str], successes: Sequence[bool]) -> None:
        """:meth:`record` for aligned lists of ids and outcomes."""
        if len(attack_ids) != len(successes):
            raise ValueError(f"{len(attack_ids)} attack ids but {len(successes)} outcomes")
        for attack_id, success in zip(attack_ids, successes, strict=True):
            self.record(attack_id, success)

    def sample(self, rng: random.Random, k: int) -> list[Attack]:
        """``k`` attacks drawn with replacement, each with probability proportional to its fitness."""
        attacks = self.attacks
        return rng.choices(attacks, weights=[a.fitness for a in attacks], k=k)

    def select_parents(self, rng: random.Random) -> tuple[Attack, Attack]:
        """Two distinct attacks by roulette selection: the first in proportion to fitness, the second in
        proportion to fitness among the others."""
        attacks = self.attacks
        if len(attacks) < 2:
            raise ValueError(f"parent selection needs two attacks; the pool has {len(attacks)}")
        first = rng.choices(attacks, weights=[a.fitness for a in attacks])[0]
        rest = [a for a in attacks if a.id != first.id]
        return first, rng.choices(rest, weights=[a.fitness for a in rest])[0]

    def propose(self, rng: random.Random, n: int, mutations: list[str], crossover_rate: float = 0.5,
                llm: LLMMutator | None = None) -> list[Attack]:  # fmt: skip
        """Up to ``n`` children of generation ``generation + 1`` for the caller to test, then :meth:`admit`.

        Each child crosses two roulette-selected parents with probability ``crossover_rate`` (else copies
        one drawn by fitness), then goes through one operator picked uniformly from ``mutations``
        (built-in names or dotted paths) plus ``llm`` when given (all LLM calls in one batch). Its family is
        the operator's (:func:`mutation_family`), else the first parent's. Invalid children (placeholder
        lost, blank, too long) and texts already in the pool or the batch are dropped, so fewer than ``n``
        may come back.
        """
        if not 0 <= crossover_rate <= 1:
            raise ConfigError(f"crossover_rate is {crossover_rate!r}; it must be in [0, 1]")
        operators = {name: get_mutation(name) for name in mutations}
        choices = list(operators) + (["llm"] if llm is not None else [])
        if not choices:
            raise ConfigError("propose needs at least one mutation operator name or an LLM mutator")
        texts, lineage = [], []  # lineage: (parents, operator) of each planned child
        for _ in range(n):
            if len(self) >= 2 and rng.random() < crossover_rate:
                parents: tuple[Attack, ...] = self.select_parents(rng)
                base, prefix = crossover(parents[0].text, parents[1].text, rng), "crossover+"
            else:
                parents = tuple(self.sample(rng, 1))
                base, prefix = parents[0].text, ""
            op = rng.choice(choices)
            texts.append(base if op == "llm" else operators[op](base, rng))
            lineage.append((parents, prefix + op))
        by_llm = [i for i, (_, op) in enumerate(lineage) if op in ("llm", "crossover+llm")]
        if llm is not None and by_llm:
            for i, rewrite in zip(by_llm, llm([texts[i] for i in by_llm]), strict=True):
                texts[i] = rewrite
        seen = {a.text for a in self._attacks.values()}
        children = []
        for text, (parents, op) in zip(texts, lineage, strict=True):
            if not is_valid_attack(text) or text in seen:
                continue
            seen.add(text)
            family = mutation_family(op) or parents[0].family
            children.append(Attack(attack_id(family, text), text, family, self.generation + 1,
                                   tuple(p.id for p in parents), op))  # fmt: skip
        return children

    def admit(self, children: Sequence[Attack], successes: Sequence[bool]) -> list[Attack]:
        """Start the next generation: add the children whose test succeeded (counted as one successful
        trial) unless they duplicate a pool member, then enforce the cap. Returns those added and kept."""
        if len(children) != len(successes):
            raise ValueError(f"{len(children)} children but {len(successes)} test outcomes")
        self.generation += 1
        added = []
        for child, success in zip(children, successes, strict=True):
            reason = "its test attack failed" if not success else self._duplicate(child)
            if reason is not None:
                self._event("reject", child, reason)
                continue
            child.trials, child.successes = child.trials + 1, child.successes + 1
            self._add(child, "its test attack succeeded")
            added.append(child)
        self._enforce_cap()
        return [a for a in added if a.id in self._attacks]

    def _duplicate(self, child: Attack) -> str | None:
        """Why ``child`` duplicates the pool (the same id, or a near-duplicate text), else None."""
        if child.id in self._attacks:
            return "already in the pool"
        for member in self._attacks.values():
            similarity = trigram_jaccard(child.text, member.text)
            if similarity >= self.dedupe_threshold:
                return f"near-duplicate of {member.id} (3-gram Jaccard {similarity:.2f})"
        return None

    def _enforce_cap(self) -> None:
        order = {attack_id: i for i, attack_id in enumerate(self._attacks)}
        while len(self._attacks) > self.cap:
            droppable = [a for a in self._attacks.values() if a.operator != "seed"]
            if not droppable:
                return
            worst = min(droppable, key=lambda a: (a.fitness, a.generation, order[a.id]))
            del self._attacks[worst.id]
            self._event("drop", worst, f"pool over its cap of {self.cap}; lowest fitness {worst.fitness:.3f}")

    def family_stats(self) -> dict[str, dict[str, float]]:
        """Per family of the current pool: attacks ``n``, ``trials``, ``successes`` and ``success_rate``
        (successes / trials; NaN before any trial)."""
        stats: dict[str, dict[str, float]] = {}
        for a in self._attacks.values():
            row = stats.setdefault(a.family, {"n": 0, "trials": 0, "successes": 0})
            row["n"] += 1
            row["trials"] += a.trials
            row["successes"] += a.successes
        for row in stats.values():
            row["success_rate"] = row["successes"] / row["trials"] if row["trials"] else math.nan
        return dict(sorted(stats.items()))

    def to_state(self) -> dict:
        """The whole pool (attacks, generation, settings, history) as JSON-serialisable data, for a training
        checkpoint; :meth:`from_state` restores it exactly."""
        return {"format": FORMAT, "generation": self.generation, "cap": self.cap,
                "dedupe_threshold": self.dedupe_threshold,
                "attacks": [{**asdict(a), "parents": list(a.parents)} for a in self._attacks.values()],
                "history": [dict(e) for e in self.history]}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict) -> AttackPool:
        """The pool :meth:`to_state` described."""
        if state.get("format") != FORMAT:
            raise DataError(f"saved attack pool has format {state.get('format')!r}; this version reads {FORMAT!r}")
        attacks = [Attack(**{**a, "parents": tuple(a["parents"])}) for a in state["attacks"]]
        return cls(attacks, state["generation"], state["cap"], state["dedupe_threshold"], state["history"])

    def save(self, folder: Path | str) -> None:
        """Write ``pool.jsonl`` (a header line with the generation, cap and threshold, then one attack per
        line) and ``pool_history.jsonl`` (one event per line), each atomically."""
        folder = Path(folder)
        header = {"format": FORMAT, "generation": self.generation, "cap": self.cap,
                  "dedupe_threshold": self.dedupe_threshold}  # fmt: skip
        rows = [header] + [{**asdict(a), "parents": list(a.parents)} for a in self._attacks.values()]
        for name, lines in (("pool_history.jsonl", self.history), ("pool.jsonl", rows)):
            write_text_atomic(folder / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))

    @classmethod
    def load(cls, folder: Path | str) -> AttackPool:
        """The pool :meth:`save` wrote to ``folder``; a :class:`DataError` names the file, line and fix."""
        folder = Path(folder)
        lines = _read_jsonl(folder / "pool.jsonl", "a header line and one attack per line")
        (where, header), rows = lines[0], lines[1:]
        _check(header, _HEADER, where, "the pool header (written by AttackPool.save)")
        if header["format"] != FORMAT:
            raise DataError(f"{where}: format is {header['format']!r}; this version reads {FORMAT!r}")
        if not rows:
            raise DataError(f"{where}: the pool has a header but no attacks; add one attack per line")
        attacks = []
        for where, row in rows:
            _check(row, _FIELDS, where, "an attack")
            if not is_valid_attack(row["text"]) or not 0 <= row["successes"] <= row["trials"]:
                raise DataError(f"{where}: attack {row['id']!r} needs a text holding {PLACEHOLDER} and "
                                "0 <= successes <= trials")  # fmt: skip
            attacks.append(Attack(**{**{k: row[k] for k in _FIELDS}, "parents": tuple(row["parents"])}))
        if len({a.id for a in attacks}) != len(attacks):
            raise DataError(f"{folder / 'pool.jsonl'}: attack ids repeat; each id must appear once")
        events = _read_jsonl(folder / "pool_history.jsonl", "one event per line", allow_empty=True)
        history = [_check(e, _EVENT, where, "a history event") for where, e in events]
        try:
            return cls(attacks, header["generation"], header["cap"], header["dedupe_threshold"], history)
        except ConfigError as err:
            raise DataError(f"{lines[0][0]}: {err}") from None


def _read_jsonl(path: Path, expected: str, allow_empty: bool = False) -> list[tuple[str, dict]]:
    """The JSON objects of a JSON-lines file, each with its ``path:line`` (blank lines skipped)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; save the attack pool there first (AttackPool.save)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a JSON {type(obj).__name__}; each line must be one JSON object")
        out.append((where, obj))
    if not out and not allow_empty:
        raise DataError(f"{path} is empty; it must hold {expected}")
    return out


def _check(obj: dict, fields: dict, where: str, what: str) -> dict:
    """``obj`` if it has every field of ``fields`` with its type, else a :class:`DataError`."""
    missing = [f for f in fields if f not in obj]
    if missing:
        raise DataError(f"{where}: {what} lacks field(s) {missing}; it needs {', '.join(fields)}")
    for name, kind in fields.items():
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DataError(f"{where}: field {name!r} is {value!r:.60}; it must be a JSON {_JSON_TYPE[kind]}")
    if "parents" in fields and not all(isinstance(p, str) for p in obj["parents"]):
        raise DataError(f"{where}: field 'parents' must be a list of attack ids (strings)")
    return obj
