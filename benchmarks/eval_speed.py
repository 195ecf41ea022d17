"""BBQ likelihood scoring speed: fairrl's batched, prefix-shared path against the plain way, same run.

    .venv/bin/python benchmarks/eval_speed.py [--items 24] [--batch-size 16] [--model smollm2-135m-instruct]

Both ways score the same BBQ items (sampled across all 11 categories) under the same 3 option-order
rotations with the same definition (mean log-prob of the option text + end-of-turn token), so their
predictions must agree; the script checks that. The plain way is one full forward per
(rotation, option), unbatched, with every position's logits computed
(:func:`fairrl.eval.likelihood.reference_option_logprobs`).

Also printed: the tokens each way pushes through the model, the matmul throughput this machine reaches
(a [512 x 576] x [576 x 1536] float32 GEMM, the shape of the 135M model's MLP), and the fast path's
distance from the compute floor (2 * non-embedding params * tokens + the logits it needs).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from fairrl.data.bbq import CATEGORIES, bbq_examples, bbq_messages, load_bbq
from fairrl.eval.bbq import likelihood_predictions, rotated
from fairrl.eval.likelihood import common_prefix_length, encode_prompt, reference_option_logprobs
from fairrl.models.loading import load_model, load_tokenizer

ROTATIONS = 3


def sample_items(n: int, seed: int) -> list:
    """``n`` BBQ examples, round-robin over the 11 categories, deterministic."""
    rng = random.Random(seed)
    by_cat = {c: load_bbq(None, [c]) for c in CATEGORIES}
    picked = []
    while len(picked) < n:
        for c in CATEGORIES:
            if len(picked) < n:
                picked.append(by_cat[c].pop(rng.randrange(len(by_cat[c]))))
    return bbq_examples(picked, seed=seed)


def plain_predictions(model, tokenizer, examples) -> list[int]:
    """Argmax of option scores averaged over the rotations, one forward per (rotation, option)."""
    preds = []
    for e in examples:
        c = e.columns
        total = [0.0] * len(c["answers"])
        for shift in range(ROTATIONS):
            prompt = bbq_messages(c["context"], c["question"], rotated(c["answers"], shift))
            row = reference_option_logprobs(model, tokenizer, [prompt], [c["answers"]])[0]
            total = [t + r for t, r in zip(total, row, strict=True)]
        preds.append(max(range(len(total)), key=total.__getitem__))
    return preds


def token_counts(tokenizer, examples) -> dict[str, int]:
    """Tokens through the model. Plain: prompt + option for every (rotation, option). Fast: the prefix
    all prompts share once, then per item its rotations' common prefix, each rotation's rest, and each
    option but its last token (see :mod:`fairrl.eval.likelihood`)."""
    prompts = [
        [
            encode_prompt(
                tokenizer,
                bbq_messages(e.columns["context"], e.columns["question"], rotated(e.columns["answers"], s)),
            )
            for s in range(ROTATIONS)
        ]
        for e in examples
    ]
    start = common_prefix_length([p for rots in prompts for p in rots])
    plain, fast = 0, start
    for e, rots in zip(examples, prompts, strict=True):
        opts = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in e.columns["answers"]]
        plain += sum(len(p) + o for p in rots for o in opts)
        k = common_prefix_length(rots)
        fast += (k - start) + sum(len(p) - k for p in rots) + ROTATIONS * sum(o - 1 for o in opts)
    return {"plain": plain, "fast": fast}


def gemm_gflops(seconds: float = 2.0) -> float:
    """Sustained float32 matmul rate of this machine on the model's MLP shape."""
    a, b = torch.randn(512, 576), torch.randn(576, 1536)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 512 * 576 * 1536 * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    examples = sample_items(args.items, args.seed)

    likelihood_predictions(model, tokenizer, examples[:2], permutations=ROTATIONS, batch_size=2)  # warm-up
    t0 = time.perf_counter()
    fast, _ = likelihood_predictions(
        model, tokenizer, examples, permutations=ROTATIONS, batch_size=args.batch_size
    )
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = plain_predictions(model, tokenizer, examples)
    t_plain = time.perf_counter() - t0

    tokens = token_counts(tokenizer, examples)
    emb = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - emb.numel()
    logit_rows = sum(
        ROTATIONS * (1 + sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in e.columns["answers"]))
        for e in examples
    )  # positions whose logits the fast path needs: each rotation's last token, each option token but the eot
    flops_fast = 2 * body * tokens["fast"] + 2 * emb.numel() * logit_rows
    peak = gemm_gflops()
    agree = sum(f == p for f, p in zip(fast, plain, strict=True))
    figures = {
        "model": args.model,
        "items": len(examples),
        "rotations": ROTATIONS,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "fast_items_per_s": len(examples) / t_fast,
        "plain_items_per_s": len(examples) / t_plain,
        "speedup": t_plain / t_fast,
        "tokens_per_item_fast": tokens["fast"] / len(examples),
        "tokens_per_item_plain": tokens["plain"] / len(examples),
        "gemm_gflops": peak,
        "fast_gflops": flops_fast / t_fast / 1e9,
        "fast_floor_s": flops_fast / (peak * 1e9),
        "fast_s": t_fast,
        "plain_s": t_plain,
        "predictions_agree": f"{agree}/{len(examples)}",
    }
    print(f"BBQ likelihood scoring, {len(examples)} items x {ROTATIONS} rotations x 3 options, {args.model}")
    print(f"  fairrl (batched, prefix-shared): {figures['fast_items_per_s']:.2f} items/s ({t_fast:.1f} s)")
    print(f"  plain (1 forward per option):    {figures['plain_items_per_s']:.2f} items/s ({t_plain:.1f} s)")
    print(f"  speed-up: {figures['speedup']:.1f}x   predictions agree: {figures['predictions_agree']}")
    print(
        f"  tokens per item: {figures['tokens_per_item_fast']:.0f} fast vs "
        f"{figures['tokens_per_item_plain']:.0f} plain"
    )
    print(
        f"  compute: fast path sustains {figures['fast_gflops']:.0f} GFLOP/s; this CPU's GEMM rate "
        f"{peak:.0f} GFLOP/s -> floor {figures['fast_floor_s']:.1f} s "
        f"({t_fast / figures['fast_floor_s']:.1f}x above it)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
