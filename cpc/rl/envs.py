"""Environments behind one adapter: observation, action set, reward, episode end.

Every environment is an :class:`Env`: ``reset()`` returns the first observation of a new
episode, ``step(action)`` returns ``(observation, reward, done)`` with the reward summed
over ``action_repeat`` frames, ``done`` true when the episode ended (the observation is
then the last one; call ``reset()``). Observations are ``uint8`` arrays ``(H, W, 3)`` (RGB)
or ``(H, W, 1)`` (grey) at the configured size; actions are indices into the environment's
fixed discrete action set (``num_actions``).

Suites (:class:`EnvConfig` ``suite``):

- ``dmlab``: DeepMind Lab through the ``deepmind_lab`` Python module (when importable),
  IMPALA's 9-action set, action repeat 4; levels under ``contributed/dmlab30/``;
- ``vizdoom``: ViZDoom scenarios shipped with the PyPI wheel (headless), the scenario's own
  button set as one-button actions (plus "no-op" when ``vizdoom_noop``);
- ``minigrid``: MiniGrid (pure Python) rendered to pixels of the agent's partial view; the
  first ``minigrid_actions`` actions (default 3: left, right, forward).

:data:`DMLAB_ANALOGUES` maps the paper's five DeepMind Lab levels to the ViZDoom scenario
used in their place where one exists. This module imports no torch: it runs in the
environment worker processes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: The paper's five DeepMind Lab levels (section 3.4), in its order.
DMLAB_LEVELS = (
    "rooms_watermaze",
    "explore_goal_locations_small",
    "seekavoid_arena_01",
    "lasertag_three_opponents_small",
    "rooms_keys_doors_puzzle",
)

#: The ViZDoom scenario that stands in for each DeepMind Lab level (None: no analogue in the
#: scenarios the wheel ships). See egs/dmlab/README.md for what each keeps and loses.
DMLAB_ANALOGUES: dict[str, str | None] = {
    "rooms_watermaze": None,
    "explore_goal_locations_small": "my_way_home",
    "seekavoid_arena_01": "health_gathering_supreme",
    "lasertag_three_opponents_small": "defend_the_center",
    "rooms_keys_doors_puzzle": None,
}

#: IMPALA's DeepMind Lab action set: (look left/right, look up/down, strafe left/right,
#: forward/backward, fire, jump, crouch) per action.
DMLAB_ACTIONS = (
    (0, 0, 0, 1, 0, 0, 0),  # forward
    (0, 0, 0, -1, 0, 0, 0),  # backward
    (0, 0, -1, 0, 0, 0, 0),  # strafe left
    (0, 0, 1, 0, 0, 0, 0),  # strafe right
    (-20, 0, 0, 0, 0, 0, 0),  # look left
    (20, 0, 0, 0, 0, 0, 0),  # look right
    (-20, 0, 0, 1, 0, 0, 0),  # look left + forward
    (20, 0, 0, 1, 0, 0, 0),  # look right + forward
    (0, 0, 0, 0, 1, 0, 0),  # fire
)

SUITES = ("dmlab", "vizdoom", "minigrid")


class EnvError(RuntimeError):
    """An environment that cannot be made (the message names the level and the fix)."""


@dataclass
class EnvConfig:
    """Which environment, and how its frames and actions look to the agent."""

    suite: str = "vizdoom"  # dmlab, vizdoom or minigrid
    level: str = "defend_the_center"  # DMLab level, ViZDoom scenario or MiniGrid env id
    height: int = 60  # observation size fed to the agent
    width: int = 80
    grayscale: bool = False
    action_repeat: int = 4  # frames per agent step (reward summed over them)
    max_episode_steps: int = 0  # agent steps before an episode is cut (0: the level's own)
    vizdoom_noop: bool = False  # add a "do nothing" action to the scenario's buttons
    minigrid_actions: int = 3  # MiniGrid: the first N actions (3: left, right, forward)


class Env(Protocol):
    """The adapter every suite implements (see the module docstring)."""

    num_actions: int

    def reset(self) -> np.ndarray: ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool]: ...

    def close(self) -> None: ...


def _resize(frame: np.ndarray, cfg: EnvConfig) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> the configured size (bilinear) and colour, ``(h, w, C)``."""
    if frame.shape[:2] != (cfg.height, cfg.width):
        from PIL import Image

        img = Image.fromarray(frame).resize((cfg.width, cfg.height), Image.BILINEAR)
        frame = np.asarray(img)
    if cfg.grayscale:
        grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        frame = np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]
    return np.ascontiguousarray(frame, dtype=np.uint8)


