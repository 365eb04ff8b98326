"""Trainer: DDP == accumulation, exact resume, identity refusals, validation and best.pt,
optimizer factories, checkpoint safety, the train.py CLI."""

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
from cpc.audio.data import TRAIN_CUTS
from cpc.audio.domain import DOMAIN
from cpc.audio.model import build_cpc_model, load_cpc_model
from cpc.checkpoint import (
    IdentityMismatch,
    capture_rng_state,
    find_latest_checkpoint,
    list_checkpoints,
    restore_rng_state,
)
from cpc.config import config_to_dict
from cpc.infonce import InfoNCE
from cpc.optim import OptimConfig, lr_factor
from cpc.trainer import DistEnv, Trainer, TrainerConfig, split_batch
from tests.factories import tiny_cuts

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "egs" / "librispeech100" / "conf" / "cpc_tiny.yaml"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "manifests").mkdir()
    tiny_cuts(root / "corpus").to_file(root / "manifests" / TRAIN_CUTS)
    return root / "manifests"


def audio_trainer(exp_dir, manifests, overrides=(), seed=1, env=None, **kw) -> Trainer:
    """The speech domain's trainer, built the way local/train.py builds it."""
    cfg = load_train_config(TINY, ["train.progress_bar=false", *overrides, f"train.seed={seed}"])
    torch.manual_seed(kw.pop("init_seed", seed))
    model = DOMAIN.build_model(cfg)
    data = DOMAIN.build_data(cfg, manifests)
    return Trainer(
        model,
        data.train,
        cfg.train,
        cfg.optim,
        exp_dir,
        config_to_dict(cfg),
        env or DistEnv(),
        valid_data=data.valid,
        data_identity=data.identity,
        run_only_keys=DOMAIN.run_only_keys,
        **kw,
    )


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
    recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in recs if r["split"] == "train"]
    assert train_steps == [5, 8]  # the interrupted run's records past step 6 were dropped
    rec = [r for r in recs if r["split"] == "train"][-1]
    assert len(rec["accuracy"]) == 4 and {"loss", "mi_bound", "lr", "time"} <= set(rec)
    assert [s for s, _ in list_checkpoints(exp)] == [6, 8]  # keep_last 2
    # the same validation records (same windows, same negatives) in both runs
    valid = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["split"] == "valid"]
    ref_valid = [
        json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    ]
    ref_valid = [r for r in ref_valid if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6, 8]
    assert [r["loss"] for r in valid] == [r["loss"] for r in ref_valid]
    best = torch.load(exp / "best.pt", weights_only=True)
    best_rec = min(valid, key=lambda r: r["loss"])
    assert best["step"] == best_rec["step"] and best["valid"]["loss"] == best_rec["loss"]


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


def test_resume_of_other_inputs_is_refused_naming_every_difference(tmp_path, manifests):
    exp = tmp_path / "exp"
    audio_trainer(exp, manifests, ["train.max_steps=2"]).fit()
    cases = {
        "model.channels: 32 -> 16": dict(overrides=["model.channels=16"]),
        "config.train.seed: 1 -> 2": dict(seed=2),
        "config.optim.lr: 0.001 -> 0.002": dict(overrides=["optim.lr=2e-3"]),
        "processes_x_grad_accum: 1 -> 2": dict(overrides=["train.grad_accum=2"]),
    }
    for needle, kw in cases.items():
        kw["overrides"] = ["train.max_steps=4", *kw.get("overrides", [])]
        with pytest.raises(IdentityMismatch) as e:
            audio_trainer(exp, manifests, **kw).prepare()
        assert any(needle in d for d in e.value.differences), (needle, e.value.differences)
        assert "cannot be continued under other inputs" in str(e.value)
    with pytest.raises(IdentityMismatch, match="keeping that product"):
        audio_trainer(exp, manifests, ["train.max_steps=4", "train.grad_accum=2"]).prepare()
    # 2 processes x 1 micro-batch make the same global batch as 1 x 2: that run continues
    acc2 = tmp_path / "acc2"
    audio_trainer(acc2, manifests, ["train.max_steps=2", "train.grad_accum=2"]).fit()
    two = audio_trainer(acc2, manifests, ["train.max_steps=4"], env=DistEnv(world_size=2))
    assert two.prepare() == 2
    # settings that do not change the weights may change: train further, log more often
    t = audio_trainer(exp, manifests, ["train.max_steps=4", "train.log_interval=1"])
    assert t.prepare() == 2
    t.fit()
    assert t.step == 4
    # but a cosine schedule depends on max_steps: extending it would change the past steps
    cos = tmp_path / "cos"
    audio_trainer(cos, manifests, ["train.max_steps=2", "optim.schedule=cosine"]).fit()
    with pytest.raises(IdentityMismatch, match=r"train.max_steps: 2 -> 4"):
        audio_trainer(cos, manifests, ["train.max_steps=4", "optim.schedule=cosine"]).prepare()


