"""Probes (cpc.probes) on synthetic data, and the probe CLI (local/probe.py) on a tiny dump."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc.probes import (
    ProbeConfig,
    ProbeData,
    StreamedRows,
    holdout_group_split,
    holdout_rows,
    majority_chance,
    pool_windows,
    probe_lr_factor,
    standardize,
    train_probe,
    train_statistics,
)


def blobs(n: int, num_classes: int, dim: int, sep: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim)) * sep
    y = rng.integers(0, num_classes, n)
    x = centres[y] + rng.standard_normal((n, dim))
    return x.astype(np.float32), y


@pytest.mark.parametrize("hidden", [0, 32])
def test_separable_data_is_learned(hidden: int) -> None:
    x, y = blobs(3000, 5, 8, sep=6.0, seed=0)
    tr, te = ProbeData.from_numpy(x[:2000], y[:2000]), ProbeData.from_numpy(x[2000:], y[2000:])
    standardize(tr.x, te.x)
    r = train_probe(
        tr, te, 5, ProbeConfig(hidden_dim=hidden, epochs=5, batch_size=128, lr=2e-2, seed=1)
    )
    assert r.accuracy > 0.99 and r.train_accuracy > 0.99
    assert r.confusion.sum() == 1000 and r.confusion.shape == (5, 5)
    assert np.trace(r.confusion) == round(r.accuracy * 1000)
    assert all(a is not None and a > 0.95 for a in r.per_class_accuracy)


def test_step_schedule_and_defaults() -> None:
    cfg = ProbeConfig()
    assert (cfg.optimizer, cfg.schedule, cfg.top_k) == ("adam", "cosine", 0)  # unchanged
    assert probe_lr_factor(0, 100, cfg) == 1.0 and probe_lr_factor(50, 100, cfg) == 0.5
    step = ProbeConfig(schedule="step", milestones=[50 / 85, 75 / 85], gamma=0.1)
    # the paper's ImageNet classifier: 0.1 / 0.01 / 0.001 for 50k / 25k / 10k updates
    factors = [probe_lr_factor(s, 85_000, step) for s in (0, 49_999, 50_000, 74_999, 75_000)]
    assert factors == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="schedule"):
        probe_lr_factor(0, 10, ProbeConfig(schedule="poly"))


def test_sgd_step_probe_and_top_k() -> None:
    x, y = blobs(3000, 6, 8, sep=1.0, seed=3)
    tr, te = ProbeData.from_numpy(x[:2000], y[:2000]), ProbeData.from_numpy(x[2000:], y[2000:])
    standardize(tr.x, te.x)
    common = dict(epochs=10, batch_size=128, lr=0.1, seed=1, optimizer="sgd", schedule="step")
    r = train_probe(tr, te, 6, ProbeConfig(**common, top_k=3))
    assert r.top_k_accuracy is not None and 1.0 >= r.top_k_accuracy > r.accuracy > 0.5
    assert r.to_dict()["top3_accuracy"] == r.top_k_accuracy
    every = train_probe(tr, te, 6, ProbeConfig(**common, top_k=6))
    assert every.top_k_accuracy == 1.0 and every.accuracy == r.accuracy  # same seed, same model
    adam = train_probe(tr, te, 6, ProbeConfig(epochs=10, batch_size=128, lr=0.01, seed=1))
    assert adam.top_k_accuracy is None and "top0_accuracy" not in adam.to_dict()


def test_linear_probe_agrees_with_sklearn_logistic_regression() -> None:
    """Unregularised multinomial logistic regression has one optimum: the probe's Adam
    minibatch training must land where scikit-learn's lbfgs does (overlapping classes, so
    the optimum is finite and the two can disagree)."""
    from sklearn.linear_model import LogisticRegression

    xa, ya = blobs(1800, 4, 5, sep=1.2, seed=3)
    x, y, xt, yt = xa[:1200], ya[:1200], xa[1200:], ya[1200:]
    tr, te = ProbeData.from_numpy(x, y), ProbeData.from_numpy(xt, yt)
    cfg = ProbeConfig(epochs=1, min_steps=3000, batch_size=1200, lr=5e-2, seed=0)
    r = train_probe(tr, te, 4, cfg)
    ref = LogisticRegression(C=np.inf, max_iter=5000, tol=1e-10).fit(x, y)
    ref_pred = ref.predict(xt)
    assert r.accuracy == pytest.approx(float((ref_pred == yt).mean()), abs=1 / 600)
    # same predicted class on (nearly) every test point
    conf_ref = np.zeros((4, 4), dtype=np.int64)
    np.add.at(conf_ref, (yt, ref_pred), 1)
    assert np.abs(r.confusion - conf_ref).sum() <= 2
    assert r.final_loss == pytest.approx(
        -np.log(ref.predict_proba(x)[np.arange(len(y)), y]).mean(), abs=1e-3
    )


def test_plateau_schedule_stops_early_at_the_logistic_regression_optimum() -> None:
    """schedule="plateau": the rate decays when the loss on held-out TRAINING rows stops
    improving and training stops after max_decays; on many rows it needs far fewer updates
    than the epoch cap and still lands on scikit-learn's optimum."""
    from sklearn.linear_model import LogisticRegression

    xa, ya = blobs(10000, 4, 5, sep=1.2, seed=3)
    x, y, xt, yt = xa[:8000], ya[:8000], xa[8000:], ya[8000:]
    tr, te = ProbeData.from_numpy(x, y), ProbeData.from_numpy(xt, yt)
    cfg = ProbeConfig(
        epochs=40, batch_size=128, lr=1e-2, seed=0, schedule="plateau", check_every=20
    )
    r = train_probe(tr, te, 4, cfg)
    per_epoch = math.ceil(7600 / 128)  # 5% of the rows are held out
    assert 0 < r.updates < 40 * per_epoch / 2 and r.epochs == math.ceil(r.updates / per_epoch)
    ref = LogisticRegression(C=np.inf, max_iter=5000, tol=1e-10).fit(x, y)
    assert r.accuracy == pytest.approx(float((ref.predict(xt) == yt).mean()), abs=3 / 2000)
    again = train_probe(tr, te, 4, cfg)
    assert again.accuracy == r.accuracy and again.updates == r.updates  # seeded
    assert r.to_dict()["updates"] == r.updates
    # the default schedule is unchanged: every epoch of the cap
    fixed = train_probe(tr, te, 4, ProbeConfig(epochs=2, batch_size=256, lr=1e-2, seed=0))
    assert fixed.epochs == 2 and fixed.updates == 2 * math.ceil(8000 / 256)


