"""Configuration of A2C (+ CPC auxiliary loss) training: environment, agent, unrolls.

A YAML file (``egs/dmlab/conf/*.yaml``) has ``domain: rl`` and the sections ``env``
(:class:`cpc.rl.envs.EnvConfig`), ``model`` (the agent and its losses), ``data`` (how
unrolls are collected), ``optim`` (:class:`cpc.optim.OptimConfig`; RMSProp as the paper)
and ``train`` (:class:`cpc.trainer.TrainerConfig`: one optimizer step per unroll batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpc.config import ConfigError, load_config
from cpc.infonce import NegativeSamplingError, canonical_strategy
from cpc.optim import OptimConfig, validate_optim_config
from cpc.rl.envs import SUITES, EnvConfig
from cpc.trainer import TrainerConfig

DOMAIN = "rl"


@dataclass
class AgentConfig:
    """IMPALA-style agent (conv encoder, LSTM core, policy and value heads), the A2C loss
    and the CPC auxiliary loss."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 32])  # conv sections
    res_blocks: int = 2  # residual blocks per section (IMPALA deep: 2; 0: conv + pool only)
    feature_dim: int = 256  # encoder output z_t (the CPC targets)
    core_dim: int = 256  # LSTM state c_t (the CPC contexts)
    discount: float = 0.99
    entropy_cost: float = 0.01
    baseline_cost: float = 0.5
    reward_clip: float = 1.0  # rewards clipped to [-clip, clip] for learning (0: no clipping)
    reward_scale: float = 1.0  # rewards multiplied by this (after clipping) for learning
    cpc: bool = False  # add the CPC auxiliary loss (predictors c_t -> z_{t+k})
    cpc_steps: int = 30  # K: predict z_{t+1} .. z_{t+K}
    cpc_weight: float = 1.0  # the auxiliary loss's weight in the total loss
    cpc_negatives: str = "batch"  # cpc.infonce strategy: batch = every frame of the unrolls


@dataclass
class UnrollConfig:
    """How the training batches are collected."""

    num_envs: int = 16  # environments per process (the batch of unrolls)
    num_workers: int = 2  # environment worker processes per training process
    unroll: int = 100  # agent steps per unroll (one optimizer step per batch of unrolls)
    step_timeout: float = 60.0  # seconds before a silent environment worker counts as hung
    threads: int = 1  # torch threads of the learner (0: leave torch's default)


@dataclass
class RLTrainConfig:
    """Everything ``local/train.py`` needs for the rl domain."""

    domain: str = DOMAIN
    env: EnvConfig = field(default_factory=EnvConfig)
    model: AgentConfig = field(default_factory=AgentConfig)
    data: UnrollConfig = field(default_factory=UnrollConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="rmsprop", lr=4.8e-4, eps=0.01, alpha=0.99)
    )
    train: TrainerConfig = field(default_factory=TrainerConfig)


def validate_config(cfg: RLTrainConfig) -> None:
    """Raise ConfigError for combinations the types cannot express."""
    if cfg.domain != DOMAIN:
        raise ConfigError(f"domain {cfg.domain!r}: this is an rl ({DOMAIN!r}) config")
    e, m, d = cfg.env, cfg.model, cfg.data
    if e.suite not in SUITES:
        raise ConfigError(f"env.suite {e.suite!r} is not one of {', '.join(SUITES)}")
    if min(e.height, e.width, e.action_repeat) < 1 or e.max_episode_steps < 0:
        raise ConfigError(
            "env.height, env.width and env.action_repeat must be >= 1, env.max_episode_steps >= 0"
        )
    if not m.channels or min(m.channels) < 1 or m.res_blocks < 0:
        raise ConfigError(f"model.channels {m.channels} must be positive, model.res_blocks >= 0")
    if min(m.feature_dim, m.core_dim, m.cpc_steps) < 1:
        raise ConfigError("model.feature_dim, model.core_dim and model.cpc_steps must be >= 1")
    if not 0 <= m.discount <= 1 or m.reward_clip < 0 or m.cpc_weight < 0:
        raise ConfigError("model.discount must be in [0, 1], reward_clip and cpc_weight >= 0")
    try:
        m.cpc_negatives = canonical_strategy(m.cpc_negatives)
    except NegativeSamplingError as err:
        raise ConfigError(f"model.cpc_negatives: {err}") from err
    if m.cpc_negatives.startswith("same_group"):
        raise ConfigError("model.cpc_negatives: unrolls have no groups; use batch or batch_excl")
    if min(d.num_envs, d.num_workers, d.unroll) < 1 or d.step_timeout <= 0 or d.threads < 0:
        raise ConfigError(
            "data.num_envs, data.num_workers and data.unroll must be >= 1, "
            "data.step_timeout > 0, data.threads >= 0"
        )
    if m.cpc and d.unroll <= m.cpc_steps:
        raise ConfigError(
            f"data.unroll {d.unroll} is too short to predict model.cpc_steps={m.cpc_steps} "
            "steps ahead; lengthen the unroll or predict fewer steps"
        )
    if cfg.train.grad_accum != 1 and d.num_envs % cfg.train.grad_accum != 0:
        raise ConfigError(
            f"data.num_envs {d.num_envs} must be a multiple of train.grad_accum "
            f"{cfg.train.grad_accum} (micro-batches are whole environments)"
        )
    try:
        validate_optim_config(cfg.optim)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> RLTrainConfig:
    """Load and validate a training config (YAML + ``section.key=value`` overrides)."""
    cfg = load_config(RLTrainConfig, path, overrides)
    validate_config(cfg)
    return cfg
