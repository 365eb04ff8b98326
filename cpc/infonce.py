"""InfoNCE (van den Oord et al. 2018, eq. 4) with the negative-sampling strategies of Table 2.

Domain-agnostic: a domain supplies, per sequence ``b`` of a batch, targets ``z[b, t]`` (the
encoder outputs, ``(B, T, D)``), contexts ``c[b, t]`` (the autoregressive outputs,
``(B, T, C)``) and a group id per sequence (the speaker for audio; any grouping elsewhere,
e.g. the image a column of patches comes from). For every context position ``t`` and every
step ``k = 1..K`` the positive is ``z[b, t + k]``; the ``N`` negatives are other target
vectors of the same batch, drawn once per ``(b, t)`` and shared by all ``k``. The score is
log-bilinear, ``f_k = exp(z^T W_k c_t)``, and the loss for one ``(b, t, k)`` is the
cross-entropy of picking the positive among the ``1 + N`` candidates.

Everything is vectorised: all ``W_k c_t`` come from one ``Linear(C, K * D)``; the ``K``
positives and ``N`` negatives of every ``(b, t)`` are gathered from ``z`` with one
``index_select`` and scored with one batched contraction ``(K, D) x (D, K + N)`` per
``(b, t)``. There is no Python loop over time or k, and no host synchronisation.

Negative-sampling strategies (``strategy``), as in the paper's Table 2:

- ``mixed_speaker``: from any sequence of the batch (the current one included);
- ``same_speaker``: from sequences of the same group (the current one included);
- ``mixed_speaker_excl``: from any other sequence (the current one excluded);
- ``same_speaker_excl``: from other sequences of the same group;
- ``current_sequence``: only from the current sequence.

The time index of a negative is uniform over the valid frames of the chosen sequence. As in
the paper, negatives are not screened against the positive: a ``mixed_speaker`` or
``current_sequence`` negative can occasionally be the positive frame itself.

An "excl" strategy needs, for every sequence, at least one other candidate sequence: a group
with a single sequence in the batch (``same_speaker_excl``) or a batch of one sequence
(``mixed_speaker_excl``) has none. With ``on_empty="error"`` (the default) this raises
:class:`NegativeSamplingError` naming the groups and the fix. Checking needs the group ids on
the host; for tensors on an accelerator, where the check would stall the device every step,
callers pass ``on_empty="fallback"``: a sequence without candidates then draws from the other
sequences of the batch (``mixed_speaker_excl``), and from itself if it is alone. Data
pipelines should make the case impossible by construction (e.g. batches made of several
windows per speaker), so that the fallback never triggers.

The mutual-information lower bound reported is ``log(N + 1) - L`` (the paper's
``I(x_{t+k}; c_t) >= log(N) - L_N`` with ``N`` there counting the positive too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Strategy = Literal[
    "mixed_speaker", "same_speaker", "mixed_speaker_excl", "same_speaker_excl", "current_sequence"
]
STRATEGIES: tuple[str, ...] = (
    "mixed_speaker",
    "same_speaker",
    "mixed_speaker_excl",
    "same_speaker_excl",
    "current_sequence",
)


class NegativeSamplingError(ValueError):
    """The batch cannot supply negatives for the requested strategy."""


@dataclass
class Negatives:
    """Where the negatives of every context position come from.

    ``seq[b, t, n]`` and ``time[b, t, n]`` index the target tensor: the n-th negative of
    context ``(b, t)`` is ``z[seq[b, t, n], time[b, t, n]]``. Both are ``(B, T, N)`` int64.
    """

    seq: torch.Tensor
    time: torch.Tensor


def _candidates(
    strategy: str, groups: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """(B, B) bool: may sequence ``j`` supply negatives for sequence ``i``."""
    eye = torch.eye(batch, dtype=torch.bool, device=device)
    if strategy == "mixed_speaker":
        return torch.ones(batch, batch, dtype=torch.bool, device=device)
    if strategy == "mixed_speaker_excl":
        return ~eye
    if strategy == "current_sequence":
        return eye
    if groups is None:
        raise NegativeSamplingError(
            f"negative strategy {strategy!r} needs a group id per sequence (e.g. the speaker); "
            "pass groups=, or use mixed_speaker / mixed_speaker_excl / current_sequence"
        )
    if groups.shape != (batch,):
        raise ValueError(f"groups must have shape ({batch},), got {tuple(groups.shape)}")
    same = groups.view(-1, 1) == groups.view(1, -1)
    return same & ~eye if strategy == "same_speaker_excl" else same


def sample_negatives(
    batch: int,
    steps: int,
    num_negatives: int,
    strategy: str = "mixed_speaker",
    groups: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    on_empty: Literal["error", "fallback"] = "error",
) -> Negatives:
    """Draw ``num_negatives`` negatives for every context position of a ``(batch, steps)`` grid.

    Args:
        batch, steps: B sequences of T frames (the shape of the target tensor).
        num_negatives: N, negatives per context position.
        strategy: one of :data:`STRATEGIES` (see the module docstring).
        groups: (B,) integer group id per sequence; needed by the ``same_speaker*`` strategies.
        lengths: (B,) valid frames per sequence (default: all T); negatives are drawn from
            valid frames only. Every length must be >= 1.
        generator: random generator on ``device`` (for reproducible negatives).
        device: where the indices live (default: that of ``groups``/``lengths``, else CPU).
        on_empty: what to do when a sequence has no candidate sequence (see module docstring).

    Returns:
        :class:`Negatives` with ``(B, T, N)`` sequence and time indices.
    """
    if strategy not in STRATEGIES:
        raise NegativeSamplingError(
            f"unknown negative strategy {strategy!r}; choose one of {list(STRATEGIES)}"
        )
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if device is None:
        ref = groups if groups is not None else lengths
        device = ref.device if ref is not None else torch.device("cpu")
    device = torch.device(device)
    shape = (batch, steps, num_negatives)
    cand = _candidates(strategy, groups.to(device) if groups is not None else None, batch, device)
    counts = cand.sum(1)
    if on_empty == "error":
        if device.type != "cpu":
            raise ValueError(
                "on_empty='error' checks the batch on the host; pass CPU tensors or use "
                "on_empty='fallback' on an accelerator"
            )
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            if strategy == "mixed_speaker_excl":
                raise NegativeSamplingError(
                    "negative strategy 'mixed_speaker_excl' needs at least 2 sequences per "
                    "batch, got 1; raise the batch size or use 'current_sequence'"
                )
            bad = sorted({int(groups[i]) for i in empty}) if groups is not None else []
            raise NegativeSamplingError(
                f"negative strategy {strategy!r}: group(s) {bad} have a single sequence in this "
                f"batch (sequences {empty}), so no other sequence of the same group can supply "
                "negatives; build batches with at least 2 sequences per group, or use "
                "'same_speaker' / 'mixed_speaker_excl'"
            )
    elif on_empty == "fallback":
        eye = torch.eye(batch, dtype=torch.bool, device=device)
        cand = torch.where((counts == 0).view(-1, 1), ~eye, cand)
        counts = cand.sum(1)
        cand = torch.where((counts == 0).view(-1, 1), eye, cand)
        counts = cand.sum(1)
    else:
        raise ValueError(f"on_empty must be 'error' or 'fallback', got {on_empty!r}")

    # The r-th candidate of row i: candidates sorted first (stable keeps index order).
    order = torch.argsort((~cand).to(torch.int8), dim=1, stable=True)
    u = torch.rand(shape, generator=generator, device=device)
    r = (u * counts.view(-1, 1, 1)).long().clamp_max(counts.view(-1, 1, 1) - 1)
    seq = torch.gather(order, 1, r.view(batch, -1)).view(shape)

    v = torch.rand(shape, generator=generator, device=device)
    if lengths is None:
        time = (v * steps).long().clamp_max(steps - 1)
    else:
        seq_len = lengths.to(device).long()[seq]
        time = torch.minimum((v * seq_len).long(), seq_len - 1)
    return Negatives(seq=seq, time=time)


# oneDNN's fp32 matmul (private torch API; None where torch lacks it).
_MKLDNN_LINEAR = getattr(torch._C._nn, "mkldnn_linear", None)


def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Route ``x @ w.T`` through oneDNN: fp32 on a CPU, outside autocast and compilation."""
    return (
        _MKLDNN_LINEAR is not None
        and torch.backends.mkldnn.is_available()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _onednn_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-D fp32 CPU tensors, by oneDNN."""
    return _MKLDNN_LINEAR(a.contiguous().to_mkldnn(), b.contiguous().to_mkldnn(), None).to_dense()


class _OneDNNLinear(torch.autograd.Function):
    """``x @ w.T`` (2-D ``x``, no bias) with forward and backward products by oneDNN.

    Why: torch's fp32 ``linear`` calls the BLAS it links (MKL), which on AMD CPUs runs an
    AVX2 code path at about half the rate of oneDNN's AVX-512 kernels (measured on the
    predictors of the paper model, 1024 x 256 -> 6144, forward + backward: 99 ms -> 57 ms,
    one thread). Same values up to float rounding."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return _onednn_mm(x, w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        gx = _onednn_mm(grad, w.t()) if ctx.needs_input_grad[0] else None
        gw = _onednn_mm(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        return gx, gw


class Predictors(nn.Module):
    """The K log-bilinear predictors: ``W_k c_t`` for k = 1..K in one linear map.

    Input ``(..., C)`` contexts, output ``(..., K, D)`` predictions (``[..., k-1, :]`` is
    ``W_k c_t``, to be scored against ``z_{t+k}``). On CPUs in fp32 the product runs through
    oneDNN (see :class:`_OneDNNLinear`).
    """

    def __init__(self, context_dim: int, target_dim: int, num_steps: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.target_dim = target_dim
        self.linear = nn.Linear(context_dim, num_steps * target_dim, bias=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        if _use_onednn(context, w) and context.numel() > 0:
            out = _OneDNNLinear.apply(context.reshape(-1, context.shape[-1]), w)
        else:
            out = self.linear(context)
        return out.view(*context.shape[:-1], self.num_steps, self.target_dim)


def info_nce(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    negatives: Negatives,
    lengths: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """InfoNCE for all k, t and sequences at once.

    Args:
        predictions: (B, T, K, D); ``predictions[b, t, k-1]`` is ``W_k c_t``.
        targets: (B, T, D) encoder outputs ``z``.
        negatives: (B, T, N) indices into ``targets`` (see :func:`sample_negatives`).
        lengths: (B,) valid frames per sequence (default: all T). Context ``(b, t)`` counts
            for step k only if ``t + k < lengths[b]``.

    Returns:
        dict of tensors (no host sync): ``loss`` (scalar: mean over k of the per-k mean
        cross-entropy), ``loss_per_k`` (K,), ``accuracy`` (K,) (fraction of contexts whose
        positive scores highest among the 1 + N candidates; ties count for the positive),
        ``mi_bound`` (scalar, ``log(N + 1) - loss``), ``mi_bound_per_k`` (K,).
    """
    b, t, k, d = predictions.shape
    if targets.shape != (b, t, d):
        raise ValueError(
            f"targets must be (B, T, D) = {(b, t, d)} to match predictions, "
            f"got {tuple(targets.shape)}"
        )
    if t <= k:
        raise ValueError(
            f"sequences of {t} frames are too short to predict {k} steps ahead; "
            "use longer windows or fewer prediction steps"
        )
    n = negatives.seq.shape[-1]
    dev = targets.device
    # Candidates of context (b, t): its K positives z[b, t + 1 .. t + K] (zero frames past the
    # end, masked below), then its N negatives, gathered in one index_select from z padded
    # with K zero frames per sequence.
    tp = t + k
    padded = F.pad(targets, (0, 0, 0, k)).reshape(b * tp, d)
    pos_idx = (
        torch.arange(b, device=dev).view(b, 1, 1) * tp
        + torch.arange(t, device=dev).view(1, t, 1)
        + torch.arange(1, k + 1, device=dev).view(1, 1, k)
    ).expand(b, t, k)
    neg_idx = negatives.seq.to(dev) * tp + negatives.time.to(dev)
    idx = torch.cat([pos_idx, neg_idx], dim=2).reshape(-1)  # (B * T * (K + N),)
    cand = padded.index_select(0, idx).view(b * t, k + n, d)
    # One batched contraction: every prediction W_k c_t against every candidate of (b, t).
    # Prediction k's positive is candidate k (the diagonal of the first K columns); the
    # K - 1 other positive columns of each row are computed and dropped (a small product).
    scores = torch.bmm(predictions.reshape(b * t, k, d), cand.transpose(1, 2))
    pos_score = torch.diagonal(scores[:, :, :k], dim1=1, dim2=2)  # (B * T, K)
    logits = torch.cat([pos_score.unsqueeze(-1), scores[:, :, k:]], dim=-1)
    logits = logits.view(b, t, k, 1 + n).float()
    nll = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # (B, T, K)
    correct = (logits.argmax(dim=-1) == 0).float()

    steps = torch.arange(1, k + 1, device=targets.device)
    pos_t = torch.arange(t, device=targets.device).view(t, 1) + steps.view(1, k)  # (T, K)
    if lengths is None:
        mask = (pos_t < t).unsqueeze(0).expand(b, t, k)
    else:
        mask = pos_t.unsqueeze(0) < lengths.to(targets.device).view(b, 1, 1)
    mask = mask.float()
    count = mask.sum(dim=(0, 1)).clamp_min(1.0)
    loss_per_k = (nll * mask).sum(dim=(0, 1)) / count
    accuracy = (correct * mask).sum(dim=(0, 1)) / count
    loss = loss_per_k.mean()
    log_n = math.log(n + 1)
    return {
        "loss": loss,
        "loss_per_k": loss_per_k.detach(),
        "accuracy": accuracy.detach(),
        "mi_bound": (log_n - loss).detach(),
        "mi_bound_per_k": (log_n - loss_per_k).detach(),
    }


class InfoNCE(nn.Module):
    """Predictors ``W_k`` plus negative sampling plus the InfoNCE loss.

    ``forward(context (B, T, C), targets (B, T, D), groups=None (B,), lengths=None (B,),
    generator=None)`` returns the dict of :func:`info_nce`.
    """

    def __init__(
        self,
        context_dim: int,
        target_dim: int,
        num_steps: int,
        num_negatives: int,
        strategy: str = "mixed_speaker",
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise NegativeSamplingError(
                f"unknown negative strategy {strategy!r}; choose one of {list(STRATEGIES)}"
            )
        self.predictors = Predictors(context_dim, target_dim, num_steps)
        self.num_negatives = num_negatives
        self.strategy = strategy

    def forward(
        self,
        context: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        b, t = targets.shape[:2]
        on_cpu = targets.device.type == "cpu"
        negatives = sample_negatives(
            b,
            t,
            self.num_negatives,
            self.strategy,
            groups=groups,
            lengths=lengths,
            generator=generator,
            device=targets.device,
            on_empty="error" if on_cpu else "fallback",
        )
        return info_nce(self.predictors(context), targets, negatives, lengths)
