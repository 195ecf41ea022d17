"""Log-probs from hidden states in chunks equal a full log-softmax, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from fairrl.models.head_logprobs import chunk_rows, head_logprobs


def test_one_token_by_hand():
    """W = [[1, 0], [0, 1], [1, 1]], h = [1, 2]: z = [1, 2, 3], target 2."""
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    h = torch.tensor([[1.0, 2.0]], requires_grad=True)
    logp, ent = head_logprobs(h, W, None, torch.tensor([2]), with_entropy=True)
    lse = math.log(math.e + math.e**2 + math.e**3)  # 3.40761
    assert logp.item() == pytest.approx(3 - lse, abs=1e-6)  # -0.40761
    p = [math.exp(z - lse) for z in (1, 2, 3)]  # 0.09003, 0.24473, 0.66524
    assert ent.item() == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-6)
    logp.sum().backward()
    dz = [-p[0], -p[1], 1 - p[2]]  # onehot(y) - softmax(z)
    # dL/dh = W^T dz = [dz0 + dz2, dz1 + dz2] = [0.24473, 0.09003]
    torch.testing.assert_close(h.grad, torch.tensor([[dz[0] + dz[2], dz[1] + dz[2]]]))
    # dL/dW = dz h^T
    torch.testing.assert_close(W.grad, torch.tensor([[d * 1.0, d * 2.0] for d in dz]))


@pytest.mark.parametrize("keep_probs", [True, False], ids=["kept-softmax", "recomputed"])
@pytest.mark.parametrize("chunk", [None, 3], ids=["one-chunk", "chunks-of-3"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_full_log_softmax_with_gradients(keep_probs, chunk, temperature, bias):
    torch.manual_seed(0)
    n, d, V = 10, 8, 40
    h0, W0 = torch.randn(n, d), torch.randn(V, d)
    b0 = torch.randn(V) if bias else None
    y = torch.randint(0, V, (n,))
    g = torch.randn(n)  # an arbitrary upstream gradient

    def leaves():
        return [t.clone().requires_grad_(True) if t is not None else None for t in (h0, W0, b0)]

    h, W, b = leaves()
    logp, ent = head_logprobs(h, W, b, y, temperature, with_entropy=True, chunk=chunk, keep_probs=keep_probs)
    (logp * g).sum().backward()

    h2, W2, b2 = leaves()
    z = torch.nn.functional.linear(h2, W2, b2) / temperature
    full = torch.log_softmax(z, dim=-1)
    ref = full.gather(-1, y[:, None]).squeeze(-1)
    (ref * g).sum().backward()
    torch.testing.assert_close(logp, ref.detach())
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1).detach())
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(W.grad, W2.grad)
    if bias:
        torch.testing.assert_close(b.grad, b2.grad)


def test_frozen_weight_gets_no_gradient_and_empty_input_works():
    W = torch.randn(7, 4)  # frozen output layer (LoRA): only the hidden states need a gradient
    h = torch.randn(3, 4, requires_grad=True)
    logp, ent = head_logprobs(h, W, None, torch.tensor([0, 1, 6]))
    assert ent is None
    logp.sum().backward()
    assert h.grad is not None and W.grad is None
    empty, _ = head_logprobs(torch.zeros(0, 4, requires_grad=True), W, None, torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,)


def test_chunk_rows_bounds_the_chunk():
    assert chunk_rows(49_152) * 49_152 <= 1 << 26 < (chunk_rows(49_152) + 1) * 49_152
    assert chunk_rows(1 << 30) == 1
