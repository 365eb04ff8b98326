#!/usr/bin/env python3
"""Benchmarks of what users wait on: CPC pre-training, feature extraction and probes, each
measured against this machine's own limit.

Measures, in one run:
  peak       the machine's fp32 matmul rate: the best of a large torch.mm (BLAS) and the same
             product through oneDNN (whose AVX-512 kernels also run the convolutions), all
             threads, best of several; on a GPU also bf16 (torch.mm, cuBLAS). Measured at the
             start and at the end; the better one counts.
  train      training steps of each --configs config (egs/librispeech100/conf/<name>.yaml)
             through the project's Trainer (cpc/trainer.py: forward, backward, Adam), with
             1 process and with torchrun over N processes (gloo on CPUs), on synthetic
             waveform batches (the data pipeline is measured on its own): step time, steps/s,
             audio seconds per second, model FLOPs per step counted from the architecture
             (see model_flops) and the achieved FLOP/s as a fraction of the peak.
  data       windows/s that cpc/audio/data.py (lhotse cuts, DataLoader workers as in each
             config's data section) delivers, beside the rate its training step consumes.
  extract    real-time factor of CPC feature extraction (the paper model, random init) through
             the project's dump path (cpc/audio/extractor.py + cpc/features.write_part,
             HDF5 output), as egs/librispeech100/local/extract_features.py runs it.
  probe      training time per epoch of the linear and MLP probes (cpc/probes.py) on N
             synthetic rows of 256-d features with 41 classes.
  align      forced alignment (cpc/audio/align.py, as stage 1 with --align true) of the
             corpus: seconds per audio hour with --align-iterations rounds.
  asr        the stage-6 CTC phone recogniser (cpc/audio/asr.py) trained for one epoch on an
             MFCC dump of the corpus: seconds per epoch per hour of training audio.
  abx        triphone ABX (cpc/audio/abx.py) on synthetic 256-d features with random phone
             runs: seconds per 1000 triplets.

The data and extraction parts need a corpus: --manifest-dir points at stage-1 manifests
(librispeech_cuts_{train,test}.jsonl.gz); without it a tiny embedded mini-LibriSpeech is built
in a temporary directory with the recipe's own tools (egs/librispeech100/local/:
make_mini_librispeech.py, prepare_manifests.py and prepare_labels.py).

Outputs: a table on stdout, progress as log lines on stderr, and with --json PATH a JSON file:
  machine                 CPU/GPU, cores, threads, torch version, OpenMP settings, load
                          average at start and end (other processes distort the figures)
  matmul_peak_gflops      fp32 peak (GFLOP/s); matmul_peak: fp32 (and bf16: on GPUs, and
                          with --precision bf16 on CPUs with native bf16) per method,
                          size, start/end
  train.<config>.nprocN   step_s (CPU: median step; GPU: mean), steps_per_s, audio_s_per_s,
                          windows_per_s, gflop_per_step (all processes), achieved_gflops,
                          flop_fraction_of_peak (of the peak of the training precision),
                          step_s_mean/min/max, threads_per_process, final_loss
  train.<config>          also forward_gflop_per_microbatch (per component, train_step) and
                          flop_accounting
  data                    windows_per_s, train_consumes_windows_per_s, ratio (first config),
                          and per_config
  extract                 rtf_x_realtime (audio seconds per second), audio_s, elapsed_s
  probe                   s_per_epoch (linear), rows, linear / mlp details
  align                   seconds_per_audio_hour, audio_hours, iterations, seconds
  asr                     seconds_per_epoch_per_hour, train_hours, seconds, epochs, updates,
                          cpu_seconds
  abx                     seconds_per_1000_triplets, triplets, items

Examples:
  local/bench.py --quick --json bench_quick.json        # about a minute
  local/bench.py --json exp/bench.json                  # the full run (a few minutes)
  local/bench.py --parts train --configs cpc_small --nproc 1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc.audio.config import CPCModelConfig, load_train_config
from cpc.cli import HelpFormatter, str2bool
from cpc.config import ConfigError, config_to_dict
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.perf import PRECISIONS, native_bf16, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "egs" / "librispeech100" / "conf"
PARTS = ("peak", "train", "data", "extract", "probe", "align", "asr", "abx")
# Nominal dense bf16 peak of one NVIDIA H200 (SXM), for reference beside the measured peak.
H200_BF16_DENSE_TFLOPS = 989.0


class BenchError(RuntimeError):
    """A benchmark part could not run (the message says which and why)."""


def csv_list(v: str) -> list[str]:
    return [x for x in v.split(",") if x]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add(
        "--quick",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        help="short run (about a minute): fewer steps, a smaller corpus; `--quick` alone = true",
    )
    add("--json", default=None, help="write the results to this JSON file")
    add(
        "--parts",
        type=csv_list,
        default=",".join(PARTS),
        help="comma-separated parts to run",
    )
    add(
        "--configs",
        type=csv_list,
        default="cpc_paper,cpc_small",
        help="comma-separated training configs: names in egs/librispeech100/conf/ or YAML "
        "paths; the first also sizes the extraction model and the data-rate comparison",
    )
    add(
        "--override",
        nargs="*",
        default=[],
        help="config overrides for the training part, e.g. data.batch_size=64",
    )
    add(
        "--nproc",
        type=csv_list,
        default="1,2",
        help="comma-separated process counts for the training part (>1: under torchrun)",
    )
    add("--steps", type=int, default=0, help="timed training steps per run (0: 20, quick: 3)")
    add("--warmup", type=int, default=0, help="untimed training steps first (0: 3, quick: 1)")
    add("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    add(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="training precision (train.precision; bf16 = autocast; auto = "
        "bf16 where the device computes bf16 natively, else fp32; the JSON has the one used)",
    )
    add("--compile", type=str2bool, default=False, help="torch.compile the model (train.compile)")
    add(
        "--threads",
        type=int,
        default=0,
        help="CPU threads in total, split between training processes (0: all cores)",
    )
    add(
        "--manifest-dir",
        default=None,
        help="stage-1 manifests for the data and extraction parts (none: build a tiny corpus "
        "in the work directory)",
    )
    add("--corpus-minutes", type=float, default=0.0, help="built corpus: minutes (0: 12, quick: 3)")
    add("--corpus-speakers", type=int, default=0, help="built corpus: speakers (0: 8, quick: 4)")
    add(
        "--data-seconds",
        type=float,
        default=0.0,
        help="seconds to time each data loader (0: 10, quick: 3)",
    )
    add(
        "--probe-rows",
        type=int,
        default=0,
        help="training rows of the probe benchmark (0: 400000, quick: 100000)",
    )
    add(
        "--peak-size",
        type=int,
        default=0,
        help="matrix size of the peak measurement (0: 4096 on CPU, 8192 on GPU)",
    )
    add(
        "--align-iterations",
        type=int,
        default=0,
        help="align part: re-alignment rounds (0: the recipe's default, quick: 2)",
    )
    add("--abx-triplets", type=int, default=0, help="abx part: triplets (0: 20000, quick: 5000)")
    add("--seed", type=int, default=0, help="random seed of models and synthetic data")
    add(
        "--work-dir",
        default=None,
        help="directory for the corpus and scratch files, kept afterwards (none: a temporary "
        "directory, removed)",
    )
    add("--verbose", type=str2bool, default=False, help="show the training workers' log lines")
    # Internal modes: every training measurement runs in a fresh process.
    add(
        "--train-worker",
        default=None,
        metavar="OUT_JSON",
        help="internal: run one training measurement of the first config in this process "
        "(under torchrun or not) and write its timings to OUT_JSON",
    )
    add(
        "--ddp-smoke",
        default=None,
        metavar="OUT_JSON",
        help="internal: a few DDP steps under torchrun (nccl on GPU, gloo on CPU), checking "
        "that the ranks stay in sync; writes OUT_JSON",
    )
    return parser


# --------------------------------------------------------------------------- machine


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def num_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": num_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "onednn": torch.backends.mkldnn.is_available(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": loadavg(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


# --------------------------------------------------------------------------- peak


def _best_time(fn: Any, repeats: int, device: str) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def _onednn_matmul(size: int, repeats: int) -> float | None:
    """GFLOP/s of a ``size``-cubed fp32 product through oneDNN's matmul (``mkldnn_linear`` on
    oneDNN tensors), or None where torch has no oneDNN."""
    try:
        a = torch.randn(size, size).to_mkldnn()
        b = torch.randn(size, size).to_mkldnn()
        fn = torch._C._nn.mkldnn_linear
        return 2.0 * size**3 / _best_time(lambda: fn(a, b, None), repeats, "cpu") / 1e9
    except (AttributeError, RuntimeError) as e:
        logging.debug(f"no oneDNN matmul: {e}")
        return None


def matmul_peak(
    dtype: torch.dtype = torch.float32, device: str = "cpu", size: int = 4096, repeats: int = 5
) -> dict[str, float]:
    """Best GFLOP/s of a ``size``-cubed matrix product (2 size^3 FLOPs), per method.

    GPU: ``torch.mm`` (cuBLAS). CPU: ``torch.mm`` (the BLAS torch links, MKL) and, for fp32,
    the same product through oneDNN's matmul, which the convolutions use too: on AMD CPUs
    MKL takes an AVX2 code path at about half of what oneDNN's AVX-512 kernels reach, so
    torch.mm alone would understate the machine. Also oneDNN on one thread times the thread
    count (half the size): other processes on a shared machine lower an all-thread
    measurement more than a one-thread one. ``best`` is the maximum."""
    flops = 2.0 * size**3
    mats = [torch.randn(size, size, device=device).to(dtype) for _ in range(2)]
    out = {"torch_mm": flops / _best_time(lambda: torch.mm(*mats), repeats, device) / 1e9}
    mats.clear()
    if device == "cpu" and dtype == torch.float32:
        onednn = _onednn_matmul(size, repeats)
        if onednn is not None:
            out["onednn_matmul"] = onednn
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                one = _onednn_matmul(size // 2, repeats)
            finally:
                torch.set_num_threads(threads)
            if one is not None:
                out["onednn_matmul_1thread_x_threads"] = one * threads
    out["best"] = max(out.values())
    return {k: round(v, 1) for k, v in out.items()}


# --------------------------------------------------------------------------- FLOPs


def model_flops(m: CPCModelConfig, batch: int, window: int) -> dict[str, float]:
    """Model FLOPs of one training micro-batch of ``batch`` windows of ``window`` samples.

    Counted: 2 FLOPs per multiply-add of every matrix product of the forward pass:
      encoder     each conv: batch * out_frames * out_ch * in_ch * kernel
      gru         per layer and frame: 3 gates x (input and recurrent products),
                  batch * frames * 3 * hidden * (in_dim + hidden)
      predictors  the K maps W_k c_t: batch * frames * context * K * channels
      scores      z^T (W_k c_t) for the positive and N negatives of every (t, k), all frames:
                  batch * frames * K * (1 + N) * channels
    Not counted: biases, activations, normalisation, softmax, the optimizer (all O(size),
    not O(size x width)). ``train_step`` = 3 x forward: the backward pass costs about twice
    the forward (gradients with respect to inputs and to weights); it slightly overstates the
    first convolution, whose input (the waveform) needs no gradient.

    Returns FLOPs (not GFLOP) per component, ``forward`` and ``train_step``."""
    length = window
    in_ch = 1
    conv = 0.0
    for s, k in zip(m.strides, m.kernels):
        length //= s
        conv += 2.0 * batch * length * m.channels * in_ch * k
        in_ch = m.channels
    frames = length
    gru = 0.0
    in_dim = m.channels
    for _ in range(m.gru_layers):
        gru += 2.0 * batch * frames * 3 * m.context_dim * (in_dim + m.context_dim)
        in_dim = m.context_dim
    k = m.prediction_steps
    pred = 2.0 * batch * frames * m.context_dim * k * m.channels
    scores = 2.0 * batch * frames * k * (1 + m.num_negatives) * m.channels
    fwd = conv + gru + pred + scores
    return {
        "encoder": conv,
        "gru": gru,
        "predictors": pred,
        "scores": scores,
        "forward": fwd,
        "train_step": 3.0 * fwd,
    }


# --------------------------------------------------------------------------- training


def config_path(name: str) -> Path:
    """``cpc_paper`` -> egs/librispeech100/conf/cpc_paper.yaml; a path stays a path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p.resolve()
    return CONF_DIR / f"{name}.yaml"


