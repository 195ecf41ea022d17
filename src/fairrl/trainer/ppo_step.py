"""PPO with a learned critic (``method: ppo``): rollout -> rewards -> per-token KL rewards -> GAE -> updates.

One step:
1. take P prompts from the mixture stream and sample G completions each (G may be 1), scored by the
   run's reward functions exactly as in GRPO (the sampling and scoring of :class:`GRPOStep`, reused);
2. with no gradient: reference log-probs (adapter disabled, or a frozen copy; skipped when
   kl_coef = 0) and the critic's values V_old;
3. per-token rewards r_t = -kl_coef * kl_t + score at the last token, GAE advantages and returns,
   advantages whitened (:mod:`fairrl.advantages.gae`);
4. ``ppo_epochs`` passes, each over ``num_mini_batches`` shuffled mini-batches of whole prompts, one
   optimiser step each, on  L = L_clip(policy) + vf_coef * L_value  (:mod:`fairrl.losses.ppo`), both
   token means over the mini-batch; during ``critic_warmup_steps`` the loss is vf_coef * L_value alone.

Deviations from TRL's ``PPOTrainer`` on purpose:
- pi_old is the sampler's own log-probs (same temperature, no extra forward), as in TRL; the KL in the
  reward uses them too.
- The score goes on the last generated token (as TRL <= 0.11; TRL 0.12+ puts it one position past it);
  see :mod:`fairrl.advantages.gae`.
- A mini-batch is split into micro-batches whose losses are weighted by their token share, so gradient
  accumulation equals the one-pass loss exactly (TRL averages micro-batch means).
- No group baseline and no ``frac_reward_zero_std`` metric: the critic is the baseline.
- A completion whose combined reward is NaN (no reward function applied) is left out of both losses.
- Policy and critic share one AdamW with two parameter groups (``ppo.value_learning_rate``) and one
  gradient-norm clip over both, as TRL's single wrapped model does.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch

from fairrl.advantages.gae import gae, masked_whiten, token_rewards
from fairrl.config.grpo import TrainConfig
from fairrl.distributed import Ranks
from fairrl.errors import ConfigError
from fairrl.losses import policy_loss, value_loss
from fairrl.models.sharding import full_params, is_sharded
from fairrl.models.value_head import ActorCritic
from fairrl.rollout.generate import Rollout
from fairrl.trainer.batch import Batch
from fairrl.trainer.grpo_step import GRPOStep
from fairrl.trainer.guard import check_value, check_weights
from fairrl.trainer.microbatch import idle_inputs, idle_passes, micro_batches
from fairrl.trainer.optim import clip_gradients, make_optimizer

IGNORED_BY_PPO = ("advantage_estimator", "scale_rewards", "loss_type", "virtual_reward")
"""``algorithm`` keys that only the GRPO family uses (PPO's advantages come from its critic)."""


def check_ppo(cfg: TrainConfig) -> list[str]:
    """ConfigError for ``algorithm`` settings PPO cannot honour; returns notes on the ones it ignores."""
    alg, ppo = cfg.algorithm, cfg.ppo
    wrong = {
        "beta": (alg.beta > 0, "PPO puts the KL into the reward: set ppo.kl_coef and algorithm.beta=0"),
        "num_iterations": (alg.num_iterations > 1, "PPO repeats updates with ppo.ppo_epochs; keep it 1"),
        "dynamic_sampling": (alg.dynamic_sampling, "it drops groups of equal rewards, which PPO's critic uses"),
        "group_balance": (alg.group_balance, "it weights group-relative advantages; PPO has none"),
    }
    for key, (bad, why) in wrong.items():
        if bad:
            raise ConfigError(f"method: ppo does not use algorithm.{key}={getattr(alg, key)!r}: {why}")
    if ppo.num_mini_batches > alg.prompts_per_step:
        raise ConfigError(
            f"ppo.num_mini_batches={ppo.num_mini_batches} exceeds algorithm.prompts_per_step="
            f"{alg.prompts_per_step} (a mini-batch holds whole prompts); use at most that many"
        )
    unused = [f"algorithm.{k}" for k in IGNORED_BY_PPO if k in alg.model_fields_set]
    return [f"note: method: ppo ignores {', '.join(unused)} (GRPO-family settings)"] if unused else []


def ppo_optimizer_steps(cfg: TrainConfig) -> int:
    """Optimiser steps of a PPO run: max_steps x ppo_epochs x num_mini_batches."""
    return cfg.max_steps * cfg.ppo.ppo_epochs * cfg.ppo.num_mini_batches


def make_ppo_reference(cfg: TrainConfig, policy):
    """Frozen reference for the KL reward: None with LoRA (adapter disabled) or when kl_coef == 0."""
    if cfg.ppo.kl_coef == 0 or cfg.model.lora is not None:
        return None
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def make_ppo_optimizer(cfg: TrainConfig, ac: ActorCritic):
    """AdamW with two parameter groups (policy at learning_rate, critic at ppo.value_learning_rate) and
    the run's schedule over :func:`ppo_optimizer_steps`."""
    groups = [
        {"params": [p for p in ac.policy.parameters() if p.requires_grad], "lr": cfg.learning_rate},
        {"params": ac.critic_parameters(), "lr": cfg.ppo.value_learning_rate or cfg.learning_rate},
    ]
    return make_optimizer(cfg, None, ppo_optimizer_steps(cfg), params=groups)


def shuffle_generator(seed: int, step: int) -> torch.Generator:
    """Mini-batch order RNG derived from (seed, step) (CPU): a resumed run shuffles as it would have."""
    return torch.Generator().manual_seed((seed * 2_000_003 + step * 104_729 + 17) % (2**63 - 1))


class PPOStep:
    """Everything one PPO step needs, built once per run."""

    def __init__(self, cfg: TrainConfig, ac: ActorCritic, tokenizer, device: torch.device, ref_model=None,
                 ranks: Ranks | None = None):  # fmt: skip
        self.cfg, self.alg, self.ppo = cfg, cfg.algorithm, cfg.ppo
        self.ac = ac
        self.device = device
        self.ranks = ranks or Ranks()
        """Data-parallel ranks: each rolls out and trains its share of the prompts (whole groups); the
        advantage whitening, the mini-batches' token totals, gradients and statistics are global."""
        self.sampler = GRPOStep(cfg, ac.policy, tokenizer, device, ref_model=ref_model, ranks=self.ranks)
        """Prompt encoding, sampling, reward scoring and reference log-probs, as in GRPO."""
        self.collect = self.sampler.collect
        self.progress = self.sampler.progress

    @torch.no_grad()
    def old_values(self, r: Rollout) -> torch.Tensor:
        """The critic's values ``[P*G, Lc]`` at sampling time, per micro-batch."""
        chunks = micro_batches(r.prompt_ids.shape[0], r.group_size, self.alg.micro_batch_size)
        with full_params(self.ac.trunk_model):  # FSDP2: gathered once, so ranks may run different layouts
            return torch.cat([
                self.ac.values(r.prompt_ids[c.prompts], r.prompt_mask[c.prompts], r.completion_ids[c.rows],
                               r.completion_mask[c.rows], c.group_size, share_prompt=self.alg.share_prompt)
                for c in chunks
            ])  # fmt: skip

    def advantages(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss mask, V_old, advantages and returns of a batch (all ``[P*G, Lc]``) and the per-token KL."""
        r = batch.rollout
        own = batch.rewards if batch.shard is None else batch.rewards[batch.shard]  # this rank's prompts
        scores = own.reshape(-1).to(self.device)  # [P*G]
        keep = ~torch.isnan(scores)
        if self.alg.mask_truncated_completions:
            keep &= ~r.truncated.to(self.device)
        mask = r.completion_mask.float() * keep[:, None]  # [P*G, Lc]
        self.ac.eval()
        ref_logp = self.sampler.reference_logprobs(r) if self.ppo.kl_coef > 0 else r.logprobs
        old_values = self.old_values(r)
        rewards, kl = token_rewards(scores.nan_to_num(0.0), r.logprobs, ref_logp, mask, self.ppo.kl_coef,
                                    self.ppo.kl_estimator)  # fmt: skip
        adv, returns = gae(rewards, old_values, mask, self.ppo.gamma, self.ppo.lam)
        if self.ppo.whiten_advantages:
            adv = masked_whiten(adv, mask, reduce=self.ranks.sum if self.ranks.active else None)
        return {"mask": mask, "old_values": old_values, "advantages": adv, "returns": returns, "kl": kl}

    def update(self, batch: Batch, optimizer, scheduler, step: int) -> dict[str, float]:
        """Advantages, then ``ppo_epochs`` x ``num_mini_batches`` optimiser steps; returns the step's metrics."""
        r, G = batch.rollout, batch.rollout.group_size
        t = self.advantages(batch)
        warmup = step < self.ppo.critic_warmup_steps
        gen = shuffle_generator(self.cfg.seed, step)
        self.ac.train()
        sums: dict[str, float] = defaultdict(float)
        updates = 0
        mine = batch.shard or slice(0, r.prompt_ids.shape[0])  # this rank's prompts among the step's
        step_tokens = float(self.ranks.sum(t["mask"].sum().reshape(1).cpu()))
        for epoch in range(self.ppo.ppo_epochs):
            order = torch.randperm(len(batch.examples), generator=gen)  # the same global order on every rank
            for chosen in order.tensor_split(self.ppo.num_mini_batches):
                local = chosen[(chosen >= mine.start) & (chosen < mine.stop)] - mine.start  # this rank's part
                prompts = local.to(self.device)
                rows = (prompts[:, None] * G + torch.arange(G, device=self.device)).reshape(-1)  # [m*G]
                stats = self.mini_batch(r, t, prompts, rows, warmup, epoch == 0, optimizer, step_tokens)
                scheduler.step()
                updates += 1
                for k, v in stats.items():
                    sums[k] += v
        out = {k: v / (updates if k != "entropy" else 1.0) for k, v in sums.items()}
        out.update(self.rollout_stats(t))
        out["critic_warmup"] = float(warmup)
        out["learning_rate"] = scheduler.get_last_lr()[0]
        self.ac.eval()
        return out

    def mini_batch(self, r: Rollout, t: dict[str, torch.Tensor], prompts: torch.Tensor, rows: torch.Tensor,
                   warmup: bool, with_entropy: bool, optimizer, step_tokens: float) -> dict[str, float]:  # fmt: skip
        """One optimiser step on the completions of ``prompts`` (micro-batched); returns its statistics.

        ``entropy`` comes back already weighted by this mini-batch's share of the step's tokens.
        """
        alg, ppo = self.alg, self.ppo
        ids, pmask = r.prompt_ids[prompts], r.prompt_mask[prompts]
        cids, cmask = r.completion_ids[rows], r.completion_mask[rows]
        sub = {k: v[rows] for k, v in t.items()}
        sub["old_logp"] = r.logprobs[rows]
        total = float(self.ranks.sum(sub["mask"].sum().reshape(1).cpu()))  # the mini-batch's tokens, all ranks
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = defaultdict(float)
        chunks = micro_batches(prompts.shape[0], r.group_size, alg.micro_batch_size) if prompts.numel() else []
        idle = idle_passes(self.ranks, len(chunks)) if is_sharded(self.ac) else 0  # FSDP2 (a collective: first)
        for c in chunks:
            args = (ids[c.prompts], pmask[c.prompts], cids[c.rows], cmask[c.rows], c.group_size)
            mask = sub["mask"][c.rows]
            share = float(mask.sum()) / max(total, 1.0)  # token share: exact gradient accumulation
            logp, entropy, values = self.forward(args, warmup, with_entropy)
            if warmup:  # critic only: a shared trunk stays as it is, only the head learns
                loss = torch.zeros((), device=values.device)
            else:
                loss, pstats = policy_loss(
                    logp, sub["old_logp"][c.rows], sub["advantages"][c.rows], mask, loss_type="bnpo",
                    epsilon=alg.epsilon, epsilon_high=alg.epsilon_high,
                    importance_sampling_level=alg.importance_sampling_level, delta=alg.delta,
                )  # fmt: skip
                sums["policy_loss"] += share * float(loss.detach())
                for k, v in pstats.items():
                    sums[k] += share * float(v)
                if entropy is not None:
                    sums["entropy"] += float(mask.sum()) / max(step_tokens, 1.0) * float(entropy)
            vloss, vstats = value_loss(values, sub["old_values"][c.rows], sub["returns"][c.rows], mask,
                                       ppo.cliprange_value)  # fmt: skip
            loss = loss + ppo.vf_coef * vloss
            (loss * share).backward()
            sums["loss"] += share * float(loss.detach())
            sums["value_loss"] += share * float(vloss.detach())
            for k, v in vstats.items():
                sums[k] += share * float(v)
        for _ in range(idle):  # FSDP2: a rank holding fewer of the mini-batch's prompts keeps pace
            self.idle_backward(warmup)
        params = [p for p in self.ac.parameters() if p.requires_grad]
        self.ranks.sum_gradients(params)  # the mini-batch's gradient over every rank's share
        if self.ranks.active:  # statistics weighted by global token shares: their sum over ranks is the batch's
            keys = sorted({k for ks in self.ranks.gather_objects(sorted(sums)) for k in ks})  # a rank may hold no prompt
            sums = defaultdict(float, self.ranks.sum_floats({k: sums.get(k, 0.0) for k in keys}))
        grad_norm = clip_gradients(params, self.cfg.max_grad_norm)
        check_value("loss", sums["loss"])  # before the step: a NaN here would reach every weight
        check_value("gradient norm", grad_norm)
        optimizer.step()
        check_weights(params)
        sums["grad_norm"] = grad_norm
        return sums

    def forward(self, args: tuple, warmup: bool, with_entropy: bool):
        """Log-probs, mean entropy and values of a micro-batch (``warmup``: values alone, None for the rest)."""
        alg = self.alg
        agree = self.ranks.all if is_sharded(self.ac) else None  # FSDP2: every rank picks the same layout
        if warmup:
            return None, None, self.ac.values(*args, share_prompt=alg.share_prompt, detach_trunk=self.ac.shared,
                                              agree=agree)  # fmt: skip
        return self.ac.logprobs_and_values(*args, temperature=alg.temperature, share_prompt=alg.share_prompt,
                                           with_entropy=with_entropy, agree=agree)  # fmt: skip

    def idle_backward(self, warmup: bool) -> None:
        """A micro-batch that trains nothing (:mod:`fairrl.trainer.microbatch`): the forwards of a real one
        on a one-token dummy row, and a backward of their outputs times zero."""
        logp, _, values = self.forward(idle_inputs(self.device), warmup, False)
        (values.sum() * 0.0 + (0.0 if logp is None else logp.sum() * 0.0)).backward()

    def rollout_stats(self, t: dict[str, torch.Tensor]) -> dict[str, float]:
        """KL to the reference, values, returns and how much of the returns' variance V_old explains."""
        m = t["mask"].bool()
        parts = self.ranks.gather_objects((float(t["kl"].sum()), int(m.sum()), int(m.any(-1).sum()),
                                           t["returns"][m].cpu(), t["old_values"][m].cpu()))  # fmt: skip
        kl_sum, n, rows = sum(p[0] for p in parts), max(sum(p[1] for p in parts), 1), max(sum(p[2] for p in parts), 1)
        kl_seq = kl_sum / rows  # TRL objective/kl: per-sequence sum, mean over sequences
        ret, val = torch.cat([p[3] for p in parts]), torch.cat([p[4] for p in parts])
        var = float(ret.var()) if ret.numel() > 1 else 0.0
        explained = 1.0 - float((ret - val).var()) / var if var > 0 else float("nan")
        return {
            "kl": kl_sum / n,
            "objective/kl": kl_seq,
            "objective/non_score_reward": -self.ppo.kl_coef * kl_seq,
            "return_mean": float(ret.mean()) if ret.numel() else 0.0,
            "value_explained_variance": explained,
        }
