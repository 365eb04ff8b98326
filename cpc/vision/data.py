"""Training and evaluation data for the vision domain: manifest images -> patch-grid batches,
decoded and augmented in DataLoader workers.

- :class:`PatchTrainData` (a :class:`cpc.trainer.TrainData`): epochs of a seeded shuffle of
  the training images (less the validation hold-out), cut into global batches of
  ``batch_size x processes x grad_accum`` images; rank ``r`` takes its contiguous share.
  Each image's augmentation is drawn from a generator seeded by ``(seed, epoch, place in
  the epoch)``, so a global batch does not depend on how it is split across processes and
  accumulation steps, and a resumed run (position ``{"epoch", "batch"}``) sees exactly the
  batches it would have seen.
- :class:`PatchValidData`: the hold-out (the last ``valid_images`` of a fixed shuffle of the
  training images, seed 0), training views with fixed seeds, as whole batches.
- :func:`eval_loader`: a manifest split in order, evaluation views (no augmentation; the
  patches as :func:`cpc.vision.patches.eval_patches` gives them), for feature extraction.

A batch is ``{"patches": (B, G, G, C, P, P) float32, "label": (B,) int64}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cpc.vision.config import VisionDataConfig
from cpc.vision.imagenet import Manifest
from cpc.vision.patches import eval_patches, open_image, train_patches


def image_seed(seed: int, epoch: int, place: int) -> int:
    """Seed of the augmentation of the image at ``place`` of epoch ``epoch`` (63 bits, so
    that arrays of seeds stay int64)."""
    state = np.random.SeedSequence([seed, epoch + 1, place]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def _seeds(seed: int, epoch: int, places: np.ndarray) -> np.ndarray:
    return np.array([image_seed(seed, epoch, int(p)) for p in places], dtype=np.int64)


def split_holdout(n: int, valid_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, valid indices)``: the last ``valid_images`` of a fixed shuffle
    (seed 0) of ``range(n)`` are held out (at most half of the images)."""
    perm = np.random.default_rng(0).permutation(n)
    k = min(valid_images, n // 2)
    return np.sort(perm[: n - k]), np.sort(perm[n - k :])


class _GridDataset(Dataset):
    """Item: ``(indices, seeds or None, extra)`` -> ``(batch, extra)``; seeds None gives
    evaluation views."""

    def __init__(self, manifest: Manifest, cfg: VisionDataConfig, view: str = "subcrop") -> None:
        self.manifest, self.cfg, self.view = manifest, cfg, view

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, item: tuple[np.ndarray, np.ndarray | None, Any]) -> tuple[dict, Any]:
        indices, seeds, extra = item
        grids = []
        gen = torch.Generator()
        for n, i in enumerate(indices):
            img = open_image(self.manifest.full_path(int(i)), self.cfg.greyscale)
            if seeds is None:
                grids.append(eval_patches(img, self.cfg, self.view))
            else:
                gen.manual_seed(int(seeds[n]))
                grids.append(train_patches(img, self.cfg, gen))
        labels = torch.from_numpy(self.manifest.labels[np.asarray(indices, dtype=np.int64)])
        return {"patches": torch.stack(grids), "label": labels}, extra


class _PlanSampler(Sampler):
    """This rank's share of every global batch from a position on (forever)."""

    def __init__(
        self, data: PatchTrainData, position: dict[str, int], rank: int, world: int, accum: int
    ) -> None:
        self.data, self.rank = data, rank
        self.share = data.cfg.batch_size * accum
        self.global_batch = self.share * world
        self.position = dict(position)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, int]]]:
        epoch, b = self.position["epoch"], self.position["batch"]
        nb = self.data.batches_per_epoch(self.global_batch)
        while True:
            order = self.data.epoch_order(epoch)
            while b < nb:
                places = b * self.global_batch + self.rank * self.share + np.arange(self.share)
                seeds = _seeds(self.data.seed, epoch, places)
                nxt = (
                    {"epoch": epoch, "batch": b + 1}
                    if b + 1 < nb
                    else {"epoch": epoch + 1, "batch": 0}
                )
                yield order[places], seeds, nxt
                b += 1
            epoch, b = epoch + 1, 0


class PatchTrainData:
    """Training batches (module docstring)."""

    def __init__(
        self,
        manifest: Manifest,
        indices: np.ndarray,
        cfg: VisionDataConfig,
        seed: int,
        pin_memory: bool = False,
    ) -> None:
        self.cfg, self.seed, self.indices = cfg, seed, np.asarray(indices, dtype=np.int64)
        self.dataset = _GridDataset(manifest, cfg)
        self.pin_memory = pin_memory

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Manifest indices of the training images in epoch ``epoch``'s order."""
        rng = np.random.default_rng([self.seed, epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def batches_per_epoch(self, global_batch: int) -> int:
        nb = len(self.indices) // global_batch
        if nb == 0:
            raise ValueError(
                f"{len(self.indices)} training images give no global batch of {global_batch}; "
                "lower data.batch_size or use more images"
            )
        return nb

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, int]]]:
        sampler = _PlanSampler(
            self, position or {"epoch": 0, "batch": 0}, rank, world_size, grad_accum
        )
        nw = self.cfg.num_workers
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=nw,
            prefetch_factor=self.cfg.prefetch_factor if nw > 0 else None,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        yield from loader  # the sampler never ends; closing this generator ends the workers


class PatchValidData:
    """The hold-out as a :class:`cpc.trainer.ValidData`: whole batches of training views
    with fixed seeds; batch ``i`` goes to rank ``i % world_size``."""

    def __init__(self, manifest: Manifest, indices: np.ndarray, cfg: VisionDataConfig) -> None:
        self.dataset = _GridDataset(manifest, cfg)
        n = len(indices) // cfg.batch_size * cfg.batch_size
        self.plan = np.asarray(indices[:n], dtype=np.int64).reshape(-1, cfg.batch_size)
        logging.info(f"validation data: {len(self.plan)} batches of {cfg.batch_size} images")

    def __len__(self) -> int:
        return len(self.plan)

    def eval_batches(self, rank: int, world_size: int) -> Iterator[tuple[int, dict]]:
        for i in range(rank, len(self.plan), world_size):
            seeds = _seeds(0, -1, self.plan[i])
            batch, _ = self.dataset[(self.plan[i], seeds, None)]
            yield i, batch


def eval_loader(
    manifest: Manifest,
    indices: np.ndarray,
    cfg: VisionDataConfig,
    batch_size: int,
    num_workers: int,
    view: str = "subcrop",
) -> DataLoader:
    """Batches of evaluation views of ``indices`` in order: ``(batch, indices)`` pairs;
    ``view``: the patches (:func:`cpc.vision.patches.eval_patches`)."""
    ds = _GridDataset(manifest, cfg, view)
    items = [
        (indices[a : a + batch_size], None, indices[a : a + batch_size])
        for a in range(0, len(indices), batch_size)
    ]
    return DataLoader(
        ds,
        batch_size=None,
        sampler=items,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers > 0 else None,
    )
