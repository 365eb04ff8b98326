#!/usr/bin/env python3
"""Stage 3: mean return over a fixed set of episodes, per trained agent and for a random
policy.

Input:  --checkpoints: best.pt files of stage 1/2 runs (name=path pairs, e.g.
        baseline_seed1=exp/vizdoom/baseline_seed1/best.pt); --config (+ --override) for the
        random policy's environment.
Output: --out-dir/<name>.json per checkpoint and random.json: ``returns`` and ``lengths``
        per episode, ``mean``, ``std``, ``sem``, ``episodes``, the checkpoint's training
        ``step`` and ``seconds`` of evaluation. Episodes are the same environment seeds for
        every policy (cpc.rl.evaluate); agents sample from their policy.

Example (from egs/dmlab):
    python local/evaluate.py --config conf/vizdoom.yaml --out-dir exp/vizdoom/eval \\
        --checkpoints baseline_seed1=exp/vizdoom/baseline_seed1/best.pt --episodes 50
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    from cpc.cli import HelpFormatter, positive_int, str2bool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="training config (the random policy's env)")
    p.add_argument("--override", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--checkpoints", nargs="*", default=[], help="name=path/to/best.pt pairs")
    p.add_argument("--out-dir", required=True, help="where <name>.json and random.json go")
    p.add_argument("--episodes", type=positive_int, default=50, help="episodes per policy")
    p.add_argument(
        "--num-envs", type=positive_int, default=8, help="environments played in parallel"
    )
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (same for all policies)")
    p.add_argument("--random", type=str2bool, default=True, help="also evaluate a random policy")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    import torch

    from cpc.checkpoint import CheckpointError
    from cpc.config import ConfigError
    from cpc.io import write_json_atomic
    from cpc.log import setup_logging
    from cpc.rl.config import load_train_config
    from cpc.rl.envs import EnvError
    from cpc.rl.evaluate import load_agent, run_episodes, summary

    setup_logging()
    torch.set_num_threads(1)
    out = Path(args.out_dir)
    jobs = []
    try:
        if args.random:
            jobs.append(("random", None, load_train_config(args.config, args.override), None))
        for item in args.checkpoints:
            name, sep, path = item.partition("=")
            if not sep or not name:
                raise ConfigError(f"--checkpoints {item!r}: expected name=path/to/best.pt")
            model, cfg, state = load_agent(path)
            jobs.append((name, model, cfg, state))
        for name, model, cfg, state in jobs:
            res = run_episodes(
                cfg, args.episodes, args.seed, model, num_envs=args.num_envs, progress=True
            )
            rec = {
                "policy": name,
                "suite": cfg.env.suite,
                "level": cfg.env.level,
                **summary(res["returns"]),
                "step": None if state is None else int(state["step"]),
                **res,
            }
            write_json_atomic(out / f"{name}.json", rec)
            logging.info(
                f"{name}: mean return {rec['mean']:.3f} +- {rec['sem']:.3f} (sem) over "
                f"{rec['episodes']} episodes ({res['seconds']:.1f} s)"
            )
    except (ConfigError, CheckpointError, EnvError, FileNotFoundError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
