"""The vision domain's entry points for the generic tools (see :mod:`cpc.domain`).

- config: :func:`cpc.vision.config.load_train_config` (``domain: vision``);
- model: :class:`cpc.vision.model.CPCVision`, or :class:`cpc.vision.model.SupervisedVision`
  with ``model.objective: supervised`` (the end-to-end baseline, same encoder);
- data: the stage-0 manifest ``train.tsv`` of ``data_dir``, less a hold-out of
  ``data.valid_images`` for the validation loss, as augmented patch grids; the identity is
  the manifest's image list and labels (:func:`cpc.vision.imagenet.manifest_signature`);
- probe task: ``image_class`` (:mod:`cpc.vision.probe_tasks`);
- results: the paper's Table 3 layout (:mod:`cpc.vision.results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cpc.domain import Domain, PretrainData
from cpc.io import Pathlike
from cpc.probe_runner import ProbeError
from cpc.vision.config import VisionTrainConfig, load_train_config
from cpc.vision.imagenet import ImageDataError
from cpc.vision.probe_tasks import TASKS
from cpc.vision.results import SPEC


def build_model(cfg: VisionTrainConfig) -> Any:
    """The untrained model of ``cfg.model`` (CPC, or supervised)."""
    from cpc.vision.model import CPCVision, SupervisedVision

    if cfg.model.objective == "supervised":
        return SupervisedVision(cfg.model, cfg.model.num_classes, cfg.data.channels)
    return CPCVision(cfg.model, cfg.data.channels)


def build_data(cfg: VisionTrainConfig, data_dir: Pathlike, env: Any = None) -> PretrainData:
    """Training and validation batches from ``data_dir/train.tsv`` (stage 0)."""
    from cpc.vision.data import PatchTrainData, PatchValidData, split_holdout
    from cpc.vision.imagenet import manifest_signature, read_classes, read_manifest

    path = Path(data_dir) / "train.tsv"
    manifest = read_manifest(path)
    classes = read_classes(Path(data_dir) / "classes.txt")
    if cfg.model.objective == "supervised" and cfg.model.num_classes != len(classes):
        raise ImageDataError(
            f"model.num_classes={cfg.model.num_classes} but {data_dir}/classes.txt has "
            f"{len(classes)} classes; set model.num_classes={len(classes)}"
        )
    train_idx, valid_idx = split_holdout(len(manifest), cfg.data.valid_images)
    pin = env is not None and env.device.type == "cuda"
    train = PatchTrainData(manifest, train_idx, cfg.data, seed=cfg.train.seed, pin_memory=pin)
    valid = PatchValidData(manifest, valid_idx, cfg.data) if len(valid_idx) else None
    if valid is not None and len(valid) == 0:
        valid = None
    identity = {"train_manifest": manifest_signature(path), "images": len(manifest)}
    return PretrainData(train=train, valid=valid, identity=identity)


DOMAIN = Domain(
    name="vision",
    description="images: CPC on a grid of image patches (paper section 3.2)",
    load_config=load_train_config,
    build_model=build_model,
    build_data=build_data,
    run_only_keys=("data.num_workers", "data.prefetch_factor"),
    probe_tasks=TASKS,
    results=SPEC,
    errors=(ImageDataError, ProbeError),
)
