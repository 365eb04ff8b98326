"""A stand-in for DeepMind Lab's ``deepmind_lab`` module, following its documented API
(``Lab(level, observations, config)``, ``reset(seed)``, ``observations()``,
``step(action, num_steps)``, ``is_running()``, ``action_spec()``, ``close()``), so that the
adapter can be tested where DeepMind Lab cannot be built.

Its "level": the frame is filled with the seed's colour; every call of ``step`` records the
action and ``num_steps``; the reward is ``num_steps`` when the action moves forward
(``MOVE_BACK_FORWARD_PIXELS`` = 1), else 0; an episode lasts ``EPISODE_FRAMES`` frames.
"""

from __future__ import annotations

import numpy as np

EPISODE_FRAMES = 40
SPEC = [
    ("LOOK_LEFT_RIGHT_PIXELS_PER_FRAME", -512, 512),
    ("LOOK_DOWN_UP_PIXELS_PER_FRAME", -512, 512),
    ("STRAFE_LEFT_RIGHT", -1, 1),
    ("MOVE_BACK_FORWARD", -1, 1),
    ("FIRE", 0, 1),
    ("JUMP", 0, 1),
    ("CROUCH", 0, 1),
]
CALLS: list[tuple] = []  # (method, args...) of every Lab in this process


class Lab:
    def __init__(self, level, observations, config=None, renderer="software", level_cache=None):
        if not level.startswith("contributed/dmlab30/"):
            raise ValueError(f"unknown level {level}")
        self.level, self.names, self.config = level, list(observations), dict(config or {})
        self.width, self.height = int(self.config["width"]), int(self.config["height"])
        self.frames, self.seed, self.running = 0, 0, False
        CALLS.append(("init", level, tuple(observations), dict(self.config)))

    def action_spec(self):
        return [{"name": n, "min": lo, "max": hi} for n, lo, hi in SPEC]

    def reset(self, episode=-1, seed=None):
        self.seed, self.frames, self.running = seed, 0, True
        CALLS.append(("reset", seed))
        return True

    def observations(self):
        if not self.running:
            raise RuntimeError("observations() called after the episode ended")
        frame = np.full((self.height, self.width, 3), (self.seed or 0) % 256, np.uint8)
        frame[0, 0] = self.frames % 256
        return {"RGB_INTERLEAVED": frame}

    def step(self, action, num_steps=1):
        action = np.asarray(action)
        if action.dtype != np.intc or action.shape != (len(SPEC),):
            raise ValueError(f"action must be {len(SPEC)} intc values, got {action!r}")
        CALLS.append(("step", tuple(int(a) for a in action), num_steps))
        self.frames += num_steps
        if self.frames >= EPISODE_FRAMES:
            self.running = False
        return float(num_steps) if action[3] == 1 else 0.0

    def is_running(self):
        return self.running

    def close(self):
        CALLS.append(("close",))
