"""Vectorised environments in worker processes, with crash and hang recovery.

:class:`VecEnv` runs ``num_envs`` environments in ``num_workers`` processes (spawned, so a
worker never inherits the learner's threads); worker ``w`` owns a contiguous block of the
environments and steps them in turn. ``step(actions)`` returns the observations, rewards and
episode ends of all environments; an environment whose episode ended is reset at once, and
the observation returned for it is the first one of its next episode.

Failures: a worker that dies (the simulator crashed, or raised) or does not answer within
``step_timeout`` seconds (hung) is killed and started afresh with new environments (seeds
advanced by the restart count). Its environments report ``done`` for that step with reward
0 (the interrupted episodes are dropped, not counted as finished), the restart is counted
in :attr:`VecEnv.restarts`, and stepping continues.

This module imports no torch.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EnvFactory = Callable[[int], Any]  # seed -> an Env (cpc.rl.envs); must be picklable


@dataclass
class Episode:
    """A finished episode: which environment, its return and length (agent steps)."""

    env: int
    ret: float
    length: int


@dataclass
class StepResult:
    """What :meth:`VecEnv.step` returns for all environments."""

    obs: np.ndarray  # (N, H, W, C) uint8: after the step (a new episode's first if done)
    reward: np.ndarray  # (N,) float32
    done: np.ndarray  # (N,) bool: the episode ended with this step (or its worker failed)
    episodes: list[Episode] = field(default_factory=list)


def _worker(conn: Any, make: EnvFactory, seeds: list[int]) -> None:
    """Worker loop: ("reset",) -> obs; ("step", actions) -> (obs, reward, done, episodes).

    The worker leads its own process group, so that killing the group also ends processes
    its simulators started (ViZDoom runs its engine as a child process). When the learner
    goes away (EOF on the pipe) the environments are closed before the worker exits.
    """
    os.setpgid(0, 0)
    envs: list[Any] = []
    try:
        envs += [make(s) for s in seeds]
        ret = [0.0] * len(envs)
        length = [0] * len(envs)
        while True:
            msg = conn.recv()
            if msg[0] == "reset":
                conn.send(np.stack([e.reset() for e in envs]))
                ret, length = [0.0] * len(envs), [0] * len(envs)
            elif msg[0] == "step":
                obs, rew, done, eps = [], [], [], []
                for i, (e, a) in enumerate(zip(envs, msg[1])):
                    o, r, d = e.step(int(a))
                    ret[i] += r
                    length[i] += 1
                    if d:
                        eps.append((i, ret[i], length[i]))
                        ret[i], length[i] = 0.0, 0
                        o = e.reset()
                    obs.append(o)
                    rew.append(r)
                    done.append(d)
                conn.send((np.stack(obs), np.asarray(rew, np.float32), np.asarray(done), eps))
            elif msg[0] == "close":
                _close_all(envs)
                envs = []
                conn.send(None)
                return
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        _close_all(envs)


def _close_all(envs: list[Any]) -> None:
    for e in envs:
        try:
            e.close()
        except Exception:
            pass


class WorkerFailure(RuntimeError):
    """A worker died, raised or hung."""


class VecEnv:
    """``num_envs`` environments made by ``make(seed)`` in ``num_workers`` processes.

    ``seed``: environment ``i`` of restart ``r`` of its worker is seeded with
    ``seed + 1000 * r + i`` (restarts get new episodes, not a replay of the crashed ones).
    ``step_timeout``: seconds a worker may take for one step (or for starting its
    environments, times ``start_timeout_factor``) before it counts as hung.
    """

    def __init__(
        self,
        make: EnvFactory,
        num_envs: int,
        num_workers: int,
        seed: int,
        step_timeout: float = 60.0,
        start_timeout_factor: float = 4.0,
        max_restarts: int = 100,
    ) -> None:
        if num_envs < 1 or num_workers < 1:
            raise ValueError(f"num_envs {num_envs} and num_workers {num_workers} must be >= 1")
        num_workers = min(num_workers, num_envs)
        self.make, self.num_envs, self.seed = make, num_envs, seed
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.start_timeout = step_timeout * start_timeout_factor
        bounds = np.linspace(0, num_envs, num_workers + 1).round().astype(int)
        self.blocks = [list(range(bounds[w], bounds[w + 1])) for w in range(num_workers)]
        self.restarts = 0
        self._worker_restarts = [0] * num_workers
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = [None] * num_workers
        self._conns: list[Any] = [None] * num_workers
        self._obs: np.ndarray | None = None

    # ---- worker life cycle ----
    def _seeds(self, w: int) -> list[int]:
        return [self.seed + 1000 * self._worker_restarts[w] + i for i in self.blocks[w]]

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker, args=(child, self.make, self._seeds(w)), daemon=True
        )
        proc.start()
        child.close()
        self._procs[w], self._conns[w] = proc, parent

    def _kill(self, w: int) -> None:
        """End worker ``w`` and every process of its group (simulator engines included)."""
        proc, conn = self._procs[w], self._conns[w]
        if conn is not None:
            conn.close()
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # not yet its own group: the worker alone
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        self._procs[w] = self._conns[w] = None

    def _recv(self, w: int, timeout: float) -> Any:
        conn = self._conns[w]
        try:
            if not conn.poll(timeout):
                raise WorkerFailure(f"no answer within {timeout:g} s (hung)")
            msg = conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError, OSError) as e:
            raise WorkerFailure(f"died ({type(e).__name__})") from e
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "error":
            raise WorkerFailure(f"raised:\n{msg[1]}")
        return msg

    def _restart(self, w: int, why: str) -> np.ndarray:
        """Replace worker ``w`` by a fresh one; return its first observations."""
        self._kill(w)
        self.restarts += 1
        self._worker_restarts[w] += 1
        logging.warning(
            f"environment worker {w} (envs {self.blocks[w][0]}..{self.blocks[w][-1]}) {why}; "
            f"restarting it with fresh environments (restart {self.restarts})"
        )
        if self.restarts > self.max_restarts:
            raise RuntimeError(
                f"environment workers failed {self.restarts} times (more than "
                f"{self.max_restarts}); the last failure: {why}"
            )
        return self._reset_worker(w)

    def _reset_worker(self, w: int) -> np.ndarray:
        while True:
            try:
                if self._procs[w] is None:
                    self._start(w)
                self._conns[w].send(("reset",))
                return self._recv(w, self.start_timeout)
            except (WorkerFailure, BrokenPipeError, OSError) as e:
                self._kill(w)
                self.restarts += 1
                self._worker_restarts[w] += 1
                logging.warning(f"environment worker {w} failed to start: {e}; trying again")
                if self.restarts > self.max_restarts:
                    raise RuntimeError(f"environment worker {w} cannot start: {e}") from e

    # ---- the vector interface ----
    def reset(self) -> np.ndarray:
        """Start (or restart) every worker with fresh episodes; ``(N, H, W, C)`` uint8."""
        parts = [self._reset_worker(w) for w in range(len(self.blocks))]
        self._obs = np.concatenate(parts)
        return self._obs

    def step(self, actions: Sequence[int] | np.ndarray) -> StepResult:
        """Step every environment with its action (see the module docstring)."""
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        sent: list[bool] = []
        for w, block in enumerate(self.blocks):
            try:
                self._conns[w].send(("step", actions[block[0] : block[-1] + 1].tolist()))
                sent.append(True)
            except (BrokenPipeError, OSError):
                sent.append(False)
        obs = np.empty_like(self._obs)
        reward = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        episodes: list[Episode] = []
        for w, block in enumerate(self.blocks):
            sl = slice(block[0], block[-1] + 1)
            try:
                if not sent[w]:
                    raise WorkerFailure("died (its pipe is closed)")
                o, r, d, eps = self._recv(w, self.step_timeout)
                obs[sl], reward[sl], done[sl] = o, r, d
                episodes += [Episode(block[0] + i, float(ret), int(n)) for i, ret, n in eps]
            except WorkerFailure as e:
                obs[sl] = self._restart(w, str(e).splitlines()[0] + _tail(str(e)))
                done[sl] = True
        self._obs = obs
        return StepResult(obs, reward, done, episodes)

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for w, conn in enumerate(self._conns):
            if conn is None:
                continue
            try:
                conn.send(("close",))
                if conn.poll(5):
                    conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            self._kill(w)

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _tail(text: str) -> str:
    """The last line of a traceback (the exception), if ``text`` holds one."""
    lines = [x for x in text.splitlines() if x.strip()]
    return f": {lines[-1].strip()}" if len(lines) > 1 else ""


def timed_steps(env: VecEnv, steps: int, rng: np.random.Generator, num_actions: int) -> float:
    """Step ``env`` ``steps`` times with uniform random actions; agent steps per second over
    all environments."""
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(num_actions, size=env.num_envs))
    return steps * env.num_envs / max(time.perf_counter() - t0, 1e-9)
