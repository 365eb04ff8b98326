"""The rl domain's entry points for the generic tools (see :mod:`cpc.domain`).

- config: :func:`cpc.rl.config.load_train_config` (``domain: rl``);
- model: :class:`cpc.rl.model.A2CAgent` (with CPC predictors when ``model.cpc``);
- data: :class:`cpc.rl.rollout.UnrollData`, unrolls collected by the model being trained
  (``data_reads_model``); ``data_dir`` is not read. The identity is the environment (suite,
  level, simulator version).
- no probe tasks and no generic results table: egs/dmlab/local/make_results.py writes the
  returns table and the learning curves.
"""

from __future__ import annotations

from typing import Any

import torch

from cpc.domain import Domain, PretrainData
from cpc.io import Pathlike
from cpc.rl.config import RLTrainConfig, load_train_config
from cpc.rl.envs import EnvError, num_actions, observation_shape, simulator_version


def build_model(cfg: RLTrainConfig) -> Any:
    """The untrained :class:`cpc.rl.model.A2CAgent` for the environment of ``cfg``."""
    from cpc.rl.model import A2CAgent

    return A2CAgent(observation_shape(cfg.env), num_actions(cfg.env), cfg.model)


def data_identity(cfg: RLTrainConfig) -> dict[str, Any]:
    """What the training data is: the environment and the simulator's version."""
    return {
        "suite": cfg.env.suite,
        "level": cfg.env.level,
        "simulator": simulator_version(cfg.env.suite),
    }


def build_data(
    cfg: RLTrainConfig, data_dir: Pathlike = "", env: Any = None, model: Any = None
) -> Any:
    """On-policy unrolls collected by ``model`` (no held-out split)."""
    from cpc.rl.rollout import UnrollData

    if model is None:
        raise ValueError("the rl domain collects its data with the model: pass model=")
    if cfg.data.threads > 0:
        torch.set_num_threads(cfg.data.threads)
    return PretrainData(train=UnrollData(cfg, model), valid=None, identity=data_identity(cfg))


DOMAIN = Domain(
    name="rl",
    description="reinforcement learning: A2C with a CPC auxiliary loss (paper section 3.4)",
    load_config=load_train_config,
    build_model=build_model,
    build_data=build_data,
    run_only_keys=("data.num_workers", "data.step_timeout", "data.threads"),
    errors=(EnvError,),
    data_reads_model=True,
)