def test_resume_on_other_data_is_refused(tmp_path):
    """The same ids and durations but other audio (a rebuilt corpus) is other data."""
    exp = tmp_path / "exp"
    for i, seed in enumerate((0, 1)):
        m = tmp_path / f"m{i}"
        m.mkdir()
        cuts = tiny_cuts(tmp_path / f"corpus{i}", seed=0)
        if seed:  # rewrite the audio of one utterance in place: same length, other samples
            import soundfile as sf

            path = cuts[0].recording.sources[0].source
            x, sr = sf.read(path)
            sf.write(path, -x, sr)
        cuts.to_file(m / TRAIN_CUTS)
    audio_trainer(exp, tmp_path / "m0", ["train.max_steps=2"]).fit()
    with pytest.raises(IdentityMismatch) as e:
        audio_trainer(exp, tmp_path / "m1", ["train.max_steps=4"]).prepare()
    assert any(d.startswith("data.sha256") for d in e.value.differences)
    # the same corpus elsewhere (moved) is the same data
    assert DOMAIN.build_data(load_train_config(TINY), tmp_path / "m0").identity == (
        DOMAIN.build_data(load_train_config(TINY), tmp_path / "m0").identity
    )


def test_best_pt_is_the_lowest_validation_loss(tmp_path, manifests):
    losses = iter([3.0, 1.0, 2.0])
    exp = tmp_path / "exp"
    t = audio_trainer(
        exp,
        manifests,
        ["train.max_steps=6", "train.save_interval=2", "train.keep_last=5"],
        evaluate=lambda trainer: {"loss": next(losses)},
    )
    t.fit()
    best = torch.load(exp / "best.pt", weights_only=True)
    assert best["step"] == 4 and best["valid"] == {"step": 4, "loss": 1.0}
    ckpt4 = torch.load(exp / "checkpoint-4.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], ckpt4["model"][k]) for k in best["model"])
    assert ckpt4["best"] == {"step": 4, "loss": 1.0}
    assert best["identity"] == t.identity()
    recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["best"]) for r in recs if r["split"] == "valid"] == [
        (2, True),
        (4, True),
        (6, False),
    ]


def test_real_validation_split_is_held_out_and_deterministic(tmp_path, manifests):
    cfg = load_train_config(TINY, ["data.valid_fraction=0.25"])
    a, b = DOMAIN.build_data(cfg, manifests), DOMAIN.build_data(cfg, manifests)
    assert set(a.valid.table.ids) == set(b.valid.table.ids) and a.valid.table.ids
    assert not set(a.valid.table.ids) & set(a.train.table.ids)
    other_seed = load_train_config(TINY, ["data.valid_fraction=0.25", "train.seed=9"])
    assert DOMAIN.build_data(other_seed, manifests).valid.table.ids == a.valid.table.ids
    t = audio_trainer(tmp_path / "v", manifests, ["train.max_steps=2", "data.valid_fraction=0.25"])
    first, second = t.evaluate(), t.evaluate()
    assert first == second and set(first) >= {"loss", "accuracy", "mi_bound", "step"}
    assert len(first["accuracy"]) == 4


def test_optimizer_and_scheduler_factories(tmp_path, manifests):
    made = {}

    def sgd(params):
        made["opt"] = torch.optim.SGD(params, lr=0.5)
        return made["opt"]

    def halve(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)

    t = audio_trainer(
        tmp_path / "f",
        manifests,
        ["train.max_steps=3", "train.log_interval=1"],
        optimizer_factory=sgd,
        scheduler_factory=halve,
    )
    t.fit()
    assert t.optimizer is made["opt"] and isinstance(t.optimizer, torch.optim.SGD)
    recs = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in recs if r["split"] == "train"] == [0.25, 0.125, 0.0625]
    # the config's optimizer names: rmsprop for the RL agents, sgd for classifiers
    from cpc.optim import build_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(p, OptimConfig(name="rmsprop")), torch.optim.RMSprop)
    assert isinstance(build_optimizer(p, OptimConfig(name="sgd", momentum=0.9)), torch.optim.SGD)


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
        self.infonce = InfoNCE(16, 16, num_steps=2, num_negatives=3, strategy="same_group")

    def forward(self, batch, generator=None):
        z = self.enc(batch["x"])
        c, _ = self.ar(z)
        return self.infonce(c, z, batch["group"], generator=generator)


