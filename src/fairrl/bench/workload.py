"""What both sides of the benchmark run: the spec, the prompts and the reward.

The prompts are chat conversations of a fixed English text cut to a target token count (chat template
included), so both trainers tokenise the very same ids. The reward is a pseudo-random number drawn
from a hash of the completion: free to compute, identical on both sides, and different within a group,
so advantages are non-zero and the policy-gradient term is not trivially zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from fairrl.config.grpo import keeps_groups
from fairrl.data.records import Example
from fairrl.errors import ConfigError
from fairrl.rewards.base import completion_text

# A fixed passage; words are taken cyclically until the prompt reaches its target length.
PASSAGE = (
    "A hiring committee reviews two applicants for a nursing position. Both have five years of experience, "
    "similar references and the same certification. One is a man in his fifties, the other a woman in her "
    "twenties. The committee must explain which evidence supports its choice, which assumptions it should "
    "avoid, and how it would check that its reasoning treats people from every group in the same way. "
    "Answer step by step, name the relevant facts, and end with a short, clear recommendation."
)
REWARD_NAME = "fairrl.bench.workload:hash_reward"


@dataclass(frozen=True)
class BenchSpec:
    """Everything that defines a benchmark run (the CLI's options)."""

    model: str = "smollm2-135m-instruct"
    prompts: int = 1
    generations: int = 8
    new_tokens: int = 32
    prompt_tokens: int = 128
    steps: int = 5
    warmup: int = 1
    beta: float = 0.04
    lora: bool = False
    dtype: str = "float32"
    device: str = "auto"
    trl: bool = True
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    gradient_checkpointing: bool = False  # both sides
    micro_batch: int | None = None  # completions per forward/backward on both sides (None: all P x G)
    learning_rate: float = 1e-6
    loss_type: str = "grpo"
    probe_seconds: float = 0.5

    def validate(self) -> BenchSpec:
        """The spec itself, or a :class:`ConfigError` naming the first bad option."""
        checks = [
            (self.prompts >= 1, "--prompts must be at least 1"),
            (
                self.generations >= 2,
                "--generations must be at least 2 (GRPO compares completions within a group)",
            ),
            (self.new_tokens >= 1, "--new-tokens must be at least 1"),
            (self.prompt_tokens >= 1, "--prompt-tokens must be at least 1"),
            (self.steps >= 1, "--steps must be at least 1"),
            (self.warmup >= 0, "--warmup must be 0 or more"),
            (self.beta >= 0, "--beta must be 0 or more"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1"),
            (
                self.micro_batch is None or keeps_groups(self.micro_batch, self.generations),
                f"--micro-batch must divide --generations ({self.generations}) or be a multiple of it",
            ),
            (self.learning_rate > 0, "the learning rate must be positive"),
            (
                self.loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"),
                "loss type must be grpo, bnpo, dr_grpo or dapo",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def prompt_length(tokenizer, messages: list[dict[str, str]]) -> int:
    """Tokens of the chat-templated prompt, as fairrl's PromptEncoder and TRL both produce them."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_text(tokenizer, target_tokens: int, index: int) -> str:
    """The longest ``"Case {index}: " + passage words`` whose templated prompt has at most ``target_tokens``.

    Binary search over the word count (token count grows with it). When even the bare header is
    longer than the target (the chat template alone may be), the header is used and is longer.
    """
    words = PASSAGE.split()

    def text(k: int) -> str:
        return f"Case {index}: " + " ".join(words[i % len(words)] for i in range(k))

    lo, hi = 0, max(target_tokens, 1)  # a word is at least one token: k <= target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if prompt_length(tokenizer, _messages(text(mid))) <= target_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


def bench_examples(tokenizer, prompts: int, target_tokens: int) -> list[Example]:
    """``prompts`` fairrl examples (TRL gets the same messages), each about ``target_tokens`` long."""
    out = []
    for i in range(prompts):
        msgs = _messages(prompt_text(tokenizer, target_tokens, i))
        out.append(Example(prompt_id=f"bench-{i}", prompt=msgs, group="bench", source="bench"))
    return out


def hash_reward(prompts, completions, **columns) -> list[float]:
    """Reward in [0, 1): the first 8 bytes of BLAKE2b(completion text) / 2^64 (TRL reward contract)."""
    out = []
    for c in completions:
        digest = hashlib.blake2b(completion_text(c).encode("utf-8"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "big") / 2**64)
    return out
