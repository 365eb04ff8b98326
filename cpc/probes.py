"""Probes: how much of a label is (linearly) readable from frozen features.

Domain-agnostic: inputs are in-memory arrays, one row per example (a 10 ms frame, a pooled
window, an image patch ...). A probe is a multinomial logistic regression (``hidden_dim=0``)
or a one-hidden-layer MLP, trained with minibatch Adam for a fixed number of epochs (raised to
reach ``min_steps`` updates on small data; no early stopping on the test set) with a cosine
learning-rate decay, seeded. Or, with ``schedule="plateau"``, until it stops improving on a
held-out part of the TRAINING rows: a constant rate, multiplied by ``gamma`` when the held-out
loss has not improved for ``patience`` checks, stopping after ``max_decays`` such decays (or
at the epoch cap) with the parameters of the best check; on large data this takes a fraction
of the fixed-epoch budget. Optionally SGD with momentum instead of Adam
(``optimizer="sgd"``) and a step schedule (``schedule="step"``: the rate times ``gamma`` at
each of ``milestones``, fractions of all updates), e.g. the CPC paper's ImageNet classifier:
0.1, 0.01, 0.001 for 50k, 25k and 10k updates; and the top-k accuracy (``top_k > 1``).
Features are standardised with the TRAIN split's mean and standard deviation only.
``precision="bf16"`` runs the probe's forward passes under bfloat16 autocast (parameters,
Adam's state and the loss stay float32): about twice as fast on CPUs with bf16 instructions.

Optionally each row is concatenated with its ``context`` neighbours on either side within the
same sequence (edge rows repeated), e.g. ``context=2`` for c_t with +-2 frames; neighbours are
gathered per minibatch, so memory stays at one copy of the features.

Rows need not be in memory: :class:`StreamedRows` reads them from disk a sequence at a time,
in blocks of at most ``block_rows`` rows. Training then draws, every epoch, a new random
order of the sequences, reads them block by block and shuffles the rows within each block
(whole sequences, so ``context`` neighbours are the same as in memory); statistics,
held-out checks and predictions are made block by block too. Peak memory is then one block
(plus the labels, 8 bytes a row), whatever the number of rows.

Outputs (:class:`ProbeResult`): test accuracy, train accuracy, per-class accuracy (recall),
the confusion matrix (rows = reference, columns = prediction), timings.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ProbeConfig",
    "ProbeData",
    "ProbeResult",
    "StreamedRows",
    "standardize",
    "train_statistics",
    "majority_chance",
    "train_probe",
    "pool_windows",
    "holdout_group_split",
]


@dataclass
class ProbeConfig:
    """Hyper-parameters of a probe (defaults sized for ~10^6 rows on a few CPU cores)."""

    hidden_dim: int = 0  # 0: linear (multinomial logistic regression); >0: one hidden layer
    epochs: int = 10
    min_steps: int = 0  # train at least this many updates (more epochs on small data)
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 0.0
    context: int = 0  # concatenate +-context neighbouring rows of the same sequence
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 16384
    optimizer: str = "adam"  # adam, or sgd (with ``momentum``)
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine, step (lr * gamma at each milestone), or plateau
    milestones: list[float] = field(default_factory=lambda: [50 / 85, 75 / 85])  # step
    gamma: float = 0.1  # step: the factor at each milestone; plateau: at each decay
    # plateau: rows held out of the training rows (whole sequences when offsets are given)
    holdout: float = 0.05  # share of the training rows ...
    holdout_max_rows: int = 50_000  # ... but at most this many
    check_every: int = 0  # updates between held-out checks (0: once per epoch)
    patience: int = 2  # checks without an improvement before the rate decays
    tol: float = 1e-3  # an improvement: held-out loss below best * (1 - tol)
    max_decays: int = 2  # stop at the first plateau after this many decays
    top_k: int = 0  # > 1: also report the top-k accuracy on the test rows
    precision: str = "fp32"  # fp32, or bf16: matrix products under bf16 autocast (CPU, GPU)


_LOADER: ThreadPoolExecutor | None = None


def _loader() -> ThreadPoolExecutor:
    """The one background thread that reads streamed blocks (one thread for the process's
    life, so its allocations stay in one malloc arena instead of a new one per epoch)."""
    global _LOADER
    if _LOADER is None:
        _LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-rows")
    return _LOADER


class StreamedRows:
    """Probe rows kept on disk: ``read(u)`` returns sequence u's rows, ``(offsets[u+1] -
    offsets[u], dim)`` float32, read anew on each call. Used as :attr:`ProbeData.x` (with
    the same ``offsets``); :func:`standardize` sets :attr:`mean` and :attr:`std`, which every
    read then applies. :meth:`blocks` loads consecutive sequences of a given order in blocks
    of at most ``block_rows`` rows (at least one sequence each)."""

    ndim = 2

    def __init__(
        self, read: Callable[[int], np.ndarray], offsets: np.ndarray, dim: int, block_rows: int
    ) -> None:
        if block_rows < 1:
            raise ValueError(f"streamed probe rows: block_rows must be >= 1, got {block_rows}")
        self._read = read
        self.offsets = torch.as_tensor(np.asarray(offsets), dtype=torch.int64)
        self.dim = int(dim)
        self.block_rows = int(block_rows)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.max_rows_read = 0  # the largest block read so far (rows)
        self._buffers: list[torch.Tensor] = []  # blocks()'s two buffers, kept between calls
        self._iterating = False

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.offsets[-1]), self.dim

    @property
    def num_sequences(self) -> int:
        return len(self.offsets) - 1

    def _fill(self, out: torch.Tensor, u: int) -> None:
        x = np.asarray(self._read(u), dtype=np.float32)
        if x.shape != tuple(out.shape):
            raise ValueError(
                f"streamed probe rows: sequence {u} read as {x.shape}, expected {tuple(out.shape)}"
            )
        out.copy_(torch.from_numpy(x))

    def load(
        self, seqs: Sequence[int], y: torch.Tensor | None = None, out: torch.Tensor | None = None
    ) -> ProbeData:
        """The sequences ``seqs`` (in that order) as in-memory :class:`ProbeData` with their
        own offsets; ``y``: the labels of all rows (sliced), or zeros; ``out``: a buffer of
        at least as many rows to read into (else a new tensor)."""
        lengths = [int(self.offsets[u + 1] - self.offsets[u]) for u in seqs]
        offsets = torch.zeros(len(seqs) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        n = int(offsets[-1])
        x = torch.empty(n, self.dim) if out is None else out[:n]
        yb = torch.zeros(n, dtype=torch.int64)
        for i, u in enumerate(seqs):
            a, b = int(offsets[i]), int(offsets[i + 1])
            self._fill(x[a:b], u)
            if y is not None:
                yb[a:b] = y[int(self.offsets[u]) : int(self.offsets[u + 1])]
        if self.mean is not None and self.std is not None:
            x.sub_(self.mean).div_(self.std)  # elementwise: as standardize() does in memory
        self.max_rows_read = max(self.max_rows_read, n)
        return ProbeData(x, yb, offsets)

    def groups(self, order: Sequence[int]) -> list[list[int]]:
        """Consecutive groups of ``order`` with at most ``block_rows`` rows each (a longer
        sequence makes a group of its own)."""
        out: list[list[int]] = []
        group: list[int] = []
        rows = 0
        for u in order:
            u = int(u)
            n = int(self.offsets[u + 1] - self.offsets[u])
            if group and rows + n > self.block_rows:
                out.append(group)
                group, rows = [], 0
            group.append(u)
            rows += n
        if group:
            out.append(group)
        return out

    def blocks(self, order: Sequence[int], y: torch.Tensor | None = None) -> Iterator[ProbeData]:
        """:meth:`load` of each of :meth:`groups` ``(order)``. Double-buffered: the next
        block is read by a background thread into the other of two buffers while the caller
        works on the current one, so the reads overlap the caller's computation and memory
        holds two blocks, whatever the caller keeps. A yielded block is valid until the next
        one is asked for (its rows are then overwritten)."""
        groups = self.groups(order)
        if not groups:
            return
        rows = max(int((self.offsets[[u + 1 for u in g]] - self.offsets[g]).sum()) for g in groups)
        if self._iterating:  # another iteration holds the kept buffers: use fresh ones
            buffers = [torch.empty(rows, self.dim), torch.empty(rows, self.dim)]
        else:  # kept between calls: no page faults and zeroing of new buffers every epoch
            if not self._buffers or self._buffers[0].shape[0] < rows:
                self._buffers = []
                self._buffers = [torch.empty(rows, self.dim), torch.empty(rows, self.dim)]
            buffers = self._buffers
        owner = buffers is self._buffers
        self._iterating = self._iterating or owner
        pool = _loader()
        pending = pool.submit(self.load, groups[0], y, buffers[0])
        try:
            for i in range(1, len(groups)):
                block = pending.result()
                pending = pool.submit(self.load, groups[i], y, buffers[i % 2])
                yield block
            yield pending.result()
        finally:
            pending.cancel() or pending.exception()  # never leave a read running into a buffer
            if owner:
                self._iterating = False

    def release(self) -> None:
        """Free the buffers kept between :meth:`blocks` calls."""
        self._buffers = []

    def chunks(self) -> Iterator[torch.Tensor]:
        """All rows in order, block by block (for statistics)."""
        for block in self.blocks(range(self.num_sequences)):
            yield block.x


@dataclass
class ProbeData:
    """Rows to probe: ``x`` (N, D) float32, ``y`` (N,) int64 class ids, and optional sequence
    ``offsets`` (U+1,) int64 (sequence u is rows ``offsets[u]:offsets[u+1]``), needed for
    ``context > 0``. ``x`` may be :class:`StreamedRows` (rows on disk; ``offsets`` are then
    its offsets)."""

    x: torch.Tensor | StreamedRows
    y: torch.Tensor
    offsets: torch.Tensor | None = None

    @staticmethod
    def from_numpy(x: np.ndarray, y: np.ndarray, offsets: np.ndarray | None = None) -> ProbeData:
        return ProbeData(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            torch.from_numpy(np.asarray(y, dtype=np.int64)),
            None if offsets is None else torch.from_numpy(np.asarray(offsets, dtype=np.int64)),
        )

    def __post_init__(self) -> None:
        if isinstance(self.x, StreamedRows) and self.offsets is None:
            self.offsets = self.x.offsets
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise ValueError(
                f"probe data: x must be (N, D) and y (N,), got {tuple(self.x.shape)} "
                f"and {tuple(self.y.shape)}"
            )
        if self.offsets is not None and (
            int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.x.shape[0]
        ):
            raise ValueError(
                f"probe data: offsets must start at 0 and end at N={self.x.shape[0]}, "
                f"got {int(self.offsets[0])}..{int(self.offsets[-1])}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def streamed(self) -> bool:
        return isinstance(self.x, StreamedRows)

    def in_memory(self) -> ProbeData:
        """The same rows in memory (self when they already are)."""
        if not isinstance(self.x, StreamedRows):
            return self
        return self.x.load(range(self.x.num_sequences), self.y)


@dataclass
class ProbeResult:
    accuracy: float
    train_accuracy: float
    per_class_accuracy: list[float | None]  # None for a class absent from the test set
    confusion: np.ndarray  # (C, C) int64, rows = reference, columns = prediction
    num_train: int
    num_test: int
    input_dim: int
    time_s: float
    time_per_epoch_s: float
    final_loss: float
    epochs: int = 0  # epochs actually run (cfg.epochs, or more for cfg.min_steps), begun ones
    updates: int = 0  # optimiser updates actually made
    config: dict[str, Any] = field(default_factory=dict)
    top_k_accuracy: float | None = None  # with cfg.top_k > 1: the true class among the top k

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary (confusion matrix as nested lists; ``top<k>_accuracy`` when
        the probe reported one)."""
        names = class_names or [str(i) for i in range(len(self.per_class_accuracy))]
        extra = {}
        if self.top_k_accuracy is not None:
            extra[f"top{self.config['top_k']}_accuracy"] = self.top_k_accuracy
        return {
            **extra,
            "accuracy": self.accuracy,
            "train_accuracy": self.train_accuracy,
            "per_class_accuracy": dict(zip(names, self.per_class_accuracy)),
            "confusion": self.confusion.tolist(),
            "num_train": self.num_train,
            "num_test": self.num_test,
            "input_dim": self.input_dim,
            "time_s": self.time_s,
            "time_per_epoch_s": self.time_per_epoch_s,
            "epochs": self.epochs,
            "updates": self.updates,
            "final_loss": self.final_loss,
            "config": self.config,
        }