@pytest.mark.parametrize("hidden", [0, 64])
def test_bf16_probe_matches_fp32(hidden: int) -> None:
    """precision="bf16" (autocast): on overlapping classes, where the accuracy depends on
    where the boundary lands, the bf16 probe reaches the fp32 probe's test accuracy within
    1 point and reaches the same training loss; the loss is float32."""
    x, y = blobs(6000, 8, 32, sep=0.5, seed=7)
    tr, te = ProbeData.from_numpy(x[:4000], y[:4000]), ProbeData.from_numpy(x[4000:], y[4000:])
    standardize(tr.x, te.x)
    common = dict(hidden_dim=hidden, epochs=4, batch_size=256, lr=5e-3, seed=2)
    fp32 = train_probe(tr, te, 8, ProbeConfig(**common))
    bf16 = train_probe(tr, te, 8, ProbeConfig(**common, precision="bf16"))
    assert 0.4 < fp32.accuracy < 0.95  # neither trivial nor at chance (12.5 %)
    assert bf16.accuracy == pytest.approx(fp32.accuracy, abs=0.01)
    assert np.trace(bf16.confusion) / 2000 == pytest.approx(bf16.accuracy)
    assert abs(bf16.final_loss - fp32.final_loss) < 0.02
    assert bf16.to_dict()["config"]["precision"] == "bf16"
    assert fp32.to_dict()["config"]["precision"] == "fp32"  # the default
    with pytest.raises(ValueError, match="precision"):
        train_probe(tr, te, 8, ProbeConfig(**common, precision="fp16"))


def test_holdout_rows_takes_whole_sequences() -> None:
    lengths = np.array([5, 7, 3, 9, 6, 10, 4, 8, 2, 6] * 10)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    data = ProbeData.from_numpy(np.zeros((n, 2), np.float32), np.zeros(n, np.int64), offsets)
    fit, held = holdout_rows(data, ProbeConfig(holdout=0.1, seed=3))
    assert len(fit) + len(held) == n and not set(fit.tolist()) & set(held.tolist())
    assert 0 < len(held) <= round(0.1 * n)
    seq = np.searchsorted(offsets, held.numpy(), side="right") - 1
    for u in set(seq.tolist()):  # every held-out sequence is held out entirely
        assert (seq == u).sum() == lengths[u]
    capped = holdout_rows(data, ProbeConfig(holdout=0.5, holdout_max_rows=20, seed=3))[1]
    assert 0 < len(capped) <= 20
    plain = ProbeData.from_numpy(np.zeros((50, 2), np.float32), np.zeros(50, np.int64))
    assert len(holdout_rows(plain, ProbeConfig(holdout=0.2))[1]) == 10
    a, b = holdout_rows(data, ProbeConfig(seed=4)), holdout_rows(data, ProbeConfig(seed=4))
    assert torch.equal(a[1], b[1])


def test_shuffled_labels_give_chance() -> None:
    x, y = blobs(4000, 4, 8, sep=6.0, seed=0)
    y = np.random.default_rng(5).permutation(y)
    tr, te = ProbeData.from_numpy(x[:3000], y[:3000]), ProbeData.from_numpy(x[3000:], y[3000:])
    standardize(tr.x, te.x)
    r = train_probe(tr, te, 4, ProbeConfig(epochs=3, batch_size=256, lr=2e-2))
    assert abs(r.accuracy - 0.25) < 0.06


def test_xor_needs_the_hidden_layer() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4000, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    tr, te = ProbeData.from_numpy(x[:3000], y[:3000]), ProbeData.from_numpy(x[3000:], y[3000:])
    lin = train_probe(tr, te, 2, ProbeConfig(epochs=10, batch_size=128, lr=1e-2))
    mlp = train_probe(tr, te, 2, ProbeConfig(hidden_dim=64, epochs=10, batch_size=128, lr=1e-2))
    assert lin.accuracy < 0.7 and mlp.accuracy > 0.9


def test_context_reads_the_neighbours_within_a_sequence() -> None:
    # the label of a frame is the sign of the NEXT frame's value: invisible without context
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 30, 300)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = rng.standard_normal((offsets[-1], 1)).astype(np.float32)
    nxt = np.arange(offsets[-1]) + 1
    ends = offsets[1:] - 1
    nxt[ends] = ends  # the last frame of a sequence sees itself (edge repeated)
    y = (x[nxt, 0] > 0).astype(np.int64)
    cut = offsets[200]
    tr = ProbeData.from_numpy(x[:cut], y[:cut], offsets[:201])
    te = ProbeData.from_numpy(x[cut:], y[cut:], offsets[200:] - cut)
    plain = train_probe(tr, te, 2, ProbeConfig(epochs=5, batch_size=256, lr=2e-2))
    ctx = train_probe(tr, te, 2, ProbeConfig(epochs=5, batch_size=256, lr=2e-2, context=1))
    assert plain.accuracy < 0.65 and ctx.accuracy > 0.95 and ctx.input_dim == 3


def test_seeded_and_deterministic() -> None:
    x, y = blobs(2000, 3, 4, sep=1.0, seed=2)
    tr, te = ProbeData.from_numpy(x[:1500], y[:1500]), ProbeData.from_numpy(x[1500:], y[1500:])
    a = train_probe(tr, te, 3, ProbeConfig(epochs=2, seed=7, batch_size=64))
    b = train_probe(tr, te, 3, ProbeConfig(epochs=2, seed=7, batch_size=64))
    assert a.accuracy == b.accuracy and np.array_equal(a.confusion, b.confusion)


def test_standardize_uses_train_statistics_only() -> None:
    train = torch.tensor([[1.0, 10.0], [3.0, 10.0]])
    test = torch.tensor([[5.0, 12.0]])
    standardize(train, test)
    # train mean (2, 10), std (sqrt 2, 0 -> 1): the test row is mapped with those
    np.testing.assert_allclose(test.numpy(), [[3 / np.sqrt(2), 2.0]], rtol=1e-6)
    np.testing.assert_allclose(train.mean(0).numpy(), [0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("chunk", [7, 1000, 65536])
def test_train_statistics_in_chunks_equal_the_float64_reference(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(20003, 39, generator=g) * 3 + 5).float()
    mean, std = train_statistics(x, chunk_rows=chunk)
    np.testing.assert_allclose(mean.numpy(), x.double().mean(0).numpy(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(std.numpy(), x.double().std(0).numpy(), rtol=1e-12, atol=0)
    assert mean.dtype == std.dtype == torch.float64
    one_row_mean, one_row_std = train_statistics(x[:1])  # as torch: no spread from one row
    assert torch.equal(one_row_mean, x[0].double()) and one_row_std.isnan().all()


def _streamed(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, block_rows: int) -> ProbeData:
    """``x`` behind a :class:`StreamedRows` that records every sequence it is asked for."""
    reads: list[int] = []

    def read(u: int) -> np.ndarray:
        reads.append(u)
        return x[offsets[u] : offsets[u + 1]].copy()

    data = ProbeData(StreamedRows(read, offsets, x.shape[1], block_rows), torch.from_numpy(y))
    data.reads = reads  # type: ignore[attr-defined]
    return data


def _sequences(n_seq: int, seed: int, num_classes: int = 4, dim: int = 6):
    """Sequences of 20-80 rows of blob data (the class drifts along a sequence)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 80, n_seq)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    x, y = blobs(int(offsets[-1]), num_classes, dim, sep=1.5, seed=seed)
    return x, y, offsets


def test_streamed_statistics_equal_the_in_memory_ones() -> None:
    x, y, off = _sequences(60, seed=3)
    x = x * 4 + 3
    s = _streamed(x, y, off, block_rows=150)
    mean, std = train_statistics(s.x)
    ref_mean, ref_std = train_statistics(torch.from_numpy(x))
    np.testing.assert_allclose(mean.numpy(), ref_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(std.numpy(), ref_std.numpy(), rtol=1e-12)
    # standardised on reading: bit-identical to the in-memory standardisation
    test_x = torch.from_numpy(x[:100].copy())
    ref_train = torch.from_numpy(x.copy())
    standardize(ref_train, test_x)
    standardize(s.x)
    assert torch.equal(s.in_memory().x, ref_train)
    with pytest.raises(ValueError, match="already standardised"):
        train_statistics(s.x)


def test_streamed_blocks_are_whole_sequences_of_bounded_size() -> None:
    x, y, off = _sequences(40, seed=4)
    s = _streamed(x, y, off, block_rows=200)
    order = np.random.default_rng(0).permutation(40).tolist()
    # a block is valid until the next one is asked for (two buffers): copy each as it comes
    blocks = [ProbeData(b.x.clone(), b.y, b.offsets) for b in s.x.blocks(order, s.y)]
    assert sum(len(b) for b in blocks) == len(x)
    assert all(len(b) <= 200 for b in blocks) and s.x.max_rows_read <= 200
    assert s.reads == order  # each sequence read once, in the order asked
    seqs = iter(order)
    for b in blocks:  # rows, labels and offsets of every sequence as in memory
        for i in range(len(b.offsets) - 1):
            u = next(seqs)
            a, e = int(b.offsets[i]), int(b.offsets[i + 1])
            np.testing.assert_array_equal(b.x[a:e].numpy(), x[off[u] : off[u + 1]])
            np.testing.assert_array_equal(b.y[a:e].numpy(), y[off[u] : off[u + 1]])
    one = [len(b) for b in _streamed(x, y, off, block_rows=1).x.blocks(range(40))]
    assert one == np.diff(off).tolist()  # a long sequence: a block alone


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_streamed_probe_reads_one_block_at_a_time_and_learns_as_in_memory(schedule) -> None:
    x, y, off = _sequences(120, seed=5)
    cut = int(off[90])
    tr_mem = ProbeData.from_numpy(x[:cut], y[:cut], off[:91])
    te_mem = ProbeData.from_numpy(x[cut:], y[cut:], off[90:] - cut)
    tr = _streamed(x[:cut], y[:cut], off[:91], block_rows=600)
    te = _streamed(x[cut:], y[cut:], off[90:] - cut, block_rows=600)
    standardize(tr_mem.x, te_mem.x)
    standardize(tr.x, te.x)
    cfg = ProbeConfig(epochs=6, batch_size=64, lr=1e-2, context=1, schedule=schedule)
    cfg.check_every = 20
    mem = train_probe(tr_mem, te_mem, 4, cfg)
    streamed = train_probe(tr, te, 4, cfg)
    assert tr.x.max_rows_read <= 600 and te.x.max_rows_read <= 600
    assert streamed.num_train == len(tr_mem) and streamed.num_test == len(te_mem)
    assert streamed.input_dim == 18 and streamed.confusion.sum() == len(te_mem)
    # another order of the same rows: the same optimum within a point or two
    assert mem.accuracy > 0.6 and abs(streamed.accuracy - mem.accuracy) < 0.03
    assert abs(streamed.train_accuracy - mem.train_accuracy) < 0.03
    again = train_probe(tr, te, 4, cfg)  # seeded: the same result again
    assert again.accuracy == streamed.accuracy and again.updates == streamed.updates
    if schedule == "cosine":  # blocks' last rows join the next block's: full minibatches
        assert streamed.updates == mem.updates == 6 * -(-len(tr_mem) // 64)


def test_streamed_rows_that_fit_one_block_train_exactly_as_in_memory() -> None:
    x, y, off = _sequences(30, seed=6)
    mem = ProbeData.from_numpy(x, y, off)
    big = _streamed(x, y, off, block_rows=len(x))
    cfg = ProbeConfig(epochs=2, batch_size=32, schedule="plateau", check_every=10, context=2)
    a, b = train_probe(mem, mem, 4, cfg), train_probe(big, mem, 4, cfg)
    assert a.accuracy == b.accuracy and a.updates == b.updates and a.final_loss == b.final_loss


def test_absent_class_and_bad_labels() -> None:
    x, y = blobs(600, 3, 4, sep=5.0, seed=0)
    te_mask = y[400:] != 2
    tr = ProbeData.from_numpy(x[:400], y[:400])
    te = ProbeData.from_numpy(x[400:][te_mask], y[400:][te_mask])
    r = train_probe(tr, te, 3, ProbeConfig(epochs=2, lr=2e-2))
    assert (
        r.per_class_accuracy[2] is None
        and r.to_dict(["a", "b", "c"])["per_class_accuracy"]["c"] is None
    )
    with pytest.raises(ValueError, match="outside 0..1"):
        train_probe(tr, te, 2, ProbeConfig(epochs=1))
    assert majority_chance(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 2])) == 0.5


def test_pool_windows() -> None:
    x = np.arange(10 * 300, dtype=np.float32).reshape(300, 10)
    offsets = np.array([0, 260, 290, 300])  # 2 full windows (+tail), 1 short, 1 short
    pooled, seq = pool_windows(x, offsets, 128)
    assert seq.tolist() == [0, 0, 1, 2]
    np.testing.assert_allclose(pooled[0], x[0:128].mean(0))
    np.testing.assert_allclose(pooled[1], x[128:256].mean(0))
    np.testing.assert_allclose(pooled[2], x[260:290].mean(0))
    np.testing.assert_allclose(pooled[3], x[290:300].mean(0))


def test_holdout_group_split() -> None:
    spk = ["a"] * 6 + ["b"] * 4 + ["c"] * 2
    chap = ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5", "6", "6"]
    is_test, single = holdout_group_split(spk, chap, seed=0)
    assert single == ["c"]
    for s in ("a", "b"):
        test_chaps = {c for c, k, t in zip(chap, spk, is_test) if k == s and t}
        train_chaps = {c for c, k, t in zip(chap, spk, is_test) if k == s and not t}
        assert len(test_chaps) == 1 and train_chaps and not (test_chaps & train_chaps)
    assert not is_test[10:].any()


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny MFCC dump with labels: (feature_dir, lang_dir)."""
    from tests.factories import make_labelled_manifests, mfcc_dump

    root = tmp_path_factory.mktemp("probe")
    manifests, lang, _ = make_labelled_manifests(root, speakers=3, chapters=2, utts=3)
    return mfcc_dump(manifests, root / "mfcc"), lang


def test_phone_probe_cli(
    dump: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cpc.perf
    from local.probe import main

    feats, lang = dump
    out = tmp_path / "phone"
    argv = ["phone", "--feature-dir", str(feats), "--lang-dir", str(lang)]
    argv += ["--output-dir", str(out), "--linear-epochs", "2", "--mlp-epochs", "2"]
    argv += ["--mlp-hidden", "16", "--min-steps", "0", "--num-threads", "1", "--schedule"]
    argv += ["cosine", "--seed", "1"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["feature_type"] == "mfcc" and res["num_classes"] == 41 and res["task"] == "phone"
    assert res["schedule"] == "cosine" and res["linear"]["config"]["schedule"] == "cosine"
    for k in ("linear", "mlp", "linear_context"):
        assert len(res[k]["per_class_accuracy"]) == 41 and "SIL" in res[k]["per_class_accuracy"]
        conf = np.array(res[k]["confusion"])
        # the accuracy is exactly the confusion matrix's diagonal over the test frames
        assert res[k]["accuracy"] == np.trace(conf) / conf.sum()
    assert res["linear_context"]["input_dim"] == 39 * 5 and res["mlp"]["config"]["min_steps"] == 0
    assert res["num_test"] == sum(map(sum, res["linear"]["confusion"]))
    assert (out / "confusion_linear.png").stat().st_size > 1000
    # the recorded values are what the seeded probe gives: recompute one in-process
    again = _rerun_linear(feats, lang, seed=1, epochs=2)
    assert res["linear"]["accuracy"] == again
    # resume: same inputs -> untouched; other options -> redone
    before = (out / "results.json").read_text()
    assert main(argv) == 0
    assert (out / "results.json").read_text() == before
    assert main(argv[:-1] + ["2"]) == 0
    assert json.loads((out / "results.json").read_text())["linear"]["config"]["seed"] == 2
    # the precision is part of the result's identity: bf16 re-runs and is recorded
    assert main(argv[:-1] + ["2", "--precision", "bf16"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["signature"]["options"]["precision"] == "bf16"
    assert {res[k]["config"]["precision"] for k in ("linear", "mlp", "linear_context")} == {"bf16"}
    # auto is recorded as what it means on the machine: where that is bf16, the bf16 result
    # above is up to date; where it is fp32, the probes run again in fp32
    monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu": True)
    before = (out / "results.json").read_text()
    assert main(argv[:-1] + ["2", "--precision", "auto"]) == 0
    assert (out / "results.json").read_text() == before
    monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu": False)
    assert main(argv[:-1] + ["2", "--precision", "auto"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["signature"]["options"]["precision"] == "fp32"
    assert res["linear"]["config"]["precision"] == "fp32"


def _rerun_linear(feats: Path, lang: Path, seed: int, epochs: int) -> float:
    """The linear phone probe of local/probe.py, recomputed from the dump by hand."""
    from cpc.audio.constants import DUMP_SPEC, PREFIX
    from cpc.features import collect_frames, load_dump

    def labels(c, n):
        return c.load_custom("phone_labels")

    x_tr, y_tr, _, _ = collect_frames(list(load_dump(feats, "train", PREFIX)), DUMP_SPEC, labels)
    x_te, y_te, _, _ = collect_frames(list(load_dump(feats, "test", PREFIX)), DUMP_SPEC, labels)
    tr, te = ProbeData.from_numpy(x_tr, y_tr), ProbeData.from_numpy(x_te, y_te)
    standardize(tr.x, te.x)
    cfg = ProbeConfig(epochs=epochs, lr=1e-2, batch_size=1024, min_steps=0, seed=seed)
    return train_probe(tr, te, 41, cfg).accuracy


def test_phone_probe_cli_plateau_on_a_frame_capped_subset(dump, tmp_path: Path) -> None:
    """The default schedule (plateau) on seeded subsets of whole utterances: at most
    --max-train-frames / --max-test-frames frames, the same subset on a re-run."""
    from local.probe import main

    feats, lang = dump
    argv = ["phone", "--feature-dir", str(feats), "--lang-dir", str(lang), "--seed", "3"]
    argv += ["--linear-epochs", "3", "--mlp-epochs", "2", "--mlp-hidden", "8", "--min-steps"]
    argv += ["0", "--context-frames", "0", "--check-every", "4", "--batch-size", "64"]
    argv += ["--max-train-frames", "1500", "--max-test-frames", "600"]
    res = [None, None]
    for i in (0, 1):
        assert main(argv + ["--output-dir", str(tmp_path / str(i))]) == 0
        res[i] = json.loads((tmp_path / str(i) / "results.json").read_text())
    r = res[0]
    assert r["schedule"] == "plateau" and r["linear"]["config"]["schedule"] == "plateau"
    assert 0 < r["num_train"] <= 1500 and 0 < r["num_test"] <= 600
    assert r["num_train_utts"] < 12 and r["max_train_frames"] == 1500  # 18 utts, 2/3 train
    assert 0 < r["linear"]["updates"] <= 3 * -(-r["num_train"] // 64)
    for k in ("num_train", "num_test", "num_train_utts"):
        assert res[1][k] == r[k]
    assert res[1]["linear"]["accuracy"] == r["linear"]["accuracy"]


def test_phone_probe_cli_streams_blocks_of_the_dump(dump, tmp_path: Path) -> None:
    """--block-frames: the frames stay in the dump and are read block by block; the
    accuracies are those of the in-memory probe within a few points (another row order),
    and the block size is part of the result's identity."""
    from local.probe import main

    feats, lang = dump
    argv = ["phone", "--feature-dir", str(feats), "--lang-dir", str(lang), "--seed", "3"]
    argv += ["--linear-epochs", "4", "--mlp-epochs", "3", "--mlp-hidden", "16", "--min-steps"]
    argv += ["300", "--check-every", "20", "--batch-size", "64", "--context-frames", "1"]
    res = {}
    for block in (0, 700):
        out = tmp_path / str(block)
        assert main(argv + ["--block-frames", str(block), "--output-dir", str(out)]) == 0
        res[block] = json.loads((out / "results.json").read_text())
    mem, streamed = res[0], res[700]
    assert mem["streamed"] == {"train": False, "test": False}
    assert streamed["streamed"] == {"train": True, "test": True}  # both splits exceed 700
    assert streamed["num_train"] == mem["num_train"] > 700 < streamed["num_test"]
    assert streamed["signature"]["options"]["block_frames"] == 700
    for k in ("linear", "mlp", "linear_context"):
        assert abs(streamed[k]["accuracy"] - mem[k]["accuracy"]) < 0.05, k
        conf = np.array(streamed[k]["confusion"])
        assert (
            streamed[k]["accuracy"] == np.trace(conf) / conf.sum() and conf.sum() == mem["num_test"]
        )


def test_speaker_probe_cli(dump: tuple[Path, Path], tmp_path: Path) -> None:
    from local.probe import main

    feats, _ = dump
    base = ["speaker", "--feature-dir", str(feats), "--epochs", "5", "--min-steps", "0"]
    base += ["--num-threads", "1"]
    for protocol, holdout in (("pooled", "false"), ("frame", "true")):
        out = tmp_path / f"{protocol}_{holdout}"
        argv = base + ["--output-dir", str(out), "--protocol", protocol]
        assert main(argv + ["--holdout-chapters", holdout]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["num_speakers"] == 3 and "confusion" not in res["linear"]
        assert res["protocol"] == protocol and res["holdout_chapters"] == (holdout == "true")
        assert res["chance"]["uniform"] == pytest.approx(1 / 3)
        if holdout == "true":  # 3 speakers x 2 chapters x 3 utterances: one chapter held out
            assert res["num_train_utts"] == 9 and res["num_test_utts"] == 9
        else:
            assert res["window_frames"] == 128 and res["unit"] == "mean of 128 frames"
    assert main(base + ["--output-dir", str(tmp_path / "x"), "--feature-dir", "nope"]) == 1


def test_probe_cli_help_lists_every_task_option(capsys) -> None:
    from local.probe import get_parser

    text = get_parser().format_help()
    assert "phone" in text and "speaker" in text
    with pytest.raises(SystemExit):
        get_parser().parse_args(["phone", "--help"])
    out = capsys.readouterr().out
    for opt in ("--lang-dir", "--mlp-hidden", "--context-frames", "--min-steps", "--seed"):
        assert opt in out
    assert "(default: 512)" in out


def test_phone_probe_refuses_a_non_positive_linear_check_interval() -> None:
    """--linear-check-every 0 would never check the linear probes' held-out loss: refused
    by argparse, naming the option, before anything is read or written."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [
            sys.executable,
            str(root / "local/probe.py"),
            "phone",
            "--feature-dir",
            "nowhere",
            "--output-dir",
            "nowhere_out",
            "--linear-check-every",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "--linear-check-every" in r.stderr and "integer >= 1" in r.stderr
    assert not Path("nowhere_out").exists()