def config_name(name: str) -> str:
    return Path(name).stem


class SyntheticWindows:
    """A :class:`cpc.trainer.TrainData` of random waveform windows (a few batches, cycled),
    so that training steps are timed without the data pipeline. Groups come in runs of
    ``windows_per_speaker`` (what the same-speaker negative strategies need)."""

    def __init__(
        self, batch_size: int, window: int, windows_per_speaker: int, seed: int, pin: bool
    ) -> None:
        self.batch_size, self.window = batch_size, window
        self.wps, self.seed, self.pin = windows_per_speaker, seed, pin

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Any:
        n = self.batch_size * grad_accum
        gen = torch.Generator().manual_seed(self.seed * 1000 + rank)
        pool = []
        for _ in range(4):
            batch = {
                "wave": 0.1 * torch.randn(n, self.window, generator=gen),
                "group": torch.arange(n) // self.wps,
            }
            if self.pin:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            pool.append(batch)
        i = int((position or {}).get("batch", 0))
        while True:
            yield pool[i % len(pool)], {"epoch": 0, "batch": i + 1}
            i += 1


def train_worker(args: argparse.Namespace) -> int:
    """One training measurement in this process (rank 0 writes ``args.train_worker``)."""
    from cpc.audio.model import build_cpc_model
    from cpc.trainer import Trainer, cleanup_distributed, init_distributed

    cfg_file = config_path(args.configs[0])
    warmup, steps = max(1, args.warmup), max(1, args.steps)
    # One extra step at the end: the trainer logs and saves after the last step, untimed.
    total = warmup + steps + 1
    overrides = [
        *args.override,
        f"train.max_steps={total}",
        f"train.log_interval={total}",
        f"train.save_interval={total}",
        "train.progress_bar=false",
        "train.tensorboard=false",
        f"train.precision={args.precision}",
        f"train.compile={str(args.compile).lower()}",
        f"train.device={args.device}",
        f"train.seed={args.seed}",
    ]
    cfg = load_train_config(cfg_file, overrides)
    env = init_distributed(cfg.train.device)
    setup_logging(rank=env.rank, level=logging.INFO if args.verbose else logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cuda = env.device.type == "cuda"
    marks: list[tuple[int, float]] = []

    def on_step_end(step: int) -> None:
        if cuda and step in (warmup, warmup + steps):
            torch.cuda.synchronize()
        marks.append((step, time.perf_counter()))

    try:
        torch.manual_seed(cfg.train.seed)
        model = build_cpc_model(cfg.model)
        data = SyntheticWindows(
            cfg.data.batch_size, cfg.data.window, cfg.data.windows_per_speaker, args.seed, cuda
        )
        with tempfile.TemporaryDirectory(prefix="cpc-bench-exp-") as exp:
            trainer = Trainer(
                model,
                data,
                cfg.train,
                cfg.optim,
                exp,
                config=config_to_dict(cfg),
                dist_env=env,
                on_step_end=on_step_end,
            )
            metrics = trainer.fit()
    finally:
        cleanup_distributed()
    if env.rank != 0:
        return 0
    t = dict(marks)
    per_step = [t[s + 1] - t[s] for s in range(warmup, warmup + steps)]
    span = t[warmup + steps] - t[warmup]
    result = {
        "world_size": env.world_size,
        "threads_per_process": torch.get_num_threads(),
        "device": str(env.device),
        "warmup": warmup,
        "steps": steps,
        "span_s": span,
        "step_times_s": [round(x, 5) for x in per_step],
        "final_loss": metrics.get("loss"),
    }
    if cuda:
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    write_json_atomic(args.train_worker, result)
    return 0


def _worker_cmd(args: argparse.Namespace, config: str, nproc: int, out: Path) -> list[str]:
    me = str(Path(__file__).resolve())
    launch = [sys.executable, me]
    if nproc > 1:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            me,
        ]
    cmd = [
        *launch,
        "--train-worker",
        str(out),
        "--configs",
        str(config_path(config)),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--compile",
        str(args.compile).lower(),
        "--seed",
        str(args.seed),
        "--verbose",
        str(args.verbose).lower(),
    ]
    if args.override:
        cmd += ["--override", *args.override]
    return cmd


