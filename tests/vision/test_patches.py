"""Patch-grid geometry: positions, overlap, sub-crop padding; the views' sizes and seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cpc.config import ConfigError
from cpc.vision.config import VisionDataConfig, load_train_config
from cpc.vision.patches import (
    centre_subcrop_patches,
    eval_patches,
    patch_grid,
    subcrop_patches,
    train_patches,
    train_view,
)


def ramp(c: int, s: int) -> torch.Tensor:
    """An image whose every pixel value is unique: value = channel * s * s + row * s + col."""
    return torch.arange(c * s * s, dtype=torch.float32).view(c, s, s)


@pytest.mark.parametrize(("size", "patch", "stride"), [(256, 64, 32), (64, 16, 8), (32, 8, 4)])
def test_grid_positions_and_overlap(size: int, patch: int, stride: int) -> None:
    img = ramp(2, size)
    g = patch_grid(img, patch, stride)
    assert g.shape == (7, 7, 2, patch, patch)  # the paper's 7x7 grid at every scale
    for i in (0, 3, 6):
        for j in (0, 5, 6):
            top, left = i * stride, j * stride
            assert torch.equal(g[i, j], img[:, top : top + patch, left : left + patch])
    overlap = patch - stride  # 32 px in the paper
    assert torch.equal(g[2, 3][:, :, stride:], g[2, 4][:, :, :overlap])
    assert torch.equal(g[2, 3][:, stride:, :], g[3, 3][:, :overlap, :])
    assert g[6, 6][0, -1, -1] == size * size - 1  # the last patch ends at the corner


def test_subcrop_is_a_random_window_padded_back_centred() -> None:
    g = patch_grid(ramp(1, 64) + 1.0, 16, 8)  # +1: no pixel is 0, so padding is visible
    out = subcrop_patches(g, 12, torch.Generator().manual_seed(0))
    assert out.shape == g.shape
    a = (16 - 12) // 2
    offsets = set()
    for i in range(7):
        for j in range(7):
            p, src = out[i, j, 0], g[i, j, 0]
            inner = p[a : a + 12, a : a + 12]
            mask = torch.ones_like(p, dtype=torch.bool)
            mask[a : a + 12, a : a + 12] = False
            assert torch.all(p[mask] == 0)  # zero padding outside the crop
            # the crop is a contiguous 12x12 window of the original patch
            oy = int((inner[0, 0] - src[0, 0]) // 64)
            ox = int((inner[0, 0] - src[0, 0]) % 64)
            assert 0 <= oy <= 4 and 0 <= ox <= 4
            assert torch.equal(inner, src[oy : oy + 12, ox : ox + 12])
            offsets.add((oy, ox))
    assert len(offsets) > 5  # each patch draws its own offsets
    again = subcrop_patches(g, 12, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(subcrop_patches(g, 16, torch.Generator()), g)  # no sub-crop


def test_views_sizes_flip_and_scaling() -> None:
    cfg = VisionDataConfig(resize=36, crop=32, patch=8, stride=4, subcrop=6, flip_prob=1.0)
    arr = np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))  # brightness grows to the right
    img = Image.fromarray(arr, mode="L")
    v = train_view(img, cfg, torch.Generator().manual_seed(1))
    assert v.shape == (1, 32, 32) and v.min() >= -1 and v.max() <= 1
    assert v[0, 10, 0] > v[0, 10, -1]  # flipped: brighter on the left
    assert train_patches(img, cfg, torch.Generator().manual_seed(1)).shape == (7, 7, 1, 8, 8)
    e = eval_patches(img, cfg)
    assert e.shape == (7, 7, 1, 8, 8) and e[3, 0, 0, 4, 1] < e[3, 6, 0, 4, 6]  # not flipped


@pytest.mark.parametrize(("patch", "subcrop"), [(8, 6), (64, 60), (16, 13), (8, 8)])
def test_evaluation_subcrop_is_the_centre_of_the_training_layout(patch: int, subcrop: int) -> None:
    g = patch_grid(ramp(2, 3 * patch), patch, patch)
    e = centre_subcrop_patches(g, subcrop)
    a = (patch - subcrop) // 2
    inside = torch.zeros(patch, patch, dtype=torch.bool)
    inside[a : a + subcrop, a : a + subcrop] = True
    assert torch.equal(e[..., inside], g[..., inside])  # the patch's own pixels, unmoved
    assert not e[..., ~inside].any()  # a zero border, as training pads
    # training places its random sub-crops in exactly the same square: same support
    t = subcrop_patches(g + 1, subcrop, torch.Generator().manual_seed(3))
    assert t[..., inside].all() and not t[..., ~inside].any()


def test_eval_views(tmp_path) -> None:
    cfg = VisionDataConfig(resize=36, crop=32, patch=8, stride=4, subcrop=6)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(1, 255, (28, 28), dtype=np.uint8), mode="L")
    whole = eval_patches(img, cfg, "whole")
    assert torch.equal(whole, eval_patches(img, cfg, "whole"))  # deterministic
    assert torch.equal(eval_patches(img, cfg), centre_subcrop_patches(whole, 6))  # the default
    assert eval_patches(img, cfg)[..., 0, :].abs().sum() == 0 and whole[..., 0, :].abs().sum() > 0
    with pytest.raises(ValueError, match="evaluation view 'centre' is not one of"):
        eval_patches(img, cfg, "centre")


def test_config_refuses_grids_that_do_not_fit(tmp_path) -> None:
    with pytest.raises(ConfigError, match="multiple of data.stride"):
        load_train_config(None, ["data.crop=250"])
    with pytest.raises(ConfigError, match="too few to predict"):
        load_train_config(None, ["model.prediction_steps=7"])
    with pytest.raises(ConfigError, match="subcrop"):
        load_train_config(None, ["data.subcrop=65"])
    cfg = load_train_config(None)  # the paper's set-up
    assert (cfg.data.grid, cfg.model.feature_dim, cfg.model.blocks) == (7, 1024, [3, 4, 23])
