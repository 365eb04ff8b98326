#!/usr/bin/env python3
"""CPC pre-training on speech (stage 2), under torchrun or as a single process.

Inputs:
  --config        YAML training config (sections model, data, optim, train), e.g.
                  conf/cpc_small.yaml
  --override      config overrides ``section.key=value`` (e.g. optim.lr=1e-3 train.max_steps=200)
  --manifest-dir  directory with the stage-1 cuts librispeech_cuts_train.jsonl.gz
  --seed          random seed (model init, data order, negatives); sets train.seed

Outputs (in --exp-dir):
  config.yaml          the resolved config (written once the run is known to be resumable)
  cmd.txt              the command line of the latest invocation
  checkpoint-<N>.pt    training checkpoints (the newest train.keep_last are kept)
  best.pt              the final model, read by stage 3 (cpc.audio.model.load_cpc_model)
  metrics.jsonl        loss, per-k accuracy, MI bound, lr, time every train.log_interval steps
  tensorboard/         the same as TensorBoard scalars
  log/log-train-*      the log of each invocation

A run whose exp dir holds checkpoints resumes from the newest readable one and ends at the same
step count; a checkpoint of a different model config is refused with the differing keys.

Example (from egs/librispeech100):
  torchrun --standalone --nproc-per-node 2 ../../local/train.py --config conf/cpc_small.yaml \
    --exp-dir exp/cpc_small --manifest-dir data/manifests --seed 42
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--exp-dir", required=True, help="experiment directory (outputs)")
    parser.add_argument(
        "--manifest-dir",
        default="data/manifests",
        help="directory holding librispeech_cuts_train.jsonl.gz (stage 1)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (sets train.seed)")
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="config overrides section.key=value, space separated",
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

    from cpc.audio.config import load_train_config
    from cpc.audio.data import AudioDataError, AudioWindowData, load_train_cuts, train_cuts_path
    from cpc.audio.model import build_cpc_model
    from cpc.checkpoint import CheckpointError
    from cpc.config import ConfigError, config_to_dict, save_config
    from cpc.infonce import NegativeSamplingError
    from cpc.io import write_text_atomic
    from cpc.log import setup_logging
    from cpc.trainer import Trainer, cleanup_distributed, init_distributed

    exp_dir = Path(args.exp_dir)
    try:
        cfg = load_train_config(args.config, args.override + [f"train.seed={args.seed}"])
    except ConfigError as e:
        setup_logging()
        logging.error(str(e))
        return 1
    env = init_distributed(cfg.train.device)
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    setup_logging(exp_dir / "log" / f"log-train-{stamp}", rank=env.rank)
    try:
        if not train_cuts_path(args.manifest_dir).is_file():
            raise FileNotFoundError(
                f"{train_cuts_path(args.manifest_dir)} not found: run stages 0-1 first "
                "(./run.sh --stage 0 --stop-stage 1)"
            )
        torch.manual_seed(cfg.train.seed)
        model = build_cpc_model(cfg.model)
        n_params = sum(p.numel() for p in model.parameters())
        logging.info(f"model: {n_params / 1e6:.2f} M parameters; config {args.config}")
        data = AudioWindowData(
            load_train_cuts(args.manifest_dir),
            cfg.data,
            seed=cfg.train.seed,
            sample_rate=cfg.model.sample_rate,
            pin_memory=env.device.type == "cuda",
        )
        trainer = Trainer(
            model,
            data,
            cfg.train,
            cfg.optim,
            exp_dir,
            config=config_to_dict(cfg),
            dist_env=env,
        )
        trainer.prepare()  # refuses a checkpoint of another model before anything is written
        if env.is_main:
            save_config(cfg, exp_dir / "config.yaml")
            cmd = shlex.join([Path(sys.executable).name, *sys.argv])
            write_text_atomic(
                exp_dir / "cmd.txt",
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {env.world_size} process(es)\n{cmd}\n",
            )
        metrics = trainer.fit()
    except (
        ConfigError,
        CheckpointError,
        AudioDataError,
        NegativeSamplingError,
        FileNotFoundError,
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