def run_train(
    args: argparse.Namespace, config: str, nproc: int, work: Path, peak_gflops: float | None
) -> dict[str, Any]:
    """Time training steps of ``config`` with ``nproc`` processes (a fresh subprocess)."""
    cfg = load_train_config(config_path(config), args.override)
    total_threads = args.threads if args.threads > 0 else num_cores()
    threads = max(1, total_threads // nproc) if args.device == "cpu" else 1
    out = work / f"train_{config_name(config)}_nproc{nproc}.json"
    cmd = _worker_cmd(args, config, nproc, out)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if args.device == "cpu":
        cmd[cmd.index("--steps") : cmd.index("--steps")] = ["--threads", str(threads)]
    logging.info(f"train {config_name(config)}, {nproc} process(es) x {threads} thread(s)")
    logging.debug(shlex.join(cmd))
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=work, stderr=subprocess.PIPE, text=True)
    if args.verbose or proc.returncode != 0:
        sys.stderr.write(proc.stderr[-8000:])
    if proc.returncode != 0 or not out.is_file():
        raise BenchError(
            f"training benchmark of {config} with {nproc} process(es) failed "
            f"(exit {proc.returncode}); its log is above"
        )
    r = json.loads(out.read_text())
    world = r["world_size"]
    flops = model_flops(cfg.model, cfg.data.batch_size, cfg.data.window)
    mean = r["span_s"] / r["steps"]
    # CPU: the median step (robust to other processes on a shared machine); GPU: the mean
    # (steps are asynchronous; only the span between two synchronisations is meaningful).
    step_s = statistics.median(r["step_times_s"]) if args.device == "cpu" else mean
    windows = cfg.data.batch_size * cfg.train.grad_accum * world
    gflop = flops["train_step"] * cfg.train.grad_accum * world / 1e9
    res: dict[str, Any] = {
        "nproc": world,
        "threads_per_process": r["threads_per_process"],
        "device": r["device"],
        "precision": args.precision,
        "compile": args.compile,
        "warmup_steps": r["warmup"],
        "steps": r["steps"],
        "step_s": round(step_s, 6),
        "step_s_mean": round(mean, 4),
        "step_s_min": round(min(r["step_times_s"]), 4),
        "step_s_max": round(max(r["step_times_s"]), 4),
        "steps_per_s": round(1.0 / step_s, 4),
        "windows_per_step": windows,
        "windows_per_s": round(windows / step_s, 2),
        "audio_s_per_s": round(windows * cfg.data.window / cfg.model.sample_rate / step_s, 2),
        "gflop_per_step": round(gflop, 2),
        "achieved_gflops": round(gflop / step_s, 1),
        "flop_fraction_of_peak": round(gflop / step_s / peak_gflops, 4) if peak_gflops else None,
        "final_loss": r.get("final_loss"),
        "wall_s": round(time.time() - t0, 1),
    }
    if "max_memory_gib" in r:
        res["max_memory_gib"] = r["max_memory_gib"]
    logging.info(
        f"train {config_name(config)} x{world}: {res['step_s']:.3f} s/step, "
        f"{res['audio_s_per_s']} audio s/s, {res['achieved_gflops']} GFLOP/s"
        + (f" ({100 * res['flop_fraction_of_peak']:.1f}% of peak)" if peak_gflops else "")
    )
    return res


