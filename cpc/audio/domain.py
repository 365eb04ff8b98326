"""The speech domain's entry points for the generic tools (see :mod:`cpc.domain`).

- config: :func:`cpc.audio.config.load_train_config` (``domain: audio``);
- model: :class:`cpc.audio.model.CPCAudio` (``model.objective``: CPC, or the supervised
  phone / speaker baselines of the paper's Table 1, trained with the same data and budget);
- data: the stage-1 train cuts of ``data_dir`` (``librispeech_cuts_train.jsonl.gz``), less
  a held-out validation share (``data.valid_fraction``), as fixed-length waveform windows;
  the identity is :func:`cpc.audio.data.data_signature` of all those cuts;
- probe tasks: ``phone`` and ``speaker`` (:mod:`cpc.audio.probe_tasks`);
- results: the paper's Table 1 layout (:mod:`cpc.audio.results`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cpc.audio.config import CPCTrainConfig, load_train_config
from cpc.audio.data import AudioDataError
from cpc.audio.librispeech import DataPrepError
from cpc.audio.probe_tasks import TASKS
from cpc.audio.results import SPEC
from cpc.domain import Domain, PretrainData
from cpc.features import FeatureDumpError
from cpc.io import Pathlike
from cpc.probe_runner import ProbeError


def build_model(cfg: CPCTrainConfig) -> Any:
    """The untrained :class:`cpc.audio.model.CPCAudio` of ``cfg.model``."""
    from cpc.audio.model import build_cpc_model

    return build_cpc_model(cfg.model)


def build_data(cfg: CPCTrainConfig, data_dir: Pathlike, env: Any = None) -> PretrainData:
    """Training windows, validation windows and the data identity from the stage-1 cuts in
    ``data_dir``; FileNotFoundError (saying to run stages 0-1) if they are missing."""
    from cpc.audio.data import (
        AudioWindowData,
        ValidWindows,
        data_signature,
        load_train_cuts,
        split_valid,
    )

    cuts = list(load_train_cuts(Path(data_dir)))
    d, rate = cfg.data, cfg.model.sample_rate
    train_cuts, valid_cuts = split_valid(cuts, d.valid_fraction, d.window, rate)
    pin = env is not None and env.device.type == "cuda"
    objective = cfg.model.objective
    labels = objective == "phone"
    train = AudioWindowData(
        train_cuts, d, seed=cfg.train.seed, sample_rate=rate, pin_memory=pin, with_labels=labels
    )
    if objective == "speaker" and cfg.model.num_classes != len(train.speakers):
        raise AudioDataError(
            f"{data_dir}: model.objective=speaker with model.num_classes="
            f"{cfg.model.num_classes}, but the training cuts have {len(train.speakers)} "
            f"speakers; set model.num_classes={len(train.speakers)}"
        )
    index = {s: i for i, s in enumerate(train.speakers)} if objective == "speaker" else None
    valid = (
        ValidWindows(valid_cuts, d, sample_rate=rate, speaker_index=index, with_labels=labels)
        if valid_cuts
        else None
    )
    if valid is not None and len(valid) == 0:
        logging.warning(
            f"the {len(valid_cuts)} validation cut(s) give no full batch of {d.batch_size} "
            "windows: no validation, best.pt will be the final model (raise "
            "data.valid_fraction)"
        )
        valid = None
    return PretrainData(train=train, valid=valid, identity=data_signature(cuts))


DOMAIN = Domain(
    name="audio",
    description="speech: CPC on raw 16 kHz waveforms (paper section 3.1)",
    load_config=load_train_config,
    build_model=build_model,
    build_data=build_data,
    run_only_keys=("data.num_workers", "data.prefetch_factor"),
    probe_tasks=TASKS,
    results=SPEC,
    errors=(AudioDataError, DataPrepError, FeatureDumpError, ProbeError),
)
