"""Optimizers and learning-rate schedules from a config section: the factories the trainer
uses by default, and that a domain can replace (``Trainer(optimizer_factory=...,
scheduler_factory=...)``).

``OptimConfig.name``: ``adam`` (the CPC paper: speech, images, text), ``adamw``,
``rmsprop`` (the paper's reinforcement-learning agents) or ``sgd`` (with momentum, e.g. for
linear classifiers). Schedule: optional linear warm-up, then ``constant``, ``cosine`` (down
to ``min_lr_ratio * lr`` at ``max_steps``) or ``step`` (multiply by ``gamma`` at each of
``milestones``, e.g. the paper's ImageNet classifier: 0.1, 0.01, 0.001).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule."""

    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd, rmsprop
    alpha: float = 0.99  # rmsprop: smoothing of the squared gradient
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    schedule: Literal["constant", "cosine", "step"] = "constant"  # after warm-up
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of lr
    milestones: list[int] = field(default_factory=list)  # step: steps at which lr *= gamma
    gamma: float = 0.1  # step: the factor
    grad_clip: float = 0.0  # max global grad norm; 0 = no clipping


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m for m in cfg.milestones)
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_depends_on_max_steps(cfg: OptimConfig) -> bool:
    """True when ``max_steps`` shapes the schedule (so a run cannot be extended)."""
    return cfg.schedule == "cosine"


def build_optimizer(
    params: Iterable[nn.Parameter], cfg: OptimConfig, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name``. Adam/AdamW use the fused kernel (one pass per
    parameter) on CPU and CUDA when every parameter is floating point."""
    params = list(params)
    if cfg.name in ("adam", "adamw"):
        fused = (
            device is not None
            and device.type in ("cpu", "cuda")
            and all(p.is_floating_point() for p in params)
        )
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            fused=fused or None,
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"optim.name {cfg.name!r} is not one of adam, adamw, rmsprop, sgd")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``LambdaLR`` following :func:`lr_factor` (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps))


def validate_optim_config(cfg: OptimConfig) -> None:
    """Raise ValueError for settings that cannot work."""
    if cfg.lr <= 0:
        raise ValueError(f"optim.lr must be > 0, got {cfg.lr}")
    if cfg.warmup_steps < 0 or cfg.grad_clip < 0:
        raise ValueError("optim.warmup_steps and optim.grad_clip must be >= 0")
    if cfg.schedule == "step" and sorted(cfg.milestones) != list(cfg.milestones):
        raise ValueError(f"optim.milestones must be increasing, got {cfg.milestones}")
