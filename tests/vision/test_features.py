"""Stage 3's image-level dumps: the evaluation view is part of a dump's identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpc.vision.config import load_train_config
from cpc.vision.features import dump_features
from cpc.vision.imagenet import prepare_manifests
from tests.vision.test_imagenet import make_tree

TINY = Path(__file__).resolve().parents[2] / "egs/imagenet/conf/cpc_tiny.yaml"


def test_eval_view_is_part_of_the_dump_identity(tmp_path: Path) -> None:
    prepare_manifests(make_tree(tmp_path / "in", per_class=2), tmp_path / "m")
    cfg = load_train_config(TINY, [])
    out = tmp_path / "random"

    def dump(view: str) -> tuple[dict, np.ndarray, int]:
        info = dump_features("random", tmp_path / "m", out, cfg, seed=3, eval_view=view)
        with np.load(out / "val.npz") as z:
            return info, z["x"], (out / "val.npz").stat().st_mtime_ns

    info, sub, t_sub = dump("subcrop")
    assert info["identity"]["eval_view"] == "subcrop" and sub.shape == (6, cfg.model.feature_dim)
    assert json.loads((out / "info.json").read_text()) == info
    _, again, t_again = dump("subcrop")
    assert t_again == t_sub and np.array_equal(again, sub)  # same identity: kept, no work
    info_w, whole, t_whole = dump("whole")
    assert info_w["identity"]["eval_view"] == "whole" and t_whole != t_sub  # rebuilt
    assert not np.allclose(whole, sub)  # the encoder saw other patches
    _, back, _ = dump("subcrop")
    assert np.array_equal(back, sub)  # deterministic
    with pytest.raises(ValueError, match="evaluation view 'centre' is not one of"):
        dump_features("random", tmp_path / "m", out, cfg, eval_view="centre")
