"""PNG figures for results: confusion matrices, k-step prediction accuracy, t-SNE.

matplotlib runs with the non-interactive Agg backend; every figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cpc.io import Pathlike, atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Pathlike, dpi: int = 120) -> Path:
    path = Path(path)
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_png(
    confusion: np.ndarray, names: Sequence[str], path: Pathlike, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows = reference, columns = prediction) as a PNG,
    with class names on both axes."""
    plt = _pyplot()
    conf = np.asarray(confusion, dtype=np.float64)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(names)
    size = max(5.0, 0.22 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = 6 if n > 30 else 8
    ax.set_xticklabels(names, rotation=90, fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference frames")
    return _save(fig, path)


def kstep_accuracy_png(curves: dict[str, Sequence[float]], path: Pathlike, title: str = "") -> Path:
    """Prediction accuracy of the InfoNCE task against the number of steps k ahead
    (k = 1..K), one line per entry of ``curves`` (the style of the CPC paper's Figure 3)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, acc in curves.items():
        ks = np.arange(1, len(acc) + 1)
        ax.plot(ks, acc, marker="o", markersize=3, label=label)
    ax.set_xlabel("latent steps in the future (k)")
    ax.set_ylabel("prediction accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def scatter_png(
    points: np.ndarray,
    labels: Sequence[str],
    path: Pathlike,
    title: str = "",
    legend_title: str = "",
) -> Path:
    """2-D points (e.g. a t-SNE embedding) coloured by label, with a legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    uniq = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(uniq) <= 10 else "tab20")
    labels = np.asarray(labels)
    for i, lab in enumerate(uniq):
        sel = labels == lab
        ax.scatter(points[sel, 0], points[sel, 1], s=14, color=cmap(i % cmap.N), label=lab)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.2, title=legend_title or None, title_fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return _save(fig, path)
