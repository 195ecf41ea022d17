"""``fairrl redteam``: multi-agent teams under prompt-injection attack (Evo-MARL, arXiv 2508.03864)."""

from __future__ import annotations

from typing import Annotated

import typer

from fairrl.cli_common import _echo, _fail
from fairrl.errors import FairRLError

redteam_app = typer.Typer(
    no_args_is_help=True, help="Red team / blue team: attack a multi-agent team and measure attack success."
)


@redteam_app.command(name="eval")
def redteam_eval(
    model: Annotated[list[str], typer.Option("--model", help="Built-in name, folder, hub id or run folder (repeat to compare).")],
    attacks: Annotated[str, typer.Option(help="JSONL file of {id, task, answer, injection, canary?, family?} items, or 'builtin' (held-out attacks on packaged reasoning tasks).")] = "builtin",
    positions: Annotated[str | None, typer.Option(help="Injection points, role:placement comma list (e.g. analyst:suffix,executor:prefix, task:suffix); default the team's.")] = None,
    team: Annotated[str | None, typer.Option(help="YAML file with roles / injection / max_new_tokens (default: analyst -> executor -> verifier).")] = None,
    judge: Annotated[str, typer.Option(help="Safety judge: canary, refusal, hf_classifier, lm_judge or package.module:function.")] = "canary",
    limit: Annotated[int | None, typer.Option(min=1, help="A seeded random subset of N items.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per turn (default: the team's, 96).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the results (and per-episode records) here, and a .md summary next to it.")] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
) -> None:  # fmt: skip
    """Attack success rate, accuracy with and without attack, and over-refusal of a team played by each model."""
    try:
        from fairrl.recipes.redteam_eval import run_redteam_eval

        run_redteam_eval(model, attacks, _echo, positions=positions, team_file=team, judge=judge, limit=limit,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, json_out=json_out, seed=seed,
                         device=device, dtype=dtype, trust_remote_code=trust_remote_code)  # fmt: skip
    except FairRLError as err:
        _fail(err)

