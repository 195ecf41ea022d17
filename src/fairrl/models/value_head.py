"""PPO's critic: a value head on a causal LM's last hidden state, on the policy's trunk or a copy of it.

V_t, the value of the state "prompt + completion tokens < t", is read from the same hidden state that
predicts completion token t (:func:`fairrl.models.logprobs.completion_outputs` with the decoder body),
so values line up with the per-token log-probs ``[P*G, Lc]``:

    V_t = w . h_t + b      (h_t: the trunk's last hidden state, after its final norm; float32 head)

Two layouts (``ppo.critic``):

- ``shared`` - the head sits on the policy's own trunk (TRL's former ``AutoModelForCausalLMWithValueHead``).
  One forward gives both the log-probs and the values (Llama-family models, whose logits are
  ``lm_head(h)``), and the value loss trains the trunk along with the head: all weights when fully
  fine-tuning, the LoRA adapter with LoRA. The head therefore sees the *adapter's* hidden states, i.e.
  the current policy's features; the reference forward (adapter disabled) never involves it. While the
  critic warms up (policy frozen) the trunk's states are detached, so only the head learns.
- ``separate`` - a copy of the starting model (its own LoRA adapter, or all its weights without LoRA) with
  its own head, as TRL's value model; twice the memory, a second forward per update, and no
  interference between the policy's and the critic's gradients.

The head starts at zero (V = 0 everywhere), so the first advantages are the plain discounted rewards.
Deviations: TRL initialises its value model from the reward model (a sequence-classification head);
fairrl's rewards are functions, so there is no reward model to start from.

:class:`ActorCritic` holds the policy, the head and the separate critic as one module, so a checkpoint's
``trainable.safetensors`` (:mod:`fairrl.trainer.checkpoint`) saves and restores all of them
(``policy.*``, ``value_head.*``, ``critic.*``).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from torch import nn

from fairrl.errors import ConfigError
from fairrl.models.common import unwrap_peft
from fairrl.models.logprobs import completion_logprobs, completion_outputs, hidden_logprobs, output_head

CRITICS = ("shared", "separate")


class ValueHead(nn.Module):
    """V = w . h + b on hidden states ``[..., d]`` -> ``[...]``, in float32, zero-initialised."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden.float()).squeeze(-1)


def trunk(model) -> nn.Module:
    """The decoder body of a causal LM (its ``base_model_prefix`` module: ``model`` for Llama/Qwen,
    ``transformer`` for GPT-2), which returns ``last_hidden_state``."""
    base = unwrap_peft(model)
    body = getattr(base, getattr(base, "base_model_prefix", "model") or "model", None)
    if not isinstance(body, nn.Module) or body is base:
        raise ConfigError(
            f"{type(base).__name__} has no decoder body to put a value head on; use a causal LM with a "
            "base_model_prefix (Llama, Qwen, Mistral, GPT-2, ...)"
        )
    return body


def hidden_size(model) -> int:
    size = getattr(unwrap_peft(model).config, "hidden_size", None)
    return int(size) if size else int(unwrap_peft(model).get_input_embeddings().weight.shape[1])


class ActorCritic(nn.Module):
    """The policy, its value head and (``separate``) the critic's own trunk; see the module docstring."""

    def __init__(self, policy: nn.Module, critic: str = "shared"):
        super().__init__()
        if critic not in CRITICS:
            raise ConfigError(f"ppo.critic must be one of {CRITICS}, got {critic!r}")
        self.policy = policy
        # the copy is taken before any update (and overwritten by a resumed checkpoint)
        self.critic = copy.deepcopy(policy) if critic == "separate" else None
        device = next(policy.parameters()).device
        self.value_head = ValueHead(hidden_size(policy)).to(device)

    @property
    def shared(self) -> bool:
        return self.critic is None

    @property
    def trunk_model(self) -> nn.Module:
        """The model whose last hidden states the value head reads: the policy, or the separate critic."""
        return self.policy if self.critic is None else self.critic

    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic's own trainable parameters: the head, plus the separate trunk's (a shared trunk is the
        policy's)."""
        params = list(self.value_head.parameters())
        if self.critic is not None:
            params += [p for p in self.critic.parameters() if p.requires_grad]
        return params

    def values(self, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size: int,
               share_prompt: bool = True, detach_trunk: bool = False, agree=None) -> torch.Tensor:  # fmt: skip
        """V_t ``[P*G, Lc]`` of every completion position (0 on padding); ``detach_trunk``: the trunk runs
        without gradient, so only the head learns (``agree``: FSDP2 ranks, see
        :func:`~fairrl.models.logprobs.completion_outputs`)."""
        model = self.trunk_model
        args = (prompt_ids, prompt_mask, completion_ids, completion_mask, group_size, share_prompt)
        with torch.no_grad() if detach_trunk else nullcontext():
            hidden = completion_outputs(model, *args, body=trunk(model), agree=agree)  # [P*G, Lc, d]
        return self.value_head(hidden) * completion_mask

    def logprobs_and_values(
        self, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size: int, *,
        temperature: float = 1.0, share_prompt: bool = True, with_entropy: bool = False, agree=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:  # fmt: skip
        """Per-token log-probs, mean entropy (or None) and values, ``[P*G, Lc]`` each (0 on padding).

        A shared critic on a model whose logits are ``lm_head(h)`` takes one forward for both; otherwise the
        policy and the critic's trunk each take one.
        """
        args = (prompt_ids, prompt_mask, completion_ids, completion_mask, group_size)
        head = output_head(self.policy) if self.shared else None
        if head is None:
            logp, entropy = completion_logprobs(self.policy, *args, temperature=temperature,
                                                share_prompt=share_prompt, with_entropy=with_entropy, agree=agree)  # fmt: skip
            return logp, entropy, self.values(*args, share_prompt=share_prompt, agree=agree)
        body, weight, bias = head
        hidden = completion_outputs(self.policy, *args, share_prompt, body=body, agree=agree)  # [P*G, Lc, d]
        logp, entropy = hidden_logprobs(hidden, weight, bias, completion_ids, completion_mask, temperature,
                                        with_entropy)  # fmt: skip
        return logp, entropy, self.value_head(hidden) * completion_mask
