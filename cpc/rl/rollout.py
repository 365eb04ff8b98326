"""Training batches for the shared trainer: unrolls collected with the current policy.

:class:`UnrollData` is a :class:`cpc.trainer.TrainData`. Each optimizer step gets one batch
of ``num_envs`` unrolls of ``unroll`` agent steps, collected by the model being trained
(on-policy, no replay), from environments in worker processes (:class:`VecEnv`). Its
position is ``{"frames", "updates", "restarts"}``: environment frames consumed over all
processes (agent steps x action repeat), batches collected, worker restarts.

Resume: a resumed run starts fresh environments (simulator state is not saved), seeded
from ``(seed, updates, rank)``, with the core state reset; actions are drawn from a
generator seeded from ``(seed, update, rank)`` for every unroll, so a run is reproducible
from its seed as long as no worker fails.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cpc.rl.config import RLTrainConfig
from cpc.rl.envs import make_env
from cpc.rl.vecenv import VecEnv
from cpc.trainer import step_seed


def env_seed(seed: int, updates: int, rank: int) -> int:
    """Base seed of the environments started at ``updates`` by process ``rank``."""
    return step_seed(seed, updates, 10_000 + rank) % (2**31 - 2**24)


def make_vecenv(cfg: RLTrainConfig, seed: int, num_envs: int | None = None) -> VecEnv:
    """The worker-process environments of ``cfg`` (``num_envs`` default: ``data.num_envs``)."""
    return VecEnv(
        functools.partial(make_env, cfg.env),
        num_envs or cfg.data.num_envs,
        cfg.data.num_workers,
        seed,
        step_timeout=cfg.data.step_timeout,
    )


class UnrollData:
    """Batches of unrolls collected with ``model`` (see the module docstring)."""

    def __init__(self, cfg: RLTrainConfig, model: Any, log_every: int = 0) -> None:
        self.cfg, self.model = cfg, model
        self.log_every = log_every or cfg.train.log_interval

    def frames_per_batch(self, world_size: int = 1) -> int:
        d = self.cfg.data
        return d.num_envs * d.unroll * self.cfg.env.action_repeat * world_size

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
        cfg, model = self.cfg, self.model
        seed = cfg.train.seed
        pos = {"frames": 0, "updates": 0, "restarts": 0} | dict(position or {})
        n, t_len = cfg.data.num_envs, cfg.data.unroll
        venv = make_vecenv(cfg, env_seed(seed, pos["updates"], rank))
        restarts0 = pos["restarts"]
        try:
            obs = torch.from_numpy(venv.reset())
            device = next(model.parameters()).device
            first = torch.ones(n, dtype=torch.bool)
            state = model.initial_state(n, device)
            t0, frames0 = time.perf_counter(), pos["frames"]
            recent: list[float] = []  # returns of the episodes finished since the last log
            while True:
                gen = torch.Generator(device=device)
                gen.manual_seed(step_seed(seed, pos["updates"], 20_000 + rank))
                obs_buf = torch.empty((n, t_len + 1, *obs.shape[1:]), dtype=torch.uint8)
                first_buf = torch.empty((n, t_len + 1), dtype=torch.bool)
                actions = torch.empty((n, t_len), dtype=torch.long)
                rewards = torch.empty((n, t_len), dtype=torch.float32)
                dones = torch.empty((n, t_len), dtype=torch.bool)
                episodes = torch.zeros(n)
                ep_return = torch.zeros(n)
                h0, c0 = state
                for t in range(t_len):
                    obs_buf[:, t], first_buf[:, t] = obs, first
                    a, state = model.act(obs.to(device), first.to(device), state, gen)
                    res = venv.step(a.cpu().numpy())
                    actions[:, t] = a.cpu()
                    rewards[:, t] = torch.from_numpy(res.reward)
                    dones[:, t] = torch.from_numpy(res.done)
                    obs, first = torch.from_numpy(res.obs), dones[:, t].clone()
                    for ep in res.episodes:
                        episodes[ep.env] += 1
                        ep_return[ep.env] += ep.ret
                        recent.append(ep.ret)
                obs_buf[:, t_len], first_buf[:, t_len] = obs, first
                pos["updates"] += 1
                pos["frames"] += self.frames_per_batch(world_size)
                pos["restarts"] = restarts0 + venv.restarts
                batch = {
                    "obs": obs_buf,
                    "first": first_buf,
                    "actions": actions,
                    "rewards": rewards,
                    "dones": dones,
                    "h0": h0.detach(),
                    "c0": c0.detach(),
                    "episodes": episodes,
                    "episode_return": ep_return,
                }
                if rank == 0 and pos["updates"] % self.log_every == 0:
                    dt = time.perf_counter() - t0
                    fps = (pos["frames"] - frames0) / max(dt, 1e-9)
                    mean = f"{np.mean(recent):.3f} over {len(recent)}" if recent else "none"
                    logging.info(
                        f"frames {pos['frames']}: episode return {mean} episode(s), "
                        f"{fps:.0f} frames/s (collection + learning), "
                        f"environment restarts {pos['restarts']}"
                    )
                    t0, frames0, recent = time.perf_counter(), pos["frames"], []
                yield batch, dict(pos)
        finally:
            venv.close()


def random_actions(rng: np.random.Generator, num_actions: int, n: int) -> np.ndarray:
    """Uniform random actions for ``n`` environments."""
    return rng.integers(num_actions, size=n)