class _StepLimit:
    """Counts agent steps of an episode; true once ``max_episode_steps`` is reached."""

    def __init__(self, limit: int) -> None:
        self.limit, self.n = limit, 0

    def start(self) -> None:
        self.n = 0

    def tick(self) -> bool:
        self.n += 1
        return self.limit > 0 and self.n >= self.limit


class DMLabEnv:
    """A DeepMind Lab level through ``deepmind_lab`` (its documented Python API:
    ``Lab(level, observations, config)``, ``reset(seed=)``, ``observations()``,
    ``step(action, num_steps=)``, ``is_running()``, ``action_spec()``)."""

    OBS = "RGB_INTERLEAVED"

    def __init__(self, cfg: EnvConfig, seed: int) -> None:
        try:
            lab = importlib.import_module("deepmind_lab")
        except ImportError as e:
            raise EnvError(
                f"suite dmlab, level {cfg.level}: the deepmind_lab module is not importable "
                "(build DeepMind Lab's Python package, see egs/dmlab/README.md), or use "
                "suite vizdoom"
            ) from e
        level = cfg.level if "/" in cfg.level else f"contributed/dmlab30/{cfg.level}"
        config = {"width": str(cfg.width), "height": str(cfg.height), "fps": "60"}
        self.cfg, self.seed, self.episode = cfg, seed, 0
        self.lab = lab.Lab(level, [self.OBS], config=config)
        spec = self.lab.action_spec()
        if len(spec) != len(DMLAB_ACTIONS[0]):
            raise EnvError(
                f"level {level}: action_spec has {len(spec)} entries, IMPALA's action set "
                f"needs {len(DMLAB_ACTIONS[0])} (a deepmind_lab of another version?)"
            )
        self.actions = [np.array(a, dtype=np.intc) for a in DMLAB_ACTIONS]
        self.num_actions = len(self.actions)
        self.limit = _StepLimit(cfg.max_episode_steps)
        self._last: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        return _resize(np.asarray(self.lab.observations()[self.OBS]), self.cfg)

    def reset(self) -> np.ndarray:
        self.lab.reset(seed=self.seed + self.episode)
        self.episode += 1
        self.limit.start()
        self._last = self._obs()
        return self._last

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        reward = float(self.lab.step(self.actions[action], num_steps=self.cfg.action_repeat))
        if not self.lab.is_running():
            return self._last, reward, True  # no observation after the end: the last one
        self._last = self._obs()
        return self._last, reward, self.limit.tick()

    def close(self) -> None:
        self.lab.close()