def _pieces(chunks: Iterable[torch.Tensor], rows: int = 16384) -> Iterator[torch.Tensor]:
    """The chunks cut into pieces of at most ``rows`` rows (one float64 piece at a time)."""
    for c in chunks:
        for a in range(0, c.shape[0], rows):
            yield c[a : a + rows]


def _chunk_statistics(
    chunks: Callable[[], Iterable[torch.Tensor]], dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased standard deviation over the rows of the chunks that ``chunks()``
    yields (called twice: the mean, then the squared deviations from it), in float64."""
    n = 0
    total = torch.zeros(dim, dtype=torch.float64)
    for c in _pieces(chunks()):
        total += c.double().sum(0)
        n += c.shape[0]
    mean = total / max(n, 1)
    sq = torch.zeros_like(total)
    for c in _pieces(chunks()):
        sq += c.double().sub_(mean).square_().sum(0)
    std = (sq / max(n - 1, 1)).sqrt() if n > 1 else torch.full_like(total, float("nan"))
    return mean, std


def train_statistics(
    x: torch.Tensor | StreamedRows, chunk_rows: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (unbiased) standard deviation of ``x`` (N, D), accumulated in
    float64 over chunks of ``chunk_rows`` rows (two passes: the mean, then the squared
    deviations from it), so the extra memory is one float64 chunk, not a float64 copy of
    ``x`` (which would be twice the size of the features themselves). Streamed rows are
    read block by block, twice, before any standardisation is set on them."""
    if isinstance(x, StreamedRows):
        if x.mean is not None:
            raise ValueError("streamed probe rows: statistics of rows already standardised")
        return _chunk_statistics(x.chunks, x.dim)
    n = x.shape[0]
    return _chunk_statistics(
        lambda: (x[a : a + chunk_rows] for a in range(0, n, chunk_rows)), x.shape[1]
    )


def standardize(
    train_x: torch.Tensor | StreamedRows, *others: torch.Tensor | StreamedRows, eps: float = 1e-5
) -> None:
    """Standardise ``train_x`` and ``others`` in place with ``train_x``'s per-dimension mean
    and standard deviation (:func:`train_statistics`: float64, chunked; constant dimensions
    are only centred). Streamed rows get the statistics, applied as they are read."""
    mean, std = train_statistics(train_x)
    std = torch.where(std > eps, std, torch.ones_like(std))
    for t in (train_x, *others):
        if isinstance(t, StreamedRows):
            t.mean, t.std = mean.float(), std.float()
        else:
            t.sub_(mean.to(t.dtype)).div_(std.to(t.dtype))


def majority_chance(train_y: torch.Tensor | np.ndarray, test_y: torch.Tensor | np.ndarray) -> float:
    """Test accuracy of always answering the most frequent TRAIN class."""
    train_y = torch.as_tensor(train_y)
    test_y = torch.as_tensor(test_y)
    majority = int(torch.bincount(train_y).argmax())
    return float((test_y == majority).double().mean())


def pool_windows(x: np.ndarray, offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pool each sequence over consecutive non-overlapping windows of ``window`` rows.

    A sequence of T rows gives ``T // window`` windows (its tail shorter than a window is
    dropped); a sequence shorter than one window gives one window of all its rows.
    Returns ``(pooled (W, D) float32, seq_index (W,) int64)``: the sequence of each window."""
    pooled: list[np.ndarray] = []
    seq: list[np.ndarray] = []
    for u in range(len(offsets) - 1):
        a, b = int(offsets[u]), int(offsets[u + 1])
        t = b - a
        if t == 0:
            continue
        n = t // window
        if n == 0:
            pooled.append(x[a:b].mean(0, keepdims=True))
            seq.append(np.array([u]))
        else:
            pooled.append(x[a : a + n * window].reshape(n, window, -1).mean(1))
            seq.append(np.full(n, u))
    return (
        np.concatenate(pooled).astype(np.float32),
        np.concatenate(seq).astype(np.int64),
    )


def holdout_group_split(
    classes: Sequence[str], groups: Sequence[str], seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Split items so that every class is tested on a group never seen in training.

    ``classes[i]`` and ``groups[i]`` are item i's class (e.g. speaker) and group (e.g.
    chapter). For every class with at least two groups, one of them (a seeded choice) is
    held out: its items are test items, the class's other groups are training items.
    Returns ``(is_test (N,) bool, single_group_classes)``; the items of classes with a single
    group are marked train, and callers should leave those classes out."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, set[str]] = {}
    for c, g in zip(classes, groups):
        by_class.setdefault(c, set()).add(g)
    held: dict[str, str] = {}
    single: list[str] = []
    for c in sorted(by_class):
        gs = sorted(by_class[c])
        if len(gs) < 2:
            single.append(c)
        else:
            held[c] = gs[int(rng.integers(len(gs)))]
    is_test = np.array([held.get(c) == g for c, g in zip(classes, groups)], dtype=bool)
    return is_test, single


class _Context:
    """Gathers rows with their +-k neighbours (clamped to the row's sequence)."""

    def __init__(self, data: ProbeData, k: int) -> None:
        self.x = data.x
        self.k = k
        if k > 0:
            if data.offsets is None:
                raise ValueError("probe data: context > 0 needs sequence offsets")
            lengths = data.offsets[1:] - data.offsets[:-1]
            self.lo = torch.repeat_interleave(data.offsets[:-1], lengths)
            self.hi = torch.repeat_interleave(data.offsets[1:] - 1, lengths)
            self.shifts = torch.arange(-k, k + 1)

    @property
    def dim(self) -> int:
        return self.x.shape[1] * (2 * self.k + 1)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.k == 0:
            return self.x[idx]
        nb = idx[:, None] + self.shifts[None, :]
        nb = torch.maximum(torch.minimum(nb, self.hi[idx, None]), self.lo[idx, None])
        return self.x[nb].reshape(idx.shape[0], -1)


def _autocast(cfg: ProbeConfig) -> Any:
    """The autocast context of ``cfg.precision`` (bf16: the linear layers' products in
    bfloat16, weights, optimiser state and the loss in float32)."""
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"probe precision {cfg.precision!r} is not one of fp32, bf16")
    return torch.autocast(
        device_type=torch.device(cfg.device).type,
        dtype=torch.bfloat16,
        enabled=cfg.precision == "bf16",
    )


def _make_model(in_dim: int, num_classes: int, hidden_dim: int) -> nn.Module:
    if hidden_dim <= 0:
        return nn.Linear(in_dim, num_classes)
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes)
    )


