"""A domain-agnostic trainer for contrastive pre-training: DDP, bf16, compile, resumable.

What a domain provides
----------------------
- ``model``: an ``nn.Module`` whose ``forward(batch, generator=None)`` takes a micro-batch
  (a dict of tensors sharing the leading batch dimension) and a ``torch.Generator`` on the
  training device, to be used for every random draw of the step (e.g. InfoNCE negatives), and
  returns a dict of tensors: ``"loss"`` (scalar, differentiable) plus any metrics (scalars or
  1-D tensors, e.g. ``"accuracy"`` per prediction step k, ``"mi_bound"``). Metrics must not
  require a host sync; the trainer averages them over ``log_interval`` steps and ranks.
  A metric named ``"accuracy"`` is shown (its first entry, the 1-step accuracy) on the
  progress bar.
- ``data``: an object with ``batches(position, rank, world_size, grad_accum)`` (see
  :class:`TrainData`) yielding, for every optimizer step, this rank's part of the global batch
  (``grad_accum`` micro-batches concatenated along dim 0) and the data position after it.
  The global batch of a step must not depend on ``world_size``/``grad_accum`` splits beyond
  their product, so that N processes and 1 process with ``grad_accum = N`` train identically.
- ``config``: the resolved config as a nested dict (saved in checkpoints; its
  ``strict_sections``, by default ``model``, must match to resume).

The generator of micro-batch ``i`` of step ``s`` on rank ``r`` is seeded from
``(seed, s, r * grad_accum + i)``: the draws depend only on the step and the micro-batch's
place in the global batch, so they are identical after a resume and across the N-process /
1-process-with-accumulation equivalence.

Distributed training uses torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
``nccl`` on GPUs, ``gloo`` on CPUs; without torchrun one process trains alone. Only rank 0
logs, writes TensorBoard scalars, ``metrics.jsonl`` and checkpoints.

Outputs in ``exp_dir``: ``checkpoint-<step>.pt`` (the last ``keep_last``), ``best.pt`` (the
final model, see :mod:`cpc.checkpoint`), ``metrics.jsonl`` (one JSON object per log
interval: ``step``, ``loss``, ``accuracy`` (list over k), ``mi_bound``, ``lr``, ``time``
(seconds of training, resumes included), ``steps_per_sec`` and the model's other metrics),
``tensorboard/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cpc.checkpoint import (
    FORMAT,
    capture_rng_state,
    check_resume_config,
    checkpoint_path,
    find_latest_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_best,
    save_checkpoint,
)
from cpc.io import Pathlike, atomic_open
from cpc.perf import keep_freed_memory

Batch = dict[str, Any]


@dataclass
class OptimConfig:
    """Adam and the learning-rate schedule."""

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    schedule: Literal["constant", "cosine"] = "constant"  # after warm-up
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of lr
    grad_clip: float = 0.0  # max global grad norm; 0 = no clipping


@dataclass
class TrainerConfig:
    """Generic training-loop options."""

    max_steps: int = 300000  # optimizer updates in total (a resumed run ends here too)
    seed: int = 42  # model init, data order and per-step sampling
    grad_accum: int = 1  # micro-batches per update and process
    log_interval: int = 100  # steps between metric logs (the only host syncs)
    save_interval: int = 5000  # steps between checkpoints (and one at the end)
    keep_last: int = 3  # training checkpoints kept
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on CPU and GPU
    compile: bool = False  # torch.compile the model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    progress_bar: bool = True  # tqdm on rank 0
    tensorboard: bool = True  # TensorBoard scalars on rank 0


class TrainData(Protocol):
    """The data a :class:`Trainer` consumes."""

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Iterator[tuple[Batch, dict[str, int]]]:
        """Yield ``(batch, next_position)`` forever, starting at ``position`` (None: start)."""
        ...


@dataclass
class DistEnv:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment, pick the device, start the process group if needed.

    ``device``: ``"auto"`` (GPU ``LOCAL_RANK`` if CUDA is available, else CPU), ``"cpu"`` or
    ``"cuda"``. Backend: nccl on GPU, gloo on CPU. Safe to call twice.
    """
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def step_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the sampling generator for micro-batch ``shard`` of optimizer step ``step``."""
    return int(np.random.SeedSequence([seed, step, shard]).generate_state(1, np.uint64)[0])


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """Split every tensor of ``batch`` along dim 0 into ``parts`` equal micro-batches."""
    if parts == 1:
        return [batch]
    out: list[Batch] = [{} for _ in range(parts)]
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            if v.shape[0] % parts != 0:
                raise ValueError(
                    f"batch[{k!r}] has {v.shape[0]} rows, not divisible into grad_accum={parts} "
                    "micro-batches; the data must yield grad_accum whole micro-batches"
                )
            for i, chunk in enumerate(v.chunk(parts)):
                out[i][k] = chunk
        else:
            for o in out:
                o[k] = v
    return out


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class Trainer:
    """One readable training loop (see the module docstring for the domain's side).

    Args:
        model: the domain model (``forward(batch, generator) -> {"loss": ..., metrics}``).
        data: a :class:`TrainData`.
        cfg: loop options; ``optim_cfg``: Adam + schedule.
        exp_dir: where checkpoints, logs and metrics go.
        config: the full resolved config (nested dict), stored in checkpoints.
        dist_env: from :func:`init_distributed` (default: call it with ``cfg.device``).
        strict_sections: config sections that must match a checkpoint to resume from it.
        on_step_end: called with the step number after every optimizer step (all ranks).

    Use: ``Trainer(...).fit()``; :meth:`prepare` (resume + checks) may be called first.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TrainData,
        cfg: TrainerConfig,
        optim_cfg: OptimConfig,
        exp_dir: Pathlike,
        config: dict[str, Any],
        dist_env: DistEnv | None = None,
        strict_sections: tuple[str, ...] = ("model",),
        on_step_end: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.optim_cfg = optim_cfg
        self.exp_dir = Path(exp_dir)
        self.config = config
        self.env = dist_env if dist_env is not None else init_distributed(cfg.device)
        self.strict_sections = strict_sections
        self.on_step_end = on_step_end
        self.data = data
        keep_freed_memory()  # large activations are reused, not page-faulted in every step
        self.model = model.to(self.env.device)
        # The fused Adam kernel updates each parameter in one pass (CPU and CUDA).
        fused = self.env.device.type in ("cpu", "cuda") and all(
            p.is_floating_point() for p in self.model.parameters()
        )
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=optim_cfg.lr,
            betas=tuple(optim_cfg.betas),
            eps=optim_cfg.eps,
            weight_decay=optim_cfg.weight_decay,
            fused=fused or None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, optim_cfg, cfg.max_steps)
        )
        self.step = 0
        self.position: dict[str, int] | None = None
        self.elapsed = 0.0
        self.last_metrics: dict[str, Any] = {}
        self._prepared = False
        self._check_config()

    def _check_config(self) -> None:
        c = self.cfg
        for name in ("max_steps", "grad_accum", "log_interval", "save_interval", "keep_last"):
            if getattr(c, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(c, name)}")

    # ---- resume ----
    def prepare(self) -> int:
        """Resume from the newest good checkpoint in ``exp_dir`` if any; return the start step.

        Raises :class:`cpc.checkpoint.CheckpointError` if that checkpoint's model config
        differs from the current one.
        """
        if self._prepared:
            return self.step
        if self.env.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        found = find_latest_checkpoint(self.exp_dir)
        if found is not None:
            path, state = found
            diffs = check_resume_config(
                state.get("config", {}), self.config, self.strict_sections, path
            )
            for d in diffs:
                logging.warning(f"config changed since {path.name}: {d}")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"])
            self.step = int(state["step"])
            self.position = dict(state["data_position"])
            self.elapsed = float(state.get("elapsed", 0.0))
            if state.get("world_size") != self.env.world_size:
                logging.warning(
                    f"{path.name} was written by a run with {state.get('world_size')} "
                    f"process(es), now {self.env.world_size}: the global batch size changes"
                )
            logging.info(f"resuming from {path} (step {self.step}, data {self.position})")
        else:
            logging.info(f"no checkpoint in {self.exp_dir}: starting from scratch")
        if self.env.is_main:
            self._truncate_metrics(self.step)
        self._prepared = True
        return self.step

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics.jsonl records past ``step`` (written by an interrupted run)."""
        path = self.exp_dir / "metrics.jsonl"
        if not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        with atomic_open(path, "w") as f:
            f.write("".join(x + "\n" for x in keep))

    # ---- checkpoints ----
    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "data_position": dict(self.position or {}),
            "config": self.config,
            "world_size": self.env.world_size,
            "elapsed": self.elapsed,
        }

    def save(self) -> Path | None:
        """Rank 0: write ``checkpoint-<step>.pt`` and prune old ones. Returns the path."""
        if not self.env.is_main:
            return None
        path = checkpoint_path(self.exp_dir, self.step)
        save_checkpoint(path, self._state())
        for p in prune_checkpoints(self.exp_dir, self.cfg.keep_last):
            logging.info(f"removed old checkpoint {p.name}")
        logging.info(f"saved {path}")
        return path

    # ---- the loop ----
    def fit(self) -> dict[str, Any]:
        """Train until ``max_steps``; return the last logged metrics."""
        self.prepare()
        env, cfg = self.env, self.cfg
        if self.step >= cfg.max_steps:
            logging.info(f"already at step {self.step} >= max_steps {cfg.max_steps}")
            if env.is_main:
                save_best(self.exp_dir, self.step, self.model.state_dict(), self.config)
            return self.last_metrics

        if cfg.compile:
            self.model.compile()
        net: nn.Module = self.model
        if env.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[env.local_rank] if env.device.type == "cuda" else None
            )
        writer = None
        if env.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.step)
        pbar = None
        stack = contextlib.ExitStack()
        if env.is_main and cfg.progress_bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            stack.enter_context(logging_redirect_tqdm())  # log lines above the bar
            pbar = tqdm(
                total=cfg.max_steps,
                initial=self.step,
                unit="step",
                dynamic_ncols=True,
                mininterval=2.0,
                desc="train",
            )
        gen = torch.Generator(device=env.device)
        autocast = torch.autocast(
            device_type=env.device.type,
            dtype=torch.bfloat16,
            enabled=cfg.precision == "bf16",
        )
        accum = cfg.grad_accum
        it = self.data.batches(self.position, env.rank, env.world_size, accum)
        sums: dict[str, torch.Tensor] = {}
        n_sum = 0
        t_log = time.time()
        t_last = time.time()
        self.model.train()
        logging.info(
            f"training steps {self.step}..{cfg.max_steps} on {env.world_size} process(es), "
            f"device {env.device}, precision {cfg.precision}, compile {cfg.compile}, "
            f"grad_accum {accum}"
        )
        try:
            while self.step < cfg.max_steps:
                batch, next_pos = next(it)
                micro = split_batch(batch, accum)
                for i, mb in enumerate(micro):
                    mb = _to_device(mb, env.device)
                    gen.manual_seed(step_seed(cfg.seed, self.step, env.rank * accum + i))
                    sync = (
                        net.no_sync()
                        if isinstance(net, nn.parallel.DistributedDataParallel) and i < accum - 1
                        else contextlib.nullcontext()
                    )
                    with sync:
                        with autocast:
                            out = net(mb, generator=gen)
                        (out["loss"] / accum).backward()
                    for k, v in out.items():
                        v = v.detach().float() / accum
                        sums[k] = sums[k] + v if k in sums else v
                if self.optim_cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.position = next_pos
                n_sum += 1
                now = time.time()
                self.elapsed += now - t_last
                t_last = now
                if pbar is not None:
                    pbar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    self._log(sums, n_sum, now - t_log, writer, pbar)
                    sums, n_sum, t_log = {}, 0, time.time()
                if self.step % cfg.save_interval == 0 or self.step == cfg.max_steps:
                    self.save()
                if self.on_step_end is not None:
                    self.on_step_end(self.step)
            if env.is_main:
                path = save_best(self.exp_dir, self.step, self.model.state_dict(), self.config)
                logging.info(f"training done at step {self.step}; final model in {path}")
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            if pbar is not None:
                pbar.close()
            stack.close()
            if writer is not None:
                writer.close()
        if env.world_size > 1:
            dist.barrier()
        return self.last_metrics

    def _log(
        self,
        sums: dict[str, torch.Tensor],
        n: int,
        seconds: float,
        writer: Any,
        pbar: Any,
    ) -> None:
        """Average the metrics over steps (and ranks): the one host sync per interval."""
        names = sorted(sums)
        flat = torch.cat([sums[k].reshape(-1) for k in names]) / max(n, 1)
        if self.env.world_size > 1:
            dist.all_reduce(flat)
            flat /= self.env.world_size
        values = flat.cpu().tolist()
        rec: dict[str, Any] = {"step": self.step}
        i = 0
        for k in names:
            size = sums[k].numel()
            chunk = values[i : i + size]
            rec[k] = chunk[0] if sums[k].dim() == 0 else chunk
            i += size
        rec["lr"] = self.scheduler.get_last_lr()[0]
        rec["time"] = round(self.elapsed, 3)
        rec["steps_per_sec"] = round(n / seconds, 4) if seconds > 0 else None
        self.last_metrics = rec
        loss = rec.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {self.step}; lower optim.lr, set train.precision=fp32 "
                "or optim.grad_clip, then resume from the last checkpoint"
            )
        if not self.env.is_main:
            return
        acc = rec.get("accuracy")
        acc1 = acc[0] if isinstance(acc, list) and acc else acc
        msg = f"step {self.step}: loss {loss:.4f}"
        if acc1 is not None:
            msg += f", acc@1 {acc1:.3f}"
        if isinstance(acc, list) and len(acc) > 1:
            msg += f", acc@{len(acc)} {acc[-1]:.3f}"
        if "mi_bound" in rec:
            msg += f", MI bound {rec['mi_bound']:.3f} nats"
        msg += f", lr {rec['lr']:.3g}, {rec['steps_per_sec']} step/s"
        logging.info(msg)
        if pbar is not None:
            post = {"loss": f"{loss:.3f}"}
            if acc1 is not None:
                post["acc1"] = f"{acc1:.3f}"
            pbar.set_postfix(post, refresh=False)
        with open(self.exp_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if writer is not None:
            for k, v in rec.items():
                if k in ("step", "time") or v is None:
                    continue
                if isinstance(v, list):
                    for j, x in enumerate(v):
                        writer.add_scalar(f"train/{k}/k{j + 1}", x, self.step)
                else:
                    writer.add_scalar(f"train/{k}", v, self.step)
            writer.flush()
