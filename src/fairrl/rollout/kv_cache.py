"""A key/value cache that writes in place instead of concatenating.

Hugging Face's ``DynamicLayer`` appends each decoded token with ``torch.cat``: every step copies the
whole cache of every layer into a new tensor, O(L^2) bytes over a completion, plus an allocation per
layer and step. :class:`GrowingLayer` reserves room for ``capacity`` positions once (prompt +
``max_new_tokens``) and copies only the new keys/values into it; ``keys``/``values`` are views of the
filled prefix, so everything else ``DynamicLayer`` does (lengths, masks, ``batch_repeat_interleave``,
cropping) sees the same tensors as before. When the buffer no longer backs ``keys`` (after a batch
repeat or selection, which replace the tensors) or is too small, the next update copies the prefix
into a fresh buffer once.

Same numbers as the concatenating cache (attention reads the same values); measured on the 2-core CPU
with SmolLM2-135M, 8 rows and a 130-token prompt: ``aten::cat`` 18 ms per decode step -> 2 ms.
"""

from __future__ import annotations

import inspect

import torch


def _dynamic_layer_class():
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # transformers without per-layer caches
        return None, None
    return DynamicCache, DynamicLayer


_DynamicCache, _DynamicLayer = _dynamic_layer_class()
# transformers 4.56 initialises a layer from the keys alone and marks it by ``keys is not None``; 4.57+
# takes keys and values and sets ``is_initialized``.
_INIT_TAKES_VALUES = _DynamicLayer is not None and (
    len(inspect.signature(_DynamicLayer.lazy_initialization).parameters) > 2
)

if _DynamicLayer is not None:

    class GrowingLayer(_DynamicLayer):
        """``DynamicLayer`` backed by a preallocated ``[B, H, capacity, D]`` buffer (module docstring)."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None

        def _reserve(self, n: int, add: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            cap = max(self.capacity, n + add)
            B, H, _, _ = key_states.shape
            k = key_states.new_empty(B, H, cap, key_states.shape[-1])
            v = value_states.new_empty(B, H, cap, value_states.shape[-1])
            if n:
                k[:, :, :n].copy_(self.keys)
                v[:, :, :n].copy_(self.values)
            self._k, self._v = k, v

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not getattr(self, "is_initialized", self.keys is not None):
                if _INIT_TAKES_VALUES:
                    self.lazy_initialization(key_states, value_states)
                else:
                    self.lazy_initialization(key_states)
            n, add = self.get_seq_length(), key_states.shape[-2]
            k = self._k
            if (
                k is None
                or k.shape[0] != key_states.shape[0]
                or n + add > k.shape[-2]
                or (n and self.keys.data_ptr() != k.data_ptr())
            ):
                self._reserve(n, add, key_states, value_states)
            self._k[:, :, n : n + add].copy_(key_states)
            self._v[:, :, n : n + add].copy_(value_states)
            self.keys, self.values = self._k[:, :, : n + add], self._v[:, :, : n + add]
            return self.keys, self.values

else:  # pragma: no cover - old transformers
    GrowingLayer = None


def growing_cache(model, capacity: int):
    """A ``DynamicCache`` for ``model`` whose full-attention layers are :class:`GrowingLayer`, or None.

    None (let the model build its own cache) when this transformers has no per-layer caches or the
    model has layers of another kind (sliding-window, linear attention, ...).
    """
    if GrowingLayer is None:
        return None
    try:
        cache = _DynamicCache(config=model.config)
    except (TypeError, ValueError, AttributeError):
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not _DynamicLayer for layer in layers):
        return None
    cache.layers = [GrowingLayer(capacity) for _ in layers]
    return cache
