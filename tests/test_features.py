"""Feature dumps (cpc.features, egs/librispeech100/local/extract_features.py): exact
storage, frame counts, labels kept, atomic resume / rebuild."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from lhotse import load_manifest
from lhotse.utils import compute_num_frames

from cpc.audio.constants import DUMP_SPEC, PREFIX
from cpc.audio.extractor import MfccDeltas, batch_fn_for, mfcc_source
from cpc.features import (
    FeatureDumpError,
    collect_frames,
    dump_features,
    duration_batches,
    fit_length,
    read_info,
)
from cpc.features import cuts_path as _cuts_path
from cpc.features import load_dump as _load_dump
from cpc.features import storage_dir as _storage_dir
from tests.factories import TINY_MODEL, make_labelled_manifests, tiny_cpc_extractor


def cuts_path(d, part):
    return _cuts_path(d, part, PREFIX)


def storage_dir(d, part):
    return _storage_dir(d, part, PREFIX)


def load_dump(d, part):
    return _load_dump(d, part, PREFIX)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m, _, _ = make_labelled_manifests(tmp_path_factory.mktemp("corpus"))
    return m


def _dump(manifest_dir: Path, out: Path, extractor, ftype: str, **kw) -> dict:
    return dump_features(
        manifest_dir,
        out,
        batch_fn_for(extractor),
        feature_type=ftype,
        dim=extractor.feature_dim(16000),
        source=kw.pop("source", {"kind": ftype}),
        spec=DUMP_SPEC,
        **kw,
    )


def test_mfcc_dump_exact_frames_and_labels_kept(manifests: Path, tmp_path: Path) -> None:
    ext, source = mfcc_source()
    info = _dump(manifests, tmp_path / "mfcc", ext, "mfcc", source=source)
    assert info["dim"] == 39 and info["frame_shift"] == 0.01
    assert set(info["parts"]) == {"train", "test"}
    assert info["source"]["config"]["num_ceps"] == 13
    for part in ("train", "test"):
        src = load_manifest(manifests / f"librispeech_cuts_{part}.jsonl.gz")
        cuts = load_dump(tmp_path / "mfcc", part)
        assert sorted(cuts.ids) == sorted(src.ids)
        for cut in cuts:
            n = compute_num_frames(cut.duration, 0.01, 16000)
            assert cut.features.num_frames == n and cut.num_frames == n
            assert cut.features.type == "mfcc" and cut.features.storage_type == "numpy_hdf5"
            x = cut.load_features()
            assert x.shape == (n, 39) and x.dtype == np.float32
            # exact storage: what is stored is what the extractor computes
            np.testing.assert_array_equal(x, MfccDeltas().extract(cut.load_audio(), 16000))
            assert cut.load_phone_labels().shape == (n,)
        assert info["parts"][part]["num_cuts"] == len(src)


def test_cpc_dump_equals_extractor_and_batching(manifests: Path, tmp_path: Path) -> None:
    ext = tiny_cpc_extractor()
    _dump(manifests, tmp_path / "one", ext, "random", max_duration=0)
    _dump(manifests, tmp_path / "batched", ext, "random", max_duration=30.0)
    one = load_dump(tmp_path / "one", "test")
    batched = {c.id: c for c in load_dump(tmp_path / "batched", "test")}
    for cut in one:
        x = cut.load_features()
        assert x.shape == (compute_num_frames(cut.duration, 0.01, 16000), 8)
        np.testing.assert_array_equal(x, ext.extract(cut.load_audio(), 16000))
        # batching pads whole utterances; the encoder masks every layer past each utterance's
        # length, so every frame, the last ones included, equals the utterance computed alone
        # (up to float summation order: batched and single kernels add in other orders)
        xb = batched[cut.id].load_features()
        np.testing.assert_allclose(xb, x, rtol=1e-5, atol=1e-6)


def test_cpc_dump_padded_to_a_multiple_equals_the_unpadded_one(manifests, tmp_path) -> None:
    """Waveforms padded to whole seconds (few input shapes, so few oneDNN kernels): the
    frames kept are the unpadded ones, up to float summation order."""
    import torch

    from cpc.audio.extractor import pad_waveforms

    ext = tiny_cpc_extractor()
    for name, fn in (("hop", batch_fn_for(ext)), ("second", batch_fn_for(ext, 16000))):
        dump_features(
            manifests, tmp_path / name, fn, "random", 8, {"kind": "random"}, DUMP_SPEC,
            max_duration=0,
        )  # fmt: skip
    padded = {c.id: c.load_features() for c in load_dump(tmp_path / "second", "test")}
    for cut in load_dump(tmp_path / "hop", "test"):
        x = cut.load_features()
        assert padded[cut.id].shape == x.shape
        np.testing.assert_allclose(padded[cut.id], x, rtol=1e-5, atol=1e-6)
    cuts = list(load_dump(tmp_path / "hop", "test"))[:3]
    wave, lengths = pad_waveforms(cuts, 16000)
    assert wave.shape[1] % 16000 == 0 and wave.shape[1] - int(lengths.max()) < 16000
    assert torch.equal(pad_waveforms(cuts)[1], lengths)
    for i, n in enumerate(lengths.tolist()):  # zeros past each length
        assert not wave[i, n:].any()
    with pytest.raises(ValueError, match="multiple of 160"):
        pad_waveforms(cuts, 1000)


def test_dump_resume_partial_and_rebuild(manifests: Path, tmp_path: Path) -> None:
    out = tmp_path / "mfcc"
    ext, source = mfcc_source()
    _dump(manifests, out, ext, "mfcc", source=source)
    h5 = {p: (storage_dir(out, p) / "feats.h5").stat().st_mtime_ns for p in ("train", "test")}
    info_before = (out / "info.json").read_text()
    # complete: nothing is touched
    _dump(manifests, out, ext, "mfcc", source=source)
    assert (out / "info.json").read_text() == info_before
    # one part missing (e.g. killed before its manifest was written, leaving temporaries):
    # only that part is redone, the temporaries are removed
    cuts_path(out, "test").unlink()
    (out / ".librispeech_feats_test.tmp.999").mkdir()
    (out / ".librispeech_cuts_test.jsonl.gz.tmp.999.jsonl.gz").write_text("x")
    _dump(manifests, out, ext, "mfcc", source=source)
    assert (storage_dir(out, "train") / "feats.h5").stat().st_mtime_ns == h5["train"]
    assert cuts_path(out, "test").is_file()
    assert not [p for p in out.iterdir() if ".tmp." in p.name]
    # a run for one part keeps the record of the other
    cuts_path(out, "test").unlink()
    _dump(manifests, out, ext, "mfcc", source=source, parts=["test"])
    assert set(read_info(out)["parts"]) == {"train", "test"} and cuts_path(out, "train").is_file()
    # a different source (another checkpoint/config): everything rebuilt
    _dump(manifests, out, ext, "mfcc", source={**source, "checkpoint_sha256": "x"})
    assert (storage_dir(out, "train") / "feats.h5").stat().st_mtime_ns != h5["train"]
    assert read_info(out)["source"]["checkpoint_sha256"] == "x"
    assert not [p for p in out.iterdir() if ".tmp." in p.name]


def test_wrong_frame_count_is_an_error_and_leaves_nothing(manifests: Path, tmp_path: Path):
    def bad(cuts):
        return [
            np.zeros((compute_num_frames(c.duration, 0.01, 16000) - 1, 4), np.float32) for c in cuts
        ]

    out = tmp_path / "bad"
    with pytest.raises(FeatureDumpError, match=r"\d+-\d+-\d+: features of shape .* 10 ms"):
        dump_features(manifests, out, bad, "bad", 4, {"kind": "bad"}, DUMP_SPEC)
    assert not cuts_path(out, "train").exists() and not storage_dir(out, "train").exists()
    assert not [p for p in out.iterdir() if ".tmp." in p.name]


def test_numpy_files_storage_and_lossy_refused(manifests: Path, tmp_path: Path) -> None:
    ext = tiny_cpc_extractor()
    _dump(
        manifests,
        tmp_path / "npy",
        ext,
        "random",
        storage_type="numpy_files",
        parts=["test"],
        max_duration=0,
    )
    cut = next(iter(load_dump(tmp_path / "npy", "test")))
    assert cut.features.storage_type == "numpy_files"
    np.testing.assert_array_equal(cut.load_features(), ext.extract(cut.load_audio(), 16000))
    with pytest.raises(FeatureDumpError, match="lilcom"):
        _dump(manifests, tmp_path / "l", ext, "random", storage_type="lilcom_chunky")


def test_missing_manifest_names_the_stage(tmp_path: Path) -> None:
    ext, source = mfcc_source()
    with pytest.raises(FileNotFoundError, match="librispeech_cuts_train.jsonl.gz does not exist"):
        _dump(tmp_path / "nothing", tmp_path / "out", ext, "mfcc", source=source)


def test_duration_batches() -> None:
    class C:
        def __init__(self, i: int, d: float) -> None:
            self.id, self.duration = f"u{i}", d

    cuts = [C(i, d) for i, d in enumerate([1.0, 5.0, 2.5, 2.4, 9.0, 0.5, 3.0])]
    batches = list(duration_batches(cuts, max_duration=8.0))
    flat = [c.id for b in batches for c in b]
    assert sorted(flat) == sorted(c.id for c in cuts) and len(flat) == len(cuts)
    durs = [c.duration for b in batches for c in b]
    assert durs == sorted(durs, reverse=True)
    for b in batches:
        assert len(b) == 1 or len(b) * b[0].duration <= 8.0
    assert [len(b) for b in duration_batches(cuts, max_duration=0)] == [1] * len(cuts)


def test_collect_frames_offsets_and_label_mismatch(manifests: Path, tmp_path: Path) -> None:
    ext, source = mfcc_source()
    _dump(manifests, tmp_path / "m", ext, "mfcc", source=source, parts=["test"])
    cuts = list(load_dump(tmp_path / "m", "test"))
    x, y, off, ids = collect_frames(cuts, DUMP_SPEC, lambda c, n: c.load_phone_labels())
    assert x.shape == (off[-1], 39) and y.shape == (off[-1],) and ids == [c.id for c in cuts]
    np.testing.assert_array_equal(x[off[1] : off[2]], cuts[1].load_features())
    with pytest.raises(FeatureDumpError, match=f"{cuts[0].id}: .* label frames"):
        collect_frames(cuts, DUMP_SPEC, lambda c, n: np.zeros(n + 2, np.int64))


def test_fit_length() -> None:
    x = np.arange(6).reshape(3, 2)
    np.testing.assert_array_equal(fit_length(x, 2), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(fit_length(x, 5), [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    np.testing.assert_array_equal(fit_length(np.array([7, 8]), 4), [7, 8, 8, 8])
    assert fit_length(np.zeros((0, 3)), 2).shape == (2, 3)


def test_extract_features_cli(manifests: Path, tmp_path: Path) -> None:
    from egs.librispeech100.local.extract_features import main

    cfg = tmp_path / "tiny.yaml"
    model = "".join(f"  {k}: {v}\n" for k, v in TINY_MODEL.items())
    cfg.write_text("domain: audio\nmodel:\n" + model)
    out = tmp_path / "random"

    def argv(seed: int) -> list[str]:
        return [
            *("--feat-type", "random", "--config", str(cfg), "--seed", str(seed)),
            *("--manifest-dir", str(manifests), "--output-dir", str(out), "--dump-z", "true"),
            *("--override", "model.context_dim=4"),
        ]

    assert main(argv(3)) == 0
    info = json.loads((out / "info.json").read_text())
    assert info["dim"] == 4 and info["feature_type"] == "random"
    assert info["extraction"]["pad_multiple_samples"] == 16000  # auto on CPU: 1 s
    assert info["source"]["seed"] == 3 and info["source"]["config"]["model"]["context_dim"] == 4
    assert json.loads((tmp_path / "random_z" / "info.json").read_text())["dim"] == 16
    x3 = next(iter(load_dump(out, "test"))).load_features()
    # same seed and config -> the same random model -> the dump is reused as is
    before = (out / "info.json").read_text()
    assert main(argv(3)) == 0
    assert (out / "info.json").read_text() == before
    # another seed is another model: rebuilt, with other values
    assert main(argv(4)) == 0
    assert read_info(out)["source"]["seed"] == 4
    assert not np.allclose(next(iter(load_dump(out, "test"))).load_features(), x3)
    # --precision auto is recorded as what it means here: where that is fp32, the fp32 dump
    # above is up to date
    import cpc.perf

    before = (out / "info.json").read_text()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpc.perf, "native_bf16", lambda device="cpu": False)
        assert main(argv(4) + ["--precision", "auto"]) == 0
    assert (out / "info.json").read_text() == before
    assert read_info(out)["source"]["precision"] == "fp32"
    # a missing checkpoint is one clear error, exit 1
    bad = ["--feat-type", "cpc", "--checkpoint", str(tmp_path / "no.pt")]
    assert main(bad + ["--manifest-dir", str(manifests), "--output-dir", str(tmp_path / "c")]) == 1


def test_dump_paths_are_relative_so_data_can_be_moved(tmp_path: Path) -> None:
    """The manifests store paths relative to the dump directory: a whole data/ tree (the
    dump and the stage-1 labels beside it) copied elsewhere loads from the copy alone."""
    import shutil

    data = tmp_path / "data"
    make_labelled_manifests(data)
    ext, source = mfcc_source()
    _dump(data / "manifests", data / "mfcc", ext, "mfcc", source=source)
    raw = json.loads(gzip.open(cuts_path(data / "mfcc", "test"), "rt").readline())
    assert raw["features"]["storage_path"] == "librispeech_feats_test/feats.h5"
    label_path = raw["custom"]["phone_labels"]["array"]["storage_path"]
    assert not Path(label_path).is_absolute() and label_path.startswith("../")
    want = {
        c.id: (c.load_features(), c.load_custom("phone_labels"))
        for c in load_dump(data / "mfcc", "test")
    }
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(data, moved)
    shutil.rmtree(data)  # nothing may still point at the original
    got = list(load_dump(moved / "mfcc", "test"))
    assert sorted(c.id for c in got) == sorted(want)
    for c in got:
        x, y = want[c.id]
        np.testing.assert_array_equal(c.load_features(), x)
        np.testing.assert_array_equal(c.load_custom("phone_labels"), y)
    x, y, _, _ = collect_frames(got, DUMP_SPEC, lambda c, n: c.load_custom("phone_labels"))
    assert x.shape[0] == y.shape[0] == sum(w[0].shape[0] for w in want.values())


def test_extraction_batching_defaults_per_device() -> None:
    """Stage 3 and the benchmark share one rule: CPU 100 s batches padded to whole seconds,
    GPU 120 s padded to the hop; explicit values win (rounded to whole hops)."""
    from cpc.audio.extractor import extraction_batching

    assert extraction_batching("cpu") == (100.0, 16000)
    assert extraction_batching("cuda") == (120.0, 160)
    assert extraction_batching("cpu", 0.0, 0.0) == (0.0, 160)
    assert extraction_batching("cuda:1", 30.0, 0.5) == (30.0, 8000)
