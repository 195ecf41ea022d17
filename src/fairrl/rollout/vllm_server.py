"""Rollouts from a vLLM server (``algorithm.vllm_mode: server``), TRL's server mode.

vLLM runs as its own process on GPUs of its own (``vllm serve`` with the flags TRL's vLLM guide gives, e.g.
``VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode
processed_logprobs --max-logprobs -1``); the trainer reaches it through TRL's own client
(:class:`trl.generation.vllm_client.VLLMClient`, the ``fairrl[vllm]`` extra), at ``vllm_server_base_url``
or ``vllm_server_host``:``vllm_server_port`` (TRL's names; no credentials: the address is configuration).

- A step sends each rank's prompts as token ids with the sampling settings of
  :func:`~fairrl.rollout.vllm_backend.sampling_kwargs` (n = G, the run's stop tokens, one seed per step and
  rank) and gets the completions' token ids and the sampled tokens' log-probs back
  (:func:`server_rollout`); ``truncated`` is a reply that filled ``max_completion_length`` without a stop
  token (the client does not pass vLLM's finish reason on).
- After every optimiser step rank 0 (the one process in the server's weight-transfer group) streams the
  policy's weights to the server: full fine-tuning its named parameters; LoRA the base weights with the
  adapter merged in (PEFT's ``merge_adapter``, then ``unmerge_adapter``; names as Hugging Face's), as TRL's
  server mode does; then the prefix cache is reset and the ranks wait for each other.

The log-prob bookkeeping is the colocated engine's (:mod:`fairrl.rollout.vllm_backend`). vLLM cannot run on
the CPU machines fairrl is tested on: ``tests/test_vllm_server.py`` drives this with a fake client of
TRL's interface that samples with its own copy of the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from fairrl.distributed import current
from fairrl.errors import ConfigError
from fairrl.rollout.generate import Rollout
from fairrl.rollout.vllm_backend import base_weights, lists_to_rollout, sampling_kwargs


def server_rollout(response: dict[str, Any], prompt_ids: list[list[int]], group_size: int, max_tokens: int,
                   stop_ids: Sequence[int], pad_id: int, device: torch.device | str = "cpu") -> Rollout:  # fmt: skip
    """The client's ``generate`` answer (``completion_ids`` [P*G][L]; ``logprobs`` / ``logprob_token_ids``
    [P*G][L][k], the sampled token among the k) as a :class:`Rollout`."""
    ids = [list(c) for c in response["completion_ids"]]
    if len(ids) != len(prompt_ids) * group_size:
        raise ValueError(f"the vLLM server returned {len(ids)} completions for {len(prompt_ids)} prompts x {group_size}")
    logps = []
    for tokens, lps, tids in zip(ids, response["logprobs"], response["logprob_token_ids"], strict=True):
        row = []
        for t, lp, cand in zip(tokens, lps, tids, strict=True):
            k = list(cand).index(t) if t in cand else None
            row.append(math.nan if k is None or lp[k] is None else float(lp[k]))
        logps.append(row)
    stop = set(stop_ids)
    truncated = [len(t) >= max_tokens and (not t or t[-1] not in stop) for t in ids]
    return lists_to_rollout(prompt_ids, ids, logps, truncated, group_size, pad_id, device)


class VLLMServerRollout:
    """fairrl's sampler backed by a vLLM server (module docstring); ``client``: TRL's ``VLLMClient``."""

    def __init__(self, client, *, pad_id: int, stop_ids: Sequence[int], lora: bool):
        self.client, self.pad_id, self.stop_ids, self.lora = client, pad_id, list(stop_ids), lora
        self.version = 0

    def generate(self, alg, prompt_ids: list[list[int]], group_size: int, seed: int,
                 device: torch.device | str = "cpu") -> Rollout:  # fmt: skip
        kw = sampling_kwargs(alg, group_size, self.stop_ids, seed)
        extra = {"seed": kw.pop("seed"), "stop_token_ids": kw.pop("stop_token_ids")}
        kw["top_k"] = max(kw["top_k"], 0)  # the client's "no truncation" is 0
        response = self.client.generate([list(p) for p in prompt_ids], generation_kwargs=extra, **kw)
        return server_rollout(response, prompt_ids, group_size, kw["max_tokens"], self.stop_ids, self.pad_id, device)

    @torch.no_grad()
    def sync(self, policy) -> None:
        """Stream the policy's weights to the server from rank 0 (LoRA: merged into the base), then wait."""
        self.version += 1
        ranks = current()
        if ranks.main:
            if self.lora:
                policy.merge_adapter()
                try:
                    self._send(list(base_weights(policy)))
                finally:
                    policy.unmerge_adapter()
            else:
                self._send([(n, p.detach()) for n, p in policy.named_parameters()])
            self.client.reset_prefix_cache()
        ranks.barrier()

    def sync_base(self, policy) -> None:
        """After a warm start: the server always gets whole (merged) weights, so this is :meth:`sync`."""
        self.sync(policy)

    def _send(self, named: list[tuple[str, torch.Tensor]]) -> None:
        meta = [(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in named]
        self.client.update_named_params(meta, iter(named))


def make_client(alg):
    """TRL's ``VLLMClient`` for the configured server (waits up to ``vllm_server_timeout`` seconds for it)."""
    try:
        from trl.generation.vllm_client import VLLMClient
    except ImportError:
        raise ConfigError("algorithm.vllm_mode=server needs TRL's vLLM client: pip install 'fairrl[vllm]' "
                          "(vllm and trl), or set algorithm.vllm_mode=colocate") from None  # fmt: skip
    where = alg.vllm_server_base_url or f"http://{alg.vllm_server_host}:{alg.vllm_server_port}"
    try:
        return VLLMClient(base_url=alg.vllm_server_base_url, host=alg.vllm_server_host,
                          server_port=alg.vllm_server_port, connection_timeout=alg.vllm_server_timeout)  # fmt: skip
    except ImportError as err:
        raise ConfigError(f"algorithm.vllm_mode=server: {err}") from None
    except Exception as err:  # noqa: BLE001 - requests' connection errors and the client's own
        raise ConfigError(f"no vLLM server answers at {where} within {alg.vllm_server_timeout:g}s ({type(err).__name__}); "
                          "start it (see the README's vLLM section) or fix algorithm.vllm_server_base_url") from None  # fmt: skip


def create_server_rollout(cfg, pad_id: int, stop_ids: Sequence[int]) -> VLLMServerRollout:
    """The server-backed sampler of a run; rank 0 joins the server's weight-transfer group."""
    client = make_client(cfg.algorithm)
    if current().main:
        client.init_communicator(device=torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return VLLMServerRollout(client, pad_id=pad_id, stop_ids=stop_ids, lora=cfg.model.lora is not None)
