"""Evaluation: mean return over a fixed set of episodes, for a trained agent or a random
policy, and the environment check of stage 0.

Episodes: ``episodes`` are shared out over ``num_envs`` environments (environment ``i``
plays episodes ``i, i + num_envs, ...``; each plays its quota, so short episodes are not
over-represented), seeded from ``seed``: every policy evaluated with the same seed meets the
same environment seeds (the episodes still differ once the policies act differently).
Agents sample from their policy, as in training.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc.checkpoint import load_checkpoint
from cpc.config import from_dict
from cpc.rl.config import RLTrainConfig, validate_config
from cpc.rl.envs import make_env, observation_shape
from cpc.rl.rollout import make_vecenv

EVAL_SEED_OFFSET = 1_000_003  # evaluation environments never share seeds with training


def load_agent(path: str | Path) -> tuple[Any, RLTrainConfig, dict[str, Any]]:
    """The agent of checkpoint ``path`` (``best.pt``), its config and the checkpoint."""
    from cpc.rl.domain import build_model

    state = load_checkpoint(path)
    cfg = from_dict(RLTrainConfig, state["config"], source=str(path))
    validate_config(cfg)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, state


def run_episodes(
    cfg: RLTrainConfig,
    episodes: int,
    seed: int,
    model: Any = None,
    num_envs: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Play ``episodes`` episodes with ``model`` (None: uniform random actions).

    Returns ``returns`` and ``lengths`` (agent steps) per episode in a fixed order (by
    environment, then episode), ``seconds``, ``agent_steps`` and ``restarts``.
    """
    num_envs = max(1, min(num_envs, episodes))
    quota = [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]
    done_eps: list[list[tuple[float, int]]] = [[] for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    n_act = model.num_actions if model is not None else None
    t0, steps = time.perf_counter(), 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, unit="episode", desc="evaluate", mininterval=2.0)
    with make_vecenv(cfg, seed + EVAL_SEED_OFFSET, num_envs) as venv:
        obs = torch.from_numpy(venv.reset())
        if n_act is None:
            probe = make_env(cfg.env, 0)
            n_act = probe.num_actions
            probe.close()
        first = torch.ones(num_envs, dtype=torch.bool)
        state = model.initial_state(num_envs) if model is not None else None
        while any(len(d) < q for d, q in zip(done_eps, quota)):
            if model is None:
                actions = rng.integers(n_act, size=num_envs)
            else:
                a, state = model.act(obs, first, state, gen)
                actions = a.numpy()
            res = venv.step(actions)
            steps += num_envs
            obs, first = torch.from_numpy(res.obs), torch.from_numpy(res.done)
            for ep in res.episodes:
                if len(done_eps[ep.env]) < quota[ep.env]:
                    done_eps[ep.env].append((ep.ret, ep.length))
                    if bar is not None:
                        bar.update(1)
        restarts = venv.restarts
    if bar is not None:
        bar.close()
    flat = [e for d in done_eps for e in d]
    return {
        "returns": [r for r, _ in flat],
        "lengths": [n for _, n in flat],
        "seconds": time.perf_counter() - t0,
        "agent_steps": steps,
        "restarts": restarts,
    }


def summary(returns: list[float]) -> dict[str, float]:
    """Mean, standard deviation and standard error of the mean of ``returns``."""
    x = np.asarray(returns, dtype=np.float64)
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {
        "mean": float(x.mean()),
        "std": std,
        "sem": std / math.sqrt(len(x)) if len(x) else 0.0,
        "episodes": len(x),
    }


def check_environment(cfg: RLTrainConfig, steps: int, seed: int) -> dict[str, Any]:
    """Stage 0: make one environment, render its first frame, time random steps of one
    environment in this process and of the vectorised environments in workers."""
    env = make_env(cfg.env, seed)
    try:
        frame = env.reset()
        if frame.shape != observation_shape(cfg.env) or frame.dtype != np.uint8:
            raise RuntimeError(
                f"frame {frame.shape} {frame.dtype}, expected uint8 of shape "
                f"{observation_shape(cfg.env)}"
            )
        rng = np.random.default_rng(seed)
        t0, episodes = time.perf_counter(), 0
        for _ in range(steps):
            _, _, done = env.step(int(rng.integers(env.num_actions)))
            if done:
                episodes += 1
                env.reset()
        single = steps / max(time.perf_counter() - t0, 1e-9)
        n_act = env.num_actions
    finally:
        env.close()
    n = cfg.data.num_envs
    with make_vecenv(cfg, seed) as venv:
        venv.reset()
        per_env = max(1, steps // n)
        t0 = time.perf_counter()
        for _ in range(per_env):
            venv.step(rng.integers(n_act, size=n))
        vec = per_env * n / max(time.perf_counter() - t0, 1e-9)
    return {
        "frame": frame,
        "num_actions": n_act,
        "steps_per_sec_one_env": single,
        "steps_per_sec_vector": vec,
        "frames_per_sec_vector": vec * cfg.env.action_repeat,
        "num_envs": n,
        "num_workers": cfg.data.num_workers,
        "random_episodes_seen": episodes,
    }
