"""Configuration of CPC pre-training on images (paper section 3.2): model, data, optimiser,
trainer.

A YAML file (``egs/imagenet/conf/*.yaml``) has ``domain: vision`` and the four sections
``model``, ``data``, ``optim`` and ``train``; :func:`load_train_config` reads it with
``key=value`` overrides and checks what the types alone cannot (:func:`validate_config`),
among them that the patch grid has more rows than the prediction steps.

Sizes (the paper's in brackets): each image is resized so that its shorter side is
``data.resize`` [300] and centre-cropped square, a random ``data.crop`` [256] square is taken
(horizontal flip with ``data.flip_prob`` [0.5], greyscale), and cut into a grid of
``data.patch`` [64] pixel patches every ``data.stride`` [32] pixels: a 7x7 grid for both
256/64/32 and 64/16/8. Each patch is randomly sub-cropped to ``data.subcrop`` [60] pixels and
padded back to ``data.patch`` with zeros (centred).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cpc.config import ConfigError, load_config
from cpc.infonce import NegativeSamplingError, canonical_strategy
from cpc.optim import OptimConfig, validate_optim_config
from cpc.trainer import TrainerConfig

DOMAIN = "vision"


@dataclass
class VisionModelConfig:
    """ResNet-v2 patch encoder, masked-convolution context network, InfoNCE."""

    stem: Literal["conv3", "conv7_pool"] = "conv7_pool"  # conv3: 3x3/1; conv7_pool: 7x7/2 + pool/2
    stem_channels: int = 64
    widths: list[int] = field(default_factory=lambda: [64, 128, 256])  # bottleneck widths
    blocks: list[int] = field(default_factory=lambda: [3, 4, 23])  # ResNet-v2-101's stacks 1-3
    strides: list[int] = field(default_factory=lambda: [1, 2, 2])  # first block of each stack
    expansion: int = 4  # bottleneck output = width * expansion (stack 3: 256 * 4 = 1024)
    norm: Literal["none", "layer"] = "none"  # none (the paper) or layer norm (CPC v2)
    context_channels: int = 512  # channels of the masked-convolution context network
    context_layers: int = 3  # masked residual conv layers
    context_kernel: int = 3  # each layer sees this many rows (current + above) and columns
    prediction_steps: int = 5  # K: rows predicted below each patch
    negatives: str = "batch"  # all-pairs InfoNCE over every patch of the batch (cpc.infonce)
    # training with several processes: also score against the patches of the other processes'
    # micro-batches (gathered; gradients reach every process's own patches); validation and
    # one process: the process's own batch
    negatives_across_ranks: bool = False
    objective: Literal["cpc", "supervised"] = "cpc"  # supervised: encoder + linear classifier
    num_classes: int = 0  # supervised: number of classes (run.sh sets it from the manifest)

    @property
    def feature_dim(self) -> int:
        """Dimension of z: the third stack's output channels."""
        return self.widths[-1] * self.expansion


@dataclass
class VisionDataConfig:
    """Images of the stage-0 manifest and their augmentation into patch grids."""

    resize: int = 300  # shorter side resized to this, centre-cropped square
    crop: int = 256  # random crop (training) or centre crop (evaluation) of that square
    flip_prob: float = 0.5  # horizontal flip probability (training)
    greyscale: bool = True  # convert to one channel
    patch: int = 64  # patch size in pixels
    stride: int = 32  # patch step: patch - stride = overlap
    subcrop: int = 60  # random sub-crop of each patch (training), padded back to ``patch``
    batch_size: int = 16  # images per process and micro-batch
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    prefetch_factor: int = 4  # batches prefetched per worker
    valid_images: int = 512  # images of the manifest's val split used for the validation loss

    @property
    def grid(self) -> int:
        """Patches per side."""
        return (self.crop - self.patch) // self.stride + 1

    @property
    def channels(self) -> int:
        return 1 if self.greyscale else 3


@dataclass
class VisionTrainConfig:
    """Everything ``local/train.py`` needs for the vision domain."""

    domain: str = DOMAIN
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainerConfig = field(default_factory=TrainerConfig)


