"""Test environments for the vector environment: one that crashes its process and one that
hangs, each at a chosen step of its first life only (restarted workers get seeds >= 1000)."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np


class FlakyEnv:
    """A 2-action environment of 4x4 frames holding the step count; episodes last 5 steps;
    reward 1 for action 1. ``fail`` ("crash", "hang", "raise") happens at step ``at`` when
    the seed is below 1000 (its first life)."""

    num_actions = 2

    def __init__(self, seed: int, fail: str = "", at: int = 3, child_pids: str = "") -> None:
        self.seed, self.fail, self.at, self.n, self.t = seed, fail, at, 0, 0
        if child_pids:  # a helper process, as simulators that run their engine apart
            proc = subprocess.Popen(["sleep", "600"])
            with open(child_pids, "a") as f:
                f.write(f"{proc.pid}\n")

    def _obs(self) -> np.ndarray:
        return np.full((4, 4, 3), self.n % 256, np.uint8)

    def reset(self) -> np.ndarray:
        self.t = 0
        return self._obs()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self.n += 1
        self.t += 1
        if self.fail and self.seed < 1000 and self.n == self.at:
            if self.fail == "crash":
                os._exit(3)
            if self.fail == "hang":
                time.sleep(3600)
            raise RuntimeError("simulated simulator error")
        return self._obs(), float(action == 1), self.t >= 5

    def close(self) -> None:
        pass


def make_flaky(seed: int, fail: str = "", at: int = 3, child_pids: str = "") -> FlakyEnv:
    return FlakyEnv(seed, fail, at, child_pids)
