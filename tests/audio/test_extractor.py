"""lhotse feature extractors (cpc.audio.extractor): frame counts, registration, checkpoints,
``compute_and_store_features`` outside the recipe."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, Mfcc, MfccConfig, MonoCut, NumpyHdf5Writer, Recording
from lhotse.features.base import FEATURE_EXTRACTORS, create_default_feature_extractor
from lhotse.utils import compute_num_frames

from cpc.audio.extractor import (
    CPCExtractor,
    CPCExtractorConfig,
    ExtractorError,
    MfccDeltas,
    MfccDeltasConfig,
    cpc_checkpoint_source,
)

TINY_MODEL = {"channels": 16, "context_dim": 8, "prediction_steps": 2, "num_negatives": 2}
LENGTHS = [0, 10, 159, 160, 161, 239, 240, 400, 16000, 16000 + 79, 16000 + 80, 33333]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpc.audio.model import build_cpc_model
    from cpc.checkpoint import save_best

    torch.manual_seed(0)
    model = build_cpc_model(TINY_MODEL)
    exp = tmp_path_factory.mktemp("exp")
    return save_best(exp, 77, model.state_dict(), {"model": dict(TINY_MODEL)})


def wave(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_registered_with_lhotse() -> None:
    assert FEATURE_EXTRACTORS["cpc"] is CPCExtractor
    assert FEATURE_EXTRACTORS["mfcc-deltas"] is MfccDeltas
    assert isinstance(create_default_feature_extractor("mfcc-deltas"), MfccDeltas)


def test_mfcc_frames_dims_and_static_part() -> None:
    ext = MfccDeltas()
    assert ext.frame_shift == 0.01 and ext.feature_dim(16000) == 39
    for n in LENGTHS:
        f = ext.extract(wave(n), 16000)
        assert f.shape == (compute_num_frames(n / 16000, 0.01, 16000), 39), n
        assert f.dtype == np.float32 and np.isfinite(f).all()
    x = wave(16000 + 80)
    static = Mfcc(MfccConfig(num_ceps=13)).extract(x[None], 16000)
    f = ext.extract(x, 16000)
    assert static.shape[0] == f.shape[0]
    np.testing.assert_allclose(f[:, :13], static, rtol=1e-5, atol=1e-4)
    # deltas of a constant signal's cepstra are zero
    c = ext.extract(np.full(8000, 0.1, np.float32) + wave(8000) * 1e-3, 16000)
    assert np.abs(c[:, 13:]).mean() < np.abs(c[:, :13]).mean()
    assert MfccDeltas(MfccDeltasConfig(delta_order=0)).extract(x, 16000).shape[1] == 13


def test_wrong_rate_and_channels_are_errors() -> None:
    with pytest.raises(ExtractorError, match="resample"):
        MfccDeltas().extract(wave(8000), 8000)
    with pytest.raises(ExtractorError, match="mono"):
        MfccDeltas().extract(np.zeros((2, 800), np.float32), 16000)
    with pytest.raises(ExtractorError, match="'c' or 'z'"):
        CPCExtractor(CPCExtractorConfig(output="q"))
    with pytest.raises(ExtractorError, match="checkpoint is empty"):
        CPCExtractor().extract(wave(1600), 16000)


def test_cpc_frames_dims_and_outputs(checkpoint: Path) -> None:
    c = CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint)))
    z = CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint), output="z"))
    assert c.frame_shift == 0.01 and c.feature_dim(16000) == 8 and z.feature_dim(16000) == 16
    for n in LENGTHS:
        f = c.extract(wave(n), 16000)
        assert f.shape == (compute_num_frames(n / 16000, 0.01, 16000), 8), n
        assert f.dtype == np.float32
    # the model's own extract on the zero-padded waveform is what the extractor returns
    x = wave(16000 + 100)
    n = compute_num_frames(len(x) / 16000, 0.01, 16000)
    padded = np.zeros(n * 160, np.float32)
    padded[: len(x)] = x[: n * 160]
    ref = c.model.extract(torch.from_numpy(padded)[None], torch.tensor([n * 160]))["c"][0]
    np.testing.assert_array_equal(c.extract(x, 16000), ref.numpy())


def test_cpc_checkpoint_source(checkpoint: Path) -> None:
    ext, source = cpc_checkpoint_source(str(checkpoint))
    assert source["step"] == 77 and len(source["checkpoint_sha256"]) == 64
    assert source["config"]["model"]["context_dim"] == 8 and source["output"] == "c"
    assert ext.feature_dim(16000) == 8


def test_bf16_extraction_is_close_to_fp32_and_recorded(checkpoint: Path) -> None:
    """precision="bf16": the encoder under bf16 autocast, the GRU in float32; the features
    stay float32, close to fp32's but not equal, and the precision is in the dump's source
    (so a change rebuilds the dump)."""
    from cpc.audio.extractor import random_init_source

    fp32, src32 = cpc_checkpoint_source(str(checkpoint))
    bf16, src16 = cpc_checkpoint_source(str(checkpoint), precision="bf16")
    assert (src32["precision"], src16["precision"]) == ("fp32", "bf16")
    x = wave(16000 + 321, seed=4)
    a, b = fp32.extract(x, 16000), bf16.extract(x, 16000)
    assert b.dtype == np.float32 and b.shape == a.shape
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0 < rel < 0.02  # rounded (bf16 has 8 significant bits), not another model
    # padded batches keep their frame contract in bf16 too
    xs = [wave(n, seed=n) for n in (3210, 1605)]
    for f, one in zip(bf16.extract_batch(xs, 16000), (bf16.extract(x, 16000) for x in xs)):
        assert f.shape == one.shape
        np.testing.assert_allclose(f, one, atol=0.05)
    _, rsrc = random_init_source(
        None, ["model.channels=16", "model.context_dim=8"], 1, precision="bf16"
    )
    assert rsrc["precision"] == "bf16"
    with pytest.raises(ExtractorError, match="precision"):
        CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint), precision="fp16"))


def test_pickle_drops_the_model_and_reloads(checkpoint: Path) -> None:
    ext = CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint)))
    x = wave(4000)
    a = ext.extract(x, 16000)
    clone = pickle.loads(pickle.dumps(ext))
    assert clone._model is None
    np.testing.assert_array_equal(clone.extract(x, 16000), a)


def test_extract_batch_matches_extract(checkpoint: Path) -> None:
    ext = CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint)))
    xs = [wave(n, seed=n) for n in (3210, 4800, 1605)]
    out = ext.extract_batch(xs, 16000)
    for x, f in zip(xs, out):
        ref = ext.extract(x, 16000)
        assert f.shape == ref.shape
        # every frame, the last included: each layer is masked past the utterance's length
        np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-6)


def test_compute_and_store_features_outside_the_recipe(checkpoint: Path, tmp_path: Path):
    import soundfile as sf

    cuts = []
    for i, n in enumerate((16000 + 37, 8000 + 150)):
        p = tmp_path / f"u{i}.flac"
        sf.write(p, wave(n, seed=i), 16000)
        rec = Recording.from_file(p, recording_id=f"u{i}")
        cuts.append(MonoCut(id=f"u{i}", start=0, duration=rec.duration, channel=0, recording=rec))
    ext = CPCExtractor(CPCExtractorConfig(checkpoint=str(checkpoint)))
    stored = CutSet.from_cuts(cuts).compute_and_store_features(
        extractor=ext, storage_path=tmp_path / "feats", storage_type=NumpyHdf5Writer
    )
    for cut in stored:
        f = cut.load_features()
        assert f.shape == (compute_num_frames(cut.duration, 0.01, 16000), 8)
        assert cut.features.type == "cpc" and cut.features.storage_type == "numpy_hdf5"
        np.testing.assert_array_equal(f, ext.extract(cut.load_audio(), 16000))
