"""InfoNCE: vectorised losses (sampled, all pairs) == naive loops; samplers obey their strategy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpc.infonce import (
    STRATEGIES,
    STRATEGY_ALIASES,
    InfoNCE,
    Negatives,
    NegativeSamplingError,
    Predictors,
    canonical_strategy,
    info_nce,
    info_nce_all_pairs,
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
    neg = sample_negatives(4, 6, 3, "batch", generator=torch.Generator().manual_seed(0))
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
    for strategy in ("batch_excl", "same_group_excl"):
        neg = _draw(strategy)
        own = torch.arange(len(GROUPS)).view(-1, 1, 1)
        assert not (neg.seq == own).any(), strategy


def test_same_strategies_stay_in_group():
    for strategy in ("same_group", "same_group_excl"):
        neg = _draw(strategy)
        assert (GROUPS[neg.seq] == GROUPS.view(-1, 1, 1)).all(), strategy
    # same_group includes the current sequence and reaches every member of the group
    neg = _draw("same_group")
    for b in range(len(GROUPS)):
        members = set(torch.nonzero(GROUPS == GROUPS[b]).flatten().tolist())
        assert set(neg.seq[b].flatten().tolist()) == members


def test_current_sequence_only_itself_and_mixed_reaches_all():
    neg = _draw("current_sequence")
    assert (neg.seq == torch.arange(len(GROUPS)).view(-1, 1, 1)).all()
    neg = _draw("batch")
    for b in range(len(GROUPS)):
        assert set(neg.seq[b].flatten().tolist()) == set(range(len(GROUPS)))
    neg = _draw("batch_excl")
    for b in range(len(GROUPS)):
        assert set(neg.seq[b].flatten().tolist()) == set(range(len(GROUPS))) - {b}


def test_sampling_is_uniform_over_candidates_and_valid_times():
    lengths = torch.tensor([20, 3, 20, 20, 20, 20, 20, 20])
    neg = _draw("same_group_excl", lengths, n=3000)
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
        sample_negatives(3, 5, 2, "same_group_excl", groups)
    with pytest.raises(NegativeSamplingError, match="at least 2 sequences"):
        sample_negatives(1, 5, 2, "batch_excl")
    with pytest.raises(NegativeSamplingError, match="group id"):
        sample_negatives(3, 5, 2, "same_group")
    neg = sample_negatives(3, 5, 50, "same_group_excl", groups, on_empty="fallback")
    assert set(neg.seq[2].flatten().tolist()) == {0, 1}  # falls back to the other sequences
    assert (neg.seq[0] == 1).all() and (neg.seq[1] == 0).all()
    neg = sample_negatives(1, 5, 4, "batch_excl", on_empty="fallback")
    assert (neg.seq == 0).all()  # alone in the batch: itself


def test_generator_makes_draws_reproducible():
    a = _draw("same_group")
    b = _draw("same_group")
    assert torch.equal(a.seq, b.seq) and torch.equal(a.time, b.time)


def test_infonce_module_and_shape_errors():
    torch.manual_seed(0)
    m = InfoNCE(context_dim=4, target_dim=6, num_steps=3, num_negatives=5, strategy="same_group")
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
    neg = sample_negatives(b, t, 6, "batch_excl", generator=torch.Generator().manual_seed(0))
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


def test_strategy_names_and_aliases():
    assert STRATEGIES == (
        "batch",
        "batch_excl",
        "same_group",
        "same_group_excl",
        "current_sequence",
    )
    assert STRATEGY_ALIASES == {
        "mixed_speaker": "batch",
        "mixed_speaker_excl": "batch_excl",
        "same_speaker": "same_group",
        "same_speaker_excl": "same_group_excl",
    }
    for name in STRATEGIES:
        assert canonical_strategy(name) == name
    for alias, name in STRATEGY_ALIASES.items():
        assert canonical_strategy(alias) == name
    with pytest.raises(NegativeSamplingError, match=r"'nope'.*batch_excl.*mixed_speaker -> batch"):
        canonical_strategy("nope")
    with pytest.raises(NegativeSamplingError, match="unknown"):
        sample_negatives(2, 5, 2, "nope")
    with pytest.raises(NegativeSamplingError, match="unknown"):
        info_nce_all_pairs(torch.randn(2, 5, 2, 3), torch.randn(2, 5, 3), "nope")


@pytest.mark.parametrize("alias", sorted(STRATEGY_ALIASES))
def test_alias_gives_the_same_negatives_and_losses_as_its_canonical_name(alias):
    name = STRATEGY_ALIASES[alias]
    lengths = torch.tensor([20, 3, 20, 11, 20, 20, 7, 20])
    a = _draw(alias, lengths)
    c = _draw(name, lengths)
    assert torch.equal(a.seq, c.seq) and torch.equal(a.time, c.time)
    torch.manual_seed(0)
    pred, z = torch.randn(8, 20, 3, 4), torch.randn(8, 20, 4)
    out_a = info_nce_all_pairs(pred, z, alias, GROUPS, lengths)
    out_c = info_nce_all_pairs(pred, z, name, GROUPS, lengths)
    for key in out_c:
        assert torch.equal(out_a[key], out_c[key]), key
    m = InfoNCE(4, 6, 3, 5, strategy=alias)
    assert m.strategy == alias


def _permitted(strategy, b, b2):
    """Naive: may sequence b2 supply negatives for sequence b (GROUPS are the groups)."""
    same = bool(GROUPS[b] == GROUPS[b2])
    return {
        "batch": True,
        "batch_excl": b2 != b,
        "same_group": same,
        "same_group_excl": same and b2 != b,
        "current_sequence": b2 == b,
    }[strategy]


def naive_info_nce_all_pairs(pred, z, strategy, lengths=None):
    """Reference: explicit loops over b, t, k and the candidate frames of every context."""
    b_, t_, k_, _ = pred.shape
    lengths = lengths if lengths is not None else torch.full((b_,), t_)
    losses = [[] for _ in range(k_)]
    hits = [[] for _ in range(k_)]
    sizes = []
    for b in range(b_):
        for t in range(t_):
            for k in range(1, k_ + 1):
                if t + k >= int(lengths[b]):
                    continue
                w_c = pred[b, t, k - 1]
                pos = torch.dot(z[b, t + k], w_c)
                others = []
                for b2 in range(b_):
                    if not _permitted(strategy, b, b2):
                        continue
                    for t2 in range(int(lengths[b2])):
                        if (b2, t2) != (b, t + k):
                            others.append(torch.dot(z[b2, t2], w_c))
                s = torch.stack([pos, *others])
                losses[k - 1].append(-F.log_softmax(s, 0)[0])
                hits[k - 1].append(float(bool(s[0] >= s[1:].max())))
                sizes.append(len(s))
    loss_k = torch.stack([torch.stack(x).mean() for x in losses])
    acc_k = torch.tensor([sum(h) / len(h) for h in hits])
    return loss_k, acc_k, sum(sizes) / len(sizes)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_all_pairs_equals_naive(strategy, with_lengths):
    torch.manual_seed(0)
    b, t, k, d = 8, 6, 2, 3
    z = torch.randn(b, t, d, requires_grad=True)
    pred = torch.randn(b, t, k, d, requires_grad=True)
    lengths = torch.tensor([6, 3, 6, 5, 6, 1, 6, 2]) if with_lengths else None
    out = info_nce_all_pairs(pred, z, strategy, GROUPS, lengths)
    out["loss"].backward()
    grads = (pred.grad.clone(), z.grad.clone())
    pred.grad = z.grad = None
    ref_loss, ref_acc, ref_size = naive_info_nce_all_pairs(pred, z, strategy, lengths)
    ref_loss.mean().backward()
    torch.testing.assert_close(out["loss_per_k"], ref_loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"].detach(), ref_loss.mean().detach())
    torch.testing.assert_close(out["accuracy"], ref_acc)
    torch.testing.assert_close(out["mi_bound"], math.log(ref_size) - out["loss"].detach())
    if not with_lengths:  # every context has the same candidates for every k
        torch.testing.assert_close(out["mi_bound_per_k"], math.log(ref_size) - ref_loss.detach())
    if strategy == "batch" and not with_lengths:
        assert ref_size == b * t
    torch.testing.assert_close(grads[0], pred.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], z.grad, rtol=1e-5, atol=1e-6)


def test_all_pairs_mi_bound_per_k_with_lengths():
    # batch_excl, lengths: n candidates = sum of the other lengths + 1, per sequence
    torch.manual_seed(0)
    lengths = torch.tensor([6, 3])
    out = info_nce_all_pairs(
        torch.randn(2, 6, 2, 3), torch.randn(2, 6, 3), "batch_excl", None, lengths
    )
    # k=1: 5 contexts of seq 0 (4 candidates), 2 of seq 1 (7); k=2: 4 (4), 1 (7)
    n1, n2 = (5 * 4 + 2 * 7) / 7, (4 * 4 + 1 * 7) / 5
    expect = torch.tensor([math.log(n1), math.log(n2)]) - out["loss_per_k"]
    torch.testing.assert_close(out["mi_bound_per_k"], expect)
    n_all = (5 * 4 + 2 * 7 + 4 * 4 + 1 * 7) / 12
    torch.testing.assert_close(out["mi_bound"], math.log(n_all) - out["loss"])


def test_all_pairs_errors():
    pred, z = torch.randn(3, 5, 2, 4), torch.randn(3, 5, 4)
    groups = torch.tensor([0, 0, 1])  # group 1 has one sequence
    with pytest.raises(NegativeSamplingError, match=r"group\(s\) \[1\].*same_group"):
        info_nce_all_pairs(pred, z, "same_group_excl", groups)
    with pytest.raises(NegativeSamplingError, match=r"group\(s\) \[1\]"):
        info_nce_all_pairs(pred, z, "same_speaker_excl", groups)
    with pytest.raises(NegativeSamplingError, match="at least 2 sequences"):
        info_nce_all_pairs(pred[:1], z[:1], "batch_excl")
    with pytest.raises(NegativeSamplingError, match="group id"):
        info_nce_all_pairs(pred, z, "same_group")
    with pytest.raises(ValueError, match="too short"):
        info_nce_all_pairs(pred[:, :2], z[:, :2])
    with pytest.raises(ValueError, match=r"targets must be \(B, T, D\)"):
        info_nce_all_pairs(pred, z[..., :3])
    # same_group with a singleton group is fine: the sequence's own other frames
    out = info_nce_all_pairs(pred, z, "same_group", groups)
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("strategy", ["batch", "batch_excl", "current_sequence"])
def test_all_pairs_perfect_predictions_give_full_accuracy(strategy):
    b, t, k, d = 4, 8, 2, 64
    z = F.normalize(torch.randn(b, t, d, generator=torch.Generator().manual_seed(0)), dim=-1)
    pred = torch.zeros(b, t, k, d)
    for j in range(k):
        pred[:, : t - j - 1, j] = 20 * z[:, j + 1 :]
    out = info_nce_all_pairs(pred, z, strategy)
    assert (out["accuracy"] == 1).all()
    assert out["loss"].item() < 0.01


def test_all_pairs_runs_on_2048_frames():
    # 16 x 128 frames, D = 64, K = 5: a (10240, 2048) score matrix, forward and backward
    torch.manual_seed(0)
    b, t, k, d = 16, 128, 5, 64
    z = torch.randn(b, t, d, requires_grad=True)
    pred = (0.1 * torch.randn(b, t, k, d)).requires_grad_()
    lengths = torch.full((b,), t)
    lengths[3] = 70
    out = info_nce_all_pairs(pred, z, "batch", None, lengths)
    out["loss"].backward()
    assert out["loss"].shape == () and out["mi_bound"].shape == ()
    for key in ("loss_per_k", "accuracy", "mi_bound_per_k"):
        assert out[key].shape == (k,), key
    assert torch.isfinite(out["loss"]) and torch.isfinite(pred.grad).all()
    assert torch.isfinite(z.grad).all()
    assert (z.grad[3, 70:] == 0).all() and (z.grad[3, :70] != 0).any()  # padding: no gradient
    # near chance: log(number of candidates), 15 * 128 + 70 valid frames
    assert abs(out["loss"].item() - math.log(15 * 128 + 70)) < 0.5


def test_infonce_module_all_pairs():
    torch.manual_seed(0)
    m = InfoNCE(4, 6, 3, num_negatives=0, strategy="same_group")
    ctx, z = torch.randn(8, 10, 4), torch.randn(8, 10, 6)
    lengths = torch.tensor([10, 5, 10, 7, 10, 6, 10, 8])
    out = m(ctx, z, groups=GROUPS, lengths=lengths)
    ref = info_nce_all_pairs(m.predictors(ctx), z, "same_group", GROUPS, lengths)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key])
    assert out["loss"].requires_grad
    with pytest.raises(ValueError, match=r"num_negatives must be >= 0 \(0 = all pairs\)"):
        InfoNCE(4, 6, 3, num_negatives=-1)


def test_all_pairs_without_host_check_gives_positive_only_contexts_loss_0(monkeypatch):
    # On an accelerator the empty-candidate check is skipped (no sync): a context whose
    # strategy permits no other frame has the positive alone (loss 0, correct), never NaN.
    import cpc.infonce

    monkeypatch.setattr(cpc.infonce, "_raise_if_empty", lambda *a: None)
    pred = torch.randn(1, 5, 2, 4, requires_grad=True)
    z = torch.randn(1, 5, 4, requires_grad=True)
    out = info_nce_all_pairs(pred, z, "batch_excl")
    out["loss"].backward()
    assert out["loss"].item() == 0 and (out["accuracy"] == 1).all()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_all_pairs_offset_equals_the_whole_batch_split(strategy, with_lengths):
    """Predictions of part of the sequences against the targets of all (``offset``: e.g.
    one process's share of targets gathered from every process): the parts' losses, weighted
    by their context counts, and their summed gradients equal the whole batch's."""
    torch.manual_seed(0)
    b, t, k, d = 8, 6, 2, 3
    z = torch.randn(b, t, d, requires_grad=True)
    pred = torch.randn(b, t, k, d, requires_grad=True)
    lengths = torch.tensor([6, 3, 6, 5, 6, 1, 6, 2]) if with_lengths else None
    whole = info_nce_all_pairs(pred, z, strategy, GROUPS, lengths)
    whole["loss"].backward()
    ref_grads = (pred.grad.clone(), z.grad.clone())
    pred.grad = z.grad = None
    lens = lengths if lengths is not None else torch.full((b,), t)
    steps = torch.arange(1, k + 1)
    counts = ((torch.arange(t).view(1, t, 1) + steps) < lens.view(b, 1, 1)).sum(1).float()
    total = counts.sum(0)  # (K,) contexts counted per k in the whole batch
    combined = torch.zeros(k)
    for a, e in ((0, 3), (3, 8)):  # unequal parts
        part = info_nce_all_pairs(pred[a:e], z, strategy, GROUPS, lengths, offset=a)
        share = counts[a:e].sum(0)
        combined = combined + part["loss_per_k"] * share / total
        if not with_lengths:  # every k counts (e - a) / b of the contexts
            (part["loss"] * (e - a) / b).backward()
    torch.testing.assert_close(combined, whole["loss_per_k"], rtol=1e-5, atol=1e-6)
    if not with_lengths:
        torch.testing.assert_close(pred.grad, ref_grads[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(z.grad, ref_grads[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="offset 6"):
        info_nce_all_pairs(pred[:3], z, strategy, GROUPS, lengths, offset=6)
