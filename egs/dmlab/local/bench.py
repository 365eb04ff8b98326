#!/usr/bin/env python3
"""Benchmark of the dmlab recipe's moving parts: environment steps/s, learner updates/s of
the baseline and the CPC agent, and end-to-end frames/s of training (collection + learning).

Input:  --config (+ --override), the sizes below.
Output: --out JSON (and the log): ``env`` (random-policy agent steps/s, one environment in
        this process and the vectorised environments in workers), ``learner`` per agent
        (seconds per update on a fixed random batch, frames/s the learner alone could
        take), ``train`` per agent (frames/s of --updates real updates, collection included)
        and the CPC/baseline ratios (measured in this one run, so comparable under load).

Example (from egs/dmlab):
    python local/bench.py --config conf/vizdoom.yaml --out exp/bench.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def get_parser() -> argparse.ArgumentParser:
    from cpc.cli import HelpFormatter, positive_int

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="training config (domain: rl)")
    p.add_argument("--override", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--out", required=True, help="JSON output")
    p.add_argument("--env-steps", type=positive_int, default=2000, help="random steps to time")
    p.add_argument("--learner-updates", type=positive_int, default=10, help="timed learner updates")
    p.add_argument("--updates", type=positive_int, default=10, help="timed end-to-end updates")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p


def _learner(cfg, cpc: bool, updates: int) -> float:
    """Seconds per update (forward, backward, optimizer) on a fixed random batch."""
    import torch

    from cpc.optim import build_optimizer
    from cpc.rl.domain import build_model
    from cpc.rl.envs import observation_shape

    cfg.model.cpc = cpc
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model.parameters(), cfg.optim, torch.device("cpu"))
    n, t = cfg.data.num_envs, cfg.data.unroll
    g = torch.Generator().manual_seed(0)
    first = torch.rand(n, t + 1, generator=g) < 0.01
    dones = first[:, 1:].clone()
    batch = {
        "obs": torch.randint(0, 256, (n, t + 1, *observation_shape(cfg.env)), dtype=torch.uint8),
        "first": first,
        "actions": torch.randint(0, model.num_actions, (n, t), generator=g),
        "rewards": torch.randn(n, t, generator=g),
        "dones": dones,
        "h0": torch.zeros(n, cfg.model.core_dim),
        "c0": torch.zeros(n, cfg.model.core_dim),
        "episodes": torch.zeros(n),
        "episode_return": torch.zeros(n),
    }

    def step():
        out = model(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(updates):
        step()
    return (time.perf_counter() - t0) / updates


def _train(cfg, cpc: bool, updates: int) -> float:
    """End-to-end frames/s of ``updates`` training updates (collection + learning)."""
    import torch

    from cpc.optim import build_optimizer
    from cpc.rl.domain import build_data, build_model

    cfg.model.cpc = cpc
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model.parameters(), cfg.optim, torch.device("cpu"))
    data = build_data(cfg, "", model=model).train
    it = data.batches(None, 0, 1, 1)
    batch, _ = next(it)  # environments started, first unroll
    t0 = time.perf_counter()
    for _ in range(updates):
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        batch, _ = next(it)
    seconds = time.perf_counter() - t0
    it.close()
    return updates * data.frames_per_batch() / seconds


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    import torch

    from cpc.io import write_json_atomic
    from cpc.log import setup_logging
    from cpc.rl.config import load_train_config
    from cpc.rl.evaluate import check_environment

    setup_logging()
    torch.set_num_threads(args.threads)
    cfg = load_train_config(args.config, args.override + [f"data.threads={args.threads}"])
    env = check_environment(cfg, args.env_steps, seed=0)
    env.pop("frame")
    res = {"config": args.config, "overrides": args.override, "threads": args.threads, "env": env}
    frames_per_update = cfg.data.num_envs * cfg.data.unroll * cfg.env.action_repeat
    res["frames_per_update"] = frames_per_update
    for key, fn, n in (
        ("learner", _learner, args.learner_updates),
        ("train", _train, args.updates),
    ):
        res[key] = {}
        for agent, cpc in (("baseline", False), ("cpc", True)):
            value = fn(cfg, cpc, n)
            if key == "learner":
                res[key][agent] = {
                    "sec_per_update": value,
                    "frames_per_sec": frames_per_update / value,
                }
            else:
                res[key][agent] = {"frames_per_sec": value}
            logging.info(f"{key} {agent}: {res[key][agent]}")
    res["learner_cpc_over_baseline_time"] = (
        res["learner"]["cpc"]["sec_per_update"] / res["learner"]["baseline"]["sec_per_update"]
    )
    res["train_cpc_over_baseline_fps"] = (
        res["train"]["cpc"]["frames_per_sec"] / res["train"]["baseline"]["frames_per_sec"]
    )
    logging.info(
        f"env: {env['steps_per_sec_one_env']:.0f} agent steps/s (one env), "
        f"{env['frames_per_sec_vector']:.0f} frames/s vectorised; CPC/baseline: learner time "
        f"x{res['learner_cpc_over_baseline_time']:.2f}, training frames/s "
        f"x{res['train_cpc_over_baseline_fps']:.2f}"
    )
    write_json_atomic(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
