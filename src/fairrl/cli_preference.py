"""``fairrl rm``, ``fairrl dpo`` and ``fairrl score``: reward models, preference-dataset DPO, scoring files."""

from __future__ import annotations

from typing import Annotated

import typer

from fairrl.cli_common import OverwriteOption, _echo, _fail
from fairrl.errors import FairRLError

rm_app = typer.Typer(
    no_args_is_help=True, help="Reward models: Bradley-Terry with fairness regularisation / coefficient."
)
dpo_app = typer.Typer(no_args_is_help=True, help="DPO with the same fairness objectives (FR-DPO, FC-DPO).")


SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a key: --set fairness.kind=regularizer")
]
ResumeOption = Annotated[
    str | None, typer.Option(help="Continue the run in this folder with its saved config (--set may change e.g. max_steps) from its latest readable checkpoint.")
]
OutOption = Annotated[str | None, typer.Option(help="Run folder (default: <output_dir>/<run_name>).")]


def _preference_config(config: str | None, overrides: list[str], resume: str | None, schema):
    from fairrl.config import load_config
    from fairrl.trainer.run import continue_config

    return continue_config(resume, config, overrides, schema) if resume else load_config(config, overrides, schema=schema)


def _preference_run(kind: str, config: str | None, overrides: list[str], resume: str | None, out: str | None,
                    overwrite: bool = False):  # fmt: skip
    """Validate the config of an ``rm`` or ``dpo`` run and run it; user mistakes exit 2."""
    try:
        if kind == "rm":
            from fairrl.config import RMTrainConfig as schema
            from fairrl.recipes.rm import run_rm as run
        else:
            from fairrl.config import DPOTrainConfig as schema
            from fairrl.recipes.dpo import run_dpo as run
        from fairrl.distributed import init_from_env

        ranks = init_from_env()  # under torchrun / accelerate launch: each rank trains a share of each batch
        run(_preference_config(config, overrides, resume, schema), out=out, resume=resume,
            console=_echo if ranks.main else lambda s: None, overwrite=overwrite, progress=ranks.main)
    except FairRLError as err:
        _fail(err)


@rm_app.command(name="train")
def rm_train(
    config: Annotated[
        str | None, typer.Argument(help="YAML file or packaged name (rm); omit for MiniLM on bias pairs.")
    ] = None,
    set_: SetOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Train a reward model on preference pairs and report per-group accuracy, margins, Jain and Gini."""
    _preference_run("rm", config, set_ or [], resume, out, overwrite)


@rm_app.command(name="compare")
def rm_compare(
    config: Annotated[
        str | None, typer.Argument(help="YAML config shared by every run (fairness.kind is varied).")
    ] = None,
    kinds: Annotated[
        str,
        typer.Option(help="Objectives: none (BT), regularizer (FR), coefficient (FC), coefficient_paper, "
                     "group_regularizer, group_coefficient, group_balanced, group_dro."),
    ] = "none,regularizer,coefficient",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    out: Annotated[str, typer.Option(help="Folder of the runs and the comparison report.")] = "runs/rm_compare",
    set_: SetOption = None,
) -> None:
    """Train one reward model per objective and seed; compare them on held-out groups (tables + plot)."""
    try:
        from fairrl.config import RMTrainConfig
        from fairrl.errors import ConfigError
        from fairrl.recipes.rm import compare_kinds, run_rm_compare

        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
        if not seed_list:
            raise ConfigError("--seeds is empty; give at least one seed")
        cfg = _preference_config(config, set_ or [], None, RMTrainConfig)
        run_rm_compare(cfg, compare_kinds(kinds), seed_list, out, console=_echo)
    except FairRLError as err:
        _fail(err)


@dpo_app.command(name="train")
def dpo_train(
    config: Annotated[
        str | None, typer.Argument(help="YAML file or packaged name (dpo); omit for SmolLM2 + LoRA.")
    ] = None,
    set_: SetOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """DPO (optionally FR-DPO / FC-DPO) on preference pairs; per-group implicit-reward metrics."""
    _preference_run("dpo", config, set_ or [], resume, out, overwrite)


score_app = typer.Typer(no_args_is_help=True, help="Score predictions made by any system.")


@score_app.command(name="bbq")
def score_bbq(
    predictions: Annotated[str, typer.Argument(help="JSONL: one {category, example_id, prediction} per line.")],
    json_out: Annotated[str | None, typer.Option("--json", help="Write the scores to this JSON file.")] = None,
    source: Annotated[str | None, typer.Option(help="BBQ hub id or local path (default: the packaged copy).")] = None,
    n_boot: Annotated[int, typer.Option(min=1)] = 1000,
) -> None:
    """Official BBQ accuracy and bias scores (s_AMB, s_DIS) per category of a predictions file."""
    from fairrl.eval.predictions import check_scores_path, score_bbq_predictions, scores_table, write_scores

    try:
        if json_out:
            check_scores_path(json_out)  # a folder or missing parent fails before the scoring
        scores = score_bbq_predictions(predictions, source=source, n_boot=n_boot)
        typer.echo(scores_table(scores))
        if json_out:
            write_scores(json_out, scores)
            typer.echo(f"wrote {json_out}")
    except FairRLError as err:
        _fail(err)