def ddp_smoke(args: argparse.Namespace) -> int:
    """A few DDP training steps of the first config's model on synthetic batches under
    torchrun; checks that parameters are identical on all ranks afterwards."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cpc.audio.model import build_cpc_model

    rank = int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    setup_logging(rank=rank)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend)
    try:
        cfg = load_train_config(config_path(args.configs[0]), args.override)
        torch.manual_seed(args.seed)
        model = build_cpc_model(cfg.model).to(dev)
        net = DistributedDataParallel(model, device_ids=[local] if cuda else None)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
        gen = torch.Generator(device=dev)
        n, w = cfg.data.batch_size, cfg.data.window
        t0 = time.perf_counter()
        losses = []
        for step in range(max(1, args.steps)):
            g = torch.Generator().manual_seed(args.seed * 1000 + rank * 100 + step)
            batch = {
                "wave": (0.1 * torch.randn(n, w, generator=g)).to(dev),
                "group": (torch.arange(n) // cfg.data.windows_per_speaker).to(dev),
            }
            gen.manual_seed(step * world + rank)
            with torch.autocast(dev.type, torch.bfloat16, enabled=args.precision == "bf16"):
                out = net(batch, generator=gen)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out["loss"].detach())
        flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        in_sync = torch.equal(flat, ref)
        ok = torch.tensor([1.0 if in_sync else 0.0], device=dev)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        loss = torch.stack(losses).float()
        dist.all_reduce(loss)
        loss = (loss / world).tolist()
        elapsed = time.perf_counter() - t0
    finally:
        dist.destroy_process_group()
    if rank == 0:
        result = {
            "backend": backend,
            "world_size": world,
            "device": str(dev),
            "steps": len(loss),
            "loss": [round(x, 4) for x in loss],
            "params_in_sync": bool(ok.item() == 1.0),
            "elapsed_s": round(elapsed, 2),
        }
        logging.info(f"DDP smoke: {result}")
        write_json_atomic(args.ddp_smoke, result)
    return 0 if ok.item() == 1.0 and all(math.isfinite(x) for x in loss) else 1


# --------------------------------------------------------------------------- corpus


def build_corpus(work: Path, speakers: int, minutes: float, seed: int) -> Path:
    """A tiny embedded mini-LibriSpeech + stage-0/1 manifests under ``work``, made with the
    recipe's own CLIs. Returns the manifest directory."""
    py = sys.executable
    steps = [
        [
            py,
            str(ROOT / "egs" / "librispeech100" / "local" / "make_mini_librispeech.py"),
            "--out-dir",
            str(work / "mini"),
            "--speakers",
            str(speakers),
            "--minutes",
            str(minutes),
            "--seed",
            str(seed),
            "--num-jobs",
            str(num_cores()),
        ],
        [
            py,
            str(ROOT / "egs" / "librispeech100" / "local" / "prepare_manifests.py"),
            "--corpus-dir",
            str(work / "mini" / "LibriSpeech"),
            "--output-dir",
            str(work / "manifests"),
            "--num-jobs",
            str(num_cores()),
        ],
        [
            py,
            str(ROOT / "egs" / "librispeech100" / "local" / "prepare_labels.py"),
            "--manifest-dir",
            str(work / "manifests"),
            "--labels-dir",
            str(work / "mini" / "labels"),
            "--lang-dir",
            str(work / "lang"),
        ],
    ]
    logging.info(f"building a {speakers}-speaker, {minutes:g}-minute corpus in {work}")
    work.mkdir(parents=True, exist_ok=True)
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout.decode(errors="replace")[-4000:])
            raise BenchError(f"building the benchmark corpus failed at: {shlex.join(cmd)}")
    return work / "manifests"


