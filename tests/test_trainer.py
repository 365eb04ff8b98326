"""Trainer: DDP == accumulation, exact resume, checkpoint safety, the train.py CLI."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cpc.audio.config import load_train_config
from cpc.audio.data import TRAIN_CUTS, AudioWindowData
from cpc.audio.model import build_cpc_model, load_cpc_model
from cpc.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_resume_config,
    find_latest_checkpoint,
    list_checkpoints,
    restore_rng_state,
)
from cpc.config import config_to_dict
from cpc.infonce import InfoNCE
from cpc.trainer import DistEnv, OptimConfig, Trainer, TrainerConfig, lr_factor, split_batch
from tests.audio.test_data import tiny_cuts

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "egs" / "librispeech100" / "conf" / "cpc_tiny.yaml"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "manifests").mkdir()
    tiny_cuts(root / "corpus").to_file(root / "manifests" / TRAIN_CUTS)
    return root / "manifests"


def audio_trainer(exp_dir, manifests, overrides=(), seed=1, **kw) -> Trainer:
    cfg = load_train_config(TINY, ["train.progress_bar=false", *overrides, f"train.seed={seed}"])
    torch.manual_seed(kw.pop("init_seed", seed))
    model = build_cpc_model(cfg.model)
    data = AudioWindowData(tiny_cuts_from(manifests), cfg.data, seed=seed)
    return Trainer(model, data, cfg.train, cfg.optim, exp_dir, config_to_dict(cfg), DistEnv(), **kw)


def tiny_cuts_from(manifests: Path):
    from cpc.audio.data import load_train_cuts

    return load_train_cuts(manifests)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, manifests):
    ref = audio_trainer(tmp_path / "ref", manifests, ["train.max_steps=8", "train.save_interval=3"])
    ref.fit()

    def crash(step):
        if step == 7:
            raise KeyboardInterrupt

    exp = tmp_path / "exp"
    first = audio_trainer(
        exp, manifests, ["train.max_steps=8", "train.save_interval=3"], on_step_end=crash
    )
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert [s for s, _ in list_checkpoints(exp)] == [3, 6]
    # a different init proves that everything comes from the checkpoint
    again = audio_trainer(
        exp, manifests, ["train.max_steps=8", "train.save_interval=3"], init_seed=99
    )
    assert again.prepare() == 6
    again.fit()
    assert again.step == 8 and again.position == ref.position
    a, b = params(ref.model), params(again.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 8]  # the interrupted run's records past step 6 were dropped
    rec = json.loads((exp / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(rec["accuracy"]) == 4 and {"loss", "mi_bound", "lr", "time"} <= set(rec)
    assert [s for s, _ in list_checkpoints(exp)] == [6, 8]  # keep_last 2
    best = torch.load(exp / "best.pt", weights_only=True)
    assert best["step"] == 8 and all(torch.equal(best["model"][k], b[k]) for k in b)


def test_truncated_checkpoint_is_skipped_and_state_is_weights_only(tmp_path, manifests, caplog):
    exp = tmp_path / "exp"
    audio_trainer(exp, manifests, ["train.max_steps=4", "train.save_interval=2"]).fit()
    newest = exp / "checkpoint-4.pt"
    state = torch.load(newest, weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "data_position", "config", "step"} <= set(
        state
    )
    assert state["data_position"] == {"epoch": 0, "batch": 4}
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        path, state = find_latest_checkpoint(exp)
    assert path.name == "checkpoint-2.pt" and state["step"] == 2
    assert "skipping" in caplog.text and "checkpoint-4.pt" in caplog.text
    # resuming picks the older one up and still ends at max_steps
    t = audio_trainer(exp, manifests, ["train.max_steps=4", "train.save_interval=2"])
    assert t.prepare() == 2
    t.fit()
    assert t.step == 4


def test_resume_under_a_different_model_is_refused_naming_keys(tmp_path, manifests):
    exp = tmp_path / "exp"
    audio_trainer(exp, manifests, ["train.max_steps=2"]).fit()
    other = audio_trainer(exp, manifests, ["train.max_steps=4", "model.channels=16"])
    with pytest.raises(CheckpointError, match=r"model\.channels: 32 -> 16"):
        other.prepare()
    # other sections may change (with a warning): train longer
    diffs = check_resume_config(
        {"model": {"a": 1}, "train": {"n": 2}}, {"model": {"a": 1}, "train": {"n": 4}}
    )
    assert diffs == ["train.n: 2 -> 4"]


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    state = capture_rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(torch.load(path, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2]


class ToySequenceData:
    """A non-audio domain: random walks of 8-d vectors, grouped in pairs."""

    def batches(self, position, rank, world_size, grad_accum):
        step = (position or {}).get("batch", 0)
        for i in itertools.count(step):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(4 * world_size * grad_accum, 12, 8, generator=g).cumsum(1)
            n = 4 * grad_accum
            yield (
                {"x": x[rank * n : (rank + 1) * n], "group": torch.arange(n) // 2},
                {"batch": i + 1},
            )


class ToySequenceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(8, 16)
        self.ar = nn.GRU(16, 16, batch_first=True)
        self.infonce = InfoNCE(16, 16, num_steps=2, num_negatives=3, strategy="same_speaker")

    def forward(self, batch, generator=None):
        z = self.enc(batch["x"])
        c, _ = self.ar(z)
        return self.infonce(c, z, batch["group"], generator=generator)


def test_trainer_is_domain_agnostic_and_bf16_works(tmp_path):
    torch.manual_seed(0)
    for precision in ("fp32", "bf16"):
        cfg = TrainerConfig(
            max_steps=30,
            log_interval=10,
            save_interval=30,
            precision=precision,
            progress_bar=False,
            tensorboard=False,
            grad_accum=2,
        )
        exp = tmp_path / precision
        trainer = Trainer(
            ToySequenceModel(),
            ToySequenceData(),
            cfg,
            OptimConfig(lr=1e-2),
            exp,
            {"model": {"toy": 1}},
            DistEnv(),
        )
        out = trainer.fit()
        recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs] == [10, 20, 30]
        assert all(map(torch.isfinite, map(torch.tensor, [r["loss"] for r in recs])))
        assert out["loss"] < recs[0]["loss"] or out["accuracy"][0] > 0.5
        assert (exp / "best.pt").is_file()


def test_lr_schedule_and_split_batch():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, cfg, 14) for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and abs(f[-1] - 0.1) < 0.05
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    parts = split_batch({"x": torch.arange(6), "tag": "a"}, 3)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]] and parts[2]["tag"] == "a"
    with pytest.raises(ValueError, match="grad_accum=4"):
        split_batch({"x": torch.arange(6)}, 4)


def _train_cli(args, nproc=None, **env_extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, str(ROOT / "local" / "train.py")]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", str(ROOT / "local" / "train.py")]  # fmt: skip
    return subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_accumulation(tmp_path, manifests):
    """2 processes x batch 4 == 1 process x 2 micro-batches of 4: same parameters."""
    common = ["--config", str(TINY), "--manifest-dir", str(manifests), "--seed", "5"]
    ovr = ["train.max_steps=3", "train.progress_bar=false", "train.log_interval=1"]
    two = _train_cli([*common, "--exp-dir", str(tmp_path / "two"), "--override", *ovr], nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _train_cli(
        [*common, "--exp-dir", str(tmp_path / "one"), "--override", *ovr, "train.grad_accum=2"]
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(tmp_path / "two" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "one" / "best.pt", weights_only=True)["model"]
    init = build_cpc_model(load_train_config(TINY).model).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5)
    assert any(not torch.allclose(a[k], init[k]) for k in a)  # it did train
    ra = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ra] == [1, 2, 3]
    for x, y in zip(ra, rb):
        assert abs(x["loss"] - y["loss"]) < 1e-5  # ranks' metrics are averaged


def test_cli_outputs_and_errors(tmp_path, manifests):
    exp = tmp_path / "exp"
    args = ["--config", str(TINY), "--exp-dir", str(exp), "--seed", "2"]
    missing = _train_cli([*args, "--manifest-dir", str(tmp_path / "nowhere")])
    assert missing.returncode == 1 and "run stages 0-1 first" in missing.stderr
    assert "Traceback" not in missing.stderr
    ok = _train_cli([*args, "--manifest-dir", str(manifests), "--override", "train.max_steps=6"])
    assert ok.returncode == 0, ok.stderr[-3000:]
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 6 and saved["train"]["seed"] == 2
    assert "--override train.max_steps=6" in (exp / "cmd.txt").read_text()
    assert list((exp / "log").glob("log-train-*")) and (exp / "tensorboard").is_dir()
    model, cfg = load_cpc_model(exp / "best.pt")
    assert cfg["model"]["channels"] == 32
    out = model.extract(torch.randn(1, 1600))
    assert out["c"].shape == (1, 10, 32)
    bad = _train_cli([*args, "--manifest-dir", str(manifests), "--override", "model.channels=16"])
    assert bad.returncode == 1 and "model.channels: 32 -> 16" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"]["channels"] == 32
    typo = _train_cli([*args, "--manifest-dir", str(manifests), "--override", "model.chanels=16"])
    assert typo.returncode == 1 and "chanels" in typo.stderr and "Traceback" not in typo.stderr
