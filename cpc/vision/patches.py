"""Images -> augmented grids of patches (paper section 3.2), with Pillow and torchvision.

Training view (:func:`train_view`): shorter side resized to ``resize`` and centre-cropped
square, a random ``crop`` square, horizontal flip with probability ``flip_prob``, greyscale,
pixels scaled to [-1, 1]; then :func:`patch_grid` cuts it into ``grid x grid`` patches of
``patch`` pixels every ``stride`` pixels (overlap ``patch - stride``), and
:func:`subcrop_patches` takes a random ``subcrop`` square of each patch and pads it back to
``patch`` with zeros, centred (top/left padding ``(patch - subcrop) // 2``).

Evaluation view (:func:`eval_view`): the same resize, a centre crop, no flip; then the same
grid, and by default (``view="subcrop"``) the centre ``subcrop`` square of each patch padded
back exactly as in training, so that the frozen encoder sees patches with the statistics it
was trained on (a zero border of ``patch - subcrop`` pixels); ``view="whole"`` keeps whole
patches. Every random draw comes from the ``torch.Generator`` given, so a view is a function of the
image and the generator's seed.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cpc.vision.config import VisionDataConfig
from cpc.vision.imagenet import ImageDataError


def open_image(path: str, greyscale: bool) -> Image.Image:
    """Decode ``path`` with Pillow, converted to L (greyscale) or RGB; ImageDataError naming
    the file when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return im.convert("L" if greyscale else "RGB")
    except Exception as e:  # noqa: BLE001 - any decoding failure names the file
        raise ImageDataError(
            f"{path}: cannot decode ({type(e).__name__}: {e}); it changed since stage 0 "
            "checked it: restore it, or rerun stage 0"
        ) from e


def square(img: Image.Image, size: int) -> torch.Tensor:
    """Shorter side resized to ``size`` (bilinear, antialiased), centre-cropped square:
    ``(C, size, size)`` uint8."""
    t = TF.pil_to_tensor(img)
    t = TF.resize(t, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(t, [size, size])


def _to_float(t: torch.Tensor) -> torch.Tensor:
    return t.float().div_(127.5).sub_(1.0)


def train_view(img: Image.Image, cfg: VisionDataConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crop + flip of the resized square: ``(C, crop, crop)`` float in [-1, 1]."""
    t = square(img, cfg.resize)
    span = cfg.resize - cfg.crop + 1
    top, left = (int(v) for v in torch.randint(span, (2,), generator=gen))
    t = TF.crop(t, top, left, cfg.crop, cfg.crop)
    if float(torch.rand((), generator=gen)) < cfg.flip_prob:
        t = TF.horizontal_flip(t)
    return _to_float(t)


def eval_view(img: Image.Image, cfg: VisionDataConfig) -> torch.Tensor:
    """Centre crop of the resized square: ``(C, crop, crop)`` float in [-1, 1]."""
    return _to_float(TF.center_crop(square(img, cfg.resize), [cfg.crop, cfg.crop]))


def patch_grid(image: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``(C, S, S)`` -> ``(G, G, C, patch, patch)`` with ``G = (S - patch) // stride + 1``;
    patch ``[i, j]`` is ``image[:, i * stride : i * stride + patch, j * stride : ...]``."""
    p = image.unfold(1, patch, stride).unfold(2, patch, stride)  # (C, G, G, patch, patch)
    return p.permute(1, 2, 0, 3, 4).contiguous()


def subcrop_patches(grid: torch.Tensor, subcrop: int, gen: torch.Generator) -> torch.Tensor:
    """Each patch of ``(G, G, C, P, P)``: a random ``subcrop`` square (its own offsets),
    zero-padded back to ``P`` with the crop at ``(P - subcrop) // 2`` from the top and left."""
    g1, g2, c, p, _ = grid.shape
    if subcrop == p:
        return grid
    n = g1 * g2
    flat = grid.reshape(n, c, p, p)
    offs = torch.randint(p - subcrop + 1, (n, 2), generator=gen)
    rng = torch.arange(subcrop)
    rows = (offs[:, 0:1] + rng).view(n, 1, subcrop, 1).expand(n, c, subcrop, p)
    cols = (offs[:, 1:2] + rng).view(n, 1, 1, subcrop).expand(n, c, subcrop, subcrop)
    picked = flat.gather(2, rows).gather(3, cols)  # (n, c, subcrop, subcrop)
    return _pad_centred(picked, p).view(g1, g2, c, p, p)


def _pad_centred(crops: torch.Tensor, p: int) -> torch.Tensor:
    """``(..., s, s)`` crops zero-padded to ``(..., p, p)``, placed ``(p - s) // 2`` from the
    top and left (the layout of :func:`subcrop_patches`)."""
    s = crops.shape[-1]
    out = crops.new_zeros(*crops.shape[:-2], p, p)
    a = (p - s) // 2
    out[..., a : a + s, a : a + s] = crops
    return out


def centre_subcrop_patches(grid: torch.Tensor, subcrop: int) -> torch.Tensor:
    """The deterministic counterpart of :func:`subcrop_patches`: the centre ``subcrop``
    square of each patch (offset ``(patch - subcrop) // 2``), padded back the same way, so
    every pixel outside it is zero and every pixel inside it is the patch's own."""
    p = grid.shape[-1]
    a = (p - subcrop) // 2
    return _pad_centred(grid[..., a : a + subcrop, a : a + subcrop], p)


def train_patches(img: Image.Image, cfg: VisionDataConfig, gen: torch.Generator) -> torch.Tensor:
    """The training grid of one image: ``(G, G, C, P, P)``."""
    grid = patch_grid(train_view(img, cfg, gen), cfg.patch, cfg.stride)
    return subcrop_patches(grid, cfg.subcrop, gen)


EVAL_VIEWS = ("subcrop", "whole")


def eval_patches(img: Image.Image, cfg: VisionDataConfig, view: str = "subcrop") -> torch.Tensor:
    """The evaluation grid of one image: ``(G, G, C, P, P)``; ``view`` (:data:`EVAL_VIEWS`):
    ``subcrop`` the centre ``cfg.subcrop`` square of each patch, padded as in training;
    ``whole`` the whole patches."""
    if view not in EVAL_VIEWS:
        raise ValueError(f"evaluation view {view!r} is not one of {EVAL_VIEWS}")
    grid = patch_grid(eval_view(img, cfg), cfg.patch, cfg.stride)
    return centre_subcrop_patches(grid, cfg.subcrop) if view == "subcrop" else grid