@torch.inference_mode()
def _predict_rows(
    model: nn.Module, ctx: _Context, n: int, cfg: ProbeConfig, k: int = 1
) -> torch.Tensor:
    """The ``k`` highest-scoring classes of the ``n`` rows of ``ctx``, best first: ``(n, k)``."""
    model.eval()
    out = []
    for a in range(0, n, cfg.eval_batch_size):
        idx = torch.arange(a, min(n, a + cfg.eval_batch_size))
        with _autocast(cfg):
            logits = model(ctx(idx).to(cfg.device))
        out.append(logits.float().topk(k, dim=-1).indices.cpu())
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def _predict(model: nn.Module, data: ProbeData, cfg: ProbeConfig, k: int = 1) -> torch.Tensor:
    """The ``k`` highest-scoring classes of every row of ``data``, best first: ``(n, k)``;
    with ``k = 1`` the predictions ``(n,)``. Streamed rows are predicted block by block."""
    if isinstance(data.x, StreamedRows):
        parts = [
            _predict_rows(model, _Context(b, cfg.context), len(b), cfg, k)
            for b in data.x.blocks(range(data.x.num_sequences))
        ]
        top = torch.cat(parts)
    else:
        top = _predict_rows(model, _Context(data, cfg.context), len(data), cfg, k)
    return top[:, 0] if k == 1 else top


