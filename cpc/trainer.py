"""A domain-agnostic trainer for contrastive pre-training: DDP, bf16, compile, resumable,
validated.

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
- ``data``: a :class:`TrainData`: ``batches(position, rank, world_size, grad_accum)``
  yields, for every optimizer step, this rank's part of the global batch (``grad_accum``
  micro-batches concatenated along dim 0) and the data position after it. The global batch
  of a step must not depend on ``world_size``/``grad_accum`` splits beyond their product, so
  that N processes and 1 process with ``grad_accum = N`` train identically.
- ``valid_data`` (optional): a :class:`ValidData`, the held-out split. At every checkpoint
  the trainer computes the model's loss and metrics on it (same generator seeds every time,
  so values are comparable across steps) and writes ``best.pt`` when the validation loss is
  the lowest so far. A domain may instead pass ``evaluate`` (a function of the trainer
  returning ``{"loss": float, ...}``).
- ``config``: the resolved config as a nested dict (saved in checkpoints), with sections
  ``train`` (:class:`TrainerConfig`) and ``optim`` (:class:`cpc.optim.OptimConfig`);
  ``data_identity``: a signature of the training data (what it is, not where it lives);
  ``run_only_keys``: dotted config keys of the domain that do not change the trained
  weights (e.g. ``data.num_workers``).
- ``optimizer_factory`` / ``scheduler_factory`` (optional): replace the optimizer and the
  schedule that :mod:`cpc.optim` builds from ``optim_cfg``.

Identity. A checkpoint records what its weights were made from (:meth:`Trainer.identity`):
every config key except the run-only ones (logging, checkpoint cadence, devices, workers,
compile, ``max_steps`` unless the schedule depends on it), the data signature, and processes
x gradient accumulation. Resuming from a checkpoint of another identity is refused
(:class:`cpc.checkpoint.IdentityMismatch`), so an experiment directory never mixes runs.

The generator of micro-batch ``i`` of step ``s`` on rank ``r`` is seeded from
``(seed, s, r * grad_accum + i)``: the draws depend only on the step and the micro-batch's
place in the global batch, so they are identical after a resume and across the N-process /
1-process-with-accumulation equivalence. Validation batch ``j`` uses ``(seed, -1, j)``.

Distributed training uses torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
``nccl`` on GPUs, ``gloo`` on CPUs; without torchrun one process trains alone. Only rank 0
logs, writes TensorBoard scalars, ``metrics.jsonl`` and checkpoints.

Outputs in ``exp_dir``: ``checkpoint-<step>.pt`` (the last ``keep_last``), ``best.pt``
(lowest validation loss, see :mod:`cpc.checkpoint`), ``metrics.jsonl`` (one JSON object per
log interval, ``"split": "train"``: ``step``, ``loss``, ``accuracy`` (list over k),
``mi_bound``, ``lr``, ``time`` (seconds of training, resumes included), ``steps_per_sec``;
and one per checkpoint, ``"split": "valid"``: ``step``, ``loss``, the model's metrics,
``best``), ``tensorboard/``.
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
    BEST_NAME,
    FORMAT,
    capture_rng_state,
    check_identity,
    checkpoint_path,
    find_latest_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_best,
    save_checkpoint,
)
from cpc.config import diff_configs, flatten
from cpc.io import Pathlike, atomic_open
from cpc.optim import (
    OptimConfig,
    OptimizerFactory,
    SchedulerFactory,
    build_optimizer,
    build_scheduler,
    lr_factor,
    schedule_depends_on_max_steps,
)
from cpc.perf import keep_freed_memory, resolve_precision, warn_if_emulated

Batch = dict[str, Any]

__all__ = [
    "Batch",
    "DistEnv",
    "OptimConfig",
    "TrainData",
    "Trainer",
    "TrainerConfig",
    "ValidData",
    "cleanup_distributed",
    "init_distributed",
    "lr_factor",
    "split_batch",
    "step_seed",
]


@dataclass
class TrainerConfig:
    """Generic training-loop options."""

    max_steps: int = 300000  # optimizer updates in total (a resumed run ends here too)
    seed: int = 42  # model init, data order and per-step sampling
    grad_accum: int = 1  # micro-batches per update and process
    log_interval: int = 100  # steps between metric logs (the only host syncs)
    save_interval: int = 5000  # steps between checkpoints + validation (and one at the end)
    keep_last: int = 3  # training checkpoints kept
    # bf16: autocast on CPU and GPU; auto: bf16 where the device has native bf16 (CPUs with
    # AVX512-BF16 or AMX, GPUs from Ampere on), fp32 elsewhere (cpc.perf.resolve_precision)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available
    progress_bar: bool = True  # tqdm on rank 0
    tensorboard: bool = True  # TensorBoard scalars on rank 0


#: ``train.*`` keys that do not change the trained weights (``max_steps`` only while the
#: schedule does not depend on it: raising it then trains an experiment further).
RUN_ONLY_TRAIN_KEYS = (
    "train.log_interval",
    "train.save_interval",
    "train.keep_last",
    "train.compile",
    "train.device",
    "train.progress_bar",
    "train.tensorboard",
    "train.grad_accum",
    "train.max_steps",
)


class TrainData(Protocol):
    """The data a :class:`Trainer` consumes."""

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Iterator[tuple[Batch, dict[str, int]]]:
        """Yield ``(batch, next_position)`` forever, starting at ``position`` (None: start)."""
        ...


class ValidData(Protocol):
    """A held-out split: a fixed, finite list of batches."""

    def eval_batches(self, rank: int, world_size: int) -> Iterator[tuple[int, Batch]]:
        """Yield ``(index, batch)`` for this rank's share of the batches (index: the batch's
        place in the whole list, which seeds its random draws)."""
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
    """Seed of the sampling generator for micro-batch ``shard`` of optimizer step ``step``
    (``step = -1``: validation batch ``shard``)."""
    return int(np.random.SeedSequence([seed, step + 1, shard]).generate_state(1, np.uint64)[0])


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


def _rows(batch: Batch) -> int:
    return next((v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor)), 1)


@dataclass
class _Run:
    """What one call of :meth:`Trainer.fit` sets up and tears down."""

    net: nn.Module
    batches: Iterator[tuple[Batch, dict[str, int]]]
    generator: torch.Generator
    autocast: Any
    writer: Any = None
    pbar: Any = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    n_sum: int = 0
    t_log: float = field(default_factory=time.time)
    t_last: float = field(default_factory=time.time)


class Trainer:
    """One readable training loop (see the module docstring for the domain's side).

    Args:
        model: the domain model (``forward(batch, generator) -> {"loss": ..., metrics}``).
        data: a :class:`TrainData`; ``valid_data``: an optional :class:`ValidData`.
        cfg: loop options; ``optim_cfg``: optimizer + schedule (:mod:`cpc.optim`).
        exp_dir: where checkpoints, logs and metrics go.
        config: the full resolved config (nested dict), stored in checkpoints.
        dist_env: from :func:`init_distributed` (default: call it with ``cfg.device``).
        data_identity: signature of the training data (part of the identity).
        run_only_keys: the domain's config keys that do not change the weights.
        optimizer_factory: ``params -> Optimizer`` (default: :func:`cpc.optim.build_optimizer`).
        scheduler_factory: ``optimizer -> LRScheduler`` (default: warm-up + schedule).
        evaluate: ``trainer -> {"loss": float, ...}`` replacing the evaluation on valid_data.
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
        *,
        valid_data: ValidData | None = None,
        data_identity: dict[str, Any] | None = None,
        run_only_keys: tuple[str, ...] = (),
        optimizer_factory: OptimizerFactory | None = None,
        scheduler_factory: SchedulerFactory | None = None,
        evaluate: Callable[[Trainer], dict[str, Any]] | None = None,
        on_step_end: Callable[[int], None] | None = None,
    ) -> None:
        for name in ("max_steps", "grad_accum", "log_interval", "save_interval", "keep_last"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(cfg, name)}")
        self.cfg, self.optim_cfg = cfg, optim_cfg
        self.exp_dir = Path(exp_dir)
        self.config = config
        self.env = dist_env if dist_env is not None else init_distributed(cfg.device)
        self.data, self.valid_data = data, valid_data
        self.data_identity = data_identity
        self.run_only_keys = run_only_keys
        self.on_step_end = on_step_end
        self._evaluate_fn = evaluate
        # the precision in effect (auto resolved for this device); part of the identity
        self.precision = resolve_precision(cfg.precision, str(self.env.device))
        warn_if_emulated(self.precision, str(self.env.device), "train.precision")
        keep_freed_memory()  # large activations are reused, not page-faulted in every step
        self.model = model.to(self.env.device)
        make_opt = optimizer_factory or (
            lambda params: build_optimizer(params, optim_cfg, self.env.device)
        )
        self.optimizer = make_opt(self.model.parameters())
        make_sched = scheduler_factory or (
            lambda opt: build_scheduler(opt, optim_cfg, cfg.max_steps)
        )
        self.scheduler = make_sched(self.optimizer)
        self.step = 0
        self.position: dict[str, int] | None = None
        self.elapsed = 0.0
        self.best: dict[str, Any] | None = None  # best validation record so far
        self.last_metrics: dict[str, Any] = {}
        self._prepared = False

    # ---- identity and resume ----
    def identity(self) -> dict[str, Any]:
        """What the weights of this run are made from (see the module docstring)."""
        skip = set(RUN_ONLY_TRAIN_KEYS) | set(self.run_only_keys)
        if schedule_depends_on_max_steps(self.optim_cfg):
            skip.discard("train.max_steps")
        config = {k: v for k, v in flatten(self.config).items() if k not in skip}
        if "train.precision" in config:  # what auto meant on this device
            config["train.precision"] = self.precision
        return {
            "config": config,
            "data": self.data_identity,
            "processes_x_grad_accum": self.env.world_size * self.cfg.grad_accum,
        }

    def prepare(self) -> int:
        """Resume from the newest good checkpoint in ``exp_dir`` if any; return the start step.

        Raises :class:`cpc.checkpoint.IdentityMismatch` if that checkpoint was made from
        other inputs (config, data, seed, global batch) than this run.
        """
        if self._prepared:
            return self.step
        if self.env.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        found = find_latest_checkpoint(self.exp_dir)
        if found is not None:
            path, state = found
            check_identity(state.get("identity"), self.identity(), path)
            for d in diff_configs(state.get("config", {}), self.config):
                logging.info(f"config changed since {path.name} (does not affect the weights): {d}")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"])
            self.step = int(state["step"])
            self.position = dict(state["data_position"])
            self.elapsed = float(state.get("elapsed", 0.0))
            self.best = state.get("best")
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

    # ---- checkpoints and validation ----
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
            "identity": self.identity(),
            "best": self.best,
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

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any] | None:
        """Loss and metrics on the held-out split, averaged over its rows (all ranks take
        part; every rank gets the same result). None without validation data."""
        if self._evaluate_fn is not None:
            return {"step": self.step, **self._evaluate_fn(self)}
        if self.valid_data is None:
            return None
        env, gen = self.env, torch.Generator(device=self.env.device)
        sums: dict[str, torch.Tensor] = {}
        rows = 0
        was_training = self.model.training
        self.model.eval()
        try:
            for index, batch in self.valid_data.eval_batches(env.rank, env.world_size):
                gen.manual_seed(step_seed(self.cfg.seed, -1, index))
                with self._autocast():
                    out = self.model(_to_device(batch, env.device), generator=gen)
                n = _rows(batch)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0) + v.detach().float() * n
                rows += n
        finally:
            self.model.train(was_training)
        # One host sync per evaluation; ranks may hold different numbers of batches (or none).
        parts = [({k: v.cpu() for k, v in sums.items()}, rows)]
        if env.world_size > 1:
            parts = [None] * env.world_size
            dist.all_gather_object(parts, ({k: v.cpu() for k, v in sums.items()}, rows))
        total = sum(r for _, r in parts)
        if total == 0:
            return None
        merged: dict[str, torch.Tensor] = {}
        for part, _ in parts:
            for k, v in part.items():
                merged[k] = merged[k] + v if k in merged else v
        names = sorted(merged)
        flat = torch.cat([merged[k].reshape(-1) for k in names]) / total
        return {"step": self.step, **self._unflatten(names, merged, flat.tolist())}

    def _checkpoint_point(self, run: _Run | None) -> None:
        """At a save point: validate, keep ``best.pt`` on the lowest validation loss, save."""
        valid = self.evaluate()
        if self.env.is_main:
            better = valid is None or self.best is None or valid["loss"] < self.best["loss"]
            if better:  # without validation data: the newest model
                self.best = valid
                state = self.model.state_dict()
                save_best(self.exp_dir, self.step, state, self.config, self.identity(), valid)
            if valid is not None:
                self._record({"split": "valid", **valid, "best": better}, run)
                best = self.best or valid
                logging.info(
                    f"step {self.step}: validation loss {valid['loss']:.4f}, best "
                    f"{best['loss']:.4f} at step {best['step']}"
                    + (" (written to best.pt)" if better else "")
                )
        self.save()

    # ---- the loop ----
    def fit(self) -> dict[str, Any]:
        """Train until ``max_steps``; return the last logged metrics."""
        self.prepare()
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            logging.info(f"already at step {self.step} >= max_steps {cfg.max_steps}")
            if not (self.exp_dir / BEST_NAME).is_file():  # every rank sees rank 0's files
                logging.warning(f"{self.exp_dir / BEST_NAME} is missing: writing the final model")
                self.best = None
                self._checkpoint_point(None)
            return self.last_metrics
        with self._run() as run:
            while self.step < cfg.max_steps:
                batch, self.position = next(run.batches)
                self._train_step(run, batch)
                last = self.step == cfg.max_steps
                if self.step % cfg.log_interval == 0 or last:
                    self._log_train(run)
                if self.step % cfg.save_interval == 0 or last:
                    self._checkpoint_point(run)
                if self.on_step_end is not None:
                    self.on_step_end(self.step)
        if self.env.world_size > 1:
            dist.barrier()
        if self.env.is_main:
            logging.info(f"training done at step {self.step}; model for later stages: best.pt")
        return self.last_metrics

    def _train_step(self, run: _Run, batch: Batch) -> None:
        """One optimizer update over ``grad_accum`` micro-batches (no host sync)."""
        accum, env = self.cfg.grad_accum, self.env
        for i, mb in enumerate(split_batch(batch, accum)):
            run.generator.manual_seed(step_seed(self.cfg.seed, self.step, env.rank * accum + i))
            ddp = isinstance(run.net, nn.parallel.DistributedDataParallel)
            sync = run.net.no_sync() if ddp and i < accum - 1 else contextlib.nullcontext()
            with sync:
                with run.autocast:
                    out = run.net(_to_device(mb, env.device), generator=run.generator)
                (out["loss"] / accum).backward()
            for k, v in out.items():
                v = v.detach().float() / accum
                run.sums[k] = run.sums[k] + v if k in run.sums else v
        if self.optim_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        run.n_sum += 1
        now = time.time()
        self.elapsed += now - run.t_last
        run.t_last = now
        if run.pbar is not None:
            run.pbar.update(1)

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.env.device.type,
            dtype=torch.bfloat16,
            enabled=self.precision == "bf16",
        )

    @contextlib.contextmanager
    def _run(self) -> Iterator[_Run]:
        """Compile/DDP-wrap the model, open TensorBoard and the progress bar, start the data."""
        env, cfg = self.env, self.cfg
        if cfg.compile:
            self.model.compile()
        net: nn.Module = self.model
        if env.world_size > 1:
            ids = [env.local_rank] if env.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        it = self.data.batches(self.position, env.rank, env.world_size, cfg.grad_accum)
        run = _Run(net, it, torch.Generator(device=env.device), self._autocast())
        stack = contextlib.ExitStack()
        if env.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.step)
            stack.callback(run.writer.close)
        if env.is_main and cfg.progress_bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            stack.enter_context(logging_redirect_tqdm())  # log lines above the bar
            run.pbar = tqdm(
                total=cfg.max_steps,
                initial=self.step,
                unit="step",
                dynamic_ncols=True,
                mininterval=2.0,
                desc="train",
            )
            stack.callback(run.pbar.close)
        stack.callback(getattr(it, "close", lambda: None))
        self.model.train()
        logging.info(
            f"training steps {self.step}..{cfg.max_steps} on {env.world_size} process(es), "
            f"device {env.device}, precision {self.precision}"
            f"{' (auto)' if cfg.precision == 'auto' else ''}, compile {cfg.compile}, "
            f"grad_accum {cfg.grad_accum}, validation "
            + ("on" if self.valid_data is not None or self._evaluate_fn else "off")
        )
        with stack:
            yield run

    # ---- logging ----
    @staticmethod
    def _unflatten(names: list[str], like: dict[str, torch.Tensor], values: list[float]) -> dict:
        out: dict[str, Any] = {}
        i = 0
        for k in names:
            size = like[k].numel()
            chunk = values[i : i + size]
            out[k] = chunk[0] if like[k].dim() == 0 else chunk
            i += size
        return out

    def _log_train(self, run: _Run) -> None:
        """Average the metrics over steps (and ranks): the one host sync per interval."""
        names = sorted(run.sums)
        flat = torch.cat([run.sums[k].reshape(-1) for k in names]) / max(run.n_sum, 1)
        if self.env.world_size > 1:
            dist.all_reduce(flat)
            flat /= self.env.world_size
        rec: dict[str, Any] = {"split": "train", "step": self.step}
        rec.update(self._unflatten(names, run.sums, flat.cpu().tolist()))
        seconds = time.time() - run.t_log
        rec["lr"] = self.scheduler.get_last_lr()[0]
        rec["time"] = round(self.elapsed, 3)
        rec["steps_per_sec"] = round(run.n_sum / seconds, 4) if seconds > 0 else None
        run.sums, run.n_sum, run.t_log = {}, 0, time.time()
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
        logging.info(msg + f", lr {rec['lr']:.3g}, {rec['steps_per_sec']} step/s")
        if run.pbar is not None:
            post = {"loss": f"{loss:.3f}"} | ({"acc1": f"{acc1:.3f}"} if acc1 is not None else {})
            run.pbar.set_postfix(post, refresh=False)
        self._record(rec, run)

    def _record(self, rec: dict[str, Any], run: _Run | None) -> None:
        """Rank 0: append ``rec`` to metrics.jsonl and TensorBoard (``<split>/<name>``)."""
        with open(self.exp_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        writer = run.writer if run is not None else None
        if writer is None:
            return
        split = rec.get("split", "train")
        for k, v in rec.items():
            if k in ("step", "time", "split", "best") or v is None:
                continue
            if isinstance(v, list):
                for j, x in enumerate(v):
                    writer.add_scalar(f"{split}/{k}/k{j + 1}", x, self.step)
            else:
                writer.add_scalar(f"{split}/{k}", v, self.step)
        writer.flush()
