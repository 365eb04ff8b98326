"""Negatives gathered across processes (``model.negatives_across_ranks``): two gloo
processes under DDP, each with half of a global batch, make the same update as one process
with the whole batch (whose negatives are every patch of it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cpc.vision.config import VisionModelConfig
from cpc.vision.model import CPCVision
from tests.factories import free_port, init_gloo

SMALL = dict(
    stem="conv3",
    stem_channels=8,
    widths=[4, 8, 8],
    blocks=[1, 1, 1],
    strides=[1, 2, 2],
    norm="layer",
    context_channels=16,
    context_layers=2,
    prediction_steps=3,
)
STEPS = 3


def _model(gather: bool) -> CPCVision:
    torch.manual_seed(0)
    return CPCVision(VisionModelConfig(**SMALL, negatives_across_ranks=gather))


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(4, 7, 7, 1, 8, 8, generator=gen) for _ in range(STEPS)]


def _train(model: torch.nn.Module, batches: list[torch.Tensor], part: slice) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for x in batches:
        out = model({"patches": x[part]})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    init_gloo(rank, 2, port)
    try:
        res = {}
        for gather in (True, False):
            model = _model(gather)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            losses = _train(ddp, _batches(), slice(2 * rank, 2 * rank + 2))
            res[gather] = {"state": model.state_dict(), "losses": losses}
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_with_gathered_negatives_equal_one_process(tmp_path: Path) -> None:
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    one = _model(False)
    one_losses = _train(one, _batches(), slice(0, 4))  # every patch of the 4 images
    for gather in (True, False):
        a, b = ranks[0][gather], ranks[1][gather]
        for k, v in a["state"].items():
            torch.testing.assert_close(v, b["state"][k])  # DDP kept the processes in sync
        mean_loss = [(x + y) / 2 for x, y in zip(a["losses"], b["losses"])]
        same = [
            torch.allclose(v, one.state_dict()[k], rtol=1e-4, atol=1e-5)
            for k, v in a["state"].items()
        ]
        if gather:  # each process's contexts against all 4 x 49 patches: the same update
            assert mean_loss == pytest.approx(one_losses, rel=1e-5) and all(same)
        else:  # each process against its own 2 x 49 patches: log(98) vs log(196) at first
            assert mean_loss[0] < one_losses[0] - 0.5 and not all(same)
