#!/usr/bin/env python3
"""Stage 0: check that the environment of a config runs here, headless.

Input:  --config (a conf/*.yaml of domain rl) with --override (e.g. env.level=my_way_home).
Output: --out-dir/env_check.json (suite, level, simulator version, observation shape, number
        of actions, random-policy agent steps/s of one environment in this process and of the
        config's vectorised environments in worker processes) and --out-dir/frame.png (the
        first frame the agent sees, at the agent's resolution).

Example (from egs/dmlab):
    python local/check_env.py --config conf/vizdoom.yaml --out-dir exp/vizdoom
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    from cpc.cli import HelpFormatter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="training config (domain: rl)")
    p.add_argument("--override", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--out-dir", required=True, help="where env_check.json and frame.png go")
    p.add_argument("--steps", type=int, default=2000, help="random steps to time")
    p.add_argument("--seed", type=int, default=0, help="environment seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    import numpy as np
    from PIL import Image

    from cpc.config import ConfigError
    from cpc.io import atomic_path, write_json_atomic
    from cpc.log import setup_logging
    from cpc.rl.config import load_train_config
    from cpc.rl.envs import EnvError, observation_shape, simulator_version
    from cpc.rl.evaluate import check_environment

    setup_logging()
    try:
        cfg = load_train_config(args.config, args.override)
        res = check_environment(cfg, args.steps, args.seed)
    except (ConfigError, EnvError) as e:
        logging.error(str(e))
        return 1
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = res.pop("frame")
    with atomic_path(out / "frame.png") as tmp:
        img = frame[..., 0] if frame.shape[-1] == 1 else frame
        Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG")
    info = {
        "suite": cfg.env.suite,
        "level": cfg.env.level,
        "simulator_version": simulator_version(cfg.env.suite),
        "observation_shape": list(observation_shape(cfg.env)),
        "action_repeat": cfg.env.action_repeat,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()},
    }
    write_json_atomic(out / "env_check.json", info)
    logging.info(
        f"{cfg.env.suite}/{cfg.env.level}: renders headless, {info['num_actions']} actions, "
        f"{info['steps_per_sec_one_env']:.0f} agent steps/s (one env), "
        f"{info['steps_per_sec_vector']:.0f} with {info['num_envs']} envs in "
        f"{info['num_workers']} workers; wrote {out}/env_check.json, frame.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