# --------------------------------------------------------------------------- data


def run_data(manifest_dir: Path, config: str, seconds: float, seed: int) -> dict[str, Any]:
    """Windows/s delivered by cpc/audio/data.py with the config's data section."""
    from cpc.audio.data import AudioWindowData, load_train_cuts

    cfg = load_train_config(config_path(config))
    data = AudioWindowData(load_train_cuts(manifest_dir), cfg.data, seed=seed)
    it = data.batches(None, rank=0, world_size=1, grad_accum=1)
    try:
        next(it)  # worker start-up
        # Skip what the workers prefetched during start-up, then time the steady state.
        for _ in range(cfg.data.num_workers * cfg.data.prefetch_factor):
            next(it)
        t0 = time.perf_counter()
        windows = batches = 0
        while batches < 5 or time.perf_counter() - t0 < seconds:
            batch, _ = next(it)
            windows += batch["wave"].shape[0]
            batches += 1
        elapsed = time.perf_counter() - t0
    finally:
        it.close()
    res = {
        "config": config_name(config),
        "num_workers": cfg.data.num_workers,
        "batch_size": cfg.data.batch_size,
        "window": cfg.data.window,
        "batches": batches,
        "windows_per_s": round(windows / elapsed, 1),
        "audio_s_per_s": round(windows * cfg.data.window / cfg.model.sample_rate / elapsed, 1),
    }
    logging.info(
        f"data {res['config']} ({res['num_workers']} workers): {res['windows_per_s']} windows/s"
    )
    return res


# --------------------------------------------------------------------------- extraction


def run_extract(
    manifest_dir: Path, config: str, work: Path, device: str, seed: int
) -> dict[str, Any]:
    """Real-time factor of dumping c_t of the config's random-init model for every cut of
    the train and test manifests (extraction + HDF5 writing, as stage 3 does)."""
    from lhotse import load_manifest_lazy

    from cpc.audio.constants import DUMP_SPEC, SAMPLING_RATE, cuts_path
    from cpc.audio.extractor import batch_fn_for, extraction_batching, random_init_source
    from cpc.features import write_part

    extractor, _ = random_init_source(str(config_path(config)), [], seed, "c", device)
    cuts = []
    for part in ("train", "test"):
        p = cuts_path(manifest_dir, part)
        if p.is_file():
            cuts += list(load_manifest_lazy(p))
    if not cuts:
        raise BenchError(f"no librispeech_cuts_{{train,test}}.jsonl.gz in {manifest_dir}")
    # As stage 3 (local/extract_features.py's defaults for the device).
    max_duration, pad_multiple = extraction_batching(device)
    _, stats = write_part(
        cuts,
        batch_fn_for(extractor, pad_multiple),
        work / "extract_feats",
        feature_type="cpc",
        dim=extractor.feature_dim(SAMPLING_RATE),
        spec=DUMP_SPEC,
        max_duration=max_duration,
        desc="extract",
    )
    res = {
        "config": config_name(config),
        "model": "random init",
        "device": device,
        "threads": torch.get_num_threads(),
        "num_cuts": stats["num_cuts"],
        "audio_s": stats["audio_seconds"],
        "elapsed_s": stats["elapsed_s"],
        "rtf_x_realtime": round(stats["audio_seconds"] / stats["elapsed_s"], 1),
        "max_batch_duration": max_duration,
    }
    logging.info(f"extraction: {res['rtf_x_realtime']}x real time")
    return res


# --------------------------------------------------------------------------- probes


