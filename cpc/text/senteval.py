"""SentEval's classification tasks and its evaluation protocol, on frozen sentence features.

Data layout (SentEval's ``data/downstream``, latin-1, one item per line), under one root:
``MR/rt-polarity.{pos,neg}``, ``CR/custrev.{pos,neg}``, ``SUBJ/subj.{objective,subjective}``,
``MPQA/mpqa.{pos,neg}``, ``TREC/{train_5500,TREC_10}.label`` (``COARSE:fine question``), and
the embedded tasks ``MR-like/rt-polarity.{pos,neg}``, ``CR-like/custrev.{pos,neg}``. A task
whose files are absent is "not available" (reported so, never scored).

Protocol (SentEval's, with logistic regression): features standardised with the training
part's statistics; MR, CR, SUBJ, MPQA (and the "-like" tasks): 10-fold stratified
cross-validation (shuffled with the seed), and in each outer fold the inverse regularisation
``C`` chosen from a grid by an inner stratified cross-validation on the training part; TREC:
its fixed train/test split, ``C`` chosen by inner cross-validation on the training set.

The grid (:data:`DEFAULT_C_GRID`) reaches far below SentEval's 2^-2..2^4 because the features
are standardised: every feature then has unit variance, so hundreds of them need a much
stronger penalty than raw features do. Each result counts the folds whose ``C`` is an end of
the grid (``c_at_grid_edge``): there the best ``C`` may lie outside it, and the grid should be
widened.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpc.text.corpus import tokenize_sentence

#: task -> (directory, {file: label}); binary tasks (label 1 = positive / subjective)
BINARY_TASKS: dict[str, tuple[str, dict[str, int]]] = {
    "MR-like": ("MR-like", {"rt-polarity.neg": 0, "rt-polarity.pos": 1}),
    "CR-like": ("CR-like", {"custrev.neg": 0, "custrev.pos": 1}),
    "MR": ("MR", {"rt-polarity.neg": 0, "rt-polarity.pos": 1}),
    "CR": ("CR", {"custrev.neg": 0, "custrev.pos": 1}),
    "SUBJ": ("SUBJ", {"subj.objective": 0, "subj.subjective": 1}),
    "MPQA": ("MPQA", {"mpqa.neg": 0, "mpqa.pos": 1}),
}
TREC_FILES = ("train_5500.label", "TREC_10.label")
#: inverse regularisation strengths tried by the inner cross-validation: powers of 4 from
#: 4^-7 (rounded) to 4^2
DEFAULT_C_GRID = (0.0000625, 0.00025, 0.001, 0.004, 0.016, 0.0625, 0.25, 1.0, 4.0, 16.0)
TASKS = (*BINARY_TASKS, "TREC")
NOT_AVAILABLE = "not available"


class SentEvalError(ValueError):
    """A SentEval file that cannot be read (the message names the file, the line, the fix)."""


@dataclass
class TaskData:
    """Tokenised items and labels; ``test_start``: first test item (TREC) or None (CV)."""

    name: str
    sentences: list[list[str]]
    labels: np.ndarray
    classes: list[str]
    test_start: int | None = None


def _read_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("latin-1").splitlines()


def _item(path: Path, i: int, text: str) -> list[str]:
    toks = tokenize_sentence(text)
    if not toks:
        raise SentEvalError(
            f"{path} line {i}: no words ({text!r}); remove the line (one item per line)"
        )
    return toks


def read_binary(root: Path, task: str, max_items: int = 0) -> TaskData | None:
    d, files = BINARY_TASKS[task]
    paths = {root / d / f: y for f, y in files.items()}
    if not all(p.is_file() for p in paths):
        return None
    sents, labels = [], []
    for p, y in paths.items():
        lines = _read_lines(p)
        if max_items:
            lines = lines[: max_items // 2]
        for i, line in enumerate(lines, 1):
            sents.append(_item(p, i, line))
            labels.append(y)
    names = sorted(files, key=files.get)
    return TaskData(task, sents, np.asarray(labels), [n.split(".")[-1] for n in names])


def read_trec(root: Path, max_items: int = 0) -> TaskData | None:
    paths = [root / "TREC" / f for f in TREC_FILES]
    if not all(p.is_file() for p in paths):
        return None
    parts: list[tuple[list[list[str]], list[str]]] = []
    for p in paths:
        sents, labels = [], []
        for i, line in enumerate(_read_lines(p), 1):
            head, sep, rest = line.partition(" ")
            label, colon, _fine = head.partition(":")
            if not sep or not colon or not label:
                raise SentEvalError(
                    f"{p} line {i}: expected 'COARSE:fine question', got {line!r}; fix or "
                    "remove the line"
                )
            sents.append(_item(p, i, rest))
            labels.append(label)
        if max_items:
            sents, labels = sents[:max_items], labels[:max_items]
        parts.append((sents, labels))
    classes = sorted(set(parts[0][1]) | set(parts[1][1]))
    ids = {c: k for k, c in enumerate(classes)}
    y = np.asarray([ids[c] for c in parts[0][1] + parts[1][1]])
    return TaskData("TREC", parts[0][0] + parts[1][0], y, classes, len(parts[0][0]))


def read_task(root: Path, task: str, max_items: int = 0) -> TaskData | None:
    """The task's data under ``root``, or None when its files are absent."""
    return read_trec(root, max_items) if task == "TREC" else read_binary(root, task, max_items)


