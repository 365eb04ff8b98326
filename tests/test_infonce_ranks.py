"""InfoNCE with negatives from every process (``InfoNCE(across_ranks=True)``): two gloo
processes, each holding half of a batch, compute the loss and (after DDP's average) the
gradients of one process holding the whole batch, on the sampled path (with group ids and
lengths gathered too) and the all-pairs path. Without it, each process's negatives come from
its own half, and the values differ."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from cpc.infonce import InfoNCE, gather_across_ranks
from tests.factories import free_port, init_gloo

B, T, C, D, K = 4, 9, 6, 5, 3
CASES = [  # (num_negatives, strategy, with lengths)
    (7, "batch", False),
    (7, "same_group", True),
    (0, "batch", True),
]


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {
        "x": torch.randn(B, T, C, generator=gen),
        "groups": torch.tensor([0, 1, 1, 0]),  # each half holds both groups
        "lengths": torch.tensor([9, 7, 9, 8]),
    }


def _loss_and_grads(
    case: tuple[int, str, bool], rows: slice, across: bool
) -> tuple[float, list[torch.Tensor]]:
    """Loss of ``rows`` of the batch and the gradients of its encoder, context and predictors.
    The negatives' generator has the same seed everywhere: the draws for the whole batch."""
    num_negatives, strategy, with_lengths = case
    torch.manual_seed(0)
    enc, ctx = torch.nn.Linear(C, D), torch.nn.Linear(C, 8)
    loss_fn = InfoNCE(8, D, K, num_negatives, strategy, across_ranks=across)
    data = _inputs()
    x = data["x"][rows]
    out = loss_fn(
        torch.tanh(ctx(x)),
        enc(x),
        groups=data["groups"][rows],
        lengths=data["lengths"][rows] if with_lengths else None,
        generator=torch.Generator().manual_seed(5),
    )
    params = [*enc.parameters(), *ctx.parameters(), *loss_fn.parameters()]
    grads = torch.autograd.grad(out["loss"], params)
    return float(out["loss"].detach()), list(grads)


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    init_gloo(rank, 2, port)
    try:
        res = {}
        for i, case in enumerate(CASES):
            for across in (True, False):
                loss, grads = _loss_and_grads(case, slice(2 * rank, 2 * rank + 2), across)
                for g in grads:  # what DDP does to the parameters' gradients
                    dist.all_reduce(g)
                    g /= 2
                res[(i, across)] = (loss, grads)
        x = torch.arange(3.0).view(3, 1) + 10 * rank
        res["gathered"] = gather_across_ranks(x)
        torch.save(res, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("ranks") / "rank")
    mp.spawn(_worker, args=(free_port(), out), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]


def test_gather_across_ranks_concatenates_in_rank_order(ranks: list[dict]) -> None:
    for r, res in enumerate(ranks):
        x, offset = res["gathered"]
        assert offset == 3 * r
        assert x.flatten().tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    x = torch.ones(2, 1)
    assert gather_across_ranks(x) == (x, 0)  # one process: itself


@pytest.mark.parametrize("i", range(len(CASES)))
def test_two_processes_with_gathered_negatives_equal_one_process(ranks: list[dict], i: int) -> None:
    one_loss, one_grads = _loss_and_grads(CASES[i], slice(0, B), across=True)
    (l0, g0), (l1, g1) = ranks[0][(i, True)], ranks[1][(i, True)]
    # every sequence has the same number of counted contexts per k only without lengths;
    # with lengths the per-process means weigh contexts differently, so compare the sum
    if not CASES[i][2]:
        assert (l0 + l1) / 2 == pytest.approx(one_loss, rel=1e-6)
        for a, b, want in zip(g0, g1, one_grads):
            torch.testing.assert_close(a, b)  # the average is the same on both processes
            torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-6)
    # the local-negatives variant differs from the one-process update
    (m0, h0), (m1, _) = ranks[0][(i, False)], ranks[1][(i, False)]
    assert (m0, m1) != (l0, l1)
    assert any(not torch.allclose(a, b) for a, b in zip(h0, g0))


def test_with_lengths_each_process_scores_its_own_contexts_against_all(ranks: list[dict]) -> None:
    """With lengths the per-process means weigh contexts differently from one process's
    mean, so compare each process's loss with the one-process loss of its own contexts,
    computed from the whole batch's candidates (the same draws)."""
    for i, case in enumerate(CASES):
        if not case[2]:
            continue
        for r in range(2):
            rows = slice(2 * r, 2 * r + 2)
            want = _own_rows_loss(case, rows)
            assert ranks[r][(i, True)][0] == pytest.approx(want, rel=1e-6)


def _own_rows_loss(case: tuple[int, str, bool], rows: slice) -> float:
    """One process, the whole batch's targets and draws, the loss of ``rows``' contexts."""
    from cpc.infonce import Negatives, info_nce, info_nce_all_pairs, sample_negatives

    num_negatives, strategy, _ = case
    torch.manual_seed(0)
    enc, ctx = torch.nn.Linear(C, D), torch.nn.Linear(C, 8)
    loss_fn = InfoNCE(8, D, K, num_negatives, strategy)
    data = _inputs()
    with torch.no_grad():
        z = enc(data["x"])
        pred = loss_fn.predictors(torch.tanh(ctx(data["x"][rows])))
        if num_negatives == 0:
            out = info_nce_all_pairs(
                pred, z, strategy, data["groups"], data["lengths"], offset=rows.start
            )
        else:
            neg = sample_negatives(
                B,
                T,
                num_negatives,
                strategy,
                data["groups"],
                data["lengths"],
                generator=torch.Generator().manual_seed(5),
            )
            neg = Negatives(seq=neg.seq[rows], time=neg.time[rows])
            out = info_nce(pred, z, neg, data["lengths"], offset=rows.start)
    return float(out["loss"])


def test_offset_outside_the_targets_is_refused() -> None:
    from cpc.infonce import Negatives, info_nce

    pred = torch.zeros(2, T, K, D)
    neg = Negatives(
        seq=torch.zeros(2, T, 1, dtype=torch.long), time=torch.zeros(2, T, 1, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="offset 3"):
        info_nce(pred, torch.zeros(4, T, D), neg, offset=3)