def run_probe(rows: int, device: str, seed: int, epochs: int = 1) -> dict[str, Any]:
    """Seconds per epoch of the linear and MLP (512 hidden units, as stage 4) probes on
    ``rows`` synthetic rows of 256-d features, 41 classes (the phone probe's shapes)."""
    from cpc.probes import ProbeConfig, ProbeData, train_probe

    dim, classes = 256, 41
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(dim, classes, generator=gen)

    def make(n: int) -> ProbeData:
        x = torch.randn(n, dim, generator=gen)
        y = (x @ proj + 2.0 * torch.randn(n, classes, generator=gen)).argmax(-1)
        return ProbeData(x, y)

    train, test = make(rows), make(min(rows, 20000))
    res: dict[str, Any] = {"rows": rows, "dim": dim, "classes": classes, "device": device}
    for name, hidden, lr in (("linear", 0, 1e-2), ("mlp", 512, 2e-3)):
        cfg = ProbeConfig(hidden_dim=hidden, epochs=epochs, lr=lr, seed=seed, device=device)
        r = train_probe(train, test, classes, cfg)
        res[name] = {
            "hidden_dim": hidden,
            "epochs": r.epochs,
            "s_per_epoch": r.time_per_epoch_s,
            "rows_per_s": round(rows / r.time_per_epoch_s) if r.time_per_epoch_s else None,
            "s_per_epoch_per_million_rows": round(r.time_per_epoch_s * 1e6 / rows, 2),
        }
        logging.info(f"probe {name}: {r.time_per_epoch_s} s per epoch of {rows} rows")
    res["s_per_epoch"] = res["linear"]["s_per_epoch"]
    return res


# --------------------------------------------------------------------------- speech tools


def run_align(manifest_dir: Path | None, work: Path, iterations: int, seed: int) -> dict[str, Any]:
    """Seconds per audio hour of forced alignment of the corpus (stage 1, --align true)."""
    from cpc.audio.align import AlignConfig, align_corpus

    if manifest_dir is None:
        raise BenchError("the align part needs a corpus")
    r = align_corpus(manifest_dir, work / "align", AlignConfig(iterations=iterations, seed=seed))
    st = r.stats
    out = {
        "audio_hours": st["audio_hours"],
        "iterations": iterations,
        "seconds": st["seconds"],
        "seconds_per_audio_hour": st["seconds_per_audio_hour"],
        "threads": torch.get_num_threads(),
    }
    logging.info(f"alignment: {out['seconds_per_audio_hour']} s per audio hour")
    return out


def run_asr_epoch(manifest_dir: Path | None, work: Path, seed: int) -> dict[str, Any]:
    """Seconds per epoch per hour of training audio of the stage-6 recogniser (defaults of
    cpc/audio/asr.py) on an MFCC dump of the corpus's train split."""
    from cpc.audio.asr import AsrConfig, load_asr_cuts, train_recognizer
    from cpc.audio.constants import DUMP_SPEC
    from cpc.audio.extractor import batch_fn_for, mfcc_source
    from cpc.features import dump_features

    if manifest_dir is None:
        raise BenchError("the asr part needs a corpus")
    ext, source = mfcc_source()
    feats = work / "asr_mfcc"
    dump_features(
        manifest_dir, feats, batch_fn_for(ext), "mfcc", 39, source, DUMP_SPEC, parts=("train",)
    )
    cuts, dim = load_asr_cuts(feats, "train")
    hours = sum(c.duration for c in cuts) / 3600
    cfg = AsrConfig(epochs=1, min_steps=0, seed=seed)  # exactly one epoch
    t0 = time.perf_counter()
    _, log = train_recognizer(cuts, dim, cfg)
    seconds = time.perf_counter() - t0  # unrounded: a tiny corpus trains in well under 0.1 s
    out = {
        "train_hours": round(hours, 4),
        "seconds": round(seconds, 3),
        "seconds_per_epoch_per_hour": round(seconds / hours, 1),
        "epochs": log["epochs"],
        "updates": log["updates"],
        "cpu_seconds": log["train_cpu_seconds"],
        "model": f"{cfg.layers}-layer BiLSTM, {cfg.hidden} units, subsample {cfg.subsample}",
        "threads": torch.get_num_threads(),
    }
    logging.info(f"ASR: {out['seconds_per_epoch_per_hour']} s per epoch per hour of audio")
    return out


def run_abx(triplets: int, seed: int) -> dict[str, Any]:
    """Seconds per 1000 triplets of within-speaker ABX on synthetic 256-d features with
    random phone runs of 3-12 frames (enough items that ``triplets`` are sampled)."""
    from cpc.audio.abx import AbxConfig, abx_error, make_items

    rng = np.random.default_rng(seed)
    utts = []
    for _ in range(40):
        labels = np.repeat(rng.integers(1, 6, size=60), rng.integers(3, 13, size=60))
        utts.append((rng.normal(size=(len(labels), 256)).astype(np.float32), labels, "s"))
    items = make_items(utts)
    r = abx_error(items, False, AbxConfig(max_triplets=triplets, max_per_cell=1000, seed=seed))
    out = {
        "items": int(len(items.center)),
        "triplets": r["triplets"],
        "distances": r["distances"],
        "seconds": r["seconds"],
        "seconds_per_1000_triplets": r["seconds_per_1000_triplets"],
        "threads": torch.get_num_threads(),
    }
    logging.info(f"ABX: {out['seconds_per_1000_triplets']} s per 1000 triplets")
    return out


# --------------------------------------------------------------------------- report


