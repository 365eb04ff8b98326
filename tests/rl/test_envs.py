"""The environment adapter on every environment this machine has (MiniGrid, ViZDoom, the
DeepMind Lab API through a stand-in module), and the vector environment's recovery from
crashed, failing and hung workers."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from cpc.rl.envs import (
    DMLAB_ACTIONS,
    DMLAB_ANALOGUES,
    DMLAB_LEVELS,
    EnvConfig,
    EnvError,
    make_env,
    num_actions,
)
from cpc.rl.vecenv import VecEnv
from tests.needs import require
from tests.rl.stand_ins import make_flaky

FAKE_LAB = Path(__file__).parent / "fake_lab"


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.fixture
def fake_lab(monkeypatch):
    """The stand-in ``deepmind_lab`` on sys.path (spawned workers inherit sys.path)."""
    monkeypatch.syspath_prepend(str(FAKE_LAB))
    sys.modules.pop("deepmind_lab", None)
    lab = importlib.import_module("deepmind_lab")
    lab.CALLS.clear()
    yield lab
    sys.modules.pop("deepmind_lab", None)


CONFIGS = {
    "minigrid": EnvConfig("minigrid", "MiniGrid-Empty-5x5-v0", 16, 16, action_repeat=1),
    "vizdoom": EnvConfig("vizdoom", "defend_the_center", 24, 32, grayscale=True),
    "dmlab": EnvConfig("dmlab", "seekavoid_arena_01", 18, 24),
}


@pytest.mark.parametrize("suite", sorted(CONFIGS))
def test_adapter_contract(suite, request):
    cfg = CONFIGS[suite]
    if suite == "dmlab":
        request.getfixturevalue("fake_lab")
    else:
        require(_has(suite), f"the {suite} package")
    cfg.max_episode_steps = 7
    env = make_env(cfg, seed=5)
    try:
        channels = 1 if cfg.grayscale else 3
        assert num_actions(cfg) == env.num_actions
        obs = env.reset()
        assert obs.dtype == np.uint8 and obs.shape == (cfg.height, cfg.width, channels)
        lengths, n = [], 0
        for i in range(40):
            obs, reward, done = env.step(i % env.num_actions)
            assert obs.shape == (cfg.height, cfg.width, channels) and obs.dtype == np.uint8
            assert isinstance(reward, float) and isinstance(done, bool)
            n += 1
            if done:
                lengths.append(n)
                n = 0
                env.reset()
        assert lengths and max(lengths) <= 7  # max_episode_steps cuts episodes
    finally:
        env.close()


def test_dmlab_adapter_uses_impalas_actions_and_repeat(fake_lab):
    cfg = EnvConfig("dmlab", "rooms_watermaze", 18, 24, action_repeat=4)
    env = make_env(cfg, seed=100)
    assert env.num_actions == 9
    env.reset()
    rewards = [env.step(a)[1] for a in range(9)]
    init = fake_lab.CALLS[0]
    assert init[1] == "contributed/dmlab30/rooms_watermaze" and init[2] == ("RGB_INTERLEAVED",)
    assert init[3]["width"] == "24" and init[3]["height"] == "18"
    steps = [c for c in fake_lab.CALLS if c[0] == "step"]
    assert [c[1] for c in steps] == [tuple(a) for a in DMLAB_ACTIONS]
    assert all(c[2] == 4 for c in steps)
    assert rewards == [4.0, 0, 0, 0, 0, 0, 4.0, 4.0, 0]  # forward moves: summed over 4 frames
    # the episode ends after 40 frames = 10 agent steps; reset() seeds the next episode anew
    _, _, done = env.step(0)
    assert done
    env.reset()
    assert [c[1] for c in fake_lab.CALLS if c[0] == "reset"] == [100, 101]


def test_dmlab_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepmind_lab", None)
    with pytest.raises(EnvError, match="deepmind_lab module is not importable"):
        make_env(EnvConfig("dmlab", "rooms_watermaze"), 0)


def test_unknown_vizdoom_scenario_names_the_choices():
    require(_has("vizdoom"), "the vizdoom package")
    with pytest.raises(EnvError, match="choose one of .*defend_the_center"):
        make_env(EnvConfig("vizdoom", "no_such_map"), 0)


def test_every_paper_level_has_an_entry():
    assert set(DMLAB_ANALOGUES) == set(DMLAB_LEVELS) and len(DMLAB_LEVELS) == 5


def test_vecenv_steps_dmlab_stand_in_in_workers(fake_lab):
    cfg = EnvConfig("dmlab", "seekavoid_arena_01", 6, 8)
    with VecEnv(functools.partial(make_env, cfg), 3, 2, seed=7) as venv:
        obs = venv.reset()
        assert obs.shape == (3, 6, 8, 3)
        assert [int(o[1, 1, 0]) for o in obs] == [7, 8, 9]  # env i seeded with seed + i
        dones = 0
        for _ in range(10):
            res = venv.step(np.zeros(3, int))
            dones += int(res.done.sum())
        assert dones == 3 and venv.restarts == 0
        assert sorted(e.env for e in res.episodes) == [0, 1, 2]
        assert all(e.ret == 40.0 and e.length == 10 for e in res.episodes)


@pytest.mark.parametrize("fail", ["crash", "raise", "hang"])
def test_vecenv_restarts_a_failed_worker_and_continues(fail):
    make = functools.partial(make_flaky, fail=fail, at=3)
    # only a hang needs a short step timeout (the test waits it out); a healthy worker on a
    # loaded machine gets far longer to start its environments than to step them
    timeout = 3.0 if fail == "hang" else 60.0
    with VecEnv(make, 4, 2, seed=0, step_timeout=timeout, start_timeout_factor=20.0) as venv:
        venv.reset()
        results = [venv.step(np.ones(4, int)) for _ in range(6)]
        # every worker's first env fails at its 3rd step (both workers: seeds < 1000)
        assert venv.restarts == 2
        third = results[2]
        assert third.done.all() and (third.reward == 0).all()
        # afterwards: fresh environments, counting from 1 again, rewards flow
        assert [int(o[0, 0, 0]) for o in third.obs] == [0, 0, 0, 0]
        assert (results[3].reward == 1).all() and not results[3].done.any()
        # the interrupted episodes are not reported as finished
        assert all(not r.episodes for r in results[:4])
        assert not any(r.done.any() or r.episodes for r in results[3:])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_vecenv_ends_the_processes_a_failed_or_closed_worker_started(tmp_path):
    """A simulator's engine process (here: a helper the environment starts) does not outlive
    its worker: not after a crash (the restart kills the worker's process group), not after
    close()."""
    pids = tmp_path / "pids"
    make = functools.partial(make_flaky, fail="crash", at=2, child_pids=str(pids))
    venv = VecEnv(make, 2, 1, seed=0, step_timeout=5.0)
    venv.reset()
    first = [int(x) for x in pids.read_text().split()]
    assert len(first) == 2 and all(_alive(p) for p in first)
    venv.step(np.zeros(2, int))
    venv.step(np.zeros(2, int))  # the worker crashes here and is restarted
    assert venv.restarts == 1
    assert not any(_alive(p) for p in first)
    second = [int(x) for x in pids.read_text().split()][2:]
    assert len(second) == 2 and all(_alive(p) for p in second)
    venv.close()
    assert not any(_alive(p) for p in second)
