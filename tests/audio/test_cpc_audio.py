"""Checkpoints in CPC_audio's published layout (built here, weights random) load by name into
cpc/audio/cpc_audio.py, give what the architecture computes by hand, and are refused by
name when a weight is missing or extra; the s3prl-style upstream wraps both model kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpc.audio.cpc_audio import CpcAudioConfig, CPCUpstream, load_cpc_audio
from cpc.audio.extractor import cpc_checkpoint_source
from cpc.checkpoint import CheckpointError
from tests.factories import tiny_cpc_extractor

H, G = 8, 6  # hiddenEncoder, hiddenGar
SPEC = [(1, 10, 5, 3), (H, 8, 4, 2), (H, 4, 2, 1), (H, 4, 2, 1), (H, 4, 2, 1)]


def _cpc_audio_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, k, _, _) in enumerate(SPEC):
        sd[f"gEncoder.conv{i}.weight"] = torch.randn(H, cin, k, generator=gen) * 0.3
        sd[f"gEncoder.conv{i}.bias"] = torch.randn(H, generator=gen) * 0.1
        sd[f"gEncoder.batchNorm{i}.weight"] = 1 + 0.1 * torch.randn(1, H, 1, generator=gen)
        sd[f"gEncoder.batchNorm{i}.bias"] = 0.1 * torch.randn(1, H, 1, generator=gen)
    for name, shape in (
        ("weight_ih_l0", (4 * G, H)),
        ("weight_hh_l0", (4 * G, G)),
        ("bias_ih_l0", (4 * G,)),
        ("bias_hh_l0", (4 * G,)),
    ):
        sd[f"gAR.baseNet.{name}"] = 0.3 * torch.randn(*shape, generator=gen)
    return sd


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _cpc_audio_state(torch.Generator().manual_seed(0))
    path = tmp_path / "checkpoint_10.pt"
    torch.save({"gEncoder": sd, "cpcCriterion": {}, "best": None}, path)
    args = {
        "hiddenEncoder": H,
        "hiddenGar": G,
        "nLevelsGRU": 1,
        "arMode": "LSTM",
        "normMode": "layerNorm",
        "samplingType": "samespeaker",
    }
    (tmp_path / "checkpoint_args.json").write_text(json.dumps(args))
    return path, sd


def _by_hand(sd: dict[str, torch.Tensor], wave: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = wave[None, None]
    for i, (_, _, stride, pad) in enumerate(SPEC):
        x = F.conv1d(
            x,
            sd[f"gEncoder.conv{i}.weight"],
            sd[f"gEncoder.conv{i}.bias"],
            stride=stride,
            padding=pad,
        )
        mu, var = x.mean(1, keepdim=True), x.var(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + 1e-5)
        x = F.relu(x * sd[f"gEncoder.batchNorm{i}.weight"] + sd[f"gEncoder.batchNorm{i}.bias"])
    z = x[0].T[: wave.shape[0] // 160]
    lstm = torch.nn.LSTM(H, G, batch_first=True)
    lstm.load_state_dict({k.split(".")[-1]: v for k, v in sd.items() if k.startswith("gAR")})
    c, _ = lstm(z[None])
    return z, c[0]


def test_cpc_audio_checkpoint_computes_its_architecture(checkpoint) -> None:
    path, sd = checkpoint
    model, desc = load_cpc_audio(path)
    assert desc["architecture"] == {
        "hidden_encoder": H,
        "hidden_gar": G,
        "n_levels": 1,
        "ar_mode": "LSTM",
        "norm_mode": "layerNorm",
    }
    wave = torch.randn(3200, generator=torch.Generator().manual_seed(1))
    out = model.extract(wave[None])
    z, c = _by_hand(sd, wave)
    torch.testing.assert_close(out["z"][0], z, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(out["c"][0], c, atol=1e-5, rtol=1e-4)
    # the upstream: per-layer states of a list of waveforms, 100 frames per second
    up = CPCUpstream.from_checkpoint(path)
    res = up([wave, wave[:1600]])
    assert up.frame_rate == 100.0 and up.downsample_rate == 160
    assert res["lengths"].tolist() == [20, 10] and len(res["hidden_states"]) == 2
    torch.testing.assert_close(res["last_hidden_state"][0], out["c"][0])
    assert (res["hidden_states"][0][1, 10:] == 0).all()
    # stage 3's extractor reads it like a project checkpoint
    ext, source = cpc_checkpoint_source(str(path), "c")
    assert ext.feature_dim(16000) == G and source["config"]["format"] == "CPC_audio"
    np.testing.assert_allclose(ext.extract(wave.numpy(), 16000), out["c"][0].numpy(), atol=1e-5)


def test_missing_or_unexpected_weights_are_refused_by_name(checkpoint, tmp_path: Path) -> None:
    path, sd = checkpoint
    bad = dict(sd)
    del bad["gEncoder.conv3.bias"]
    bad["gEncoder.conv5.weight"] = torch.zeros(1)
    torch.save({"gEncoder": bad}, path)
    with pytest.raises(CheckpointError) as e:
        load_cpc_audio(path)
    assert "missing ['gEncoder.conv3.bias']" in str(e.value)
    assert "unexpected ['gEncoder.conv5.weight']" in str(e.value)
    # a GRU architecture given as options does not fit these LSTM weights
    torch.save({"gEncoder": sd}, path)
    with pytest.raises(CheckpointError, match="gAR.baseNet.weight_ih_l0"):
        load_cpc_audio(path, CpcAudioConfig(hidden_encoder=H, hidden_gar=G, ar_mode="GRU"))
    (tmp_path / "checkpoint_args.json").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint_args.json beside it"):
        load_cpc_audio(path)


def test_upstream_of_a_project_model_equals_one_by_one_extraction() -> None:
    model = tiny_cpc_extractor(seed=0).model
    up = CPCUpstream(model)
    gen = torch.Generator().manual_seed(2)
    wavs = [torch.randn(4000, generator=gen), torch.randn(2400, generator=gen)]
    res = up(wavs)
    for i, w in enumerate(wavs):
        alone = model.extract(w[None], torch.tensor([w.shape[0]]))
        n = w.shape[0] // 160
        torch.testing.assert_close(res["hidden_states"][1][i, :n], alone["c"][0, :n])
        torch.testing.assert_close(res["hidden_states"][0][i, :n], alone["z"][0, :n])
