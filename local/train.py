#!/usr/bin/env python3
"""CPC pre-training for any domain (stage 2 of the recipes), under torchrun or alone.

The domain comes from the config's top-level ``domain:`` key (e.g. ``audio``): its package
builds the model and the data (see cpc/domain.py); the loop is cpc.trainer.Trainer.

Inputs:
  --config        YAML training config (domain + sections model, data, optim, train), e.g.
                  egs/librispeech100/conf/cpc_small.yaml
  --override      config overrides section.key=value (e.g. optim.lr=1e-3 train.max_steps=200)
  --data-dir      where the domain's prepared data is (speech: the stage-1 manifests,
                  data/manifests/librispeech_cuts_train.jsonl.gz)
  --seed          random seed (model init, data order, negatives); sets train.seed

Outputs (in --exp-dir):
  config.yaml          the resolved config (written once the run is known to be resumable)
  cmd.txt              the command line of the latest invocation
  checkpoint-<N>.pt    training checkpoints (the newest train.keep_last are kept)
  best.pt              the checkpoint with the lowest validation loss (read by later stages)
  metrics.jsonl        training (loss, per-k accuracy, MI bound, lr, time) and validation
                       records
  tensorboard/         the same as TensorBoard scalars
  log/log-train-*      the log of each invocation

A run whose exp dir holds checkpoints resumes from the newest readable one and ends at the
same step. Checkpoints record what they were made from (config keys that shape training,
the data's content signature, the seed, processes x gradient accumulation): resuming one
made from other inputs is refused, naming the differences; --restart-exp true moves the old
experiment aside (renamed, never deleted) and trains from scratch instead.

Exit status: 0 done (or, with --check-only, nothing to refuse), 1 error, 3 (--check-only)
the exp dir holds checkpoints of other inputs.

Example (from egs/librispeech100):
  torchrun --standalone --nproc-per-node 2 ../../local/train.py --config conf/cpc_small.yaml \\
    --exp-dir exp/cpc_small --data-dir data/manifests --seed 42
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

EXIT_MISMATCH = 3


def get_parser() -> argparse.ArgumentParser:
    from cpc.cli import HelpFormatter, str2bool

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--exp-dir", required=True, help="experiment directory (outputs)")
    parser.add_argument(
        "--data-dir",
        "--manifest-dir",
        dest="data_dir",
        default="data/manifests",
        help="the domain's prepared training data (speech: the stage-1 cut manifests)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (sets train.seed)")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="config overrides section.key=value, space separated",
    )
    parser.add_argument(
        "--restart-exp",
        type=str2bool,
        default=False,
        help="if --exp-dir holds checkpoints made from other inputs, rename it to "
        "<exp-dir>.old-<time> and train from scratch (false: refuse, naming the differences)",
    )
    parser.add_argument(
        "--check-only",
        type=str2bool,
        default=False,
        help="only check whether --exp-dir can be resumed (exit 0) or holds checkpoints of "
        f"other inputs (exit {EXIT_MISMATCH}; with --restart-exp true they are moved aside "
        "and the exit status is 0); train nothing",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=0,
        help="with --check-only: the number of training processes the run will use (the check "
        "itself is one process; the global batch, processes x train.grad_accum x "
        "data.batch_size, is part of what a checkpoint was made from); 0: this launch's",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    # OpenMP threads that spin while waiting slow training down several times over when
    # other processes share the cores (measured: 0.55 vs 4.2 steps/s for conf/cpc_small.yaml
    # on 2 busy cores). It must be set before torch loads OpenMP, hence the imports below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import logging

    import torch
    import torch.distributed as dist

    from cpc.checkpoint import CheckpointError, IdentityMismatch, move_aside
    from cpc.config import ConfigError, config_to_dict, save_config
    from cpc.domain import config_domain, load_domain
    from cpc.infonce import NegativeSamplingError
    from cpc.io import command_line, write_text_atomic
    from cpc.log import setup_logging
    from cpc.trainer import Trainer, cleanup_distributed, init_distributed

    exp_dir = Path(args.exp_dir)
    try:
        domain = load_domain(config_domain(args.config))
        cfg = domain.load_config(args.config, args.override + [f"train.seed={args.seed}"])
    except ConfigError as e:
        setup_logging()
        logging.error(str(e))
        return 1
    env = init_distributed("cpu" if args.check_only else cfg.train.device)
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    log_file = None if args.check_only else exp_dir / "log" / f"log-train-{stamp}"
    setup_logging(log_file, rank=env.rank)
    ways_out = (
        "Either train under another name (run.sh --tag NEW; local/train.py --exp-dir NEW), or "
        f"pass --restart-exp true (run.sh or local/train.py), which renames {exp_dir} to "
        f"{exp_dir}.old-<time> and trains from scratch."
    )
    try:
        torch.manual_seed(cfg.train.seed)
        model = domain.build_model(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        logging.info(f"{domain.name} model: {n_params / 1e6:.2f} M parameters; {args.config}")
        extra = {"model": model} if domain.data_reads_model else {}
        data = domain.build_data(cfg, args.data_dir, env, **extra)

        # the preflight check runs as one process for a run of --world-size processes
        trainer_env = env
        if args.check_only and args.world_size > 0:
            trainer_env = dataclasses.replace(env, world_size=args.world_size)

        def trainer() -> Trainer:
            return Trainer(
                model,
                data.train,
                cfg.train,
                cfg.optim,
                exp_dir,
                config=config_to_dict(cfg),
                dist_env=trainer_env,
                valid_data=data.valid,
                data_identity=data.identity,
                run_only_keys=domain.run_only_keys,
            )

        t = trainer()
        try:
            t.prepare()  # refuses checkpoints of other inputs before anything is written
        except IdentityMismatch as e:
            if not args.restart_exp:
                if args.check_only:
                    logging.error(f"{e}\n{ways_out}")
                    return EXIT_MISMATCH
                raise CheckpointError(f"{e}\n{ways_out}") from e
            if env.is_main:
                old = move_aside(exp_dir)
                logging.warning(f"{exp_dir} held another experiment: moved it to {old}")
            if env.world_size > 1:
                dist.barrier()
            if log_file is not None:
                setup_logging(log_file, rank=env.rank)  # the old file moved with the old dir
            t = trainer()
            t.prepare()
        if args.check_only:
            return 0
        if env.is_main:
            save_config(cfg, exp_dir / "config.yaml")
            write_text_atomic(
                exp_dir / "cmd.txt",
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {env.world_size} process(es)\n"
                f"{command_line()}\n",
            )
        metrics = t.fit()
    except (
        ConfigError,
        CheckpointError,
        NegativeSamplingError,
        FileNotFoundError,
        *domain.errors,
    ) as e:
        logging.error(str(e))
        return 1
    finally:
        cleanup_distributed()
    if env.is_main and metrics:
        acc = metrics.get("accuracy") or []
        logging.info(
            f"final: step {metrics['step']}, loss {metrics['loss']:.4f}, "
            f"accuracy per k {[round(a, 3) for a in acc]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