def _optimizer(model: nn.Module, cfg: ProbeConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"probe optimizer {cfg.optimizer!r} is not one of adam, sgd")


def probe_lr_factor(step: int, total_steps: int, cfg: ProbeConfig) -> float:
    """Multiplier of ``cfg.lr`` at update ``step`` of ``total_steps``."""
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m * total_steps for m in cfg.milestones)
    if cfg.schedule == "plateau":
        return 1.0  # decays are decided by the held-out loss (train_probe)
    raise ValueError(f"probe schedule {cfg.schedule!r} is not one of cosine, step, plateau")


def holdout_rows(data: ProbeData, cfg: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the rows of ``data`` into ``(fit, held_out)`` index tensors (sorted) for the
    plateau schedule: a seeded ``cfg.holdout`` share (at most ``cfg.holdout_max_rows``),
    whole sequences when ``data.offsets`` is given (neighbouring frames are near copies, so
    held-out single frames would not be unseen data); at least one row on each side."""
    n = len(data)
    if n < 2:
        raise ValueError("probe: the plateau schedule needs at least 2 training rows")
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    want = min(max(1, round(cfg.holdout * n)), cfg.holdout_max_rows, n - 1)
    held = torch.zeros(n, dtype=torch.bool)
    if data.offsets is not None and len(data.offsets) > 2:
        off = data.offsets
        taken = 0
        for u in torch.randperm(len(off) - 1, generator=gen).tolist():
            a, b = int(off[u]), int(off[u + 1])
            if taken and (taken + b - a > want or taken + b - a >= n):
                continue
            if b - a >= n:
                continue
            held[a:b] = True
            taken += b - a
            if taken >= want:
                break
    if not held.any():
        held[torch.randperm(n, generator=gen)[:want]] = True
    return (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)


@torch.no_grad()
def _heldout_loss(
    model: nn.Module, ctx: _Context, idx: torch.Tensor, y: torch.Tensor, cfg: ProbeConfig
) -> float:
    """Mean cross-entropy of ``model`` on the rows ``idx``."""
    model.eval()
    total = 0.0
    for a in range(0, len(idx), cfg.eval_batch_size):
        b = idx[a : a + cfg.eval_batch_size]
        with _autocast(cfg):
            logits = model(ctx(b).to(cfg.device)).float()
        total += float(nn.functional.cross_entropy(logits, y[b].to(cfg.device), reduction="sum"))
    model.train()
    return total / max(len(idx), 1)


def _release(data: ProbeData) -> None:
    if isinstance(data.x, StreamedRows):
        data.x.release()


def _streamed_split(
    train: ProbeData, fit_idx: torch.Tensor | None, held_idx: torch.Tensor | None
) -> tuple[list[int] | None, ProbeData | None]:
    """Streamed training rows split by :func:`holdout_rows` (whole sequences): the fitting
    sequences (None: all) and the held-out rows loaded into memory."""
    assert isinstance(train.x, StreamedRows)
    if held_idx is None:
        return None, None
    seq_of_row = torch.bucketize(held_idx, train.x.offsets, right=True) - 1
    held_seqs = torch.unique(seq_of_row).tolist()
    lengths = train.x.offsets[1:] - train.x.offsets[:-1]
    if int(lengths[held_seqs].sum()) != len(held_idx):
        raise ValueError(
            "probe: streamed rows need whole sequences held out; give at least two sequences"
        )
    fit = torch.ones(train.x.num_sequences, dtype=torch.bool)
    fit[held_seqs] = False
    held = train.x.load(held_seqs, train.y)
    return fit.nonzero().squeeze(1).tolist(), held


def train_probe(
    train: ProbeData, test: ProbeData, num_classes: int, cfg: ProbeConfig | None = None
) -> ProbeResult:
    """Train a probe on ``train`` and evaluate it on ``test``.

    Both must already be standardised (see :func:`standardize`) if wanted; labels must be
    in ``0..num_classes-1``. Deterministic for a given ``cfg.seed`` on the same machine."""
    cfg = cfg or ProbeConfig()
    for name, d in (("train", train), ("test", test)):
        if len(d) == 0:
            raise ValueError(f"probe: the {name} set is empty")
        lo, hi = int(d.y.min()), int(d.y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"probe: {name} labels span {lo}..{hi}, outside 0..{num_classes - 1}")
    if train.x.shape[1] != test.x.shape[1]:
        raise ValueError(f"probe: train has {train.x.shape[1]} dims but test has {test.x.shape[1]}")
    if train.streamed and len(train) <= train.x.block_rows:
        train = train.in_memory()  # one block holds it all: the in-memory path, same result
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tr_ctx = _Context(train, cfg.context)
    model = _make_model(tr_ctx.dim, num_classes, cfg.hidden_dim).to(cfg.device)
    opt = _optimizer(model, cfg)
    _autocast(cfg)  # an unknown precision fails before training
    plateau = cfg.schedule == "plateau"
    fit_idx, held_idx = holdout_rows(train, cfg) if plateau else (None, None)
    y_train = train.y
    if train.streamed:
        fit_seqs, held = _streamed_split(train, fit_idx, held_idx)
        if held is not None:
            held_ctx, held_y = _Context(held, cfg.context), held.y
            held_idx = torch.arange(len(held))
    else:
        held_ctx, held_y = tr_ctx, y_train
    n = len(train) if fit_idx is None else len(fit_idx)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total_steps = max(1, epochs * steps_per_epoch)
    probe_lr_factor(0, total_steps, cfg)  # an unknown schedule fails before training
    lr_scale = [1.0]  # plateau: gamma ** decays so far

    def factor(s: int) -> float:
        return lr_scale[0] if plateau else probe_lr_factor(s, total_steps, cfg)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's minibatches ``(x, y)``: a permutation of all training rows in
        memory; streamed, a permutation of the sequences read block by block, each block's
        rows permuted."""
        if not train.streamed:
            perm = torch.randperm(n, generator=gen)
            if fit_idx is not None:
                perm = fit_idx[perm]
            for a in range(0, n, cfg.batch_size):
                idx = perm[a : a + cfg.batch_size]
                yield tr_ctx(idx), y_train[idx]
            return
        assert isinstance(train.x, StreamedRows)
        seqs = range(train.x.num_sequences) if fit_seqs is None else fit_seqs
        order = torch.as_tensor(seqs)[torch.randperm(len(seqs), generator=gen)].tolist()
        bs = cfg.batch_size
        # a block's last rows wait for the next block's first ones: every minibatch but the
        # epoch's last is full, as in memory (the same number of updates, and one batch
        # shape: oneDNN builds and caches a kernel per shape)
        carry: tuple[torch.Tensor, torch.Tensor] | None = None
        for block in train.x.blocks(order, y_train):
            ctx = _Context(block, cfg.context)
            perm = torch.randperm(len(block), generator=gen)
            pos = 0
            if carry is not None:
                idx = perm[: bs - len(carry[1])]
                carry = (torch.cat([carry[0], ctx(idx)]), torch.cat([carry[1], block.y[idx]]))
                pos = len(idx)
                if len(carry[1]) < bs:
                    continue
                yield carry
                carry = None
            while len(block) - pos >= bs:
                idx = perm[pos : pos + bs]
                yield ctx(idx), block.y[idx]
                pos += bs
            if pos < len(block):
                idx = perm[pos:]
                carry = (ctx(idx), block.y[idx])  # copies: the block's buffer is reused
        if carry is not None:
            yield carry

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    check_every = (cfg.check_every or steps_per_epoch) if plateau else 0
    best_loss, best_state, bad, decays, stop = math.inf, None, 0, 0, False
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.time()
    final_loss = float("nan")
    step = 0
    epochs_run = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        epochs_run += 1
        for xb, yb in batches():
            xb, yb = xb.to(cfg.device), yb.to(cfg.device)
            with _autocast(cfg):
                loss = loss_fn(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item() * yb.shape[0]
            count += yb.shape[0]
            if check_every and (step % check_every == 0 or step == total_steps):
                held_loss = _heldout_loss(model, held_ctx, held_idx, held_y, cfg)
                if held_loss < best_loss * (1 - cfg.tol):
                    best_loss, bad = held_loss, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                logging.debug(
                    f"probe update {step}: held-out loss {held_loss:.4f} (best {best_loss:.4f})"
                )
                if bad >= cfg.patience:
                    if decays >= cfg.max_decays:
                        stop = True
                        break
                    decays, bad = decays + 1, 0
                    lr_scale[0] *= cfg.gamma
        final_loss = total / max(count, 1)
        logging.debug(f"probe epoch {epoch + 1}/{epochs}: loss {final_loss:.4f}")
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    train_time = time.time() - t0
    top_k_accuracy = None
    if cfg.top_k > 1:
        top = _predict(model, test, cfg, min(cfg.top_k, num_classes))
        top_k_accuracy = float((top == test.y.view(-1, 1)).any(dim=1).double().mean())
    _release(train)  # one split's buffers at a time
    pred_test = _predict(model, test, cfg)
    _release(test)
    pred_train = _predict(model, train, cfg)
    _release(train)
    conf = torch.bincount(
        test.y * num_classes + pred_test, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    support = conf.sum(1)
    per_class = [
        float(conf[c, c]) / float(support[c]) if int(support[c]) > 0 else None
        for c in range(num_classes)
    ]
    cfg_dict = asdict(cfg)
    return ProbeResult(
        accuracy=float((pred_test == test.y).double().mean()),
        train_accuracy=float((pred_train == train.y).double().mean()),
        per_class_accuracy=per_class,
        confusion=conf.numpy().astype(np.int64),
        num_train=len(train),
        num_test=len(test),
        input_dim=tr_ctx.dim,
        time_s=round(time.time() - t0, 3),
        time_per_epoch_s=round(train_time / max(step / steps_per_epoch, 1e-9), 3),
        epochs=epochs_run,
        updates=step,
        final_loss=final_loss,
        config=cfg_dict,
        top_k_accuracy=top_k_accuracy,
    )
