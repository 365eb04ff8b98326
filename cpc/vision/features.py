"""Image-level feature dumps for the linear evaluation: frozen encoder, mean-pooled grid.

A dump directory holds ``train.npz`` and ``val.npz`` (``x`` (N, D) float32, ``y`` (N,)
class indices, ``index`` (N,) the images' rows in the stage-0 manifest) and ``info.json``
(feature type, dim, what produced them: a checkpoint and its sha256, or the random-init
config and seed, or the pixel size; the manifests' signatures; counts). Feature types:

- ``cpc`` / ``supervised``: the trained encoder of a checkpoint (``best.pt``) on the
  evaluation view (centre crop, no flip; ``eval_view="subcrop"``, the default: each patch's
  centre ``data.subcrop`` square padded back as in training, ``"whole"``: whole patches), its
  patch vectors mean-pooled over the grid (the paper: 7x7x1024 -> 1024);
- ``random``: the same for a randomly initialised model of a config and seed;
- ``pixels``: the image itself, shorter side resized to ``pixel_size`` and centre-cropped,
  flattened (for Fashion-MNIST at 28: the original pixels).

Each split is written atomically, then ``info.json``; a dump whose ``info.json`` records the
same identity is kept (no work).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cpc.io import Pathlike, atomic_path, sha256_file, write_json_atomic
from cpc.vision.config import VisionDataConfig, VisionTrainConfig
from cpc.vision.imagenet import Manifest, manifest_signature, read_manifest

FEATURE_TYPES = ("cpc", "supervised", "random", "pixels")


def probe_subset(n: int, max_images: int) -> np.ndarray:
    """Manifest rows used for the probe: all, or a fixed (seed 0) sorted subset."""
    if max_images <= 0 or max_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_images, replace=False))


@torch.inference_mode()
def encode_split(
    encoder: torch.nn.Module,
    manifest: Manifest,
    indices: np.ndarray,
    cfg: VisionDataConfig,
    batch_size: int = 128,
    num_workers: int = 1,
    desc: str = "",
    view: str = "subcrop",
) -> np.ndarray:
    """Mean-pooled encoder features ``(len(indices), D)`` of the evaluation views (no
    augmentation; ``view``: the patches, :func:`cpc.vision.patches.eval_patches`), in
    inference mode with channels-last convolutions."""
    from cpc.vision.data import eval_loader
    from cpc.vision.model import encode_grid

    encoder.eval().to(memory_format=torch.channels_last)
    out = []
    loader = eval_loader(manifest, indices, cfg, batch_size, num_workers, view)
    for batch, _ in tqdm(loader, desc=desc, unit="batch", mininterval=5):
        z = encode_grid(encoder, batch["patches"], channels_last=True)
        out.append(z.mean(dim=(2, 3)).numpy())
    return np.concatenate(out).astype(np.float32)


def pixel_split(manifest: Manifest, indices: np.ndarray, size: int, greyscale: bool) -> np.ndarray:
    """The images as pixel vectors in [-1, 1]: ``(len(indices), C * size * size)``."""
    from cpc.vision.patches import open_image, square

    rows = [
        square(open_image(manifest.full_path(int(i)), greyscale), size).reshape(-1).numpy()
        for i in tqdm(indices, desc="pixels", unit="img", mininterval=5)
    ]
    return (np.stack(rows).astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def _encoder(
    feat_type: str, cfg: VisionTrainConfig, checkpoint: str, seed: int
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from cpc.checkpoint import load_checkpoint
    from cpc.vision.domain import build_model

    if feat_type == "random":
        torch.manual_seed(seed)
        model = build_model(cfg)
        return model.encoder, {"config": _cfg_dict(cfg), "seed": seed}
    state = load_checkpoint(checkpoint)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    src = {"checkpoint": str(checkpoint), "sha256": sha256_file(checkpoint), "step": state["step"]}
    return model.encoder, src


def _cfg_dict(cfg: VisionTrainConfig) -> dict[str, Any]:
    from cpc.config import config_to_dict

    return config_to_dict(cfg)


def dump_features(
    feat_type: str,
    manifest_dir: Pathlike,
    out_dir: Pathlike,
    cfg: VisionTrainConfig | None = None,
    checkpoint: str = "",
    seed: int = 42,
    pixel_size: int = 28,
    max_train_images: int = 0,
    num_workers: int = 1,
    batch_size: int = 128,
    eval_view: str = "subcrop",
) -> dict[str, Any]:
    """Write the dump (module docstring); returns its info.json."""
    from cpc.vision.patches import EVAL_VIEWS

    if feat_type not in FEATURE_TYPES:
        raise ValueError(f"feature type {feat_type!r} is not one of {FEATURE_TYPES}")
    if eval_view not in EVAL_VIEWS:
        raise ValueError(f"evaluation view {eval_view!r} is not one of {EVAL_VIEWS}")
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    manifests = {s: read_manifest(manifest_dir / f"{s}.tsv") for s in ("train", "val")}
    identity: dict[str, Any] = {
        "feature_type": feat_type,
        "manifests": {s: manifest_signature(manifest_dir / f"{s}.tsv") for s in manifests},
        "max_train_images": max_train_images,
    }
    encoder = None
    greyscale = True if cfg is None else cfg.data.greyscale
    if feat_type == "pixels":
        identity["source"] = {"pixel_size": pixel_size, "greyscale": greyscale}
    else:
        if cfg is None:
            raise ValueError(f"feature type {feat_type} needs the model's config")
        if feat_type != "random" and not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"checkpoint {checkpoint} does not exist; run the training stage first"
            )
        encoder, identity["source"] = _encoder(feat_type, cfg, checkpoint, seed)
        identity["eval_view"] = eval_view
    info_path = out_dir / "info.json"
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        if old.get("identity") == identity and all(
            (out_dir / f"{s}.npz").is_file() for s in manifests
        ):
            logging.info(f"{out_dir}: up to date, skipping")
            return old
    out_dir.mkdir(parents=True, exist_ok=True)
    info_path.unlink(missing_ok=True)
    t0 = time.time()
    counts = {}
    dim = 0
    for split, man in manifests.items():
        idx = probe_subset(len(man), max_train_images if split == "train" else 0)
        if encoder is None:
            x = pixel_split(man, idx, pixel_size, greyscale)
        else:
            assert cfg is not None
            x = encode_split(
                encoder,
                man,
                idx,
                cfg.data,
                batch_size,
                num_workers,
                f"{feat_type} {split}",
                eval_view,
            )
        dim = x.shape[1]
        with atomic_path(out_dir / f"{split}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x=x, y=man.labels[idx], index=idx)
        counts[split] = len(idx)
        logging.info(f"{feat_type} {split}: {len(idx)} images, {dim} dims")
    info = {
        "feature_type": feat_type,
        "dim": dim,
        "counts": counts,
        "time_s": round(time.time() - t0, 1),
        "identity": identity,
    }
    write_json_atomic(info_path, info)
    return info
