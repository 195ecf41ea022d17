"""The hardware floor of one GRPO step: FLOPs and bytes per phase against the device's peak.

Notation: L layers, H query heads of size d_h (d_attn = H*d_h), kv heads H_kv, vocabulary V, model
width d. N_body = weights of every linear layer except the LM head, N_head = V*d (the LM head; tied
to the embedding in all built-in models), b = bytes per weight. P prompts of lengths Lp_p, G
completions each, N completion tokens each (forced). One matmul with a k x m weight costs 2*k*m
FLOPs per token.

Attention of q consecutive tokens starting at position s, each attending to itself and everything
before (Q K^T and A V, 2*d_h FLOPs each per key per head):

    A(q, s) = 4 * L * d_attn * sum_{i=0}^{q-1} (s + i + 1) = 4 * L * d_attn * (q*s + q*(q+1)/2)

The floor is the cheapest version of the work, whatever the implementation: the prompt is encoded
once per group (prefix sharing), and logits exist only where a token is predicted.

- generate, prefill: F = sum_p [2*N_body*Lp + A(Lp, 0) + 2*N_head]; bytes = W = (N_body + N_head)*b
  (weights read once).
- generate, decode (N-1 steps; the first token comes from the prefill's logits):
  F = P*G*[2*(N_body + N_head)*(N-1) + A(N-1, Lp)];
  bytes = (N-1)*W + sum_{j=0}^{N-2} P*G * 2*L*H_kv*d_h*(Lp + j + 1)*b (weights once per step plus
  reading the K and V cache).
- reference log-probs (beta > 0): one forward of prompts (shared) and completions,
  F_fwd = sum_p [2*N_body*Lp + A(Lp, 0)] + P*G*[2*N_body*(N-1) + A(N-1, Lp) + 2*N_head*N];
  bytes = W.
- forward+backward: full fine-tuning 3*F_fwd (backward = gradients of activations + of weights,
  2*F_fwd), bytes 3*W; LoRA 2*F_lin + 3*F_att (no weight gradients for the frozen base; adapters are
  negligible), bytes 2*W.
- optimiser (AdamW): bytes = 7 * sum over trainable tensors of numel*element_size (read parameter,
  gradient, m, v; write parameter, m, v); F = 12 per trainable parameter.

Each phase's floor is max(F / peak FLOP/s, bytes / peak bandwidth); prefill and decode are floored
separately (one is compute-bound, the other memory-bound) and added. Peaks: on CUDA a small table of
datasheet figures (dense tensor-core FLOP/s for bf16/fp16, the fp32 or tf32 rate for float32; HBM
bandwidth), with measured probes for GPUs not in it; on CPU always measured: a square matmul in the
run's dtype through ``F.linear`` (2*n^3 FLOPs) and a large copy (2*bytes moved: read + write).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# name substring (first match wins) -> (bf16/fp16 dense, tf32 dense, fp32, HBM bytes/s), datasheet figures
GPU_TABLE: list[tuple[str, float, float, float, float]] = [
    ("H200", 989e12, 494e12, 67e12, 4.8e12),
    ("H100 PCIe", 756e12, 378e12, 51e12, 2.0e12),
    ("H100", 989e12, 494e12, 67e12, 3.35e12),  # SXM
    ("A100", 312e12, 156e12, 19.5e12, 2.039e12),  # 80 GB SXM
]


@dataclass(frozen=True)
class ModelShape:
    layers: int
    width: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    body_params: int  # linear weights except the LM head (LoRA adapters included)
    head_params: int  # V * d
    bytes_per_param: int
    trainable_bytes: int  # sum of numel * element_size over trainable tensors
    trainable_params: int
    lora: bool

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def weight_bytes(self) -> int:
        return (self.body_params + self.head_params) * self.bytes_per_param


def model_shape(model) -> ModelShape:
    """Read the shape from a (possibly PEFT-wrapped, possibly meta-device) causal LM."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head = cfg.vocab_size * cfg.hidden_size
    trainable = [p for p in model.parameters() if p.requires_grad]
    return ModelShape(
        layers=cfg.num_hidden_layers, width=cfg.hidden_size, heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, head_dim=head_dim, vocab=cfg.vocab_size,
        body_params=linear - head, head_params=head,
        bytes_per_param=next(model.parameters()).element_size(),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        trainable_params=sum(p.numel() for p in trainable),
        lora=hasattr(model, "peft_config"),
    )  # fmt: skip


def attention_flops(shape: ModelShape, queries: int, start: int) -> float:
    """A(q, s) = 4 * L * d_attn * (q*s + q*(q+1)/2) (module docstring)."""
    keys = queries * start + queries * (queries + 1) / 2
    return 4.0 * shape.layers * shape.attn_width * keys


@dataclass(frozen=True)
class Work:
    flops: float
    bytes: float

    def seconds(self, peak: DevicePeak) -> float:
        return max(self.flops / peak.flops_per_s, self.bytes / peak.bytes_per_s)


def prefill_work(shape: ModelShape, prompt_lens: list[int]) -> Work:
    f = sum(
        2.0 * shape.body_params * lp + attention_flops(shape, lp, 0) + 2.0 * shape.head_params
        for lp in prompt_lens
    )
    return Work(f, float(shape.weight_bytes))