def format_table(res: dict[str, Any]) -> str:
    """The human-readable summary of a results dict (as written to --json)."""
    m = res["machine"]
    lines = [
        f"cpc-recipes benchmark ({res['mode']}): {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']}" + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        f"load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}",
    ]
    pk = res.get("matmul_peak")
    if pk:
        per = ", ".join(f"{k} {v}" for k, v in pk["fp32"].items() if k != "best")
        lines.append(
            f"fp32 matmul peak: {res['matmul_peak_gflops']} GFLOP/s ({per}; size {pk['size']})"
        )
        if "bf16" in pk:
            lines.append(f"bf16 matmul peak: {pk['bf16']['best']} GFLOP/s")
        if m.get("gpu"):
            lines.append(
                f"nominal H200 dense bf16 peak (reference): {H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s"
            )
    if res.get("train"):
        lines.append("")
        hdr = ("training", "procs", "s/step", "steps/s", "audio s/s", "GFLOP/step", "GFLOP/s")
        hdr += ("% peak",)
        rows = [hdr]
        for name, t in res["train"].items():
            for key, r in t.items():
                if not key.startswith("nproc") or "error" in r:
                    continue
                frac = r.get("flop_fraction_of_peak")
                rows.append(
                    (
                        name,
                        str(r["nproc"]),
                        f"{r['step_s']:.3f}",
                        f"{r['steps_per_s']:.2f}",
                        f"{r['audio_s_per_s']:.1f}",
                        f"{r['gflop_per_step']:.1f}",
                        f"{r['achieved_gflops']:.0f}",
                        f"{100 * frac:.1f}" if frac is not None else "-",
                    )
                )
        widths = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        for r in rows:
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
                )
            )
        first = next(iter(res["train"].values()))
        lines.append(f"  (FLOPs: {first.get('flop_accounting', '')})")
    d = res.get("data")
    if d:
        lines.append("")
        for c in d.get("per_config", []):
            ratio = f" = {c['ratio']}x what training consumes" if c.get("ratio") else ""
            lines.append(
                f"data {c['config']} ({c['num_workers']} workers): {c['windows_per_s']} "
                f"windows/s; training takes {c.get('train_consumes_windows_per_s', '-')}"
                f" windows/s{ratio}"
            )
    e = res.get("extract")
    if e:
        lines.append(
            f"extraction ({e['config']}, {e['model']}, {e['device']}): {e['rtf_x_realtime']}x "
            f"real time ({e['audio_s']:.0f} s of audio in {e['elapsed_s']:.1f} s)"
        )
    p = res.get("probe")
    if p:
        lines.append(
            f"probes on {p['rows']} rows x {p['dim']}: linear {p['linear']['s_per_epoch']} s "
            f"per epoch, MLP {p['mlp']['s_per_epoch']} s per epoch "
            f"({p['linear']['s_per_epoch_per_million_rows']} / "
            f"{p['mlp']['s_per_epoch_per_million_rows']} s per epoch per million rows)"
        )
    a = res.get("align")
    if a:
        lines.append(
            f"forced alignment ({a['iterations']} rounds): {a['seconds_per_audio_hour']} s per "
            f"audio hour ({a['audio_hours']:.3f} h in {a['seconds']} s)"
        )
    r = res.get("asr")
    if r:
        lines.append(
            f"ASR ({r['model']}): {r['seconds_per_epoch_per_hour']} s per epoch per hour of "
            f"audio ({r['train_hours']:.3f} h in {r['seconds']} s)"
        )
    x = res.get("abx")
    if x:
        lines.append(
            f"ABX: {x['seconds_per_1000_triplets']} s per 1000 triplets ({x['triplets']} "
            f"triplets, {x['distances']} DTW distances, {x['seconds']} s)"
        )
    if res.get("errors"):
        lines.append("")
        lines += [f"FAILED: {x}" for x in res["errors"]]
    return "\n".join(lines)


def _defaults(args: argparse.Namespace) -> None:
    from cpc.audio.align import AlignConfig

    q = args.quick
    args.steps = args.steps or (3 if q else 20)
    args.warmup = args.warmup or (1 if q else 3)
    args.corpus_minutes = args.corpus_minutes or (3.0 if q else 12.0)
    args.corpus_speakers = args.corpus_speakers or (4 if q else 8)
    args.data_seconds = args.data_seconds or (3.0 if q else 10.0)
    args.probe_rows = args.probe_rows or (100_000 if q else 400_000)
    args.align_iterations = args.align_iterations or (2 if q else AlignConfig().iterations)
    args.abx_triplets = args.abx_triplets or (5_000 if q else 20_000)