def _model(c: float, seed: int, sparse: bool) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(with_mean=not sparse),
        LogisticRegression(C=c, max_iter=1000, tol=1e-3, random_state=seed),
    )


def _fit(x: Any, y: np.ndarray, c: float, seed: int) -> Any:
    return _model(c, seed, hasattr(x, "tocsr")).fit(x, y)


def _grid_scores(
    x: Any, y: np.ndarray, tr: np.ndarray, te: np.ndarray, grid: Sequence[float], seed: int
) -> list[float]:
    """Accuracy on ``te`` for every C of ``grid``, fitted on ``tr`` (ascending C, each fit
    warm-started from the previous solution: the same optimum, fewer iterations)."""
    from sklearn.preprocessing import StandardScaler

    sparse = hasattr(x, "tocsr")
    scaler = StandardScaler(with_mean=not sparse).fit(x[tr])
    xtr, xte = scaler.transform(x[tr]), scaler.transform(x[te])
    model = _model(grid[0], seed, sparse)[-1]
    model.set_params(warm_start=True)
    scores = {}
    for c in sorted(grid):
        model.set_params(C=c)
        scores[c] = float(model.fit(xtr, y[tr]).score(xte, y[te]))
    return [scores[c] for c in grid]


def choose_c(x: Any, y: np.ndarray, grid: Sequence[float], folds: int, seed: int) -> float:
    """The ``C`` of ``grid`` with the best mean accuracy over an inner stratified k-fold
    (ties: the first in ``grid``)."""
    scores = np.mean(
        [_grid_scores(x, y, tr, te, grid, seed) for tr, te in stratified_folds(y, folds, seed)],
        axis=0,
    )
    return float(grid[int(np.argmax(scores))])


def _outer_fold(
    x: Any,
    y: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    grid: Sequence[float],
    inner: int,
    seed: int,
) -> tuple[float, float]:
    """(test accuracy, chosen C) of one outer fold; C chosen on its training part only."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        c = choose_c(x[tr], y[tr], grid, inner, seed)
        return float(_fit(x[tr], y[tr], c, seed).score(x[te], y[te])), c


def grid_edge_counts(chosen: Sequence[float], grid: Sequence[float]) -> dict[str, int]:
    """How many of the ``chosen`` C values are the smallest (``low``) or the largest (``high``)
    value of ``grid`` (a one-value grid has no edge to report)."""
    if len(set(grid)) < 2:
        return {"low": 0, "high": 0}
    lo, hi = min(grid), max(grid)
    return {"low": sum(c == lo for c in chosen), "high": sum(c == hi for c in chosen)}


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """SentEval's outer folds: stratified, shuffled with ``seed`` (deterministic)."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y)), y))


def evaluate(
    x: Any,
    task: TaskData,
    grid: Sequence[float],
    folds: int = 10,
    inner_folds: int = 5,
    seed: int = 42,
    num_jobs: int = 1,
) -> dict[str, Any]:
    """Accuracy of logistic regression on features ``x`` (one row per item) by the protocol
    of the module docstring: ``{"accuracy", "fold_accuracies", "chosen_c", ...}``."""
    t0 = time.time()
    y = task.labels
    if task.test_start is not None:
        n = task.test_start
        tr, te = np.arange(n), np.arange(n, len(y))
        acc, c = _outer_fold(x, y, tr, te, grid, inner_folds, seed)
        out: dict[str, Any] = {"accuracy": acc, "chosen_c": [c], "protocol": "train/test"}
        out.update(num_train=n, num_test=len(y) - n)
    else:
        from joblib import Parallel, delayed

        res = Parallel(n_jobs=num_jobs)(
            delayed(_outer_fold)(x, y, tr, te, grid, inner_folds, seed)
            for tr, te in stratified_folds(y, folds, seed)
        )
        accs, cs = [a for a, _ in res], [c for _, c in res]
        out = {
            "accuracy": float(np.mean(accs)),
            "std": float(np.std(accs)),
            "fold_accuracies": accs,
            "chosen_c": cs,
            "protocol": f"{folds}-fold stratified CV",
            "num_items": len(y),
        }
    counts = np.bincount(y, minlength=len(task.classes))
    out.update(
        classes=task.classes,
        class_counts=counts.tolist(),
        majority=float(counts.max() / counts.sum()),
        inner_folds=inner_folds,
        c_grid=list(grid),
        c_at_grid_edge=grid_edge_counts(out["chosen_c"], grid),
        time_s=round(time.time() - t0, 1),
    )
    return out
