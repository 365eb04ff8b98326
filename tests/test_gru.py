"""cpc.gru.gru_sequence: nn.GRU's values and gradients with a hand-written backward pass."""

import pytest
import torch
from torch import nn

from cpc.gru import gru_sequence, supports


def _pair(layers: int, dtype: torch.dtype = torch.float64) -> tuple[nn.GRU, torch.Tensor]:
    torch.manual_seed(0)
    gru = nn.GRU(5, 7, num_layers=layers, batch_first=True).to(dtype)
    x = torch.randn(3, 11, 5, dtype=dtype, requires_grad=True)
    return gru, x


@pytest.mark.parametrize("layers", [1, 2])
def test_values_and_gradients_match_nn_gru(layers: int) -> None:
    gru, x = _pair(layers)
    ref = gru(x)[0]
    weights = [x, *gru.parameters()]
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, weights, g)
    out = gru_sequence(gru, x)
    grads = torch.autograd.grad(out, weights, g)
    assert out.dtype == torch.float32  # computed in float32 whatever the input
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert a.shape == b.shape
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-4)


class _Seq(nn.Module):
    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.gru = gru

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gru_sequence(self.gru, x, dtype=torch.float64)


def test_gradcheck_in_float64() -> None:
    """The backward formulas themselves, without float32 rounding."""
    torch.manual_seed(1)
    model = _Seq(nn.GRU(3, 4, num_layers=2, batch_first=True).double())
    names = [n for n, _ in model.named_parameters()]
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    weights = [p.detach().requires_grad_() for p in model.parameters()]

    def f(x: torch.Tensor, *w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, w)), (x,))

    assert torch.autograd.gradcheck(f, (x, *weights))


def test_bf16_autocast_input_gets_bf16_gradient() -> None:
    gru, _ = _pair(1, torch.float32)
    x = torch.randn(2, 9, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = (x * 1).to(torch.bfloat16)
        out = gru_sequence(gru, z)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    ref = gru(z.float())[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_unsupported_grus_are_named() -> None:
    assert not supports(nn.GRU(3, 4))  # batch_first=False
    assert not supports(nn.GRU(3, 4, batch_first=True, bidirectional=True))
    assert not supports(nn.GRU(3, 4, batch_first=True, bias=False))
    assert not supports(nn.LSTM(3, 4, batch_first=True))
    with pytest.raises(ValueError, match="batch_first"):
        gru_sequence(nn.GRU(3, 4), torch.zeros(1, 2, 3))
