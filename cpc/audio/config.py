"""Configuration of CPC pre-training on speech: model, data, optimiser, trainer.

A YAML file (``egs/librispeech100/conf/*.yaml``) has the four sections ``model``, ``data``,
``optim`` and ``train``; :func:`load_train_config` reads it with ``key=value`` overrides and
checks the combinations that the types alone cannot (:func:`validate_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cpc.config import ConfigError, load_config
from cpc.infonce import STRATEGIES
from cpc.trainer import OptimConfig, TrainerConfig


@dataclass
class CPCModelConfig:
    """The CPC speech model (paper section 3.1 defaults) and its InfoNCE loss."""

    channels: int = 512  # encoder channels = dimension of z_t
    strides: list[int] = field(default_factory=lambda: [5, 4, 2, 2, 2])
    kernels: list[int] = field(default_factory=lambda: [10, 8, 4, 4, 4])
    norm: Literal["none", "batch", "layer"] = "none"  # after each conv: none (paper), BN, LN
    input_norm: Literal["standardize", "none"] = "standardize"  # waveform scaling in the model
    context_dim: int = 256  # GRU hidden size = dimension of c_t
    gru_layers: int = 1
    prediction_steps: int = 12  # K
    num_negatives: int = 8  # N per context position
    negatives: Literal[
        "mixed_speaker",
        "same_speaker",
        "mixed_speaker_excl",
        "same_speaker_excl",
        "current_sequence",
    ] = "mixed_speaker"
    sample_rate: int = 16000


@dataclass
class AudioDataConfig:
    """Training windows drawn from the stage-1 train cuts."""

    window: int = 20480  # samples per training window (1.28 s at 16 kHz)
    batch_size: int = 8  # windows per process and micro-batch; negatives come from it
    windows_per_speaker: int = 1  # >1: batches of batch_size/windows_per_speaker speakers
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    prefetch_factor: int = 4  # batches prefetched per worker


@dataclass
class CPCTrainConfig:
    """Everything ``local/train.py`` needs, one section per concern."""

    model: CPCModelConfig = field(default_factory=CPCModelConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainerConfig = field(default_factory=TrainerConfig)


def validate_model_config(m: CPCModelConfig) -> None:
    """Raise ConfigError for a model config that cannot be built."""
    if len(m.strides) != len(m.kernels) or not m.strides:
        raise ConfigError(
            f"model.strides {m.strides} and model.kernels {m.kernels} must be non-empty lists "
            "of the same length (one entry per conv layer)"
        )
    for i, (s, k) in enumerate(zip(m.strides, m.kernels)):
        if s < 1 or k < s:
            raise ConfigError(
                f"conv layer {i}: kernel {k} must be >= stride {s} >= 1 (the padding that makes "
                "S samples give S // hop frames is kernel - stride)"
            )
    for name in ("channels", "context_dim", "gru_layers", "prediction_steps", "num_negatives"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.negatives not in STRATEGIES:
        raise ConfigError(f"model.negatives {m.negatives!r} is not one of {list(STRATEGIES)}")


def validate_config(cfg: CPCTrainConfig) -> None:
    """Raise ConfigError for combinations the types cannot express."""
    validate_model_config(cfg.model)
    m, d = cfg.model, cfg.data
    hop = math.prod(m.strides)
    if d.window % hop != 0:
        raise ConfigError(f"data.window {d.window} must be a multiple of the hop {hop} samples")
    frames = d.window // hop
    if frames <= m.prediction_steps:
        raise ConfigError(
            f"data.window {d.window} gives {frames} frames, too few to predict "
            f"model.prediction_steps={m.prediction_steps} steps ahead"
        )
    if d.batch_size < 1 or d.windows_per_speaker < 1:
        raise ConfigError("data.batch_size and data.windows_per_speaker must be >= 1")
    if d.batch_size % d.windows_per_speaker != 0:
        raise ConfigError(
            f"data.batch_size {d.batch_size} must be a multiple of data.windows_per_speaker "
            f"{d.windows_per_speaker} (a batch is whole groups of windows of one speaker)"
        )
    if m.negatives.startswith("same_speaker") and d.windows_per_speaker < 2:
        raise ConfigError(
            f"model.negatives={m.negatives} needs batches with several windows per speaker: "
            "set data.windows_per_speaker >= 2 (e.g. 4 with data.batch_size 8)"
        )
    if m.negatives == "mixed_speaker_excl" and d.batch_size < 2:
        raise ConfigError("model.negatives=mixed_speaker_excl needs data.batch_size >= 2")
    if d.num_workers < 0 or d.prefetch_factor < 1:
        raise ConfigError("data.num_workers must be >= 0 and data.prefetch_factor >= 1")


def load_train_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> CPCTrainConfig:
    """Load and validate a training config (YAML + ``section.key=value`` overrides)."""
    cfg = load_config(CPCTrainConfig, path, overrides)
    validate_config(cfg)
    return cfg