def validate_model_config(m: VisionModelConfig) -> None:
    """Raise ConfigError for a model that cannot be built."""
    if len(m.widths) != 3 or len(m.blocks) != 3 or len(m.strides) != 3:
        raise ConfigError(
            f"model.widths {m.widths}, model.blocks {m.blocks} and model.strides {m.strides} "
            "must have 3 entries each "
            "(the encoder's first three residual stacks; the third is the output)"
        )
    if min(m.widths) < 1 or min(m.blocks) < 1 or min(m.strides) < 1:
        raise ConfigError("model.widths, model.blocks and model.strides must be >= 1")
    for name in ("stem_channels", "expansion", "context_channels", "context_layers"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.context_kernel < 1 or m.context_kernel % 2 == 0:
        raise ConfigError(f"model.context_kernel must be odd and >= 1, got {m.context_kernel}")
    if m.prediction_steps < 1:
        raise ConfigError(f"model.prediction_steps must be >= 1, got {m.prediction_steps}")
    if m.objective == "supervised" and m.num_classes < 2:
        raise ConfigError(
            f"model.objective=supervised needs model.num_classes >= 2, got {m.num_classes} "
            "(run.sh sets it from data/manifests/classes.txt)"
        )
    try:
        m.negatives = canonical_strategy(m.negatives)
    except NegativeSamplingError as e:
        raise ConfigError(f"model.negatives: {e}") from e
    if m.negatives.startswith("same_group"):
        raise ConfigError(
            f"model.negatives={m.negatives}: images have no groups; use batch or batch_excl"
        )


def validate_data_config(d: VisionDataConfig) -> None:
    """Raise ConfigError for image sizes that give no patch grid."""
    if not 0 < d.crop <= d.resize:
        raise ConfigError(f"data.crop {d.crop} must be in 1..data.resize ({d.resize})")
    if not 0 < d.patch <= d.crop or d.stride < 1:
        raise ConfigError(
            f"data.patch {d.patch} must be in 1..data.crop ({d.crop}) and data.stride >= 1"
        )
    if (d.crop - d.patch) % d.stride != 0:
        raise ConfigError(
            f"data.crop {d.crop} - data.patch {d.patch} must be a multiple of data.stride "
            f"{d.stride} so that the grid covers the crop exactly (e.g. 256/64/32, 64/16/8)"
        )
    if not 0 < d.subcrop <= d.patch:
        raise ConfigError(f"data.subcrop {d.subcrop} must be in 1..data.patch ({d.patch})")
    if not 0 <= d.flip_prob <= 1:
        raise ConfigError(f"data.flip_prob must be in [0, 1], got {d.flip_prob}")
    if d.batch_size < 1 or d.num_workers < 0 or d.prefetch_factor < 1 or d.valid_images < 0:
        raise ConfigError(
            "data.batch_size and data.prefetch_factor must be >= 1, data.num_workers and "
            "data.valid_images >= 0"
        )


def validate_config(cfg: VisionTrainConfig) -> None:
    """Raise ConfigError for combinations the types cannot express."""
    if cfg.domain != DOMAIN:
        raise ConfigError(f"domain {cfg.domain!r}: this is a vision ({DOMAIN!r}) config")
    validate_model_config(cfg.model)
    validate_data_config(cfg.data)
    try:
        validate_optim_config(cfg.optim)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if cfg.data.grid <= cfg.model.prediction_steps:
        raise ConfigError(
            f"the patch grid has {cfg.data.grid} rows (data.crop {cfg.data.crop}, data.patch "
            f"{cfg.data.patch}, data.stride {cfg.data.stride}): too few to predict "
            f"model.prediction_steps={cfg.model.prediction_steps} rows below"
        )
    if cfg.model.negatives == "batch_excl" and cfg.data.batch_size < 2:
        raise ConfigError("model.negatives=batch_excl needs data.batch_size >= 2")


def load_train_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> VisionTrainConfig:
    """Load and validate a vision training config (YAML + ``section.key=value`` overrides)."""
    cfg = load_config(VisionTrainConfig, path, overrides)
    validate_config(cfg)
    return cfg
