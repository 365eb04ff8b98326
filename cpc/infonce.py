"""InfoNCE (van den Oord et al. 2018, eq. 4) with the negative-sampling strategies of Table 2.

Domain-agnostic: a domain supplies, per sequence ``b`` of a batch, targets ``z[b, t]`` (the
encoder outputs, ``(B, T, D)``), contexts ``c[b, t]`` (the autoregressive outputs,
``(B, T, C)``) and, for the group strategies, a group id per sequence. Speech is one example
(a sequence is a window of an utterance, its group the speaker); others are images (a
sequence is a column of patches, its group the image), text (a window of a document, the
document) and reinforcement learning (a trajectory segment, the episode or environment).
For every context position ``t`` and every step ``k = 1..K`` the positive is
``z[b, t + k]``; the negatives are other target vectors of the same batch. The score is
log-bilinear, ``f_k = exp(z^T W_k c_t)``, and the loss for one ``(b, t, k)`` is the
cross-entropy of picking the positive among the candidates.

Two paths compute the loss, both vectorised (no Python loop over time or k, no host
synchronisation on an accelerator); all ``W_k c_t`` come from one ``Linear(C, K * D)``
(:class:`Predictors`):

- Sampled (:func:`sample_negatives` + :func:`info_nce`; ``InfoNCE(num_negatives=N)``, the
  paper's set-up): ``N`` negatives drawn once per ``(b, t)`` and shared by all ``k``. The
  ``K`` positives and ``N`` negatives of every ``(b, t)`` are gathered from ``z`` with one
  ``index_select`` and scored with one batched contraction ``(K, D) x (D, K + N)`` per
  ``(b, t)``.
- All pairs (:func:`info_nce_all_pairs`; ``InfoNCE(num_negatives=0)``), for domains with
  hundreds of negatives (e.g. image patches, where every other patch of the batch is a
  negative): every valid target frame of every permitted sequence is a candidate, and the
  scores are one matmul of all ``B * T * K`` predictions against all ``B * T`` targets.
  Memory grows with ``B * T * D`` plus the ``(B * T * K, B * T)`` score matrix; no
  ``(B, T, N, D)`` copies of the targets are made.

Negative-sampling strategies (``strategy``), as in the paper's Table 2 (where the group is
the speaker); the speech names are accepted as aliases (:data:`STRATEGY_ALIASES`):

- ``batch`` (alias ``mixed_speaker``): from any sequence of the batch, the current one
  included;
- ``batch_excl`` (alias ``mixed_speaker_excl``): from any other sequence;
- ``same_group`` (alias ``same_speaker``): from sequences with the same group id, the
  current one included;
- ``same_group_excl`` (alias ``same_speaker_excl``): from other sequences of the same group;
- ``current_sequence``: only from the current sequence.

Sampled path: the time index of a negative is uniform over the valid frames of the chosen
sequence. As in the paper, negatives are not screened against the positive: a ``batch``,
``same_group`` or ``current_sequence`` negative can occasionally be the positive frame
itself. All-pairs path: the candidates are a set, so the positive appears exactly once.

An "excl" strategy needs, for every sequence, at least one other candidate sequence: a group
with a single sequence in the batch (``same_group_excl``) or a batch of one sequence
(``batch_excl``) has none. With ``on_empty="error"`` (the default) this raises
:class:`NegativeSamplingError` naming the groups and the fix. Checking needs the group ids on
the host; for tensors on an accelerator, where the check would stall the device every step,
callers pass ``on_empty="fallback"``: a sequence without candidates then draws from the other
sequences of the batch (``batch_excl``), and from itself if it is alone. Data pipelines
should make the case impossible by construction (e.g. batches made of several sequences per
group: several windows per speaker), so that the fallback never triggers. The all-pairs path
checks on CPU tensors only; on an accelerator such a context has the positive as its only
candidate (loss 0, counted as correct).

The mutual-information lower bound reported is ``log(n) - L``, ``n`` the number of
candidates including the positive (the paper's ``I(x_{t+k}; c_t) >= log(N) - L_N`` with
``N`` there counting the positive too): ``n = N + 1`` on the sampled path, and the mean
candidate count of the counted contexts on the all-pairs path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Strategy = Literal[
    "batch",
    "batch_excl",
    "same_group",
    "same_group_excl",
    "current_sequence",
    "mixed_speaker",
    "mixed_speaker_excl",
    "same_speaker",
    "same_speaker_excl",
]
#: The canonical strategy names (see the module docstring).
STRATEGIES: tuple[str, ...] = (
    "batch",
    "batch_excl",
    "same_group",
    "same_group_excl",
    "current_sequence",
)
#: The speech names of the paper's Table 2 (the group is the speaker) -> canonical names.
STRATEGY_ALIASES: dict[str, str] = {
    "mixed_speaker": "batch",
    "mixed_speaker_excl": "batch_excl",
    "same_speaker": "same_group",
    "same_speaker_excl": "same_group_excl",
}


class NegativeSamplingError(ValueError):
    """The batch cannot supply negatives for the requested strategy."""


def canonical_strategy(name: str) -> str:
    """The canonical name of strategy ``name`` (a canonical name or an alias).

    Raises :class:`NegativeSamplingError` naming the valid choices for an unknown name.
    """
    if name in STRATEGIES:
        return name
    if name in STRATEGY_ALIASES:
        return STRATEGY_ALIASES[name]
    aliases = ", ".join(f"{a} -> {c}" for a, c in STRATEGY_ALIASES.items())
    raise NegativeSamplingError(
        f"unknown negative strategy {name!r}; choose one of {list(STRATEGIES)} (aliases: {aliases})"
    )


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
    canon = canonical_strategy(strategy)
    eye = torch.eye(batch, dtype=torch.bool, device=device)
    if canon == "batch":
        return torch.ones(batch, batch, dtype=torch.bool, device=device)
    if canon == "batch_excl":
        return ~eye
    if canon == "current_sequence":
        return eye
    if groups is None:
        raise NegativeSamplingError(
            f"negative strategy {strategy!r} needs a group id per sequence (e.g. the speaker "
            "of an utterance, the image of a patch column); pass groups=, or use "
            "'batch' / 'batch_excl' / 'current_sequence'"
        )
    if groups.shape != (batch,):
        raise ValueError(f"groups must have shape ({batch},), got {tuple(groups.shape)}")
    same = groups.view(-1, 1) == groups.view(1, -1)
    return same & ~eye if canon == "same_group_excl" else same


def _raise_if_empty(
    strategy: str, cand: torch.Tensor, groups: torch.Tensor | None, batch: int
) -> None:
    """Raise NegativeSamplingError if a sequence has no candidate sequence (host check)."""
    empty = (cand.sum(1) == 0).nonzero().flatten().tolist()
    if not empty:
        return
    if canonical_strategy(strategy) == "batch_excl":
        raise NegativeSamplingError(
            f"negative strategy {strategy!r} needs at least 2 sequences per batch, got "
            f"{batch}; raise the batch size or use 'batch' / 'current_sequence'"
        )
    bad = sorted({int(groups[i]) for i in empty}) if groups is not None else []
    raise NegativeSamplingError(
        f"negative strategy {strategy!r}: group(s) {bad} (e.g. speakers) have a single "
        f"sequence in this batch (sequences {empty}), so no other sequence of the same group "
        "can supply negatives; build batches with at least 2 sequences per group (e.g. "
        "several windows per speaker), or use 'same_group' / 'batch_excl'"
    )


def sample_negatives(
    batch: int,
    steps: int,
    num_negatives: int,
    strategy: str = "batch",
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
        strategy: one of :data:`STRATEGIES` or an alias of :data:`STRATEGY_ALIASES` (see the
            module docstring).
        groups: (B,) integer group id per sequence (e.g. the speaker); needed by the
            ``same_group*`` strategies.
        lengths: (B,) valid frames per sequence (default: all T); negatives are drawn from
            valid frames only. Every length must be >= 1.
        generator: random generator on ``device`` (for reproducible negatives).
        device: where the indices live (default: that of ``groups``/``lengths``, else CPU).
        on_empty: what to do when a sequence has no candidate sequence (see module docstring).

    Returns:
        :class:`Negatives` with ``(B, T, N)`` sequence and time indices.
    """
    canonical_strategy(strategy)
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if device is None:
        ref = groups if groups is not None else lengths
        device = ref.device if ref is not None else torch.device("cpu")
    device = torch.device(device)
    shape = (batch, steps, num_negatives)
    cand = _candidates(strategy, groups.to(device) if groups is not None else None, batch, device)
    if on_empty == "error":
        if device.type != "cpu":
            raise ValueError(
                "on_empty='error' checks the batch on the host; pass CPU tensors or use "
                "on_empty='fallback' on an accelerator"
            )
        _raise_if_empty(strategy, cand, groups, batch)
        counts = cand.sum(1)
    elif on_empty == "fallback":
        counts = cand.sum(1)
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


