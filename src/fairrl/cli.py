"""The ``fairrl`` command line.

User mistakes (a bad config, a missing file, data without a needed column, a reward function that
fails) print one ``error:`` line and exit with code 2; there is no traceback for them.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from fairrl.cli_common import OverwriteOption, _echo, _fail
from fairrl.errors import FairRLError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fairness-aware RL post-training of language models: train, evaluate, report.",
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from fairrl.recipes.export import fairrl_version

        typer.echo(f"fairrl {fairrl_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the fairrl version and exit.")] = False,
) -> None:  # fmt: skip
    pass


SeedsOption = Annotated[
    str | None,
    typer.Option(help="Run the config once per seed (0,1,2 or 0-4) into OUT/seed-<s> and write OUT/seeds_report.md; "
                 "rerun the same command to resume."),
]
JobsOption = Annotated[int, typer.Option(min=1, help="With --seeds: seeds run at once, one process each.")]


def demo_config_path() -> Path:
    return Path(str(resources.files("fairrl") / "configs" / "demo.yaml"))


TRAIN_METHODS = {
    "grpo": ("fairrl.recipes.grpo", "run_training"),
    "ppo": ("fairrl.recipes.ppo", "run_ppo"),
    "sft": ("fairrl.recipes.sft", "run_sft"),
    "kd": ("fairrl.recipes.kd", "run_kd"),
    "dpo": ("fairrl.recipes.dpo_train", "run_dpo_method"),
    "redteam": ("fairrl.recipes.redteam", "run_redteam"),
}
"""``method:`` -> (module, function) of the recipe that trains it, imported when used."""


def _train_function(method: str):
    """The run function of ``method``; a recipe that is not there yet is a ConfigError."""
    import importlib

    from fairrl.errors import ConfigError

    module, name = TRAIN_METHODS[method]
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise ConfigError(f"method {method} is not available yet; use one of "
                          f"{', '.join(m for m in TRAIN_METHODS if m != method)}") from None  # fmt: skip


def _train(config: str | None, overrides: list[str], resume: str | None, out: str | None,
           overwrite: bool = False) -> Path:  # fmt: skip
    from fairrl.config import TrainConfig, load_config
    from fairrl.distributed import init_from_env
    from fairrl.report.run import write_run_report
    from fairrl.trainer.run import continue_config

    ranks = init_from_env()  # under torchrun / accelerate launch: join the ranks (a no-op in one process)
    cfg = continue_config(resume, config, overrides, TrainConfig) if resume else load_config(config, overrides)
    if ranks.active and ranks.main:
        import torch.distributed as dist

        _echo(f"data-parallel: {ranks.world} ranks ({dist.get_backend()})")
    run = _train_function(cfg.method)
    run_dir = run(cfg, out=out, resume=resume, console=_echo if ranks.main else lambda s: None, overwrite=overwrite)
    if not ranks.main:  # rank 0 writes the report
        return run_dir
    report = write_run_report(run_dir)
    if report is not None:
        typer.echo("\n" + report.read_text().split("## Training", 1)[0])
        typer.echo(f"run folder: {run_dir}  (report: {report})")
    return run_dir


@app.command()
def train(
    config: Annotated[str | None, typer.Argument(help="YAML config (omit: built-in defaults; with --resume: the run's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set algorithm.beta=0.04")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the run in this folder with its saved config (--set may change e.g. max_steps) from its latest readable checkpoint.")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder (default: <output_dir>/<run_name>).")] = None,
    overwrite: OverwriteOption = False,
    seeds: SeedsOption = None,
    jobs: JobsOption = 1,
) -> None:
    """Train a policy (method: grpo, ppo, sft, kd, dpo or redteam; --set method=sft), evaluating before and after."""
    try:
        if seeds and jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from fairrl.errors import ConfigError

            raise ConfigError("--jobs runs seeds in processes of their own; under torchrun the seeds run one after "
                              "another on all ranks: drop --jobs")  # fmt: skip
        if seeds:
            _seeds(config, set_ or [], seeds, out, jobs, resume, overwrite)
        else:
            _train(config, set_ or [], resume, out, overwrite)
    except FairRLError as err:
        _fail(err)


def _seeds(config, overrides, seeds, out, jobs, resume=None, overwrite=False) -> None:
    from fairrl.config import load_config
    from fairrl.errors import ConfigError
    from fairrl.multiseed import parse_seeds, run_seeds

    if resume or overwrite:
        raise ConfigError("--seeds resumes by itself (rerun the same command); drop --resume / --overwrite")
    if out is None:
        cfg = load_config(config, overrides)
        out = str(Path(cfg.output_dir) / cfg.run_name)
    from fairrl.distributed import init_from_env

    main = init_from_env().main  # under torchrun every seed is a data-parallel run; rank 0 reports
    train_one = lambda c, o, r, d: _train(c, o, r, None if r else d)  # noqa: E731
    report = run_seeds(config, overrides, parse_seeds(seeds), out, train_one, console=_echo if main else lambda s: None,
                       jobs=jobs)  # fmt: skip
    if main:
        typer.echo("\n" + report.read_text())
        typer.echo(f"seeds report: {report}")


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Run folder.")] = "runs/demo",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key of the demo config.")] = None,
    overwrite: OverwriteOption = False,
    seeds: SeedsOption = None,
    jobs: JobsOption = 1,
) -> None:
    """The main job: GRPO on BBQ + reasoning with the packaged SmolLM2-135M-Instruct, before/after report."""
    if seeds:
        try:
            _seeds(str(demo_config_path()), set_ or [], seeds, "runs/demo_seeds" if out == "runs/demo" else out,
                   jobs, overwrite=overwrite)  # fmt: skip
        except FairRLError as err:
            _fail(err)
        return
    if not overwrite and (Path(out) / "summary.json").exists() and (Path(out) / "report.md").exists():
        typer.echo((Path(out) / "report.md").read_text())
        typer.echo(f"{out} holds a finished demo (above); pass --overwrite or --out DIR to run again")
        return
    resume = out if not overwrite and (Path(out) / "config.yaml").is_file() else None
    if resume:
        typer.echo(f"{out} holds an interrupted demo; resuming it (--overwrite starts over)")
    try:
        _train(None if resume else str(demo_config_path()), set_ or [], resume, out, overwrite)
    except FairRLError as err:
        _fail(err)


@app.command()
def compare(
    config: Annotated[str | None, typer.Argument(help="YAML training config (omit: the demo's).")] = None,
    methods: Annotated[str, typer.Option(help="Comma list of grpo, ppo, dpo, sft, kd.")] = "grpo,ppo,dpo,sft,kd",
    seeds: Annotated[str, typer.Option(help="Seeds of every arm: 0,1,2 or 0-4.")] = "0,1,2",
    budget: Annotated[int | None, typer.Option(min=1, help="Training sequences per run (default: the config's max_steps of GRPO).")] = None,
    ratios: Annotated[str | None, typer.Option(help="Debiasing shares of the data mixture to sweep, e.g. config,0.2,0.5 (config: the config's own mixture; the default).")] = None,
    out: Annotated[str, typer.Option(help="Comparison folder (rerun the same command to resume).")] = "runs/compare",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key of the config, for every arm.")] = None,
    jobs: JobsOption = 1,
    variant: Annotated[list[str] | None, typer.Option(help="NAME: KEY=VALUE; KEY=VALUE - an arm of every method with these overrides (repeat; e.g. 'vade: algorithm.prompt_sampler=vade' next to 'plain:').")] = None,
) -> None:
    """Training strategies side by side at an equal budget: one arm per method (ratio, variant), several seeds."""
    try:
        from fairrl.compare.plan import parse_methods, parse_ratios, parse_variants
        from fairrl.compare.run import run_compare
        from fairrl.distributed import init_from_env
        from fairrl.errors import ConfigError
        from fairrl.multiseed import parse_seeds

        ranks = init_from_env()  # under torchrun every run is data-parallel; rank 0 reports
        if ranks.active and jobs > 1:
            raise ConfigError("--jobs runs seeds in processes of their own; under torchrun the runs go one after "
                              "another on all ranks: drop --jobs")  # fmt: skip
        train_one = lambda c, o, r, d: _train(c, o, r, None if r else d)  # noqa: E731
        report = run_compare(config or str(demo_config_path()), set_ or [], parse_methods(methods), parse_seeds(seeds),
                             parse_ratios(ratios), budget, out, train_one, console=_echo if ranks.main else lambda s: None,
                             jobs=jobs, variants=parse_variants(variant))  # fmt: skip
    except FairRLError as err:
        _fail(err)
    if ranks.main:
        typer.echo("\n" + report.read_text())
        typer.echo(f"comparison: {report}")


@app.command(name="config")
def show_config(
    config: Annotated[str | None, typer.Argument(help="YAML config or packaged name to validate and print.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    demo_: Annotated[bool, typer.Option("--demo", help="Show the demo's config.")] = False,
    kind: Annotated[str, typer.Option(help="Which run the config is for: train, rm or dpo.")] = "train",
) -> None:
    """Validate a config and print it fully resolved (defaults filled in; no CONFIG: every default)."""
    from fairrl.config import SCHEMAS, dump_config, load_config
    from fairrl.errors import ConfigError

    try:
        if kind not in SCHEMAS:
            raise ConfigError(f"--kind must be one of {', '.join(SCHEMAS)}, got {kind!r}")
        cfg = load_config(str(demo_config_path()) if demo_ else config, set_ or [], schema=SCHEMAS[kind])
    except FairRLError as err:
        _fail(err)
    typer.echo(dump_config(cfg))


@app.command(name="eval")
def evaluate(
    model: Annotated[list[str], typer.Option("--model", help="Built-in name, folder, hub id or run folder (repeat to compare).")],
    suite: Annotated[str, typer.Option(help="Comma-separated: bbq, stereoset, crows_pairs, bold, reasoning.")] = "bbq,stereoset,crows_pairs,bold,reasoning",
    limit: Annotated[int | None, typer.Option(min=1, help="At most N items per category (BBQ: per category and context condition).")] = None,
    categories: Annotated[str | None, typer.Option(help="Comma-separated categories / bias types / domains / tasks; suite:name for one suite.")] = None,
    out: Annotated[str, typer.Option(help="Output folder.")] = "runs/eval",
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    bbq_mode: Annotated[str, typer.Option(help="BBQ scoring: likelihood or generation.")] = "likelihood",
    permutations: Annotated[int, typer.Option(min=1, max=3, help="BBQ option-order rotations averaged (likelihood mode).")] = 3,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="BOLD continuation / BBQ generation length.")] = 32,
    bold_scorer: Annotated[str, typer.Option(help="BOLD scorer: vader or a dotted path to fn(texts) -> scores.")] = "vader",
    source: Annotated[list[str] | None, typer.Option(help="SUITE=hub-id-or-path, e.g. bbq=./bbq or gsm8k=openai/gsm8k.")] = None,
    seed: int = 0,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples for the 95% intervals.")] = 1000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
    config: Annotated[str | None, typer.Option(help="Instead of suites: the held-out sets this training config builds.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key of --config.")] = None,
) -> None:
    """Evaluate one or more models on BBQ, StereoSet, CrowS-Pairs, BOLD and reasoning, side by side."""
    try:
        from fairrl.distributed import init_from_env
        from fairrl.recipes.evaluate import run_config_eval, run_suites

        echo = _echo if init_from_env().main else lambda s: None  # under torchrun: items sharded, rank 0 reports
        if config is not None or set_:
            run_config_eval(model, config, set_ or [], out, console=echo)
            return
        from fairrl.errors import ConfigError
        from fairrl.eval.suite import SuiteOptions, parse_suites

        if bbq_mode not in ("likelihood", "generation"):
            raise ConfigError(f"--bbq-mode must be likelihood or generation, got {bbq_mode!r}")
        sources = {}
        for item in source or []:
            key, sep, value = item.partition("=")
            if not sep or not value:
                raise ConfigError(f"--source {item!r} must look like SUITE=hub-id-or-path (e.g. gsm8k=openai/gsm8k)")
            sources[key.strip().lower().replace("-", "_")] = value.strip()
        unknown = sorted(set(sources) - {"bbq", "stereoset", "crows_pairs", "bold", "gsm8k"})
        if unknown:
            raise ConfigError(f"--source names {unknown}; use bbq, stereoset, crows_pairs, bold or gsm8k")
        opts = SuiteOptions(
            limit=limit,
            categories=[c for c in (categories or "").split(",") if c.strip()] or None,
            batch_size=batch_size, seed=seed, n_boot=n_boot, bbq_mode=bbq_mode, permutations=permutations,
            max_new_tokens=max_new_tokens, bold_scorer=bold_scorer, sources=sources,
        )  # fmt: skip
        run_suites(model, parse_suites(suite), opts, out, console=echo, device=device, dtype=dtype,
                   trust_remote_code=trust_remote_code)  # fmt: skip
    except FairRLError as err:
        _fail(err)


from fairrl.cli_preference import dpo_app, rm_app, score_app  # noqa: E402
from fairrl.cli_redteam import redteam_app  # noqa: E402

app.add_typer(rm_app, name="rm")
app.add_typer(dpo_app, name="dpo")
app.add_typer(score_app, name="score")
app.add_typer(redteam_app, name="redteam")


@redteam_app.command(name="train")
def redteam_train(
    config: Annotated[str | None, typer.Argument(help="YAML config or packaged name (default: the packaged 'redteam').")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set redteam.attack_ratio=0.8")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the run in this folder from its latest readable checkpoint (the attack pool included).")] = None,
    out: Annotated[str | None, typer.Option(help="Run folder (default: <output_dir>/<run_name>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh in a folder that holds a run.")] = False,
    seeds: Annotated[str | None, typer.Option(help="One run per seed (0,1,2) into OUT/seed-<s>, with a seeds report; rerun to resume.")] = None,
) -> None:  # fmt: skip
    """Evo-MARL: train a team (one shared policy) against an evolving attack pool; method: redteam of `fairrl train`."""
    try:
        overrides = ["method=redteam", *(set_ or [])]
        config = config if config is not None or resume else "redteam"
        if seeds:
            _seeds(config, overrides, seeds, out, 1, resume, overwrite)
        else:
            _train(config, overrides if not resume else (set_ or []), resume, out, overwrite)
    except FairRLError as err:
        _fail(err)


@app.command()
def bench(
    model: Annotated[str, typer.Option(help="smollm2-135m-instruct (real weights), arch:smollm2-135m, arch:qwen2.5-0.5b, arch:qwen2.5-1.5b (random init), tiny, or a model folder.")] = "smollm2-135m-instruct",
    prompts: Annotated[int, typer.Option(min=1, help="Prompts per step (P).")] = 1,
    generations: Annotated[int, typer.Option(min=2, help="Completions per prompt (G).")] = 8,
    new_tokens: Annotated[int, typer.Option(min=1, help="Completion tokens, forced on both sides (N).")] = 32,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Target prompt length in tokens, chat template included.")] = 128,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per side.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps per side before those.")] = 1,
    beta: Annotated[float, typer.Option(min=0.0, help="KL coefficient (> 0 adds the reference forward).")] = 0.04,
    lora: Annotated[bool, typer.Option("--lora/--no-lora", help="LoRA r=16 on all linear layers, or full fine-tuning.")] = False,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (both sides, no autocast).")] = "float32",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    no_trl: Annotated[bool, typer.Option("--no-trl", help="Run fairrl's side only.")] = False,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the figures to this JSON file.")] = None,
    seed: int = 0,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward (both sides).")] = False,
    micro_batch: Annotated[int | None, typer.Option(min=1, help="Completions per forward/backward on both sides (divides G or is a multiple of it).")] = None,
    nproc: Annotated[int | None, typer.Option(min=2, help="Data-parallel scaling instead: fairrl's step on 1 and on N ranks (gloo on CPU, one GPU per rank), then TRL's on 1 and N processes under accelerate (same global batch; --no-trl skips it): tokens/s, speedup and scaling efficiency; --prompts must be a multiple of N.")] = None,
) -> None:
    """Time fairrl's GRPO step against TRL's GRPOTrainer on the same model and forced token counts."""
    from fairrl.bench.report import format_table
    from fairrl.bench.run import run_bench
    from fairrl.bench.workload import BenchSpec
    from fairrl.fsutil import write_json_atomic

    spec = BenchSpec(
        model=model, prompts=prompts, generations=generations, new_tokens=new_tokens, prompt_tokens=prompt_tokens,
        steps=steps, warmup=warmup, beta=beta, lora=lora, dtype=dtype, device=device, trl=not no_trl, seed=seed,
        threads=threads, gradient_checkpointing=gradient_checkpointing, micro_batch=micro_batch,
    )  # fmt: skip
    try:
        if nproc is not None:  # data-parallel scaling of fairrl's and TRL's steps (fairrl.bench.scaling)
            from fairrl.bench.scaling import run_scaling, scaling_table

            report = run_scaling(spec.validate(), nproc, console=_echo)
            table = scaling_table(report)
        else:
            report = run_bench(spec, console=_echo)
            table = format_table(report)
    except FairRLError as err:
        _fail(err)
    typer.echo("\n" + table)
    if json_out:
        write_json_atomic(Path(json_out), report)
        typer.echo(f"wrote {json_out}")


@app.command(name="explore")
def explore(
    study: Annotated[str, typer.Argument(help="Study YAML: search space (debias share, method, config keys), objectives, constraints, sampler.")],
    out: Annotated[str | None, typer.Option(help="Study folder (default: runs/explore/<study_name>).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default: SQLite OUT/study.db); e.g. postgresql+psycopg://user@host/db for workers on several machines.")] = None,
    join: Annotated[bool, typer.Option("--join", help="Work on a study another process or machine started (same --storage).")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this machine.")] = 1,
    report: Annotated[bool, typer.Option("--report", help="Only rebuild trials.csv, pareto.png/html and explore.md from the storage.")] = False,
    skip_report: Annotated[bool, typer.Option("--skip-report", hidden=True)] = False,
) -> None:  # fmt: skip
    """FairReason explorer: search data mixture x method x hyperparameters for the accuracy-fairness Pareto front."""
    try:
        from fairrl.explore.run import run_explore

        train_one = lambda c, o, r, d: _train(c, o, r, None if r else d)  # noqa: E731
        run_explore(study, train_one, _echo, out=out, storage=storage, join=join, workers=workers,
                    report=not skip_report, report_only=report)  # fmt: skip
    except FairRLError as err:
        _fail(err)


@app.command(name="export")
def export(
    run_dir: Annotated[str, typer.Argument(help="A finished GRPO or DPO run folder (with final/).")],
    out: Annotated[str, typer.Option(help="New (or empty) folder to write.")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge LoRA into the base weights (else: adapter + base/).")] = False,
) -> None:
    """Write a run's trained model as a folder transformers / PEFT load offline, with a model card."""
    from fairrl.recipes.export import export_run

    try:
        export_run(run_dir, out, merge=merge, console=_echo)
    except FairRLError as err:
        _fail(err)


def main() -> None:  # pragma: no cover - console entry for `python -m fairrl`
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # deprecation notices from inside transformers/peft are not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; resume with `fairrl train --resume RUN_DIR`", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
