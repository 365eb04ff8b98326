"""Training checkpoints: atomic save, keep-last-N, newest-good lookup, safe load, resume checks.

Layout in an experiment directory::

    exp/<tag>/checkpoint-<step>.pt   full training state, the newest ``keep_last`` kept
    exp/<tag>/best.pt                the model to use downstream (see below)

A training checkpoint is a dict of tensors and plain containers only, so it loads with
``torch.load(weights_only=True)``:

- ``format``: :data:`FORMAT` (a version tag); ``step``: optimizer updates done;
- ``model``, ``optimizer``, ``scheduler``: state dicts;
- ``rng``: ``torch`` (ByteTensor), ``cuda`` (list of ByteTensors), ``numpy`` (dict of ints
  and an int64 tensor of the MT19937 key), ``python`` (``random.getstate()`` as nested
  tuples of ints);
- ``data_position``: dict of ints (where the data stream resumes);
- ``config``: the resolved config as a nested dict; ``world_size``; ``elapsed`` (seconds
  of training so far);
- ``identity``: what the weights were made from (see :func:`check_identity`): the config
  keys that shape training, the data's signature and the number of processes x gradient
  accumulation (which, with the per-process batch size, fixes the global batch);
- ``best``: the best validation result so far (``{"step", "loss", ...}``) or None.

``best.pt`` holds ``format``, ``step``, ``model``, ``config``, ``identity`` and ``valid``
(the validation metrics that made it best; no optimizer). The trainer writes it whenever the
held-out validation loss improves at a checkpoint, so it is the checkpoint with the lowest
validation loss; without validation data it is the final model.
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc.config import diff_configs
from cpc.io import Pathlike, atomic_open

FORMAT = "cpc-recipes-checkpoint-v2"
#: Older formats whose models still load (their training state cannot be resumed).
READABLE_FORMATS = (FORMAT, "cpc-recipes-checkpoint-v1")
BEST_NAME = "best.pt"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or does not fit the current run."""


def checkpoint_path(exp_dir: Pathlike, step: int) -> Path:
    """``exp_dir/checkpoint-<step>.pt``."""
    return Path(exp_dir) / f"checkpoint-{step}.pt"


def list_checkpoints(exp_dir: Pathlike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>.pt`` in ``exp_dir``, oldest first."""
    d = Path(exp_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_checkpoint(path: Pathlike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def prune_checkpoints(exp_dir: Pathlike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` training checkpoints; return what was deleted."""
    if keep_last < 1:
        return []
    ckpts = list_checkpoints(exp_dir)
    removed = []
    for _, p in ckpts[:-keep_last]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def load_checkpoint(path: Pathlike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises FileNotFoundError if it is missing, :class:`CheckpointError` if it is truncated,
    corrupt or not a cpc-recipes checkpoint (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train first (run.sh --stage 2, which writes "
            "exp/<tag>/best.pt) or pass the path of an existing checkpoint"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed global, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); "
            "it is probably truncated by an interrupted copy or a full disk"
        ) from e
    if (
        not isinstance(state, dict)
        or state.get("format") not in READABLE_FORMATS
        or ("model" not in state)
    ):
        raise CheckpointError(f"{path} is not a cpc-recipes checkpoint (format {FORMAT})")
    return state


def find_latest_checkpoint(
    exp_dir: Pathlike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest training checkpoint in ``exp_dir`` that loads, with its state.

    Unreadable ones (e.g. truncated) are skipped with a warning in favour of older ones.
    Returns None when there is none.
    """
    for step, path in reversed(list_checkpoints(exp_dir)):
        try:
            state = load_checkpoint(path, map_location)
        except (CheckpointError, FileNotFoundError) as e:
            logging.warning(f"skipping {path}: {e}")
            continue
        if state.get("step") != step or "optimizer" not in state:
            logging.warning(f"skipping {path}: not a complete training checkpoint")
            continue
        return path, state
    return None


class IdentityMismatch(CheckpointError):
    """Checkpoints in an experiment directory were made from other inputs than the current
    run's. ``differences`` lists them as ``key: checkpoint -> now`` lines."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def check_identity(saved: dict[str, Any] | None, current: dict[str, Any], path: Pathlike) -> None:
    """Refuse to continue a checkpoint made from other inputs.

    ``saved`` and ``current`` are identities (nested dicts: config keys that shape the
    weights, the data signature, the seed, processes x accumulation ...). Any difference
    raises :class:`IdentityMismatch` naming every differing key. A checkpoint without an
    identity (an older format) is refused too: nothing says what it was trained on."""
    if saved is None:
        diffs = ["identity: <none recorded: an older checkpoint format> -> " + "<this run>"]
    else:
        diffs = diff_configs(saved, current)
    if diffs:
        shown = diffs[:20] + ([f"... ({len(diffs) - 20} more)"] if len(diffs) > 20 else [])
        lines = "\n  ".join(shown)
        raise IdentityMismatch(
            f"{path} was trained on other inputs than this run; differences (checkpoint -> "
            f"now):\n  {lines}\nIts weights cannot be continued under other inputs."
            + (
                " (The global batch is the per-process batch x processes x train.grad_accum: "
                "keeping that product, e.g. with train.grad_accum, continues the run.)"
                if any(d.startswith("processes_x_grad_accum") for d in diffs)
                else ""
            ),
            diffs,
        )


def move_aside(exp_dir: Pathlike) -> Path:
    """Rename ``exp_dir`` to ``<exp_dir>.old-<YYYYmmdd-HHMMSS>`` (a fresh name) and return
    the new path. Nothing is deleted."""
    exp_dir = Path(exp_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = exp_dir.with_name(f"{exp_dir.name}.old-{stamp}")
    i = 1
    while dest.exists():
        dest = exp_dir.with_name(f"{exp_dir.name}.old-{stamp}-{i}")
        i += 1
    exp_dir.rename(dest)
    return dest


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python, as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(np_state[0]),
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(py_state[0]), [int(x) for x in py_state[1]], py_state[2]],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state(
        (
            n["bit_generator"],
            n["key"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_best(
    exp_dir: Pathlike,
    step: int,
    model_state: dict[str, Any],
    config: dict[str, Any],
    identity: dict[str, Any] | None = None,
    valid: dict[str, Any] | None = None,
) -> Path:
    """Write ``exp_dir/best.pt`` (the model for downstream stages) atomically."""
    path = Path(exp_dir) / BEST_NAME
    state = {
        "format": FORMAT,
        "step": step,
        "model": model_state,
        "config": config,
        "identity": identity,
        "valid": valid,
    }
    save_checkpoint(path, state)
    return path
