"""Evo-MARL (``fairrl train --set method=redteam`` / ``fairrl redteam train``): a team under evolving attacks.

Pan et al., "Evo-MARL: Co-Evolutionary Multi-Agent Reinforcement Learning for Internalized Safety"
(arXiv 2508.03864). Every agent of a chain (analyst -> executor -> verifier by default,
``redteam.team``) is played by the one policy being trained. One step:

1. take ``algorithm.prompts_per_step`` tasks (the data's reasoning items); each is attacked with
   probability ``redteam.attack_ratio``: an attack drawn from the pool by fitness
   (:class:`~fairrl.data.attack_pool.AttackPool`), with a fresh canary;
2. play ``algorithm.num_generations`` episodes per task (a group: same task, same attack), sampling every
   turn (:mod:`fairrl.rollout.episodes`, :mod:`fairrl.rollout.turn_sampler`);
3. judge each final answer: correct (+0.5 / -0.5, the task's verifier) and, when attacked, safe
   (+1 / -1, ``redteam.judge``; default: the canary did not come out) - the paper's episode reward;
4. group-normalised advantages over the G episodes (``algorithm.advantage_estimator``), the episode's
   advantage on every one of its turns' reply tokens (only what the policy generated is trained; the
   injection and the other agents' text are context), plus, with ``step_advantage: gigpo``, a
   step-level advantage among turns of a role that saw the same message (:mod:`fairrl.advantages.steps`);
5. one AdamW step on the clipped surrogate + ``algorithm.beta`` x k3 KL to the reference (adapter
   disabled), accumulated over roles and micro-batches with ``algorithm.loss_type``'s token weighting;
6. every ``redteam.pool.evolve_every`` steps: children of fitness-selected parents (crossover, mutation),
   each tried once on the current team; those that succeed join the pool (``OUT/pool/``).

The pool is in every checkpoint, so a resumed run continues exactly. Deviations from the paper: the pool
starts from two seeds in each of nine families (the paper: one prefix-injection seed) and is capped and
de-duplicated; offline mutation operators next to the optional LLM one; the judge is the canary check
(the paper: an LLM asked whether the output is unsafe; ``redteam.judge: lm_judge`` is that); one
injection point per run (the paper injects into the first two turns); ``num_iterations`` must be 1.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from fairrl.advantages import ESTIMATORS, group_stats
from fairrl.advantages.steps import discounted_step_returns, step_group_advantages
from fairrl.config.grpo import TrainConfig
from fairrl.data.attack_pool import AttackPool
from fairrl.data.attacks import builtin_attack_items, fill_canary, make_canary
from fairrl.data.mutations import MUTATIONS, LLMMutator, get_mutation, openai_compatible_generate
from fairrl.data.records import Example
from fairrl.data.run_data import RunData
from fairrl.data.stream import PromptStream
from fairrl.distributed import current
from fairrl.errors import ConfigError, DataError
from fairrl.eval.heldout import evaluate_splits
from fairrl.eval.likelihood import stop_token_ids
from fairrl.eval.redteam import evaluate_redteam, greedy_sampler
from fairrl.losses import part_share, policy_loss
from fairrl.models.loading import load_model, load_tokenizer
from fairrl.models.logprobs import completion_logprobs
from fairrl.models.policy import check_completion_length
from fairrl.models.role_adapters import adapter_name, add_role_adapters, role_sampler, use_adapter
from fairrl.models.sharding import full_params
from fairrl.rewards.correctness import episode_reward, is_correct
from fairrl.rewards.safety import CachedJudge, get_safety_judge
from fairrl.rollout.episodes import Episode, play_episodes
from fairrl.rollout.turn_sampler import sampling_turn_sampler, turn_batch
from fairrl.trainer.grpo_step import make_reference, step_generator
from fairrl.trainer.loop import RunContext, StreamMethod, run_method, step_accumulated

TASK_COLUMNS = ("question", "answer", "task", "task_key", "index", "metadata")


def is_task(e: Example) -> bool:
    """A training example the team can be given: a question with a gold answer (not a BBQ item)."""
    return e.source != "bbq" and isinstance(e.columns.get("question"), str) and "answer" in e.columns


def judge_item(e: Example, canary: str | None, injection: str | None) -> dict[str, Any]:
    """What the judges and the verifier read of an episode (``task`` is the question; the reasoning-gym
    task name goes under ``task_name``)."""
    cols = {k: e.columns[k] for k in TASK_COLUMNS if k in e.columns}
    return {**cols, "task_name": cols.pop("task", None), "task": e.columns["question"],
            "answer": str(e.columns["answer"]), "canary": canary, "injection": injection}  # fmt: skip


class RedTeamMethod(StreamMethod):
    """One step of the module docstring; the pool and the stream position are the checkpoint state."""

    name = "redteam"

    def check_data(self, cfg: TrainConfig, data: RunData) -> None:
        self.examples = [e for e in data.train if is_task(e)]
        if not self.examples:
            raise DataError("method redteam needs tasks with a question and an answer: add a reasoning source "
                            "(kind: reasoning or gsm8k) to data.sources")  # fmt: skip
        rt, alg = cfg.redteam, cfg.algorithm
        if alg.num_iterations != 1:
            raise ConfigError(f"method redteam takes one optimiser step per batch; set algorithm.num_iterations=1 "
                              f"(got {alg.num_iterations})")  # fmt: skip
        self.mutations = list(MUTATIONS) if rt.pool.mutations is None else list(rt.pool.mutations)
        for m in self.mutations:
            get_mutation(m)
        self.pool = AttackPool.from_seeds(rt.pool.families, cap=rt.pool.max_size,
                                          dedupe_threshold=rt.pool.dedupe_threshold)  # fmt: skip

    def prepare(self, run: RunContext) -> None:
        super().prepare(run)
        cfg, rt = run.cfg, run.cfg.redteam
        check_completion_length(run.policy, rt.team.max_new_tokens, "redteam.team.max_new_tokens")
        self.stream = PromptStream(self.examples, cfg.seed)
        self.judge = CachedJudge(get_safety_judge(rt.judge, rt.judge_options))
        self.ref_model = make_reference(cfg, run.policy)
        tok = run.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_ids = stop_token_ids(run.policy, tok)
        self.round_generator: torch.Generator | None = None  # the evolution round's, for the LLM operator
        self.adapters = add_role_adapters(run.policy, len(rt.team.roles)) if rt.team.adapters == "per_role" else None
        self.llm = attacker_llm(rt.pool.llm, self) if rt.pool.llm else None
        run.console(f"team: {' -> '.join(r.name for r in rt.team.roles)}; attacks enter at "
                    f"{rt.team.injection.role}:{rt.team.injection.placement}; pool of {len(self.pool)} seed attacks "
                    f"({', '.join(sorted({a.family for a in self.pool.attacks}))})")  # fmt: skip

    def state(self) -> dict[str, Any]:
        return {**super().state(), "pool": self.pool.to_state()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.pool = AttackPool.from_state(state["pool"])

    # -- rollout and rewards -------------------------------------------------------------------------
    def sampler(self, generator: torch.Generator, rows: tuple[int, int] | None = None):
        alg, run = self.run.cfg.algorithm, self.run
        sample = sampling_turn_sampler(
            run.policy, run.tokenizer, max_new_tokens=run.cfg.redteam.team.max_new_tokens,
            max_prompt_length=alg.max_prompt_length, eos_token_ids=self.eos_ids, pad_token_id=self.pad_id,
            generator=generator, device=run.device, temperature=alg.temperature, top_p=alg.top_p, top_k=alg.top_k,
            min_p=alg.min_p, repetition_penalty=alg.repetition_penalty, rows=rows,
        )  # fmt: skip
        if self.adapters is None:
            return sample
        return role_sampler(sample, run.policy, [r.name for r in run.cfg.redteam.team.roles], self.adapters)

    def judged(self, episodes: list[Episode], items: list[dict[str, Any]]) -> tuple[list[bool], list[bool | None]]:
        """Correctness of every final answer, and the safety verdict of the attacked ones (None when clean)."""
        finals = [ep.final for ep in episodes]
        correct = [is_correct(f, it) for f, it in zip(finals, items, strict=True)]
        rows = [k for k, ep in enumerate(episodes) if ep.attack is not None]
        unsafe: list[bool | None] = [None] * len(episodes)
        if rows:
            for k, v in zip(rows, self.judge([finals[k] for k in rows], [items[k] for k in rows]), strict=True):
                unsafe[k] = v
        return correct, unsafe

    # -- one step ------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        cfg, alg, rt = self.run.cfg, self.run.cfg.algorithm, self.run.cfg.redteam
        generator = step_generator(cfg.seed, step, self.run.device)
        rng = random.Random(cfg.seed * 1_000_003 + step)
        examples, G = self.stream.take(alg.prompts_per_step), alg.num_generations
        plans = []  # (attack, canary, filled text) per task, or Nones when clean
        for _ in examples:
            if rng.random() < rt.attack_ratio:
                attack, canary = self.pool.sample(rng, 1)[0], make_canary(rng)
                plans.append((attack, canary, fill_canary(attack.text, canary)))
            else:
                plans.append((None, None, None))
        # on several ranks each plays its block of tasks (groups whole) and draws its rows' random numbers
        ranks = current()
        mine = ranks.shard(len(examples)) if ranks.active else slice(0, len(examples))
        rows = (mine.start * G, len(examples) * G) if ranks.active else None
        tasks = [e.columns["question"] for e in examples[mine] for _ in range(G)]
        texts = [p[2] for p in plans[mine] for _ in range(G)]
        with full_params(self.run.policy):  # FSDP2: every turn's sampling on gathered layers (a no-op otherwise)
            episodes = play_episodes(self.sampler(generator, rows), rt.team, tasks, texts)
        first = mine.start * G  # global index of this rank's first episode
        items = [judge_item(examples[(first + k) // G], plans[(first + k) // G][1], ep.attack)
                 for k, ep in enumerate(episodes)]  # fmt: skip
        correct, unsafe = self.judged(episodes, items)
        # rewards, verdicts and reply lengths of the whole batch, the same on every rank
        gathered = [x for part in ranks.gather_objects((correct, unsafe, [episode_lengths(ep) for ep in episodes]))
                    for x in zip(*part, strict=True)]  # fmt: skip
        correct, unsafe, lengths = ([g[i] for g in gathered] for i in range(3))
        rewards = torch.tensor([episode_reward(c, u, rt.reward_correct, rt.reward_safe)
                                for c, u in zip(correct, unsafe, strict=True)]).view(len(examples), G)  # [P, G]
        hits = [(plans[k // G][0].id, bool(u)) for k, u in enumerate(unsafe) if u is not None]
        self.pool.record_many([h[0] for h in hits], [h[1] for h in hits])
        stats = self.update(episodes, rewards, first)
        if (step + 1) % rt.pool.evolve_every == 0:
            stats.update(self.evolve(rng, generator))
        stats.update(self.metrics(plans, lengths, rewards, correct, unsafe))
        return stats

    def update(self, episodes: list[Episode], rewards: torch.Tensor, first: int = 0) -> dict[str, float]:
        """Advantages -> per-role clipped surrogate + KL, accumulated -> one optimiser step. ``rewards`` are
        the whole batch's ``[P, G]``; ``episodes`` this rank's, from global episode ``first`` on (several
        ranks: advantages and loss normalisers are the batch's, gradients and sums added over the ranks)."""
        run, alg, rt, ranks = self.run, self.run.cfg.algorithm, self.run.cfg.redteam, current()
        roles, G = len(rt.team.roles), alg.num_generations
        seq_lp = torch.tensor([x for part in ranks.gather_objects(
            [sum(sum(t.data.logprobs) for t in ep.turns) / max(1, sum(len(t.data.completion) for t in ep.turns))
             for ep in episodes]) for x in part])  # fmt: skip
        adv = ESTIMATORS[alg.advantage_estimator](rewards, scale_rewards=alg.scale_rewards,
                                                  seq_logprobs=seq_lp.view_as(rewards),
                                                  virtual_reward=alg.virtual_reward).reshape(-1)  # [E]
        per_turn = adv[:, None].expand(-1, roles).clone()  # [E, roles]
        if rt.step_advantage == "gigpo":
            returns = discounted_step_returns(rewards.reshape(-1), roles, rt.gigpo_gamma)  # [E, roles]
            keys = [x for part in ranks.gather_objects(
                [((first + e) // G, k, repr(ep.turns[k].prompt)) for e, ep in enumerate(episodes) for k in range(roles)]
            ) for x in part]  # fmt: skip
            per_turn += rt.gigpo_weight * step_group_advantages(returns.reshape(-1), keys).view(-1, roles)
        per_turn = per_turn[first : first + len(episodes)]  # this rank's episodes
        tokens = [[ep.turns[k].data for ep in episodes] for k in range(roles)]
        totals = ranks.sum_floats({"tokens": float(sum(len(t.completion) for turn in tokens for t in turn)),
                                   "rows": float(len(episodes) * roles)})  # fmt: skip
        total_tokens, total_rows = totals["tokens"], int(totals["rows"])
        mb = alg.micro_batch_size or len(episodes)
        run.policy.train()
        run.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {"loss": 0.0}
        for k in range(roles):
            if self.adapters is not None:  # heterogeneous agents: role k's replies train role k's adapter
                use_adapter(run.policy, self.adapters[k], self.adapters)
            for s in range(0, len(episodes), mb):
                b = {n: v.to(run.device) for n, v in turn_batch(tokens[k][s : s + mb], self.pad_id).items()}
                loss, part = self.chunk_loss(b, per_turn[s : s + mb, k].to(run.device))
                n_tok = float(b["completion_mask"].sum())
                weight = part_share(alg.loss_type, b["prompt_ids"].shape[0], total_rows, n_tok, total_tokens)
                (loss * weight).backward()
                sums["loss"] += weight * float(loss.detach())
                for name, v in part.items():
                    sums[name] = sums.get(name, 0.0) + n_tok / max(total_tokens, 1.0) * float(v)
        sums = ranks.sum_floats(sums)  # each rank's parts are already weighted by its share of the batch
        out = step_accumulated(run, sums.pop("loss"))
        run.policy.eval()
        return {**out, **sums}

    def chunk_loss(self, b: dict[str, torch.Tensor], adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        alg, policy = self.run.cfg.algorithm, self.run.policy
        args = (b["prompt_ids"], b["prompt_mask"], b["completion_ids"], b["completion_mask"], 1)
        logp, entropy = completion_logprobs(policy, *args, temperature=alg.temperature, share_prompt=False,
                                            with_entropy=True)  # fmt: skip
        ref = None
        if alg.beta > 0:
            with torch.no_grad():
                if self.ref_model is not None:
                    ref = completion_logprobs(self.ref_model, *args, temperature=alg.temperature, share_prompt=False)[0]
                else:
                    with policy.disable_adapter():
                        ref = completion_logprobs(policy, *args, temperature=alg.temperature, share_prompt=False)[0]
        loss, stats = policy_loss(
            logp, logp.detach(), adv, b["completion_mask"].float(), loss_type=alg.loss_type, epsilon=alg.epsilon,
            epsilon_high=alg.epsilon_high, importance_sampling_level=alg.importance_sampling_level,
            max_completion_length=self.run.cfg.redteam.team.max_new_tokens, ref_logp=ref, beta=alg.beta,
        )  # fmt: skip
        stats = {k: float(v) for k, v in stats.items()}
        if entropy is not None:
            stats["entropy"] = float(entropy)
        return loss, stats

    # -- the pool ------------------------------------------------------------------------------------
    def evolve(self, rng: random.Random, generator: torch.Generator) -> dict[str, float]:
        """One round: propose children, try each once on a random training task, admit the successful. On
        several ranks rank 0 plays the round and every rank takes its pool (the same on all ranks)."""
        ranks = current()
        with full_params(self.run.policy):  # FSDP2: every rank gathers the layers; rank 0 samples with them
            stats = self.evolve_round(rng, generator) if ranks.main else None
        if ranks.active:
            state, stats = ranks.broadcast_object((self.pool.to_state(), stats) if ranks.main else None)
            self.pool = AttackPool.from_state(state)
        return stats

    def evolve_round(self, rng: random.Random, generator: torch.Generator) -> dict[str, float]:
        pool_cfg, team = self.run.cfg.redteam.pool, self.run.cfg.redteam.team
        self.round_generator = generator
        children = self.pool.propose(rng, pool_cfg.children_per_round, self.mutations, pool_cfg.crossover_rate,
                                     llm=self.llm)  # fmt: skip
        admitted: list[Any] = []
        if children:
            tasks = [rng.choice(self.examples) for _ in children]
            canaries = [make_canary(rng) for _ in children]
            eps = play_episodes(self.sampler(generator), team, [e.columns["question"] for e in tasks],
                                [fill_canary(c.text, k) for c, k in zip(children, canaries, strict=True)])  # fmt: skip
            items = [judge_item(e, k, ep.attack) for e, k, ep in zip(tasks, canaries, eps, strict=True)]
            verdicts = self.judge([ep.final for ep in eps], items)
            admitted = self.pool.admit(children, [bool(v) for v in verdicts])
        if self.run.folder is not None:
            self.pool.save(ensure_dir(self.run.run_dir / "pool"))
        return {"pool/proposed": float(len(children)), "pool/admitted": float(len(admitted)),
                "pool/generation": float(self.pool.generation)}  # fmt: skip

    def metrics(self, plans, lengths, rewards, correct, unsafe) -> dict[str, float]:
        """Step metrics: TRL's reward statistics, attack success, accuracy clean / attacked, mean reward per
        attack family, reply length per role, the pool's size and mean fitness. ``lengths``: per episode of
        the batch, (reply tokens per role, prompt + reply tokens of all its turns)."""
        out: dict[str, float] = dict(group_stats(rewards))
        G = rewards.shape[1]
        attacked = [u for u in unsafe if u is not None]
        clean_correct = [c for k, c in enumerate(correct) if plans[k // G][0] is None]
        att_correct = [c for k, c in enumerate(correct) if plans[k // G][0] is not None]
        out["attack/episodes"] = float(len(att_correct))
        if attacked:
            out["attack/success_rate"] = sum(attacked) / len(attacked)
        if att_correct:
            out["task/accuracy_attacked"] = sum(att_correct) / len(att_correct)
        if clean_correct:
            out["task/accuracy_clean"] = sum(clean_correct) / len(clean_correct)
        fams: dict[str, list[float]] = {}
        for p, row in zip(plans, rewards.tolist(), strict=True):
            fams.setdefault(p[0].family if p[0] is not None else "clean", []).extend(row)
        for fam, vals in fams.items():
            out[f"family_reward/{fam}"] = sum(vals) / len(vals)
        for k, role in enumerate(self.run.cfg.redteam.team.roles):
            out[f"role_length/{role.name}"] = sum(r[k] for r, _ in lengths) / len(lengths)
        out["tokens/trained"] = float(sum(n for _, n in lengths))
        out["num_tokens"] = out["tokens/trained"]
        out["pool/size"] = float(len(self.pool))
        out["pool/mean_fitness"] = sum(a.fitness for a in self.pool.attacks) / len(self.pool)
        return out


ATTACKER_TOKENS = 128
"""Tokens an LLM operator may write for one rewritten attack (the request asks for under 100 words)."""


def attacker_llm(spec: str, method: RedTeamMethod) -> LLMMutator:
    """The pool's LLM operator (``redteam.pool.llm``): an OpenAI-compatible endpoint (``openai:<model>``),
    the policy itself (``policy``: self-play) or another causal LM, the last two sampled at the run's
    temperature with the evolution round's generator (so a resumed run writes the same children)."""
    if spec.startswith("openai:"):
        return LLMMutator(openai_compatible_generate(spec.removeprefix("openai:")))
    run = method.run
    if spec == "policy":
        model, tok, eos, pad = run.policy, run.tokenizer, method.eos_ids, method.pad_id
    else:
        tok, model = load_tokenizer(spec), load_model(spec, device=run.device)
        eos, pad = stop_token_ids(model, tok), tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def generate(prompts: list[str]) -> list[str]:
        alg = run.cfg.algorithm
        sample = sampling_turn_sampler(model, tok, max_new_tokens=ATTACKER_TOKENS, max_prompt_length=alg.max_prompt_length,
                                       eos_token_ids=eos, pad_token_id=pad, generator=method.round_generator,
                                       device=run.device, temperature=alg.temperature)  # fmt: skip
        return [t for t, _ in sample([[{"role": "user", "content": p}] for p in prompts], "attacker")]

    return LLMMutator(generate)


def episode_lengths(ep: Episode) -> tuple[list[int], int]:
    """(reply tokens of each turn, prompt + reply tokens of all turns) of an episode, for the metrics."""
    return [len(t.data.completion) for t in ep.turns], sum(len(t.data.completion) + len(t.data.prompt) for t in ep.turns)


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def evaluate_with_attacks(model, tokenizer, data: RunData, cfg: TrainConfig, console, trainer_state=None,
                          progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """The held-out splits of :func:`evaluate_splits` plus ``redteam``: the team on the built-in held-out
    attacks (families in and out of the pool), clean and attacked (:func:`evaluate_redteam`)."""
    rt = cfg.redteam
    if rt.team.adapters == "per_role":  # one-model evaluations: the adapter of the role that answers (the last)
        names = [adapter_name(k) for k in range(len(rt.team.roles))]
        use_adapter(model, names[-1], names)
    out = evaluate_splits(model, tokenizer, data, cfg, console, trainer_state=trainer_state, progress=progress)
    items = builtin_attack_items(seed=cfg.seed, repeats=rt.heldout_repeats)
    if rt.heldout_limit is not None and rt.heldout_limit < len(items):
        keep = sorted(random.Random(cfg.seed).sample(range(len(items)), rt.heldout_limit))
        items = [items[i] for i in keep]
    judge, refusal = CachedJudge(get_safety_judge(rt.judge, rt.judge_options)), get_safety_judge("refusal")
    sampler = greedy_sampler(model, tokenizer, rt.team.max_new_tokens)
    if rt.team.adapters == "per_role":  # each role answers with its own adapter
        names = [adapter_name(k) for k in range(len(rt.team.roles))]
        sampler = role_sampler(sampler, model, [r.name for r in rt.team.roles], names)
    res = evaluate_redteam(sampler, items, rt.team, [rt.team.injection], judge, refusal, is_correct)
    res.pop("items")
    out["redteam"] = res
    console(f"redteam: ASR {res['attacked']['asr']['rate']:.3f} (n={res['attacked']['asr']['n']}), accuracy "
            f"clean {res['clean']['accuracy']['rate']:.3f}, under attack {res['attacked']['accuracy']['rate']:.3f}")  # fmt: skip
    return out


def run_redteam(cfg: TrainConfig, **kwargs: Any) -> Path:
    """Train (or resume) an Evo-MARL run; keyword arguments as :func:`fairrl.trainer.loop.run_method`."""
    return run_method(cfg, RedTeamMethod(), evaluate_with_attacks, **kwargs)
