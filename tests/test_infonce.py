"""InfoNCE: vectorised loss == a naive loop; negative samplers obey their strategy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpc.infonce import (
    STRATEGIES,
    InfoNCE,
    Negatives,
    NegativeSamplingError,
    Predictors,
    info_nce,
    sample_negatives,
)

GROUPS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])


def naive_info_nce(pred, z, neg: Negatives, lengths=None):
    """Reference: explicit loops over b, t, k, n."""
    b_, t_, k_, _ = pred.shape
    lengths = lengths if lengths is not None else torch.full((b_,), t_)
    losses = [[] for _ in range(k_)]
    hits = [[] for _ in range(k_)]
    for b in range(b_):
        for t in range(t_):
            for k in range(1, k_ + 1):
                if t + k >= int(lengths[b]):
                    continue
                w_c = pred[b, t, k - 1]
                scores = [torch.dot(z[b, t + k], w_c)]
                for n in range(neg.seq.shape[-1]):
                    scores.append(torch.dot(z[neg.seq[b, t, n], neg.time[b, t, n]], w_c))
                s = torch.stack(scores)
                losses[k - 1].append(-F.log_softmax(s, 0)[0])
                hits[k - 1].append(float(bool(s[0] >= s[1:].max())))
    loss_k = torch.stack([torch.stack(x).mean() for x in losses])
    acc_k = torch.tensor([sum(h) / len(h) for h in hits])
    return loss_k, acc_k


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_vectorised_equals_naive(strategy, with_lengths):
    torch.manual_seed(0)
    b, t, k, d, c, n = 8, 9, 3, 5, 4, 4
    z = torch.randn(b, t, d)
    ctx = torch.randn(b, t, c)
    pred = Predictors(c, d, k)(ctx)
    lengths = torch.tensor([9, 5, 9, 7, 9, 6, 9, 8]) if with_lengths else None
    gen = torch.Generator().manual_seed(1)
    neg = sample_negatives(b, t, n, strategy, GROUPS, lengths, generator=gen)
    out = info_nce(pred, z, neg, lengths)
    ref_loss, ref_acc = naive_info_nce(pred, z, neg, lengths)
    torch.testing.assert_close(out["loss_per_k"], ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], ref_loss.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["accuracy"], ref_acc)
    torch.testing.assert_close(out["mi_bound"], math.log(n + 1) - out["loss"].detach())
    assert out["loss"].requires_grad


def test_loss_is_differentiable_and_matches_gradient_of_naive():
    torch.manual_seed(0)
    z = torch.randn(4, 6, 3, requires_grad=True)
    pred = torch.randn(4, 6, 2, 3, requires_grad=True)
    neg = sample_negatives(4, 6, 3, "mixed_speaker", generator=torch.Generator().manual_seed(0))
    info_nce(pred, z, neg)["loss"].backward()
    g1 = (z.grad.clone(), pred.grad.clone())
    z.grad = pred.grad = None
    naive_info_nce(pred, z, neg)[0].mean().backward()
    torch.testing.assert_close(g1[0], z.grad)
    torch.testing.assert_close(g1[1], pred.grad)


def _draw(strategy, lengths=None, n=64, t=20):
    gen = torch.Generator().manual_seed(3)
    return sample_negatives(len(GROUPS), t, n, strategy, GROUPS, lengths, generator=gen)


def test_excl_strategies_never_draw_from_current_sequence():
    for strategy in ("mixed_speaker_excl", "same_speaker_excl"):
        neg = _draw(strategy)
        own = torch.arange(len(GROUPS)).view(-1, 1, 1)
        assert not (neg.seq == own).any(), strategy


def test_same_strategies_stay_in_group():
    for strategy in ("same_speaker", "same_speaker_excl"):
        neg = _draw(strategy)
        assert (GROUPS[neg.seq] == GROUPS.view(-1, 1, 1)).all(), strategy
    # same_speaker includes the current sequence and reaches every member of the group
    neg = _draw("same_speaker")
    for b in range(len(GROUPS)):
        members = set(torch.nonzero(GROUPS == GROUPS[b]).flatten().tolist())
        assert set(neg.seq[b].flatten().tolist()) == members


def test_current_sequence_only_itself_and_mixed_reaches_all():
    neg = _draw("current_sequence")
    assert (neg.seq == torch.arange(len(GROUPS)).view(-1, 1, 1)).all()
    neg = _draw("mixed_speaker")
    for b in range(len(GROUPS)):
        assert set(neg.seq[b].flatten().tolist()) == set(range(len(GROUPS)))
    neg = _draw("mixed_speaker_excl")
    for b in range(len(GROUPS)):
        assert set(neg.seq[b].flatten().tolist()) == set(range(len(GROUPS))) - {b}


def test_sampling_is_uniform_over_candidates_and_valid_times():
    lengths = torch.tensor([20, 3, 20, 20, 20, 20, 20, 20])
    neg = _draw("same_speaker_excl", lengths, n=3000)
    # sequence 2 (group 1 = {2, 3, 4}) draws 3 and 4 equally often
    frac = (neg.seq[2] == 3).float().mean().item()
    assert abs(frac - 0.5) < 0.02
    # times stay inside each chosen sequence's valid frames and cover them
    assert (neg.time < lengths[neg.seq]).all() and (neg.time >= 0).all()
    from_short = neg.time[neg.seq == 1]
    assert set(from_short.tolist()) == {0, 1, 2}


def test_singleton_groups_raise_or_fall_back():
    groups = torch.tensor([0, 0, 1])  # group 1 has one sequence
    with pytest.raises(NegativeSamplingError, match=r"group\(s\) \[1\]"):
        sample_negatives(3, 5, 2, "same_speaker_excl", groups)
    with pytest.raises(NegativeSamplingError, match="at least 2 sequences"):
        sample_negatives(1, 5, 2, "mixed_speaker_excl")
    with pytest.raises(NegativeSamplingError, match="group id"):
        sample_negatives(3, 5, 2, "same_speaker")
    neg = sample_negatives(3, 5, 50, "same_speaker_excl", groups, on_empty="fallback")
    assert set(neg.seq[2].flatten().tolist()) == {0, 1}  # falls back to the other sequences
    assert (neg.seq[0] == 1).all() and (neg.seq[1] == 0).all()
    neg = sample_negatives(1, 5, 4, "mixed_speaker_excl", on_empty="fallback")
    assert (neg.seq == 0).all()  # alone in the batch: itself


def test_generator_makes_draws_reproducible():
    a = _draw("same_speaker")
    b = _draw("same_speaker")
    assert torch.equal(a.seq, b.seq) and torch.equal(a.time, b.time)


def test_infonce_module_and_shape_errors():
    torch.manual_seed(0)
    m = InfoNCE(context_dim=4, target_dim=6, num_steps=3, num_negatives=5, strategy="same_speaker")
    out = m(torch.randn(8, 10, 4), torch.randn(8, 10, 6), groups=GROUPS)
    assert out["accuracy"].shape == (3,) and out["loss_per_k"].shape == (3,)
    assert abs(out["loss"].item() - math.log(6)) < 1.0  # random init: near chance
    with pytest.raises(ValueError, match="too short"):
        m(torch.randn(8, 3, 4), torch.randn(8, 3, 6), groups=GROUPS)
    with pytest.raises(NegativeSamplingError, match="unknown"):
        InfoNCE(4, 6, 3, 5, strategy="nope")


def test_perfect_predictions_give_full_accuracy():
    # z orthonormal-ish and W_k c_t = large * z_{t+k}: the positive always wins
    b, t, k, d = 4, 8, 2, 64
    z = torch.nn.functional.normalize(torch.randn(b, t, d), dim=-1)
    pred = torch.zeros(b, t, k, d)
    for j in range(k):
        pred[:, : t - j - 1, j] = 20 * z[:, j + 1 :]
    neg = sample_negatives(
        b, t, 6, "mixed_speaker_excl", generator=torch.Generator().manual_seed(0)
    )
    out = info_nce(pred, z, neg)
    assert (out["accuracy"] == 1).all()
    assert out["loss"].item() < 0.01


def test_predictors_cpu_fast_path_equals_linear() -> None:
    """The fp32 CPU predictors (oneDNN matmul) give nn.Linear's values and gradients."""
    torch.manual_seed(0)
    pred = Predictors(16, 8, 3)
    ctx = torch.randn(2, 5, 16, requires_grad=True)
    out = pred(ctx)
    assert out.shape == (2, 5, 3, 8)
    g = torch.randn_like(out)
    out.backward(g)
    ref_ctx = ctx.detach().clone().requires_grad_()
    ref = pred.linear(ref_ctx).view(2, 5, 3, 8)
    w_grad = pred.linear.weight.grad.clone()
    pred.linear.weight.grad = None
    ref.backward(g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ctx.grad, ref_ctx.grad)
    torch.testing.assert_close(w_grad, pred.linear.weight.grad)
