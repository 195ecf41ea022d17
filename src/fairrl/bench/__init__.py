"""``fairrl bench``: fairrl's GRPO step against TRL's ``GRPOTrainer`` step on the same workload.

Both sides get the same model weights, dtype, prompts, group size, forced completion length, beta,
learning rate and loss type; their steps alternate in one process (warm-up steps excluded), and every
step is split into phases: generate, reference log-probs, forward+backward, optimiser, other.

Modules:

- :mod:`fairrl.bench.models`: the benchmark model (packaged SmolLM2-135M-Instruct, random-init published
  architectures, a tiny test model) and its tokenizer;
- :mod:`fairrl.bench.workload`: the spec, the prompts (a target token count) and the reward;
- :mod:`fairrl.bench.timing`: phase clocks and the per-step memory probe;
- :mod:`fairrl.bench.floor`: FLOPs and bytes of one step and the device's peak, i.e. the hardware floor;
- :mod:`fairrl.bench.fairrl_step` / :mod:`fairrl.bench.trl_step`: one timed step of each side;
- :mod:`fairrl.bench.run`: alternation of the two sides and the JSON report;
- :mod:`fairrl.bench.report`: min/median/max summaries, ratios, speedup and the printed table.
"""