def _check_shapes(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, T, K, D) of predictions (B, T, K, D) and targets (B, T, D); ValueError if unusable."""
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
    return b, t, k, d


def _check_offset_shapes(
    predictions: torch.Tensor, targets: torch.Tensor, offset: int
) -> tuple[int, int, int, int]:
    """:func:`_check_shapes` of the predictions against their ``offset`` rows of ``targets``
    (``(B', T, D)``, ``B' >= B``); ValueError if those rows lie outside the targets."""
    bt, b = targets.shape[0], predictions.shape[0]
    if not 0 <= offset <= bt - b:
        raise ValueError(
            f"offset {offset}: the {b} sequences of predictions must lie within the {bt} of targets"
        )
    return _check_shapes(predictions, targets[offset : offset + b])


def _context_mask(
    b: int, t: int, k: int, lengths: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """(B, T, K) bool: context ``(b, t)`` counts for step ``k`` (``t + k < lengths[b]``)."""
    steps = torch.arange(1, k + 1, device=device)
    pos_t = torch.arange(t, device=device).view(t, 1) + steps.view(1, k)  # (T, K)
    if lengths is None:
        return (pos_t < t).unsqueeze(0).expand(b, t, k)
    return pos_t.unsqueeze(0) < lengths.to(device).view(b, 1, 1)


def info_nce(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    negatives: Negatives,
    lengths: torch.Tensor | None = None,
    offset: int = 0,
) -> dict[str, torch.Tensor]:
    """InfoNCE for all k, t and sequences at once.

    Args:
        predictions: (B, T, K, D); ``predictions[b, t, k-1]`` is ``W_k c_t``.
        targets: (B, T, D) encoder outputs ``z``.
        negatives: (B, T, N) indices into ``targets`` (see :func:`sample_negatives`).
        lengths: (B,) valid frames per sequence (default: all T). Context ``(b, t)`` counts
            for step k only if ``t + k < lengths[b]``.
        offset: with ``targets`` of more sequences than ``predictions`` (``(B', T, D)``, e.g.
            the targets of every process, gathered), the predictions are those of sequences
            ``offset .. offset + B - 1`` of ``targets``, whose positives are taken there;
            ``negatives`` then index all ``B'`` sequences and ``lengths`` has ``B'`` entries.

    Returns:
        dict of tensors (no host sync): ``loss`` (scalar: mean over k of the per-k mean
        cross-entropy), ``loss_per_k`` (K,), ``accuracy`` (K,) (fraction of contexts whose
        positive scores highest among the 1 + N candidates; ties count for the positive),
        ``mi_bound`` (scalar, ``log(N + 1) - loss``), ``mi_bound_per_k`` (K,).
    """
    bt = targets.shape[0]
    b, t, k, d = _check_offset_shapes(predictions, targets, offset)
    n = negatives.seq.shape[-1]
    dev = targets.device
    if lengths is not None and bt != b:
        lengths = lengths.to(dev)[offset : offset + b]
    # Candidates of context (b, t): its K positives z[b, t + 1 .. t + K] (zero frames past the
    # end, masked below), then its N negatives, gathered in one index_select from z padded
    # with K zero frames per sequence.
    tp = t + k
    padded = F.pad(targets, (0, 0, 0, k)).reshape(bt * tp, d)
    pos_idx = (
        torch.arange(offset, offset + b, device=dev).view(b, 1, 1) * tp
        + torch.arange(t, device=dev).view(1, t, 1)
        + torch.arange(1, k + 1, device=dev).view(1, 1, k)
    ).expand(b, t, k)
    neg_idx = negatives.seq.to(dev) * tp + negatives.time.to(dev)
    idx = torch.cat([pos_idx, neg_idx], dim=2).reshape(-1)  # (B * T * (K + N),)
    cand = padded.index_select(0, idx).view(b * t, k + n, d)
    # One batched contraction: every prediction W_k c_t against every candidate of (b, t).
    # Prediction k's positive is candidate k (the diagonal of the first K columns); the
    # K - 1 other positive columns of each row are computed and dropped (a small product).
    # Computed as cand @ predictions^T and viewed transposed: the large operand (the
    # candidates) is then used in its own layout, forward and backward, and its gradient
    # needs no transposed copy (measured: 15-25 % less time in this product, fp32 CPU).
    scores = torch.bmm(cand, predictions.reshape(b * t, k, d).transpose(1, 2)).transpose(1, 2)
    pos_score = torch.diagonal(scores[:, :, :k], dim1=1, dim2=2)  # (B * T, K)
    logits = torch.cat([pos_score.unsqueeze(-1), scores[:, :, k:]], dim=-1)
    logits = logits.view(b, t, k, 1 + n).float()
    nll = torch.logsumexp(logits, dim=-1) - logits[..., 0]  # (B, T, K)
    correct = (logits.argmax(dim=-1) == 0).float()

    mask = _context_mask(b, t, k, lengths, dev).float()
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


def info_nce_all_pairs(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    strategy: str = "batch",
    groups: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    offset: int = 0,
) -> dict[str, torch.Tensor]:
    """InfoNCE with every permitted target frame of the batch as a negative ("all pairs").

    The candidates of context ``(b, t)`` for step ``k`` are every valid target frame
    ``z[b', t']`` (``t' < lengths[b']``) of every sequence ``b'`` that ``strategy`` permits
    for ``b``, plus the positive ``z[b, t + k]`` (always, once; for the ``*_excl`` strategies
    the positive's own sequence is otherwise excluded). The scores are one matmul,
    ``predictions.reshape(B * T * K, D) @ targets.reshape(B * T, D).T``, masked to ``-inf``
    outside the candidates: memory grows with ``B * T * D`` plus the ``(B * T * K, B * T)``
    score matrix, and no ``(B, T, N, D)`` gathered copies are made. No Python loop, no host
    synchronisation on an accelerator.

    Args:
        predictions: (B, T, K, D); ``predictions[b, t, k-1]`` is ``W_k c_t``.
        targets: (B, T, D) encoder outputs ``z``.
        strategy: one of :data:`STRATEGIES` or an alias of :data:`STRATEGY_ALIASES`.
        groups: (B,) integer group id per sequence (e.g. the speaker); needed by the
            ``same_group*`` strategies.
        lengths: (B,) valid frames per sequence (default: all T), each >= 1. Frames past a
            length are never candidates; context ``(b, t)`` counts for step k only if
            ``t + k < lengths[b]``.
        offset: with ``targets`` of more sequences than ``predictions`` (``(B', T, D)``,
            ``B' > B``; e.g. the targets of every process, gathered), the predictions are
            those of sequences ``offset .. offset + B - 1`` of ``targets``, and every
            sequence of ``targets`` may supply candidates (``groups`` and ``lengths`` then
            have ``B'`` entries). Default: ``targets`` has the predictions' ``B`` sequences.

    Returns:
        The dict of :func:`info_nce`: ``loss`` (scalar: mean over k of the per-k mean
        cross-entropy of the positive among its candidates), ``loss_per_k`` (K,),
        ``accuracy`` (K,) (fraction of contexts whose positive scores at least as high as
        every other candidate: ties count for the positive), ``mi_bound`` (scalar,
        ``log(n) - loss`` with ``n`` the mean number of candidates, positive included, over
        all counted ``(b, t, k)``; with all frames valid and strategy ``batch`` that is
        ``log(B * T) - loss``), ``mi_bound_per_k`` (K,) (the same with the mean over the
        contexts counted for each k, and ``loss_per_k``).

    Raises:
        NegativeSamplingError: for CPU tensors, when the strategy leaves a sequence without
            any candidate sequence (``batch_excl`` with B == 1, ``same_group_excl`` with a
            single sequence in a group). On other devices this is not checked (no sync):
            such a context has the positive as its only candidate (loss 0, correct).
    """
    bt = targets.shape[0]
    b, t, k, d = _check_offset_shapes(predictions, targets, offset)
    dev = targets.device
    if groups is not None:
        groups = groups.to(dev)
    own = torch.arange(offset, offset + b, device=dev)  # each context's sequence in targets
    cand = _candidates(strategy, groups, bt, dev)[own]  # (B, B')
    if dev.type == "cpu":
        local_groups = None if groups is None else groups[own]
        _raise_if_empty(strategy, cand, local_groups, b)
    frames = torch.arange(t, device=dev)
    if lengths is None:
        seq_len = torch.full((bt,), t, device=dev)
        valid = torch.ones(bt, t, dtype=torch.bool, device=dev)
    else:
        seq_len = lengths.to(dev).long()
        valid = frames.view(1, t) < seq_len.view(bt, 1)
    # Columns that context rows of sequence i may score: (B, B' * T), tiny.
    col_ok = (cand.view(b, bt, 1) & valid.view(1, bt, t)).view(b, 1, 1, bt * t)

    # One matmul: every prediction W_k c_t against every target frame of the batch.
    scores = predictions.reshape(b * t * k, d) @ targets.reshape(bt * t, d).T
    scores = scores.view(b, t, k, bt * t).float()
    # Column of the positive z[b, t + k]; past the end (context not counted) any frame of
    # sequence b does, so that every row has a finite candidate and no NaN can appear.
    pos_frame = (frames.view(t, 1) + torch.arange(1, k + 1, device=dev).view(1, k)).clamp_max(t - 1)
    pos_col = (own.view(b, 1, 1) * t + pos_frame).unsqueeze(-1)
    pos_score = scores.gather(-1, pos_col)  # (B, T, K, 1)
    logits = scores.masked_fill(~col_ok, float("-inf"))
    logits.scatter_(-1, pos_col, pos_score)  # the positive is always a candidate
    nll = torch.logsumexp(logits, dim=-1) - pos_score.squeeze(-1)  # (B, T, K)
    correct = (pos_score.squeeze(-1) >= logits.amax(dim=-1)).float()

    local_lengths = None if lengths is None else seq_len[own]
    mask = _context_mask(b, t, k, local_lengths, dev).float()
    count = mask.sum(dim=(0, 1)).clamp_min(1.0)
    loss_per_k = (nll * mask).sum(dim=(0, 1)) / count
    accuracy = (correct * mask).sum(dim=(0, 1)) / count
    loss = loss_per_k.mean()
    # Candidates per context of sequence i: the valid frames of its candidate sequences,
    # plus the positive when its own sequence is not among them. Depends on i only.
    self_cand = cand[torch.arange(b, device=dev), own]
    n_cand = (cand.float() * seq_len.float().view(1, bt)).sum(1) + (~self_cand).float()
    counted = mask.sum(dim=1)  # (B, K)
    n_k = (n_cand.view(b, 1) * counted).sum(0) / count
    n_all = (n_cand.view(b, 1) * counted).sum() / counted.sum().clamp_min(1.0)
    return {
        "loss": loss,
        "loss_per_k": loss_per_k.detach(),
        "accuracy": accuracy.detach(),
        "mi_bound": (torch.log(n_all.clamp_min(1.0)) - loss).detach(),
        "mi_bound_per_k": (torch.log(n_k.clamp_min(1.0)) - loss_per_k).detach(),
    }


class _GatherAcrossRanks(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient of the gathered
    tensor and returns this process's slice: the gradient of the sum of all processes'
    losses with respect to this process's part."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce-scatter: sum all, keep our rows
        a = ctx.rank * ctx.rows
        return grad[a : a + ctx.rows]


def distributed_world() -> int:
    """Processes of the default process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_ranks(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(x of every process concatenated in rank order, this process's first row)``;
    differentiable when ``x`` requires gradients (:class:`_GatherAcrossRanks`: the backward
    returns every process's gradient for this process's rows, summed). Every process must
    pass the same shape. With one process: ``(x, 0)``."""
    if distributed_world() == 1:
        return x, 0
    import torch.distributed as dist

    offset = dist.get_rank() * x.shape[0]
    if x.requires_grad:
        return _GatherAcrossRanks.apply(x), offset
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts), offset


class InfoNCE(nn.Module):
    """Predictors ``W_k`` plus the negatives plus the InfoNCE loss.

    ``forward(context (B, T, C), targets (B, T, D), groups=None (B,), lengths=None (B,),
    generator=None)`` returns the dict of :func:`info_nce`.

    Args:
        context_dim, target_dim: C and D.
        num_steps: K, steps predicted ahead.
        num_negatives: N negatives sampled per context position (:func:`sample_negatives` +
            :func:`info_nce`), or 0 = all pairs: every permitted target frame of the batch is
            a negative (:func:`info_nce_all_pairs`; ``generator`` is then unused).
        strategy: one of :data:`STRATEGIES` or an alias of :data:`STRATEGY_ALIASES`; kept as
            given in ``self.strategy``.
        across_ranks: in training mode with several processes (``torch.distributed``), the
            negatives come from the sequences of every process's batch: the targets (and
            group ids and lengths) are gathered (:func:`gather_across_ranks`), each process
            scores its own contexts against them, and the gradients of every process's loss
            flow back to the process that computed the targets. DDP's gradient average then
            makes the update of one process holding the whole global batch, so the task does
            not change with the number of processes (with it off, each process's negatives
            come from its own batch: a pool 1/N as large). Every process must pass batches of
            the same shape. Evaluation mode and a single process: the process's own batch.
    """

    def __init__(
        self,
        context_dim: int,
        target_dim: int,
        num_steps: int,
        num_negatives: int,
        strategy: str = "batch",
        across_ranks: bool = False,
    ) -> None:
        super().__init__()
        canonical_strategy(strategy)
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0 (0 = all pairs), got {num_negatives}")
        self.predictors = Predictors(context_dim, target_dim, num_steps)
        self.num_negatives = num_negatives
        self.strategy = strategy
        self.across_ranks = across_ranks

    def forward(
        self,
        context: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        b = targets.shape[0]
        offset = 0
        if self.across_ranks and self.training and distributed_world() > 1:
            targets, offset = gather_across_ranks(targets)
            if groups is not None:
                groups = gather_across_ranks(groups.to(targets.device))[0]
            if lengths is not None:
                lengths = gather_across_ranks(lengths.to(targets.device))[0]
        if self.num_negatives == 0:
            return info_nce_all_pairs(
                self.predictors(context), targets, self.strategy, groups, lengths, offset
            )
        bt, t = targets.shape[:2]
        on_cpu = targets.device.type == "cpu"
        # drawn for the whole (gathered) batch, this process's rows kept: the draws of a
        # context do not depend on how the batch is split among processes
        negatives = sample_negatives(
            bt,
            t,
            self.num_negatives,
            self.strategy,
            groups=groups,
            lengths=lengths,
            generator=generator,
            device=targets.device,
            on_empty="error" if on_cpu else "fallback",
        )
        if bt != b:
            negatives = Negatives(
                seq=negatives.seq[offset : offset + b], time=negatives.time[offset : offset + b]
            )
        return info_nce(self.predictors(context), targets, negatives, lengths, offset)
