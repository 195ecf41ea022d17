"""GRPO-family training loop: data -> rollout -> rewards -> advantages -> loss -> update.

One step:
1. take P prompts from the prompt sampler (uniform walk or VADE; its state saved in checkpoints);
2. sample G completions each, prefilling each prompt once (``fairrl.rollout``);
3. score them with the reward functions (TRL contract), combine (``multi_objective_aggregation``),
   optionally add DAPO's overlong penalty;
4. with ``dynamic_sampling``, drop zero-variance groups and refill from the stream, capped
   (:mod:`fairrl.trainer.dynamic_sampling`);
5. turn rewards into advantages with the configured estimator;
6. take ``num_iterations`` optimiser steps on the clipped surrogate (+ beta * k3 KL).

Deviations from TRL's GRPOTrainer, on purpose:
- pi_old for ``num_iterations > 1`` is the sampler's own log-probs (same temperature, no extra
  forward); for ``num_iterations == 1`` it is ``logp.detach()``, as in TRL.
- The LoRA reference model is the adapter-disabled policy (no copy); full fine-tuning keeps a frozen copy
  only when ``beta > 0``.
- Per-group metrics (``group_reward/<group>``, ``group_reward_gap``) are logged with the other step metrics.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from fairrl.advantages import ESTIMATORS, combine_rewards, group_stats
from fairrl.advantages.shaping import group_balance_weights, novelty_sharpening, overlong_penalty
from fairrl.config.grpo import TrainConfig, keeps_groups
from fairrl.data.records import Example, column_names, rows_to_columns, trl_sample
from fairrl.data.stream import PromptStream
from fairrl.distributed import Ranks
from fairrl.losses import kl_k3, part_share, policy_loss
from fairrl.losses.drpo import drpo_loss
from fairrl.losses.rollout_correction import rollout_is_weights
from fairrl.models.logprobs import completion_logprobs
from fairrl.models.sharding import full_params, is_sharded
from fairrl.rewards import RewardLogs, TrainerState, check_weighted_sum, evaluate_rewards, get_reward
from fairrl.rollout.generate import Rollout, left_pad, sample_groups
from fairrl.trainer.allocation import allocated_rollout
from fairrl.trainer.batch import Batch, shard_positions, shard_tokens
from fairrl.trainer.dynamic_sampling import dynamic_sampling
from fairrl.trainer.guard import check_value, check_weights
from fairrl.trainer.microbatch import idle_backward, idle_passes, micro_batches
from fairrl.trainer.optim import clip_gradients


class PromptEncoder:
    """Chat-template rendering and tokenisation, cached per prompt id."""

    def __init__(self, tokenizer, max_prompt_length: int):
        self.tokenizer = tokenizer
        self.max_len = max_prompt_length
        self._cache: dict[tuple[str, int], list[int]] = {}

    def __call__(self, example: Example) -> list[int]:
        key = (example.prompt_id, len(example.prompt))  # XRPO seeding adds an exemplar turn under the same id
        ids = self._cache.get(key)
        if ids is None:
            text = self.tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][-self.max_len :]
            self._cache[key] = ids
        return ids


class GRPOStep:
    """Everything one GRPO step needs, built once per run."""

    def __init__(self, cfg: TrainConfig, policy, tokenizer, device: torch.device, ref_model=None,
                 ranks: Ranks | None = None, engine=None):  # fmt: skip
        self.cfg = cfg
        self.engine = engine
        """A vLLM sampler (:class:`fairrl.rollout.vllm_backend.VLLMRollout`) instead of fairrl's own, or None."""
        self.ranks = ranks or Ranks()
        """Data-parallel ranks (:mod:`fairrl.distributed`); one process by default."""
        self.alg = cfg.algorithm
        self.policy = policy
        self.ref_model = ref_model
        self.tokenizer = tokenizer
        self.device = device
        self.encode = PromptEncoder(tokenizer, self.alg.max_prompt_length)
        self.reward_fns = {
            label: get_reward(spec.name, spec.options)
            for label, spec in zip(cfg.rewards.labels(), cfg.rewards.functions, strict=True)
        }
        self.reward_weights = [spec.weight for spec in cfg.rewards.functions]
        self.trainer_state = TrainerState(global_step=0, max_steps=cfg.max_steps, epoch=0.0)
        """Progress passed to reward functions (``trainer_state``); :meth:`collect` updates it."""
        self.reward_logs = RewardLogs()
        """What reward functions log (``log_metric`` / ``log_extra``) during the current step."""
        self.columns: list[str] = []
        """Every column of the training data (set by :meth:`collect`): each batch carries all of them."""
        self._columns_of: list[Example] | None = None
        self._collected = 0
        eos = tokenizer.eos_token_id
        self.eos_ids = sorted({eos} | set(_as_list(getattr(policy.generation_config, "eos_token_id", None))))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    # -- rollout and rewards -------------------------------------------------------------
    def rollout(self, examples: list[Example], generator: torch.Generator, rows: tuple[int, int] | None = None,
                group_size: int | None = None) -> Batch:  # fmt: skip
        """Sample and score G completions of each example (``group_size``, default num_generations); ``rows``:
        this rank's first completion row and the global batch's row count, when ``examples`` are one rank's
        shard (:meth:`sharded_rollout`)."""
        G = group_size or self.alg.num_generations
        if self.engine is not None:  # vLLM: one sampling seed per call, drawn from the step's generator
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
            r = self.engine.generate(self.alg, [self.encode(e) for e in examples], G, seed + self.ranks.rank,
                                     self.device)  # fmt: skip
            return self.scored(examples, r)
        ids, mask = left_pad([self.encode(e) for e in examples], self.pad_id)
        self.policy.eval()
        r = sample_groups(
            self.policy,
            ids.to(self.device),
            mask.to(self.device),
            group_size=G,
            max_new_tokens=self.alg.max_completion_length,
            eos_token_ids=self.eos_ids,
            pad_token_id=self.pad_id,
            temperature=self.alg.temperature,
            top_p=self.alg.top_p,
            top_k=self.alg.top_k,
            min_p=self.alg.min_p,
            repetition_penalty=self.alg.repetition_penalty,
            generator=generator,
            share_prompt=self.alg.share_prompt,
            rows=rows,
        )
        return self.scored(examples, r)

    def scored(self, examples: list[Example], r: Rollout) -> Batch:
        """The rollout's completions decoded and scored by the reward functions, as a :class:`Batch`."""
        texts = self.tokenizer.batch_decode(r.completion_ids.cpu(), skip_special_tokens=True)
        ids = [row[m.bool()].tolist() for row, m in zip(r.completion_ids.cpu(), r.completion_mask.cpu(), strict=True)]
        logs = RewardLogs()
        G = r.group_size
        per_fn = self.score(examples, texts, ids, logs=logs, group_size=G)  # [P*G, K]
        self.reward_logs.merge(logs)
        per_fn = per_fn.view(len(examples), G, -1)
        check_weighted_sum(per_fn, self.reward_weights, list(self.reward_fns))
        rewards = combine_rewards(per_fn, self.reward_weights, self.alg.multi_objective_aggregation)
        if self.alg.overlong_buffer:
            pen = overlong_penalty(r.lengths.cpu(), self.alg.max_completion_length, self.alg.overlong_buffer)
            rewards = rewards + self.alg.overlong_penalty * pen.view_as(rewards)
        return Batch(examples=examples, rollout=r, texts=texts, rewards=rewards, per_fn=per_fn,
                     extra=logs.extra_columns(len(texts)))  # fmt: skip

    def score(self, examples: list[Example], texts: list[str], completion_ids: list[list[int]] | None = None,
              logs: RewardLogs | None = None, group_size: int | None = None) -> torch.Tensor:  # fmt: skip
        """Reward functions on the G completions of each example -> ``[P*G, K]`` (TRL's contract: each
        sample in its data's format, every training column, ``completion_ids``, ``trainer_state``,
        ``log_extra`` / ``log_metric`` into ``logs``, default :attr:`reward_logs`)."""
        G = group_size or self.alg.num_generations
        rows = [e.row() for e in examples for _ in range(G)]
        columns = rows_to_columns(rows, self.columns)
        columns.pop("prompt")
        samples = [trl_sample(e, t) for e, t in zip((e for e in examples for _ in range(G)), texts, strict=True)]
        return evaluate_rewards(
            self.reward_fns, [p for p, _ in samples], [c for _, c in samples], columns,
            on_error=self.cfg.rewards.on_error, completion_ids=completion_ids, trainer_state=self.trainer_state,
            logs=self.reward_logs if logs is None else logs, timeout=self.cfg.rewards.timeout,
        )  # fmt: skip

    def collect(self, stream: PromptStream, generator: torch.Generator, step: int | None = None
                ) -> tuple[Batch, dict[str, float]]:  # fmt: skip
        """Sample a batch of P prompts; with DAPO dynamic sampling, refill zero-variance groups (capped).

        ``step``: steps completed so far (``trainer_state.global_step``; None = count calls). Returns the
        batch and step metrics: dynamic sampling's, and what the reward functions logged
        (:class:`~fairrl.rewards.RewardLogs`: ``log_metric`` names, ``extra/<column>/mean``).
        """
        if self._columns_of is not stream.examples:  # once per training set: the union of its columns
            self.columns, self._columns_of = column_names(stream.examples), stream.examples
        self.progress(step if step is not None else self.trainer_state.global_step + (self._collected > 0), stream)
        self._collected += 1
        self.reward_logs.flush()  # drop anything logged outside a step
        P = self.alg.prompts_per_step
        observe = getattr(stream, "observe", None)  # a prompt sampler (fairrl.data.samplers) learns from each rollout

        def roll(examples: list[Example], gen: torch.Generator) -> Batch:
            if self.alg.rollout_allocator == "xrpo":  # groups of different sizes (fairrl.trainer.allocation)
                b = allocated_rollout(self, examples, gen, self.trainer_state.global_step)
            elif self.ranks.active:
                b = self.sharded_rollout(examples, gen)
            else:
                b = self.rollout(examples, gen)
            if observe is not None:
                observe(b.examples, b.rewards)  # global rewards under several ranks: every rank's sampler agrees
            return b

        batch = roll(stream.take(P), generator)
        sampler = stream.stats() if hasattr(stream, "stats") else {}
        if not self.alg.dynamic_sampling:
            info = {"dynamic_sampling/rounds": 0.0, "dynamic_sampling/dropped": 0.0}
        else:
            refills = iter(range(1, self.alg.max_resample_rounds + 1))

            def refill(n: int) -> Batch:
                # each refill samples with a generator of its own, seeded from the step's seed and the round:
                # its draws then do not depend on how long the earlier rollouts decoded (which differs
                # between ranks, each decoding only its rows)
                own = torch.Generator(device=generator.device)
                own.manual_seed((generator.initial_seed() * 1_000_003 + next(refills)) % 2**63)
                return roll(stream.take(n), own)

            batch, info = dynamic_sampling(batch, refill, P, self.alg.max_resample_rounds, self.pad_id)
        return batch, {**info, **sampler, **self.reward_logs.flush()}

    def sharded_rollout(self, examples: list[Example], generator: torch.Generator) -> Batch:
        """This rank's shard of ``examples`` rolled out and scored; rewards, texts, logged columns, reward
        logs and length totals gathered from every rank (:mod:`fairrl.distributed`)."""
        ranks, G = self.ranks, self.alg.num_generations
        part = ranks.split(len(examples))  # a refill's count need not split evenly (a rank may get none)
        local = self.shard_of(examples, part, generator, G)
        r = local.rollout
        self.gather_reward_logs()
        extras = ranks.gather_objects((len(local.texts), local.extra))
        return Batch(
            examples=examples, rollout=r, texts=[t for chunk in ranks.gather_objects(local.texts) for t in chunk],
            rewards=ranks.gather_rows(local.rewards), per_fn=ranks.gather_rows(local.per_fn),
            extra={k: [v for n, e in extras for v in e.get(k, [None] * n)]
                   for k in dict.fromkeys(k for _, e in extras for k in e)},
            shard=part,
            totals={"lengths": ranks.gather_rows(r.lengths.cpu()),
                    "truncated": ranks.gather_rows(r.truncated.cpu().to(torch.uint8)).bool(),
                    "num_tokens": shard_tokens(r)},
        )  # fmt: skip

    def shard_of(self, examples: list[Example], part: slice, generator: torch.Generator, G: int) -> Batch:
        """The rollout of ``examples[part]`` (this rank's block) sampled with its rows of the whole call's
        random numbers; an empty batch when the block is empty (fewer prompts than ranks)."""
        if part.start < part.stop:
            return self.rollout(examples[part], generator, rows=(part.start * G, len(examples) * G), group_size=G)
        empty = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        return Batch(examples=[], texts=[], rewards=torch.zeros((0, G)), per_fn=torch.zeros((0, G, len(self.reward_fns))),
                     rollout=Rollout(prompt_ids=empty, prompt_mask=empty, completion_ids=empty, completion_mask=empty,
                                     logprobs=empty.float(), group_size=G,
                                     truncated=torch.zeros(0, dtype=torch.bool, device=self.device)))  # fmt: skip

    def gather_reward_logs(self) -> None:
        """Every rank's reward-function logs of this step, merged in rank order, on every rank."""
        logs = self.ranks.gather_objects(({k: list(v) for k, v in self.reward_logs.metrics.items()},
                                          {k: list(v) for k, v in self.reward_logs.extra.items()}))  # fmt: skip
        merged = RewardLogs()
        for metrics, extra in logs:
            for k, v in metrics.items():
                merged.metrics[k].extend(v)
            for k, v in extra.items():
                merged.extra[k].extend(v)
        self.reward_logs = merged

    def progress(self, step: int, stream: PromptStream) -> TrainerState:
        """Set :attr:`trainer_state` to ``step`` steps done and the prompts ``stream`` has drawn; returns it."""
        self.trainer_state.global_step = step
        self.trainer_state.epoch = stream.position / max(len(stream.examples), 1)
        return self.trainer_state

    # -- update --------------------------------------------------------------------------
    def update(self, batch: Batch, optimizer, scheduler) -> dict[str, float]:
        alg, r = self.alg, batch.rollout
        G = r.group_size  # num_generations, or the step's largest group under XRPO's allocator
        seq_logprobs = (r.logprobs.sum(-1) / r.lengths.clamp(min=1)).cpu()
        if batch.sizes is not None:  # the empty rows of smaller groups hold no reply
            valid = batch.valid() if batch.shard is None else batch.valid().view(-1, G)[batch.shard].reshape(-1)
            seq_logprobs = torch.where(valid, seq_logprobs, float("nan"))
        seq_logprobs = seq_logprobs.view(-1, G)  # [P, G] (this rank's P when sharded)
        if batch.shard is not None:  # NGRPO-style estimators read every group's log-probs
            held = torch.tensor(shard_positions(batch), dtype=torch.long)
            seq_logprobs = self.ranks.assemble(seq_logprobs, held, len(batch.examples))
        adv = ESTIMATORS[alg.advantage_estimator](
            batch.rewards, scale_rewards=alg.scale_rewards, seq_logprobs=seq_logprobs,
            virtual_reward=alg.virtual_reward,
        )  # [P, G]
        novelty = {}
        if alg.novelty_sharpening:  # XRPO: unlikely correct replies count more
            plain, adv = adv, novelty_sharpening(adv, seq_logprobs, alg.novelty_lambda, alg.novelty_kappa)
            novelty = {"novelty/bonus_mean": float((adv - plain).sum() / (plain > 0).sum().clamp(min=1)),
                       "novelty/boosted_share": float(((adv - plain) > 0).float().mean())}  # fmt: skip
        if alg.group_balance:  # each demographic group weighs the same, however often it was drawn
            groups = [e.group for e in batch.examples]
            adv = adv * group_balance_weights(groups)[:, None]  # [P, G]
        rows_total = int(batch.valid().sum()) if batch.sizes is not None else adv.numel()  # the global batch's sequences
        # (empty rows count in a chunk's own mean but not here, so each real sequence weighs 1 / rows_total)
        if batch.shard is not None:  # data-parallel: advantages of the global batch, this rank's rows
            adv = adv[batch.shard]
        adv = adv.reshape(-1).to(self.device)  # [P*G] (this rank's P)
        own = batch.rewards if batch.shard is None else batch.rewards[batch.shard]
        flat_rewards = own.reshape(-1).to(self.device)  # [P*G] (this rank's P), for loss_type drpo
        mask = r.completion_mask.float()
        if alg.mask_truncated_completions:
            mask = mask * (~r.truncated).float()[:, None]
        held_any = r.prompt_ids.shape[0] > 0  # after dynamic sampling's selection a rank may hold no group
        sharded = is_sharded(self.policy)  # FSDP2: a rank without rows still takes part in the collectives
        ref_logp = self.reference_logprobs(r) if alg.beta > 0 and (held_any or sharded) else None
        size = alg.micro_batch_size  # groups of different sizes: whole groups of this step's layout per micro-batch
        chunks = micro_batches(r.prompt_ids.shape[0], G, size if batch.sizes is None or not size else max(G, size // G * G)) if held_any else []
        idle = idle_passes(self.ranks, len(chunks)) if sharded else 0  # uneven shards (fairrl.trainer.microbatch)
        total_tokens = float(self.ranks.sum(mask.sum().reshape(1).cpu()))
        self.policy.train()
        stats: dict[str, float] = dict(novelty)
        for it in range(alg.num_iterations):
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for c in chunks:
                rows = c.rows
                logp, entropy = completion_logprobs(
                    self.policy, r.prompt_ids[c.prompts], r.prompt_mask[c.prompts], r.completion_ids[rows],
                    r.completion_mask[rows], c.group_size, temperature=alg.temperature,
                    share_prompt=alg.share_prompt, with_entropy=(it == 0), agree=self.agree,
                )  # fmt: skip
                old = logp.detach() if alg.num_iterations == 1 else r.logprobs[rows]
                is_weights = self.rollout_weights(old, r.logprobs[rows], mask[rows])
                if alg.loss_type == "drpo":
                    loss, loss_stats = self.drpo(logp, old, mask[rows], flat_rewards[rows],
                                                 None if ref_logp is None else ref_logp[rows])  # fmt: skip
                else:
                    loss, loss_stats = policy_loss(
                        logp, old, adv[rows], mask[rows],
                        loss_type=alg.loss_type, epsilon=alg.epsilon, epsilon_high=alg.epsilon_high,
                        importance_sampling_level=alg.importance_sampling_level,
                        max_completion_length=alg.max_completion_length,
                        ref_logp=None if ref_logp is None else ref_logp[rows], beta=alg.beta, delta=alg.delta,
                        is_weights=is_weights,
                    )  # fmt: skip
                if is_weights is not None:  # TRL's name; token-weighted over the batch
                    loss_stats["sampling/importance_sampling_ratio/mean"] = float(
                        (is_weights.expand_as(mask[rows]) * mask[rows]).sum() / mask[rows].sum().clamp(min=1))
                tokens = float(mask[rows].sum())
                weight = part_share(alg.loss_type, logp.shape[0], rows_total, tokens, total_tokens)
                (loss * weight).backward()
                share = tokens / max(total_tokens, 1.0)  # token-weighted mean of the per-batch statistics
                sums["loss"] = sums.get("loss", 0.0) + weight * float(loss.detach())
                for k, v in loss_stats.items():
                    sums[k] = sums.get(k, 0.0) + share * float(v)
                if entropy is not None:
                    sums["entropy"] = sums.get("entropy", 0.0) + share * float(entropy)
            for _ in range(idle):
                idle_backward(self.policy, self.agree, temperature=alg.temperature, share_prompt=alg.share_prompt)
            self.ranks.sum_gradients(self.policy.parameters())  # the global gradient on every rank
            sums = self.ranks.sum_floats(sums)
            grad_norm = clip_gradients(self.policy.parameters(), self.cfg.max_grad_norm)
            check_value("loss", sums.get("loss", 0.0))  # before the step: a NaN here would reach every weight
            check_value("gradient norm", grad_norm)
            optimizer.step()
            check_weights(self.policy.parameters())
            scheduler.step()
            if it > 0:
                sums.pop("entropy", None)
            stats.update(sums)
            stats["grad_norm"] = grad_norm
        stats["learning_rate"] = scheduler.get_last_lr()[0]
        self.policy.eval()
        if self.engine is not None:  # the sampler gets the new weights before the next step
            with full_params(self.policy):  # FSDP2: whole tensors for the engine (a no-op otherwise)
                self.engine.sync(self.policy)
        return stats

    def drpo(self, logp, old, mask, rewards, ref_logp) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DRPO's objective on whole groups (:mod:`fairrl.losses.drpo`), plus beta x k3 KL to the reference
        (token mean) when beta > 0."""
        alg = self.alg
        loss, stats = drpo_loss(logp, old, mask, rewards, alg.num_generations, alg.max_completion_length,
                                tau=alg.drpo_tau, lam=alg.drpo_lambda, beta=alg.drpo_trust_beta,
                                delta=alg.drpo_trust_delta, threshold=alg.drpo_threshold)  # fmt: skip
        if ref_logp is not None:
            m = mask.bool()
            kl = (torch.where(m, kl_k3(logp, ref_logp), 0.0)).sum() / m.sum().clamp(min=1)
            loss = loss + alg.beta * kl
            stats["kl"] = kl.detach()
        return loss, stats

    def rollout_weights(self, old: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """pi_old / q importance weights of vLLM rollouts (``num_iterations == 1``; with more, pi_old is
        q itself and the clipped ratio corrects), or None (:mod:`fairrl.losses.rollout_correction`)."""
        alg = self.alg
        if self.engine is None or not alg.vllm_importance_sampling_correction or alg.num_iterations > 1:
            return None
        return rollout_is_weights(old, sampled, mask, alg.vllm_importance_sampling_mode,
                                  alg.vllm_importance_sampling_clip_min, alg.vllm_importance_sampling_clip_max)  # fmt: skip

    @torch.no_grad()
    def reference_logprobs(self, r: Rollout) -> torch.Tensor:
        """Log-probs under the reference (frozen copy, or the policy with its adapter disabled), per micro-batch."""
        kw = {"temperature": self.alg.temperature, "share_prompt": self.alg.share_prompt}
        G, size = r.group_size, self.alg.micro_batch_size  # XRPO's groups may not fit it: whole groups then
        chunks = micro_batches(r.prompt_ids.shape[0], G, size if not size or keeps_groups(size, G) else max(G, size // G * G))

        def run(model) -> torch.Tensor:
            if r.prompt_ids.shape[0] == 0:  # FSDP2: a rank without rows joins the gathers and computes nothing
                return r.completion_ids.new_zeros(r.completion_ids.shape, dtype=torch.float32)
            return torch.cat([
                completion_logprobs(
                    model, r.prompt_ids[c.prompts], r.prompt_mask[c.prompts], r.completion_ids[c.rows],
                    r.completion_mask[c.rows], c.group_size, **kw,
                )[0]
                for c in chunks
            ])  # fmt: skip

        if self.ref_model is not None:
            with full_params(self.ref_model):  # FSDP2: gathered once, so ranks may run different layouts
                return run(self.ref_model)
        with self.policy.disable_adapter(), full_params(self.policy):
            return run(self.policy)

    @property
    def agree(self):
        """With a sharded policy (FSDP2), every rank must run the layers alike: the packing decision is joint."""
        return self.ranks.all if is_sharded(self.policy) else None


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]


def batch_metrics(batch: Batch, reward_names: list[str]) -> dict[str, Any]:
    """TRL-named step metrics plus per-group reward means and the largest gap between groups."""
    r = batch.rollout
    out: dict[str, Any] = dict(group_stats(batch.rewards))
    for k, name in enumerate(reward_names):
        vals = batch.per_fn[..., k]
        ok = ~torch.isnan(vals)
        out[f"rewards/{name}/mean"] = float(vals[ok].mean()) if ok.any() else float("nan")
    if batch.totals is not None:  # data-parallel: the global batch's figures
        lengths, truncated = batch.totals["lengths"].float(), batch.totals["truncated"]
        out["num_tokens"] = float(batch.totals["num_tokens"].sum())
    else:
        valid = batch.valid().to(r.lengths.device)  # smaller groups' empty rows are not completions
        lengths, truncated = r.lengths.float()[valid], r.truncated[valid]
        per_prompt = r.prompt_mask.sum(-1).float() * valid.view(-1, r.group_size).sum(-1)  # [P] prompt tokens x replies
        out["num_tokens"] = float(r.completion_mask.sum() + per_prompt.sum())
    out["completions/mean_length"] = float(lengths.mean())
    out["completions/clipped_ratio"] = float(truncated.float().mean())
    out["tokens/trained"] = out["num_tokens"]  # the same count under the name every method logs
    if batch.sizes is not None:  # XRPO's allocator: how the step's rollouts were spread
        out.update({"rollouts/total": float(sum(batch.sizes)), "rollouts/min_per_prompt": float(min(batch.sizes)),
                    "rollouts/max_per_prompt": float(max(batch.sizes))})  # fmt: skip
    per_group: dict[str, list[float]] = {}
    for e, row in zip(batch.examples, batch.rewards, strict=True):
        per_group.setdefault(e.group, []).extend(v for v in row.tolist() if not math.isnan(v))
    means = {g: sum(v) / len(v) for g, v in per_group.items() if v}
    for g, m in means.items():
        out[f"group_reward/{g}"] = m
    if len(means) >= 2:
        out["group_reward_gap"] = max(means.values()) - min(means.values())
    return out


def make_reference(cfg: TrainConfig, policy):
    """Frozen reference for the KL term: None with LoRA (adapter disabled) or when beta == 0."""
    if cfg.algorithm.beta == 0 or cfg.model.lora is not None:
        return None
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """Sampling RNG derived from (seed, step): a resumed run samples exactly what it would have."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + step * 7919) % (2**63 - 1))
    return gen