def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every requested part; a failing part is recorded in ``errors`` and the rest still runs."""
    parts = set(args.parts)
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(args.device),
        "errors": [],
    }
    peak: float | None = None
    # bf16 peak: on GPUs, and on CPUs with native bf16 (emulated, a 4096^3 bf16 product takes
    # minutes and says nothing useful; training FLOP/s are then compared with the fp32 peak)
    bf16 = args.device == "cuda" or (args.precision == "bf16" and native_bf16(args.device))
    size = args.peak_size or (8192 if args.device == "cuda" else 4096)

    repeats = 2 if args.quick else 4

    def measure_peak() -> dict[str, Any]:
        out = {"fp32": matmul_peak(torch.float32, args.device, size, repeats)}
        if bf16:
            out["bf16"] = matmul_peak(torch.bfloat16, args.device, size, repeats + 2)
        return out

    def train_peak() -> float | None:
        """The peak that training FLOP/s are compared with (that of its precision)."""
        if "matmul_peak" not in res:
            return None
        peaks = res["matmul_peak"]
        return peaks["bf16" if args.precision == "bf16" and "bf16" in peaks else "fp32"]["best"]

    if "peak" in parts or "train" in parts:
        logging.info("measuring the matmul peak")
        start = measure_peak()
        res["matmul_peak"] = {"size": size, "start": start, **start}
        peak = start["fp32"]["best"]

    if "train" in parts:
        res["train"] = {}
        for config in args.configs:
            name = config_name(config)
            cfg = load_train_config(config_path(config), args.override)
            fl = model_flops(cfg.model, cfg.data.batch_size, cfg.data.window)
            entry: dict[str, Any] = {
                "config": str(config_path(config).relative_to(ROOT))
                if config_path(config).is_relative_to(ROOT)
                else str(config_path(config)),
                "batch_size_per_process": cfg.data.batch_size,
                "window": cfg.data.window,
                "forward_gflop_per_microbatch": {k: round(v / 1e9, 3) for k, v in fl.items()},
                "flop_accounting": "2 per multiply-add of convs, GRU, predictors, scores; "
                "train step = 3 x forward",
            }
            res["train"][name] = entry
            for n in args.nproc:
                try:
                    entry[f"nproc{n}"] = run_train(args, config, int(n), work, train_peak())
                except BenchError as e:
                    logging.error(str(e))
                    res["errors"].append(str(e))
                    entry[f"nproc{n}"] = {"error": str(e)}

    manifest_dir: Path | None = None
    if parts & {"data", "extract", "align", "asr"}:
        if args.manifest_dir:
            manifest_dir = Path(args.manifest_dir)
            from cpc.audio.constants import cuts_path

            if not cuts_path(manifest_dir, "train").is_file():
                raise FileNotFoundError(
                    f"{cuts_path(manifest_dir, 'train')} not found: point "
                    "--manifest-dir at stage-1 manifests (data/manifests of a recipe) or leave "
                    "it out to build a tiny corpus"
                )
        else:
            manifest_dir = build_corpus(
                work / "corpus", args.corpus_speakers, args.corpus_minutes, args.seed
            )

    if "data" in parts and manifest_dir is not None:
        per = []
        for config in args.configs:
            try:
                d = run_data(manifest_dir, config, args.data_seconds, args.seed)
            except Exception as e:  # noqa: BLE001 - recorded, the other parts still run
                msg = f"data benchmark of {config} failed: {e}"
                logging.error(msg)
                res["errors"].append(msg)
                continue
            t = res.get("train", {}).get(config_name(config), {}).get("nproc1", {})
            if "steps_per_s" in t:
                consume = t["steps_per_s"] * t["windows_per_step"]
                d["train_consumes_windows_per_s"] = round(consume, 2)
                d["ratio"] = round(d["windows_per_s"] / consume, 2)
            per.append(d)
        if per:
            res["data"] = {
                "windows_per_s": per[0]["windows_per_s"],
                "train_consumes_windows_per_s": per[0].get("train_consumes_windows_per_s"),
                "ratio": per[0].get("ratio"),
                "config": per[0]["config"],
                "per_config": per,
            }

    if "extract" in parts and manifest_dir is not None:
        try:
            res["extract"] = run_extract(
                manifest_dir, args.configs[0], work, args.device, args.seed
            )
        except Exception as e:  # noqa: BLE001
            msg = f"extraction benchmark failed: {e}"
            logging.error(msg)
            res["errors"].append(msg)

    if "probe" in parts:
        try:
            res["probe"] = run_probe(args.probe_rows, args.device, args.seed)
        except Exception as e:  # noqa: BLE001
            msg = f"probe benchmark failed: {e}"
            logging.error(msg)
            res["errors"].append(msg)

    speech = {
        "align": lambda: run_align(manifest_dir, work, args.align_iterations, args.seed),
        "asr": lambda: run_asr_epoch(manifest_dir, work, args.seed),
        "abx": lambda: run_abx(args.abx_triplets, args.seed),
    }
    for part, fn in speech.items():
        if part in parts:
            try:
                res[part] = fn()
            except Exception as e:  # noqa: BLE001
                msg = f"{part} benchmark failed: {e}"
                logging.error(msg)
                res["errors"].append(msg)

    if "matmul_peak" in res:
        logging.info("measuring the matmul peak again")
        end = measure_peak()
        res["matmul_peak"]["end"] = end
        for key in end:
            merged = {k: max(res["matmul_peak"]["start"][key][k], v) for k, v in end[key].items()}
            res["matmul_peak"][key] = merged
        # The quieter of the two measurements is the machine's limit.
        peak = res["matmul_peak"]["fp32"]["best"]
        for t in res.get("train", {}).values():
            for key, r in t.items():
                if key.startswith("nproc") and "achieved_gflops" in r:
                    r["flop_fraction_of_peak"] = round(r["achieved_gflops"] / train_peak(), 4)
        res["matmul_peak_gflops"] = peak
    res["machine"]["loadavg_end"] = loadavg()
    return res


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.train_worker:
        return train_worker(args)
    if args.ddp_smoke:
        return ddp_smoke(args)
    setup_logging()
    _defaults(args)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        logging.error(f"unknown --parts {sorted(unknown)}; choose from {list(PARTS)}")
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        logging.error("--device cuda but no CUDA GPU is visible; use --device cpu")
        return 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.precision = resolve_precision(args.precision, args.device)
    try:
        for c in args.configs:
            load_train_config(config_path(c), args.override)
        if args.work_dir:
            work = Path(args.work_dir).resolve()
            work.mkdir(parents=True, exist_ok=True)
            res = run_all(args, work)
        else:
            with tempfile.TemporaryDirectory(prefix="cpc-bench-") as tmp:
                res = run_all(args, Path(tmp))
    except (ConfigError, FileNotFoundError, BenchError) as e:
        logging.error(str(e))
        return 1
    if args.json:
        write_json_atomic(args.json, res)
        logging.info(f"wrote {args.json}")
    print(format_table(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
