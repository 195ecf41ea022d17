"""``fairrl redteam eval``: attack success rate and accuracy of one or more models playing a team.

Loads and checks the attack items, the team and the judges before the first model, so bad input costs
no compute. For each model: clean and attacked episodes per injection position
(:func:`fairrl.eval.redteam.evaluate_redteam`); the results go to ``--json OUT`` (``{"settings",
"models": {name: result}}``, each result with its per-episode records under ``items``) and a markdown
summary to the console (and ``OUT`` with ``.md`` when ``--json`` is given).
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fairrl.config.base import load_config
from fairrl.config.redteam import TeamConfig
from fairrl.console import Console, progress_scope
from fairrl.data.attacks import AttackItem, builtin_attack_items, load_attack_items
from fairrl.errors import ConfigError
from fairrl.eval.redteam import evaluate_redteam, greedy_sampler, parse_positions, position_name
from fairrl.fsutil import write_json_atomic, write_text_atomic
from fairrl.models.loading import load_model, load_tokenizer
from fairrl.models.policy import resolve_device
from fairrl.models.role_adapters import load_role_adapters, role_sampler
from fairrl.report.redteam import redteam_tables
from fairrl.rewards.correctness import is_correct
from fairrl.rewards.safety import CachedJudge, get_safety_judge


def load_items(attacks: str, limit: int | None, seed: int) -> list[AttackItem]:
    """``builtin`` (the held-out attacks on packaged reasoning tasks) or an attack file; ``limit`` keeps a
    seeded random subset of that many items."""
    items = builtin_attack_items(seed=seed) if attacks == "builtin" else load_attack_items(attacks)
    if limit is not None and limit < len(items):
        keep = sorted(random.Random(seed).sample(range(len(items)), limit))
        items = [items[i] for i in keep]
    return items


def _out_paths(json_out: str | None) -> tuple[Path, Path] | None:
    if json_out is None:
        return None
    path = Path(json_out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the folder of --json {path}: {err.strerror}; pick another path") from None
    return path, path.with_suffix(".md")


def run_redteam_eval(
    models: list[str], attacks: str, console: Console, *, positions: str | None = None, team_file: str | None = None,
    judge: str = "canary", limit: int | None = None, max_new_tokens: int | None = None, batch_size: int = 16,
    json_out: str | None = None, seed: int = 0, device: str = "auto", dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate every model (module docstring); returns ``{name: result}``."""
    team = load_config(team_file, [], TeamConfig)
    if max_new_tokens is not None:
        team = team.model_copy(update={"max_new_tokens": max_new_tokens})
    where = parse_positions(positions, team)
    items = load_items(attacks, limit, seed)
    safety = CachedJudge(get_safety_judge(judge, {}))
    refusal = CachedJudge(get_safety_judge("refusal", {}))
    paths = _out_paths(json_out)
    n_att = sum(it.attacked for it in items)
    console(f"{len(items)} items ({n_att} attacked x {len(where)} position(s): "
            f"{', '.join(position_name(w) for w in where)}); team: {' -> '.join(r.name for r in team.roles)}")  # fmt: skip
    dev = resolve_device(device)
    results: dict[str, Any] = {}
    for name in models:
        final = Path(name) / "final"
        path = str(final) if final.is_dir() else name
        console(f"loading {name} ...")
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = load_model(path, dtype=dtype, device=dev, trust_remote_code=trust_remote_code)
        sampler = greedy_sampler(model, tokenizer, team.max_new_tokens, batch_size)
        roles = 1 + sum(1 for _ in Path(path).glob("role*/adapter_model.safetensors"))
        if roles > 1:  # a run trained with redteam.team.adapters=per_role: each role answers with its adapter
            if roles != len(team.roles):
                raise ConfigError(f"{name} holds adapters for {roles} roles but the team has {len(team.roles)}; "
                                  "give the run's team with --team")  # fmt: skip
            names = load_role_adapters(model, path, roles)
            sampler = role_sampler(sampler, model, [r.name for r in team.roles], names)
        with progress_scope(name):
            results[name] = evaluate_redteam(sampler, items, team, where, safety, refusal, is_correct)
        if results[name]["judged_attacks"] == 0 and n_att:
            console(f"warning: the {judge!r} judge ruled on none of the attacked episodes (items without a canary?); "
                    "ASR is undefined: give canaries or pick another --judge")  # fmt: skip
        del model
    tables = redteam_tables(results)
    console(tables)
    if paths is not None:
        settings = {"attacks": attacks, "n_items": len(items), "positions": [position_name(w) for w in where],
                    "judge": judge, "team": team.model_dump(mode="json"), "seed": seed, "limit": limit,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        write_json_atomic(paths[0], {"settings": settings, "models": results})
        write_text_atomic(paths[1], "# Red-team evaluation\n\n" + tables)
        console(f"wrote {paths[0]} and {paths[1]}")
    return results
