"""Configuration of CPC pre-training on speech: model, data, optimiser, trainer.

A YAML file (``egs/librispeech100/conf/*.yaml``) has ``domain: audio`` and the four sections
``model``, ``data``, ``optim`` and ``train``; :func:`load_train_config` reads it with
``key=value`` overrides and checks the combinations that the types alone cannot
(:func:`validate_config`), among them that the encoder's total stride is the 10 ms frame hop
(so a model that stage 3 could not dump is refused when its config is loaded). Negative
strategy names are stored in their canonical form (``mixed_speaker`` -> ``batch``, see
:mod:`cpc.infonce`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cpc.audio.constants import FRAME_SHIFT, SAMPLING_RATE
from cpc.config import ConfigError, load_config
from cpc.infonce import NegativeSamplingError, canonical_strategy
from cpc.optim import OptimConfig, validate_optim_config
from cpc.trainer import TrainerConfig

DOMAIN = "audio"


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
    num_negatives: int = 8  # N per context position; 0 = all pairs (every frame of the batch)
    # where negatives come from (cpc.infonce): batch (the paper's "mixed speaker"),
    # same_group ("same speaker"), batch_excl, same_group_excl, current_sequence
    negatives: str = "batch"
    # training with several processes: negatives also from the other processes' windows
    # (gathered, gradients sent back; cpc.infonce.InfoNCE(across_ranks)), so the task is that
    # of one process holding the global batch; false: from the process's own windows only
    negatives_across_ranks: bool = False
    sample_rate: int = SAMPLING_RATE
    # What the network is trained for: cpc (InfoNCE), or the supervised baselines of the
    # paper's Table 1, the same encoder + GRU trained end to end with cross-entropy of a linear
    # layer on c_t at every frame: phone (the frame's phone label) or speaker (the window's
    # speaker). num_classes: phone 0 = the 41 phone classes; speaker: the training speakers.
    objective: Literal["cpc", "phone", "speaker"] = "cpc"
    num_classes: int = 0


@dataclass
class AudioDataConfig:
    """Training windows drawn from the stage-1 train cuts."""

    window: int = 20480  # samples per training window (1.28 s at 16 kHz)
    batch_size: int = 8  # windows per process and micro-batch; negatives come from it
    # (from every process's with model.negatives_across_ranks)
    windows_per_speaker: int = 1  # >1: batches of batch_size/windows_per_speaker speakers
    num_workers: int = 2  # DataLoader worker processes (0: load in the training process)
    prefetch_factor: int = 4  # batches prefetched per worker
    valid_fraction: float = 0.02  # share of the train cuts held out for the validation loss
    valid_max_windows: int = 2048  # at most this many validation windows


@dataclass
class CPCTrainConfig:
    """Everything ``local/train.py`` needs, one section per concern."""

    domain: str = DOMAIN
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
    for name in ("channels", "context_dim", "gru_layers", "prediction_steps"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.objective == "speaker" and m.num_classes < 2:
        raise ConfigError(
            f"model.objective=speaker needs model.num_classes >= 2 (the number of training "
            f"speakers), got {m.num_classes}"
        )
    if m.num_classes < 0:
        raise ConfigError(f"model.num_classes must be >= 0, got {m.num_classes}")
    if m.num_negatives < 0:
        raise ConfigError(f"model.num_negatives must be >= 0 (0: all pairs), got {m.num_negatives}")
    try:
        m.negatives = canonical_strategy(m.negatives)
    except NegativeSamplingError as e:
        raise ConfigError(f"model.negatives: {e}") from e
    hop = math.prod(m.strides)
    frame_hop = round(m.sample_rate * FRAME_SHIFT)
    if hop != frame_hop:
        raise ConfigError(
            f"model.strides {m.strides} give a total stride of {hop} samples, but the recipe's "
            f"features and phone labels are one per {FRAME_SHIFT * 1000:g} ms = {frame_hop} "
            f"samples at model.sample_rate {m.sample_rate}; choose strides whose product is "
            f"{frame_hop} (e.g. the paper's [5, 4, 2, 2, 2] at 16 kHz)"
        )


def validate_config(cfg: CPCTrainConfig) -> None:
    """Raise ConfigError for combinations the types cannot express."""
    if cfg.domain != DOMAIN:
        raise ConfigError(f"domain {cfg.domain!r}: this is a speech ({DOMAIN!r}) config")
    validate_model_config(cfg.model)
    try:
        validate_optim_config(cfg.optim)
    except ValueError as e:
        raise ConfigError(str(e)) from e
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
    if m.negatives.startswith("same_group") and d.windows_per_speaker < 2:
        raise ConfigError(
            f"model.negatives={m.negatives} needs batches with several windows per speaker: "
            "set data.windows_per_speaker >= 2 (e.g. 4 with data.batch_size 8)"
        )
    if m.negatives == "batch_excl" and d.batch_size < 2:
        raise ConfigError("model.negatives=batch_excl needs data.batch_size >= 2")
    if d.num_workers < 0 or d.prefetch_factor < 1:
        raise ConfigError("data.num_workers must be >= 0 and data.prefetch_factor >= 1")
    if not 0 <= d.valid_fraction < 1 or d.valid_max_windows < 0:
        raise ConfigError(
            "data.valid_fraction must be in [0, 1) (0: no validation) and "
            "data.valid_max_windows >= 0"
        )


def load_train_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> CPCTrainConfig:
    """Load and validate a training config (YAML + ``section.key=value`` overrides)."""
    cfg = load_config(CPCTrainConfig, path, overrides)
    validate_config(cfg)
    return cfg
