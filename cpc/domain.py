"""What a domain package gives the generic command-line tools (``local/train.py``,
``local/probe.py``, ``local/make_results.py``).

Each domain package ``cpc/<name>/`` (``audio``, later ``vision``, ``text``, ``rl``) has a
module ``cpc/<name>/domain.py`` defining ``DOMAIN``, a :class:`Domain`. A training config
names its domain in its top-level ``domain:`` key; a feature dump or an experiment carries
it in what it records. :func:`load_domain` imports the module by that name when a tool asks
for it: the core never imports a domain package itself.

A domain provides:

- ``load_config(path, overrides)``: its validated config dataclass, with sections
  ``model``, ``data``, ``optim`` (:class:`cpc.optim.OptimConfig`) and ``train``
  (:class:`cpc.trainer.TrainerConfig`) and a ``domain`` field;
- ``build_model(cfg)``: the randomly initialised model (the caller seeds torch first);
- ``build_data(cfg, data_dir, env)``: a :class:`PretrainData` (training stream, optional
  held-out split, the data's identity for checkpoints); a domain whose data is collected by
  the model being trained (reinforcement learning: on-policy unrolls) sets
  ``data_reads_model`` and gets that model too, ``build_data(cfg, data_dir, env, model=model)``;
- ``run_only_keys``: its config keys that do not change the trained weights;
- ``probe_tasks``: ``{name: ProbeTask}`` (:mod:`cpc.probe_runner`), run by
  ``local/probe.py <name>``;
- ``results``: a :class:`cpc.results.ResultsSpec`, the results table of ``local/make_results.py``;
- ``errors``: its exception types for bad input, whose message already names the file and
  the fix (the tools print them as one line, without a traceback).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cpc.config import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class PretrainData:
    """What a domain's data gives the trainer: ``train`` (:class:`cpc.trainer.TrainData`),
    ``valid`` (:class:`cpc.trainer.ValidData` or None) and ``identity`` (a JSON-able
    signature of the training data by content, stored in checkpoints)."""

    train: Any
    valid: Any
    identity: dict[str, Any]


@dataclass
class Domain:
    """A domain's entry points (see the module docstring)."""

    name: str
    description: str
    load_config: Callable[..., Any]
    build_model: Callable[[Any], Any]
    build_data: Callable[..., PretrainData]
    run_only_keys: tuple[str, ...] = ()
    probe_tasks: dict[str, Any] = field(default_factory=dict)
    results: Any = None
    errors: tuple[type[Exception], ...] = ()  # bad-input errors: printed as one line, exit 1
    data_reads_model: bool = False  # build_data also gets model= (the model being trained)


def available_domains() -> list[str]:
    """Names of the domain packages that define ``domain.py``."""
    root = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(root)])
        if m.ispkg and (root / m.name / "domain.py").is_file()
    )


def load_domain(name: str) -> Domain:
    """The :class:`Domain` of ``cpc/<name>/domain.py``; ConfigError names the choices."""
    choices = available_domains()
    if not _NAME.match(str(name)) or name not in choices:
        raise ConfigError(f"unknown domain {name!r}; available: {', '.join(choices)}")
    module = importlib.import_module(f"cpc.{name}.domain")
    domain = getattr(module, "DOMAIN", None)
    if not isinstance(domain, Domain):
        raise ConfigError(f"cpc/{name}/domain.py defines no DOMAIN (a cpc.domain.Domain)")
    return domain


def config_domain(path: str | Path) -> str:
    """The ``domain:`` of a YAML training config; ConfigError (naming the file and the fix)
    when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    name = data.get("domain") if isinstance(data, dict) else None
    if not name:
        raise ConfigError(
            f"{path}: no top-level 'domain:' key; add the domain the config is for, e.g. "
            f"'domain: audio' (available: {', '.join(available_domains())})"
        )
    return str(name)