def test_precision_auto_is_resolved_and_part_of_the_identity(tmp_path, monkeypatch):
    """train.precision=auto trains in what it means on the device (bf16 with native bf16,
    else fp32); the checkpoint's identity records that, so a run begun where auto meant fp32
    is not continued in bf16 elsewhere, and resumes where it means fp32 again."""
    import cpc.perf

    def trainer(native: bool) -> Trainer:
        monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu": native)
        cfg = TrainerConfig(
            max_steps=4, log_interval=2, save_interval=2, precision="auto",
            progress_bar=False, tensorboard=False,
        )  # fmt: skip
        config = {"model": {"toy": 1}, "train": {"precision": "auto"}}
        return Trainer(
            ToySequenceModel(), ToySequenceData(), cfg, OptimConfig(lr=1e-2), tmp_path, config,
            DistEnv(),
        )  # fmt: skip

    torch.manual_seed(0)
    t = trainer(False)
    assert t.precision == "fp32" and t.identity()["config"]["train.precision"] == "fp32"
    t.fit()
    assert (
        torch.load(tmp_path / "best.pt", weights_only=True)["identity"]["config"]["train.precision"]
        == "fp32"
    )
    t = trainer(True)
    assert t.precision == "bf16"
    with pytest.raises(IdentityMismatch, match=r"config\.train\.precision: 'fp32' -> 'bf16'"):
        t.prepare()
    assert trainer(False).prepare() == 4


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
        assert [r["step"] for r in recs] == [10, 20, 30] and recs[0]["split"] == "train"
        assert all(map(torch.isfinite, map(torch.tensor, [r["loss"] for r in recs])))
        assert out["loss"] < recs[0]["loss"] or out["accuracy"][0] > 0.5
        assert (exp / "best.pt").is_file()


def test_lr_schedule_and_split_batch():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, cfg, 14) for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and abs(f[-1] - 0.1) < 0.05
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    step = OptimConfig(lr=1.0, schedule="step", milestones=[2, 4], gamma=0.1)
    assert [round(lr_factor(s, step, 6), 6) for s in range(6)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
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
    assert [(r["split"], r["step"]) for r in ra] == [
        ("train", 1),
        ("train", 2),
        ("train", 3),
        ("valid", 3),
    ]
    assert [(r["split"], r["step"]) for r in rb] == [(r["split"], r["step"]) for r in ra]
    for x, y in zip(ra, rb):
        # ranks' metrics are averaged; validation batches are shared out between the ranks
        assert abs(x["loss"] - y["loss"]) < 1e-5


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
    assert "--restart-exp true" in bad.stderr and "--tag" in bad.stderr
    typo = _train_cli([*args, "--manifest-dir", str(manifests), "--override", "model.chanels=16"])
    assert typo.returncode == 1 and "chanels" in typo.stderr and "Traceback" not in typo.stderr
    # --check-only: 0 when resumable, 3 when the exp dir holds another experiment
    same = ["--manifest-dir", str(manifests), "--override", "train.max_steps=6"]
    assert _train_cli([*args, *same, "--check-only", "true"]).returncode == 0
    # the check runs as one process for a run of --world-size processes (run.sh's torchrun
    # launch): trained by 1 process, a 2-process run has another global batch
    two = _train_cli([*args, *same, "--check-only", "true", "--world-size", "2"])
    assert two.returncode == 3 and "processes_x_grad_accum: 1 -> 2" in two.stderr
    assert _train_cli([*args, *same, "--check-only", "true", "--world-size", "1"]).returncode == 0
    other = ["--manifest-dir", str(manifests), "--override", "train.max_steps=6", "optim.lr=3e-3"]
    assert _train_cli([*args, *other, "--check-only", "true"]).returncode == 3
    # --restart-exp true moves the old experiment aside (nothing deleted) and trains anew
    before = torch.load(exp / "best.pt", weights_only=True)["model"]
    again = _train_cli([*args, *other, "--restart-exp", "true"])
    assert again.returncode == 0, again.stderr[-3000:]
    (old,) = tmp_path.glob("exp.old-*")
    assert "moved it to" in again.stderr and str(old) in again.stderr
    kept = torch.load(old / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(kept[k], before[k]) for k in kept)
    new = torch.load(exp / "best.pt", weights_only=True)
    assert new["identity"]["config"]["optim.lr"] == 3e-3
    assert any(not torch.equal(new["model"][k], before[k]) for k in before)
    assert list((exp / "log").glob("log-train-*"))  # this run's log is in the new exp dir
