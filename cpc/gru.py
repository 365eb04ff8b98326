"""A GRU for CPU training whose backward pass is a short loop over frames.

``nn.GRU`` on the CPU records every frame's gate arithmetic in the autograd graph: about a
dozen small nodes per frame and layer, each with its own dispatch, allocation and (under
autocast) bf16 casts, so its backward pass costs more than its forward. :func:`gru_sequence`
computes the same function with one autograd node per layer:

- forward: the fused recurrence of ``torch.gru`` (no graph), then every frame's gates
  recomputed at once from the outputs (one matrix product for all frames);
- backward: the only sequential part is ``dh_{t-1} = dh_t * z_t + (dh_t * M_t) @ W_hh``
  (three operations per frame; ``M_t`` gathers the gates' derivatives, computed for all
  frames at once); the gradients of the weights, biases and inputs are then single
  products over all frames.

Values and gradients are those of ``nn.GRU`` (tested against autograd in float64),
computed in float32 (``dtype``) whatever autocast is active: under bf16 autocast ``nn.GRU``
would run its whole recurrence, hidden state included, in bf16. The sequential parts run on
one thread (``one_thread``): their operations are too small to share (measured on 2 cores,
the paper model, with ``nn.GRU``: forward + backward 82 ms on 2 threads, 56 ms on 1).

Equations (PyTorch's, gates in the order r, z, n of ``weight_ih_l0``):
``r = sigma(x W_ir + b_ir + h W_hr + b_hr)``, ``z = sigma(x W_iz + b_iz + h W_hz + b_hz)``,
``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h' = (1 - z) * n + z * h``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["gru_sequence", "one_thread", "supports"]

_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@contextlib.contextmanager
def one_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with one intra-op thread (when ``enabled``)."""
    old = torch.get_num_threads()
    if enabled and old > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def supports(gru: nn.Module) -> bool:
    """True for the GRUs :func:`gru_sequence` computes: ``nn.GRU`` with biases,
    ``batch_first``, one direction, no dropout between layers, no projection."""
    return (
        isinstance(gru, nn.GRU)
        and gru.bias
        and gru.batch_first
        and not gru.bidirectional
        and (gru.dropout == 0 or gru.num_layers == 1)
        and getattr(gru, "proj_size", 0) == 0
    )


def gru_sequence(gru: nn.GRU, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``gru(x)[0]`` from a zero initial state: ``x`` (B, T, input) -> (B, T, hidden) computed
    and returned in ``dtype``, with one autograd node per layer (see the module's docstring).
    Raises ``ValueError`` for a GRU that :func:`supports` rejects."""
    if not supports(gru):
        raise ValueError(
            "gru_sequence needs an nn.GRU with bias=True, batch_first=True, one direction "
            "and no dropout; use gru(x)[0] for this one"
        )
    out = x
    for layer in range(gru.num_layers):
        w = [
            getattr(gru, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        out = _GRULayer.apply(out, dtype, *w)
    return out


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        dtype: torch.dtype,
        w_ih: torch.Tensor,
        w_hh: torch.Tensor,
        b_ih: torch.Tensor,
        b_hh: torch.Tensor,
    ) -> torch.Tensor:
        ctx.input_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            w_ih, w_hh, b_ih, b_hh = (t.to(dtype) for t in (w_ih, w_hh, b_ih, b_hh))
            b, _, _ = x.shape
            hidden = w_hh.shape[1]
            h0 = x.new_zeros(1, b, hidden)
            with one_thread():
                out, _ = torch.gru(
                    x, h0, [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, True
                )
            h_prev = torch.cat([h0.transpose(0, 1), out[:, :-1]], dim=1)  # (B, T, H)
            gi = torch.nn.functional.linear(x, w_ih, b_ih).unflatten(-1, (3, hidden))
            gh = torch.nn.functional.linear(h_prev, w_hh, b_hh).unflatten(-1, (3, hidden))
            rz = torch.sigmoid(gi[:, :, :2] + gh[:, :, :2])
            r, z = rz[:, :, 0], rz[:, :, 1]
            n = torch.tanh(gi[:, :, 2] + r * gh[:, :, 2])
            # d(pre-activation of n)/dh' = (1 - z) * (1 - n^2); the others follow from it.
            p = (1 - z) * (1 - n * n)
            coef = torch.stack(
                [
                    p * gh[:, :, 2] * r * (1 - r),  # r's pre-activation
                    (h_prev - n) * z * (1 - z),  # z's pre-activation
                    p,  # n's pre-activation (input side); times r on the hidden side
                ],
                dim=2,
            )  # (B, T, 3, H)
        ctx.save_for_backward(x, h_prev, w_ih, w_hh, coef, r, z)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, h_prev, w_ih, w_hh, coef, r, z = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous()
        b, t, hidden = grad.shape
        # (B, T, 3, H): d loss / d (h W_hh^T + b_hh); (B, T, H): d loss / d h_t
        dgh = coef.new_empty(coef.shape)
        dh_all = grad.new_empty(grad.shape)
        hh_coef = coef.clone()
        hh_coef[:, :, 2] *= r
        carry = grad.new_zeros(b, hidden)
        with one_thread():
            for i in range(t - 1, -1, -1):
                dh = torch.add(grad[:, i], carry, out=dh_all[:, i])
                step = torch.mul(dh.unsqueeze(1), hh_coef[:, i], out=dgh[:, i])
                carry = torch.addmm(dh * z[:, i], step.view(b, 3 * hidden), w_hh)
        dgi = (dh_all.unsqueeze(2) * coef).reshape(b * t, 3 * hidden)
        dgh_flat = dgh.view(b * t, 3 * hidden)
        needs = ctx.needs_input_grad
        dx = (dgi @ w_ih).view(b, t, -1).to(ctx.input_dtype) if needs[0] else None
        dw_ih = dgi.t() @ x.reshape(b * t, -1) if needs[2] else None
        dw_hh = dgh_flat.t() @ h_prev.reshape(b * t, hidden) if needs[3] else None
        db_ih = dgi.sum(0) if needs[4] else None
        db_hh = dgh_flat.sum(0) if needs[5] else None
        return dx, None, dw_ih, dw_hh, db_ih, db_hh
