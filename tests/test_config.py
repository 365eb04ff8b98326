"""cpc.config: strict YAML -> dataclass loading, overrides, diffs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from cpc.config import ConfigError, config_to_dict, diff_configs, load_config, save_config


@dataclass
class Model:
    channels: int = 512
    strides: list[int] = field(default_factory=lambda: [5, 4, 2, 2, 2])
    norm: Literal["none", "batch", "layer"] = "none"


@dataclass
class Optim:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    name: str | None = None
    bf16: bool = False


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "model:\n  channels: 64\noptim:\n  lr: 1e-3\n")
    cfg = load_config(Cfg, p, ["model.norm=layer", "bf16=true", "optim.betas=[0.8, 0.9]"])
    assert cfg.model.channels == 64 and cfg.model.norm == "layer"
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.optim.betas == (0.8, 0.9) and cfg.bf16 is True
    assert cfg.model.strides == [5, 4, 2, 2, 2]


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "model:\n  chanels: 64\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    assert str(p) in str(e.value) and "chanels" in str(e.value) and "channels" in str(e.value)
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(Cfg, None, ["optimizer.lr=1"])


def test_type_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="integer"):
        load_config(Cfg, None, ["model.channels=abc"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(Cfg, None, ["model.norm=group"])
    with pytest.raises(ConfigError, match="true/false"):
        load_config(Cfg, None, ["bf16=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["bf16"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")


def test_round_trip_and_diff(tmp_path: Path) -> None:
    cfg = load_config(Cfg, None, ["model.channels=128"])
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(Cfg, tmp_path / "saved.yaml")
    assert again == cfg
    d = diff_configs(config_to_dict(Cfg()), config_to_dict(cfg))
    assert d == ["model.channels: 512 -> 128"]