class ViZDoomEnv:
    """A ViZDoom scenario of the wheel (``vizdoom.scenarios_path``), headless."""

    def __init__(self, cfg: EnvConfig, seed: int) -> None:
        import os
        import tempfile

        import vizdoom as vzd

        path = os.path.join(vzd.scenarios_path, f"{cfg.level}.cfg")
        if not os.path.isfile(path):
            names = sorted(f[:-4] for f in os.listdir(vzd.scenarios_path) if f.endswith(".cfg"))
            raise EnvError(
                f"suite vizdoom: no scenario {cfg.level!r} ({path} does not exist); "
                f"choose one of {', '.join(names)}"
            )
        game = vzd.DoomGame()
        game.load_config(path)
        # The scenario files ask for 320x240 CRCGCB: render the smallest size that covers
        # the observation, as RGB, without a window or sound.
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        # The engine writes its settings file to the working directory unless told otherwise.
        game.set_doom_config_path(os.path.join(tempfile.gettempdir(), "cpc_rl_vizdoom.ini"))
        game.set_seed(int(seed) % (2**31))
        game.init()
        n = game.get_available_buttons_size()
        self.actions = [[float(i == j) for j in range(n)] for i in range(n)]
        if cfg.vizdoom_noop:
            self.actions.append([0.0] * n)
        self.num_actions = len(self.actions)
        self.cfg, self.game = cfg, game
        self.limit = _StepLimit(cfg.max_episode_steps)
        self._last: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        return _resize(self.game.get_state().screen_buffer, self.cfg)

    def reset(self) -> np.ndarray:
        self.game.new_episode()
        self.limit.start()
        self._last = self._obs()
        return self._last

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        reward = float(self.game.make_action(self.actions[action], self.cfg.action_repeat))
        if self.game.is_episode_finished():  # death or the scenario's timeout
            return self._last, reward, True
        self._last = self._obs()
        return self._last, reward, self.limit.tick()

    def close(self) -> None:
        self.game.close()


class MiniGridEnv:
    """A MiniGrid environment rendered as the agent's partial view in pixels."""

    def __init__(self, cfg: EnvConfig, seed: int) -> None:
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the MiniGrid environments)
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

        try:
            env = gym.make(cfg.level)
        except gym.error.Error as e:
            raise EnvError(
                f"suite minigrid: cannot make {cfg.level!r} ({e}); use an id such as "
                "MiniGrid-Empty-5x5-v0"
            ) from e
        self.env = ImgObsWrapper(RGBImgPartialObsWrapper(env))
        self.num_actions = min(cfg.minigrid_actions, int(self.env.action_space.n))
        self.cfg, self.seed, self.episode = cfg, seed, 0
        self.limit = _StepLimit(cfg.max_episode_steps)

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed + self.episode)
        self.episode += 1
        self.limit.start()
        return _resize(obs, self.cfg)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        total, done, obs = 0.0, False, None
        for _ in range(self.cfg.action_repeat):
            obs, reward, terminated, truncated, _ = self.env.step(int(action))
            total += float(reward)
            if terminated or truncated:
                done = True
                break
        return _resize(obs, self.cfg), total, self.limit.tick() or done

    def close(self) -> None:
        self.env.close()


_MAKERS = {"dmlab": DMLabEnv, "vizdoom": ViZDoomEnv, "minigrid": MiniGridEnv}


def make_env(cfg: EnvConfig, seed: int) -> Env:
    """The :class:`Env` of ``cfg`` seeded with ``seed``; EnvError for an unknown suite."""
    if cfg.suite not in _MAKERS:
        raise EnvError(f"data.env.suite {cfg.suite!r} is not one of {', '.join(SUITES)}")
    return _MAKERS[cfg.suite](cfg, seed)


def dmlab_available() -> bool:
    """True when the ``deepmind_lab`` module can be imported."""
    try:
        importlib.import_module("deepmind_lab")
    except ImportError:
        return False
    return True


def observation_shape(cfg: EnvConfig) -> tuple[int, int, int]:
    """``(H, W, C)`` of the observations of ``cfg``."""
    return (cfg.height, cfg.width, 1 if cfg.grayscale else 3)


def num_actions(cfg: EnvConfig) -> int:
    """Size of the action set of ``cfg`` (ViZDoom: from an instance of the scenario)."""
    if cfg.suite == "dmlab":
        return len(DMLAB_ACTIONS)
    env = make_env(cfg, 0)
    try:
        return int(env.num_actions)
    finally:
        env.close()


def simulator_version(suite: str) -> str:
    """The version of the package that simulates ``suite`` ("unknown" if not installed)."""
    from importlib import metadata

    package = {"dmlab": "deepmind-lab", "vizdoom": "vizdoom", "minigrid": "minigrid"}[suite]
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
