"""Per-role LoRA adapters on one base model (``redteam.team.adapters: per_role``): heterogeneous agents.

Evo-MARL (arXiv 2508.03864) shares one policy across the team's roles and names heterogeneous agents as
future work. With ``per_role`` each role gets its own LoRA adapter, all on the one frozen base model: role 0
keeps PEFT's ``default`` adapter, role k > 0 gets ``role<k>``, a copy of its configuration (LoRA's B = 0
initialisation makes every adapter start as the base model). A turn is sampled, and its reply tokens trained,
with its role's adapter active; the KL reference is the base model (every adapter disabled).

PEFT's ``set_adapter`` also makes the inactive adapters untrainable; :func:`use_adapter` keeps all of them
trainable (an adapter not used in a step has no gradient, so AdamW leaves it alone), so checkpoints hold
every role's weights and one optimiser holds them all. ``save_pretrained`` writes ``default`` at the top of
``final/`` and each other adapter in ``final/role<k>/`` (:func:`load_role_adapters` reads them back).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fairrl.errors import ConfigError


def adapter_name(k: int) -> str:
    """The adapter of role ``k`` (0: PEFT's ``default``)."""
    return "default" if k == 0 else f"role{k}"


def _lora_names(policy) -> set[str]:
    if not hasattr(policy, "peft_config") or "default" not in policy.peft_config:
        raise ConfigError("redteam.team.adapters=per_role gives each role its own LoRA adapter: set model.lora "
                          "(e.g. model.lora={r: 16, alpha: 32}) or use adapters: shared")  # fmt: skip
    return set(policy.peft_config)


def add_role_adapters(policy, roles: int) -> list[str]:
    """Give a LoRA policy one adapter per role (module docstring); returns the names in role order."""
    names = [adapter_name(k) for k in range(roles)]
    have = _lora_names(policy)
    for name in names:
        if name not in have:
            policy.add_adapter(name, policy.peft_config["default"])
    use_adapter(policy, names[-1], names)
    return names


def use_adapter(policy, name: str, names: list[str]) -> None:
    """Make ``name`` the active adapter while every adapter in ``names`` stays trainable."""
    policy.set_adapter(name)
    for n, p in policy.named_parameters():
        if "lora_" in n and any(f".{a}." in n or n.endswith(f".{a}") for a in names):
            p.requires_grad_(True)


def role_sampler(sample: Callable, policy, role_names: list[str], adapters: list[str]) -> Callable:
    """A turn sampler that switches to the role's adapter before sampling its turn."""
    of = dict(zip(role_names, adapters, strict=True))

    def wrapped(prompts, role: str):
        use_adapter(policy, of[role], adapters)
        return sample(prompts, role)

    return wrapped


def load_role_adapters(policy, folder: str | Path, roles: int) -> list[str]:
    """Load ``folder/role<k>/`` (a per-role run's ``final/``) into a policy that holds ``default``."""
    names = [adapter_name(k) for k in range(roles)]
    for k, name in enumerate(names[1:], 1):
        sub = Path(folder) / name
        if not (sub / "adapter_model.safetensors").exists():
            raise ConfigError(f"{folder}: no adapter for role {k} ({sub}); was the run trained with adapters: per_role?")
        policy.load_adapter(str(sub), adapter_name=name)
    use_adapter(policy, names[-1], names)
    return names

