"""Training through the generic local/train.py (the rl domain gets its model in build_data),
and resume after a stop: weights, optimizer, RNG and frame count from the checkpoint, fresh
environments."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cpc.checkpoint import load_checkpoint
from cpc.rl.config import load_train_config
from cpc.rl.domain import DOMAIN
from tests.needs import require

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "egs" / "dmlab" / "conf" / "tiny.yaml"


def _train_main():
    spec = importlib.util.spec_from_file_location("local_train", ROOT / "local" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def minigrid():
    require(importlib.util.find_spec("minigrid") is not None, "the minigrid package")


def test_config_errors_name_the_fix():
    from cpc.config import ConfigError

    with pytest.raises(ConfigError, match="too short to predict"):
        load_train_config(TINY, ["model.cpc=true", "model.cpc_steps=20"])
    with pytest.raises(ConfigError, match="env.suite"):
        load_train_config(TINY, ["env.suite=atari"])
    with pytest.raises(ConfigError, match="multiple of train.grad_accum"):
        load_train_config(TINY, ["train.grad_accum=3"])


def test_build_data_needs_the_model():
    with pytest.raises(ValueError, match="pass model="):
        DOMAIN.build_data(load_train_config(TINY), "")


def test_train_then_resume_restores_state_and_frame_count(tmp_path, minigrid):
    main = _train_main()
    exp = tmp_path / "exp"
    args = ["--config", str(TINY), "--exp-dir", str(exp), "--seed", "3", "--override"]
    assert main(args + ["model.cpc=true", "train.max_steps=3"]) == 0
    first = load_checkpoint(exp / "checkpoint-3.pt")
    frames_per_step = 4 * 12 * 1  # num_envs x unroll x action_repeat
    assert first["data_position"]["frames"] == 3 * frames_per_step
    assert first["data_position"]["updates"] == 3
    # "killed" after step 3: a later invocation with more steps resumes from the checkpoint
    assert main(args + ["model.cpc=true", "train.max_steps=6"]) == 0
    log = "".join(p.read_text() for p in sorted((exp / "log").iterdir()))
    assert "resuming from" in log and "checkpoint-3.pt" in log
    last = load_checkpoint(exp / "checkpoint-6.pt")
    assert last["step"] == 6 and last["data_position"]["frames"] == 6 * frames_per_step
    assert set(last["model"]) == set(first["model"])
    assert any(k.startswith("predictors.") for k in last["model"])
    assert "state" in last["optimizer"] and last["optimizer"]["state"]  # RMSProp moments
    # the metrics of the resumed run continue at step 4; the episode counts are present
    recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if r["split"] == "train"]
    assert steps == [2, 3, 4, 6] and all("episodes" in r for r in recs)
    # resuming with another agent (CPC off) is refused: other identity
    assert main(args + ["model.cpc=false", "train.max_steps=6"]) == 1


def test_resume_restores_exactly_the_checkpointed_weights(tmp_path, minigrid):
    """The weights a resumed run starts from are the checkpoint's, bit for bit."""
    from cpc.trainer import Trainer

    main = _train_main()
    exp = tmp_path / "exp"
    assert main(["--config", str(TINY), "--exp-dir", str(exp), "--seed", "4"]) == 0
    cfg = load_train_config(TINY, ["train.seed=4"])
    torch.manual_seed(99)  # a different init: must be overwritten by the checkpoint
    model = DOMAIN.build_model(cfg)
    data = DOMAIN.build_data(cfg, "", model=model)
    from cpc.config import config_to_dict

    t = Trainer(
        model,
        data.train,
        cfg.train,
        cfg.optim,
        exp,
        config=config_to_dict(cfg),
        data_identity=data.identity,
        run_only_keys=DOMAIN.run_only_keys,
    )
    assert t.prepare() == 6
    saved = load_checkpoint(exp / "checkpoint-6.pt")["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert t.position == {"frames": 6 * 48, "updates": 6, "restarts": 0}


def test_training_data_continues_through_a_crashed_worker(monkeypatch):
    """Unrolls keep coming when a worker crashes mid-unroll: the restart is counted in the
    data position, its environments start new episodes (core state reset)."""
    import functools

    from cpc.rl import rollout
    from cpc.rl.config import AgentConfig
    from cpc.rl.model import A2CAgent
    from cpc.rl.vecenv import VecEnv
    from tests.rl.stand_ins import make_flaky

    cfg = load_train_config(TINY, ["data.num_envs=2", "data.unroll=4"])

    def flaky_vecenv(cfg, seed, num_envs=None):
        make = functools.partial(make_flaky, fail="crash", at=6)
        return VecEnv(make, num_envs or cfg.data.num_envs, 1, seed=0, step_timeout=5.0)

    monkeypatch.setattr(rollout, "make_vecenv", flaky_vecenv)
    torch.manual_seed(0)
    agent = A2CAgent(
        (4, 4, 3), 2, AgentConfig(channels=[4], res_blocks=0, feature_dim=8, core_dim=8)
    )
    it = rollout.UnrollData(cfg, agent).batches(None, 0, 1, 1)
    batches = [next(it) for _ in range(3)]
    it.close()
    (b1, p1), (b2, p2), (b3, p3) = batches
    assert (p1["restarts"], p2["restarts"], p3["restarts"]) == (0, 1, 1)
    assert p3 == {"frames": 3 * 2 * 4, "updates": 3, "restarts": 1}
    # the crash at the 6th step (2nd step of unroll 2): that step ends the episodes...
    assert b2["dones"][:, 1].all() and (b2["rewards"][:, 1] == 0).all()
    # ...and the next frame starts new ones (the core state is reset there)
    assert b2["first"][:, 2].all()
    out = agent(b3)
    assert torch.isfinite(out["loss"])
