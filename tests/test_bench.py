"""local/bench.py and local/bench_gpu.sh: the FLOP count, the JSON and table plumbing, the
GPU script's skip path. No timing is asserted (figures come from running the benchmarks)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cpc.audio.config import CPCModelConfig, load_train_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "local" / "bench.py"
BENCH_GPU = ROOT / "local" / "bench_gpu.sh"
TINY_YAML = ROOT / "egs" / "librispeech100" / "conf" / "cpc_tiny.yaml"


def load_bench():
    spec = importlib.util.spec_from_file_location("cpc_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = load_bench()


def test_flops_of_a_tiny_model_by_hand() -> None:
    m = CPCModelConfig(
        channels=4,
        strides=[2, 2],
        kernels=[4, 2],
        context_dim=3,
        gru_layers=1,
        prediction_steps=2,
        num_negatives=3,
    )
    f = bench.model_flops(m, batch=2, window=16)
    # conv 1: 16 // 2 = 8 frames, 1 -> 4 channels, kernel 4: 2 * (2 * 8 * 4 * 1 * 4) = 512
    # conv 2: 8 // 2 = 4 frames, 4 -> 4 channels, kernel 2: 2 * (2 * 4 * 4 * 4 * 2) = 512
    assert f["encoder"] == 1024
    # GRU, 4 frames: 3 gates x (input 4 + hidden 3) x hidden 3: 2 * (2 * 4 * 3 * 3 * 7) = 1008
    assert f["gru"] == 1008
    # predictors: context 3 -> K=2 x 4 channels per frame: 2 * (2 * 4 * 3 * 2 * 4) = 384
    assert f["predictors"] == 384
    # scores: (1 + 3 negatives) x K=2 dot products of 4 per frame: 2 * (2 * 4 * 2 * 4 * 4) = 512
    assert f["scores"] == 512
    assert f["forward"] == 1024 + 1008 + 384 + 512
    assert f["train_step"] == 3 * f["forward"]


def test_flops_of_the_paper_model() -> None:
    cfg = load_train_config(bench.config_path("cpc_paper"))
    f = bench.model_flops(cfg.model, cfg.data.batch_size, cfg.data.window)
    # 8 windows of 20480 samples: frames 4096, 1024, 512, 256, 128 after each conv
    convs = 2 * 8 * (4096 * 512 * 10 + (1024 * 8 + 512 * 4 + 256 * 4 + 128 * 4) * 512 * 512)
    assert f["encoder"] == convs == 49_727_668_224
    assert f["gru"] == 2 * 8 * 128 * 3 * 256 * (512 + 256)
    assert f["predictors"] == 2 * 8 * 128 * 256 * 12 * 512
    assert f["scores"] == 2 * 8 * 128 * 12 * 9 * 512
    assert round(f["train_step"] / 1e9, 1) == 162.8


def test_help_lists_the_contract() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--quick", "--json", "--manifest-dir", "--parts", "--nproc"):
        assert flag in out
    assert os.access(BENCH, os.X_OK) and os.access(BENCH_GPU, os.X_OK)


def test_missing_manifest_dir_is_one_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(BENCH), "--parts", "data", "--manifest-dir", str(tmp_path / "no")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "librispeech_cuts_train.jsonl.gz not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_part_writes_the_json_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--parts", "train", "--configs", str(TINY_YAML)]
    cmd += ["--nproc", "1", "--steps", "2", "--warmup", "1", "--threads", "1"]
    cmd += ["--peak-size", "256", "--json", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["matmul_peak_gflops"] > 0
    assert res["matmul_peak_gflops"] == res["matmul_peak"]["fp32"]["best"]
    t = res["train"]["cpc_tiny"]["nproc1"]
    assert t["nproc"] == 1 and t["steps"] == 2 and t["threads_per_process"] == 1
    cfg = load_train_config(TINY_YAML)
    flops = bench.model_flops(cfg.model, cfg.data.batch_size, cfg.data.window)
    assert t["gflop_per_step"] == round(flops["train_step"] / 1e9, 2)
    assert t["steps_per_s"] == pytest.approx(1 / t["step_s"], rel=1e-2)
    assert t["audio_s_per_s"] == pytest.approx(
        t["steps_per_s"] * cfg.data.batch_size * cfg.data.window / 16000, rel=1e-2
    )
    assert t["flop_fraction_of_peak"] == pytest.approx(
        t["achieved_gflops"] / res["matmul_peak_gflops"], abs=1e-3
    )
    table = r.stdout
    assert "cpc_tiny" in table and "% peak" in table and "fp32 matmul peak" in table


def test_data_extract_and_probe_parts(tmp_path: Path) -> None:
    from tests.factories import make_labelled_manifests

    _, _, corpus = make_labelled_manifests(tmp_path, speakers=2, chapters=1, utts=3)
    d = bench.run_data(tmp_path / "manifests", str(TINY_YAML), seconds=0.01, seed=0)
    assert d["windows_per_s"] > 0 and d["batches"] >= 5 and d["num_workers"] == 0
    e = bench.run_extract(tmp_path / "manifests", str(TINY_YAML), tmp_path, "cpu", seed=0)
    total = sum(corpus.num_frames.values()) / 100  # seconds of audio, 10 ms frames
    assert e["num_cuts"] == len(corpus.utt_ids)
    assert e["audio_s"] == pytest.approx(total, abs=0.05)
    assert e["rtf_x_realtime"] > 0
    p = bench.run_probe(rows=2000, device="cpu", seed=0)
    assert p["s_per_epoch"] == p["linear"]["s_per_epoch"] and p["mlp"]["hidden_dim"] == 512
    # the speech tools: aligner, downstream ASR, ABX
    hours = total / 3600
    a = bench.run_align(tmp_path / "manifests", tmp_path, iterations=1, seed=0)
    # audio_hours: the cuts' durations, rounded to 4 decimals (frames round to 10 ms)
    assert a["audio_hours"] == pytest.approx(hours, abs=1e-4) and a["seconds_per_audio_hour"] > 0
    r = bench.run_asr_epoch(tmp_path / "manifests", tmp_path, seed=0)
    assert 0 < r["train_hours"] < hours and r["seconds_per_epoch_per_hour"] > 0
    assert r["epochs"] == 1 and r["updates"] >= 1  # one epoch, whatever stage 6's minimum
    x = bench.run_abx(triplets=300, seed=0)
    assert x["triplets"] == 300 and x["seconds_per_1000_triplets"] > 0


def test_table_reports_every_part() -> None:
    res = {
        "mode": "quick",
        "machine": {"cpu": "CPU X", "cores": 2, "torch": "2.x", "loadavg_start": [0.1]},
        "matmul_peak_gflops": 400.0,
        "matmul_peak": {"size": 4096, "fp32": {"torch_mm": 100.0, "best": 400.0}},
        "train": {
            "cpc_paper": {
                "flop_accounting": "x",
                "nproc1": {
                    "nproc": 1,
                    "step_s": 0.5,
                    "steps_per_s": 2.0,
                    "audio_s_per_s": 20.48,
                    "gflop_per_step": 162.8,
                    "achieved_gflops": 325.6,
                    "flop_fraction_of_peak": 0.814,
                },
            }
        },
        "data": {
            "per_config": [
                {
                    "config": "cpc_paper",
                    "num_workers": 4,
                    "windows_per_s": 100.0,
                    "train_consumes_windows_per_s": 16.0,
                    "ratio": 6.25,
                }
            ]
        },
        "extract": {
            "config": "cpc_paper",
            "model": "random init",
            "device": "cpu",
            "rtf_x_realtime": 42.0,
            "audio_s": 420.0,
            "elapsed_s": 10.0,
        },
        "align": {
            "iterations": 6,
            "seconds_per_audio_hour": 300.0,
            "audio_hours": 2.0,
            "seconds": 600.0,
        },
        "asr": {
            "model": "m",
            "seconds_per_epoch_per_hour": 80.0,
            "train_hours": 1.6,
            "seconds": 128.0,
        },
        "abx": {
            "seconds_per_1000_triplets": 1.5,
            "triplets": 20000,
            "distances": 39000,
            "seconds": 30.0,
        },
        "errors": [],
    }
    text = bench.format_table(res)
    assert "300.0 s per audio hour" in text and "80.0 s per epoch per hour" in text
    assert "1.5 s per 1000 triplets" in text
    assert "fp32 matmul peak: 400.0 GFLOP/s" in text
    assert "81.4" in text and " 326 " in text  # % of peak and GFLOP/s of the training row
    assert "6.25x" in text and "42.0x real time" in text


def _fake_nvidia_smi(bin_dir: Path, rc: int) -> None:
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_gpu_script_skips_without_nvidia_smi_gpu(tmp_path: Path) -> None:
    _fake_nvidia_smi(tmp_path / "bin", rc=9)  # nvidia-smi present but finds no GPU
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    r = subprocess.run(
        ["bash", str(BENCH_GPU)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "no NVIDIA GPU found" in r.stdout and "skipping" in r.stdout
    assert not (tmp_path / "bench_gpu").exists()


def test_gpu_script_skips_when_torch_sees_no_cuda(tmp_path: Path) -> None:
    _fake_nvidia_smi(tmp_path / "bin", rc=0)  # a driver, but no device visible to torch
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run(
        ["bash", str(BENCH_GPU)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "sees no CUDA device" in r.stdout and "skipping" in r.stdout


def test_gpu_script_refuses_unknown_options() -> None:
    r = subprocess.run(["bash", str(BENCH_GPU), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr
