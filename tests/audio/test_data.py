"""Training windows: deterministic, sharded without overlap, speaker-grouped, resumable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from cpc.audio.config import AudioDataConfig
from cpc.audio.data import AudioDataError, AudioWindowData, load_train_cuts
from tests.factories import tiny_cuts

W = 3200


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    return tiny_cuts(tmp_path_factory.mktemp("corpus"))


def make_data(cuts, seed: int = 3, **kw) -> AudioWindowData:
    kw.setdefault("batch_size", 4)
    return AudioWindowData(cuts, AudioDataConfig(window=W, num_workers=0, **kw), seed=seed)


def take(data, n, position=None, rank=0, world=1, accum=1):
    return list(itertools.islice(data.batches(position, rank, world, accum), n))


def test_epoch_plan_is_deterministic_and_covers_the_audio(cuts):
    data = make_data(cuts)
    a, b = data.epoch_plan(0, 4), data.epoch_plan(0, 4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, data.epoch_plan(1, 4))
    assert not np.array_equal(a, AudioWindowData(cuts, data.cfg, seed=4).epoch_plan(0, 4))
    flat = a.reshape(-1, 2)
    # windows stay inside their cut and do not overlap within a cut
    assert (flat[:, 1] >= 0).all() and (flat[:, 1] + W <= data.table.lengths[flat[:, 0]]).all()
    for ci in np.unique(flat[:, 0]):
        starts = np.sort(flat[flat[:, 0] == ci, 1])
        assert (np.diff(starts) >= W).all()
    # every cut gives floor(L / W) windows per epoch (up to the last incomplete batch)
    assert data.num_windows == int((data.table.lengths // W).sum())
    assert len(flat) > data.num_windows - 4


def test_windows_hold_the_right_audio(cuts):
    data = make_data(cuts)
    ((batch, pos),) = take(data, 1)
    plan = data.epoch_plan(0, 4)[0]
    assert batch["wave"].shape == (4, W) and batch["group"].shape == (4,)
    assert pos == {"epoch": 0, "batch": 1}
    for j, (ci, start) in enumerate(plan):
        cut = cuts[data.table.ids[ci]]
        ref = cut.load_audio()[0, start : start + W]
        np.testing.assert_allclose(batch["wave"][j].numpy(), ref, atol=1e-6)
        assert data.speakers[int(batch["group"][j])] == cut.supervisions[0].speaker
    # the lhotse path (used for non-plain recordings) reads the same samples
    data.dataset.table.paths[:] = [None] * len(data.table.paths)
    data.dataset.table.cuts[:] = [cuts[i] for i in data.table.ids]
    ((batch2, _),) = take(data, 1)
    np.testing.assert_allclose(batch2["wave"].numpy(), batch["wave"].numpy(), atol=1e-6)


def test_ranks_split_the_global_batch_without_overlap(cuts):
    data = make_data(cuts, batch_size=2)
    one = take(data, 3, world=1, accum=2)  # 1 process, global batch 4 as 2 micro-batches
    r0 = take(data, 3, rank=0, world=2)
    r1 = take(data, 3, rank=1, world=2)
    plans = data.epoch_plan(0, 4)
    for step in range(3):
        both = np.concatenate([r0[step][0]["wave"].numpy(), r1[step][0]["wave"].numpy()])
        np.testing.assert_array_equal(both, one[step][0]["wave"].numpy())
        assert r0[step][1] == r1[step][1] == one[step][1]
        specs = [tuple(x) for x in plans[step]]
        assert len(set(specs[:2]) & set(specs[2:])) == 0  # disjoint halves


def test_speaker_chunks_and_epoch_rollover(cuts):
    data = make_data(cuts, batch_size=4, windows_per_speaker=2)
    n = data.batches_per_epoch()
    batches = take(data, n + 2)
    for batch, _ in batches:
        g = batch["group"].numpy()
        assert g[0] == g[1] and g[2] == g[3]  # whole chunks of one speaker
    assert batches[n - 1][1] == {"epoch": 1, "batch": 0}
    assert batches[n][1] == {"epoch": 1, "batch": 1}
    with pytest.raises(AudioDataError, match="windows_per_speaker"):
        data.epoch_plan(0, 3)


def test_resuming_from_a_position_continues_the_stream(cuts):
    data = make_data(cuts, batch_size=8)
    n = data.batches_per_epoch()
    full = take(data, n + 3)
    for k in (2, n - 1, n, n + 1):
        pos = full[k - 1][1]
        resumed = take(data, n + 3 - k, position=pos)
        for (a, pa), (b, pb) in zip(full[k:], resumed):
            assert pa == pb
            np.testing.assert_array_equal(a["wave"].numpy(), b["wave"].numpy())


def test_worker_processes_give_the_same_batches(cuts):
    data = make_data(cuts)
    ref = take(data, 3)
    data.cfg.num_workers = 1
    got = take(data, 3)
    for (a, pa), (b, pb) in zip(ref, got):
        assert pa == pb
        np.testing.assert_array_equal(a["wave"].numpy(), b["wave"].numpy())


def test_short_cuts_are_skipped_and_errors_are_clear(cuts, tmp_path, caplog):
    with caplog.at_level("INFO"):
        data = AudioWindowData(cuts, AudioDataConfig(window=32000, batch_size=1), seed=0)
    assert "shorter than the 32000-sample window" in caplog.text
    assert all(n >= 32000 for n in data.table.lengths)
    with pytest.raises(AudioDataError, match="no cut is at least"):
        AudioWindowData(cuts, AudioDataConfig(window=16000 * 10), seed=0)
    with pytest.raises(AudioDataError, match="fewer than one global batch"):
        make_data(cuts, batch_size=4).epoch_plan(0, 4000)
    with pytest.raises(FileNotFoundError, match="run stages 0-1 first"):
        load_train_cuts(tmp_path)
    # a file shorter than its manifest says (on a corpus of its own: it gets damaged)
    data = make_data(tiny_cuts(tmp_path / "own", speakers=1, utts=2), batch_size=1)
    path = data.table.paths[0]
    x, sr = sf.read(path)
    sf.write(path, x[: len(x) // 2], sr)
    with pytest.raises(AudioDataError, match="shorter than its manifest"):
        data.dataset.read(0, int(data.table.lengths[0]) - W)


def test_validation_split_is_fixed_by_ids_and_held_out(cuts):
    from cpc.audio.data import split_valid

    train, valid = split_valid(cuts, 0.25, W, 16000)
    assert len(valid) == 3 and len(train) == len(cuts) - 3
    assert not {c.id for c in train} & {c.id for c in valid}
    again, valid2 = split_valid(list(reversed(list(cuts))), 0.25, W, 16000)
    assert {c.id for c in valid2} == {c.id for c in valid}  # order does not matter
    assert split_valid(cuts, 0.0, W, 16000)[1] == []
    assert len(split_valid(cuts, 0.001, W, 16000)[1]) == 1  # at least one cut held out


def test_validation_windows_are_fixed_and_shared_out(cuts):
    from cpc.audio.data import ValidWindows

    cfg = AudioDataConfig(window=W, num_workers=0, batch_size=4, valid_max_windows=16)
    v = ValidWindows(cuts, cfg)
    assert len(v) == 4 and v.plan.shape == (4, 4, 2)
    assert (v.plan[..., 1] % W == 0).all()  # windows from each cut's start, no random shift
    one = [(i, b["wave"]) for i, b in v.eval_batches(0, 1)]
    two = [(i, b["wave"]) for r in (0, 1) for i, b in v.eval_batches(r, 2)]
    assert [i for i, _ in one] == [0, 1, 2, 3] and sorted(i for i, _ in two) == [0, 1, 2, 3]
    by_index = dict(two)
    for i, w in one:
        assert np.array_equal(w.numpy(), by_index[i].numpy())


def test_data_signature_is_content_not_location(tmp_path):
    import shutil

    from cpc.audio.data import data_signature

    a = tiny_cuts(tmp_path / "a")
    sig = data_signature(a)
    assert sig["cuts"] == len(a) and sig["speakers"] == 4
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    moved = tiny_cuts(tmp_path / "moved")  # same corpus, other paths
    assert data_signature(moved) == sig
    path = moved[0].recording.sources[0].source
    x, sr = sf.read(path)
    sf.write(path, np.roll(x, 1), sr)  # same length, other samples
    assert data_signature(moved)["sha256"] != sig["sha256"]