def decode_work(shape: ModelShape, prompt_lens: list[int], G: int, N: int) -> Work:
    steps = N - 1
    f = sum(
        G * (2.0 * (shape.body_params + shape.head_params) * steps + attention_flops(shape, steps, lp))
        for lp in prompt_lens
    )
    kv_per_token = 2.0 * shape.layers * shape.kv_heads * shape.head_dim * shape.bytes_per_param
    kv_tokens = sum(G * (steps * lp + steps * (steps + 1) / 2) for lp in prompt_lens)  # sum_j (Lp + j + 1)
    return Work(f, steps * float(shape.weight_bytes) + kv_per_token * kv_tokens)


def forward_split(shape: ModelShape, prompt_lens: list[int], G: int, N: int) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one teacher-forced forward over prompts (shared) + completions."""
    lin = sum(
        2.0 * shape.body_params * (lp + G * (N - 1)) + 2.0 * shape.head_params * G * N for lp in prompt_lens
    )
    att = sum(attention_flops(shape, lp, 0) + G * attention_flops(shape, N - 1, lp) for lp in prompt_lens)
    return lin, att


def reference_work(shape: ModelShape, prompt_lens: list[int], G: int, N: int, beta: float) -> Work:
    if beta == 0:
        return Work(0.0, 0.0)
    lin, att = forward_split(shape, prompt_lens, G, N)
    return Work(lin + att, float(shape.weight_bytes))


def train_work(shape: ModelShape, prompt_lens: list[int], G: int, N: int) -> Work:
    lin, att = forward_split(shape, prompt_lens, G, N)
    if shape.lora:
        return Work(2 * lin + 3 * att, 2.0 * shape.weight_bytes)
    return Work(3 * (lin + att), 3.0 * shape.weight_bytes)


def optimizer_work(shape: ModelShape) -> Work:
    return Work(12.0 * shape.trainable_params, 7.0 * shape.trainable_bytes)


@dataclass(frozen=True)
class DevicePeak:
    flops_per_s: float
    bytes_per_s: float
    source: str  # "table:<GPU>" or "measured"
    name: str


def step_floor(
    shape: ModelShape, prompt_lens: list[int], G: int, N: int, beta: float, peak: DevicePeak
) -> dict:
    """{phase: {flops, bytes, seconds}} for generate, reference, forward_backward, optimizer, plus step."""
    pre, dec = prefill_work(shape, prompt_lens), decode_work(shape, prompt_lens, G, N)
    works = {
        "generate": Work(pre.flops + dec.flops, pre.bytes + dec.bytes),
        "reference": reference_work(shape, prompt_lens, G, N, beta),
        "forward_backward": train_work(shape, prompt_lens, G, N),
        "optimizer": optimizer_work(shape),
    }
    seconds = {k: w.seconds(peak) for k, w in works.items()}
    seconds["generate"] = pre.seconds(peak) + dec.seconds(peak)  # floored separately, then added
    out = {k: {"flops": w.flops, "bytes": w.bytes, "seconds": seconds[k]} for k, w in works.items()}
    out["step"] = {k: sum(v[k] for v in out.values()) for k in ("flops", "bytes", "seconds")}
    return out


# -- device peaks -----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul(device: torch.device, dtype: torch.dtype, seconds: float, n: int | None = None) -> float:
    """FLOP/s of repeated n x n ``F.linear`` calls (2*n^3 FLOPs each) for about ``seconds`` after a warm-up.

    ``F.linear`` is what every ``nn.Linear`` runs; on CPUs without native bf16 it is an order of
    magnitude faster than ``torch.mm`` in bfloat16, so ``mm`` would understate the reachable peak.
    """
    n = n or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.nn.functional.linear(a, b)
    _sync(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        torch.nn.functional.linear(a, b)
        iters += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and iters >= 2:
            return 2.0 * n**3 * iters / elapsed


def measure_copy(device: torch.device, seconds: float, nbytes: int = 1 << 27) -> float:
    """Bytes/s of copying an ``nbytes`` buffer (2*nbytes moved: read + write), beyond any cache."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        dst.copy_(src)
        iters += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and iters >= 2:
            return 2.0 * nbytes * iters / elapsed


def gpu_table_peak(name: str, dtype: torch.dtype, tf32: bool) -> tuple[float, float, str] | None:
    """(FLOP/s, bytes/s, table key) from :data:`GPU_TABLE` for a device name, or None if unknown."""
    for key, half, tf32_rate, fp32, bw in GPU_TABLE:
        if key.lower() in name.lower():
            rate = half if dtype in (torch.bfloat16, torch.float16) else (tf32_rate if tf32 else fp32)
            return rate, bw, key
    return None


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the machine type."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_peak(device: torch.device, dtype: torch.dtype, probe_seconds: float = 0.5) -> DevicePeak:
    """The device's peak FLOP/s (in ``dtype``) and memory bandwidth (module docstring)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        found = gpu_table_peak(name, dtype, torch.backends.cuda.matmul.allow_tf32)
        if found is not None:
            return DevicePeak(found[0], found[1], f"table:{found[2]}", name)
    else:
        name = f"{cpu_name()} x{torch.get_num_threads()} threads"
    flops = measure_matmul(device, dtype, probe_seconds)
    bw = measure_copy(device, probe_seconds)
    return DevicePeak(flops, bw, "measured", name)
