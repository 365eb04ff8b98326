"""CPC speech model: frame counts, shapes, normalisation, learning, bf16/compile, loading."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch

from cpc.audio.config import CPCModelConfig
from cpc.audio.model import ChannelLayerNorm, build_cpc_model, load_cpc_model
from cpc.checkpoint import CheckpointError, save_best
from cpc.config import ConfigError, config_to_dict


def small_cfg(**kw) -> CPCModelConfig:
    base = dict(channels=32, context_dim=32, prediction_steps=3, num_negatives=8)
    base.update(kw)
    return CPCModelConfig(**base)


def toy_batch(batch: int, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Learnable signal: runs of 10-30 frames of one tone (150-4000 Hz), tiny noise."""
    rng = np.random.default_rng(seed)
    waves = np.zeros((batch, samples), dtype=np.float32)
    t = np.arange(samples) / 16000
    for b in range(batch):
        pos = 0
        while pos < samples:
            n = int(rng.integers(1600, 4800))
            f = float(np.exp(rng.uniform(np.log(150), np.log(4000))))
            waves[b, pos : pos + n] = 0.1 * np.sin(2 * np.pi * f * t[pos : pos + n])
            pos += n
        waves[b] += 0.005 * rng.standard_normal(samples)
    return {"wave": torch.from_numpy(waves), "group": torch.arange(batch) // 2}


def _loss(model, batch, seed=0, bf16=False):
    gen = torch.Generator().manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(batch, generator=gen)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A small model trained on the toy signal, with its loss curve."""
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    curve = []
    for step in range(150):
        out = _loss(model, toy_batch(8, 3200, seed=step), seed=step)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        curve.append((out["loss"].item(), out["accuracy"][0].item()))
    model.curve = curve
    return model


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_frames_are_samples_over_160(norm):
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg(norm=norm))
    lengths = [0, 1, 159, 160, 161, 319, 320, 479, 1000, 3199, 3200, 16000, 20480, 20639, 33333]
    for s in lengths:
        out = model.extract(torch.randn(2, s))
        assert out["z"].shape == (2, s // 160, 32), (s, out["z"].shape)
        assert out["c"].shape == (2, s // 160, 32)
        assert torch.isfinite(out["c"]).all()
    assert model.num_frames(20480) == 128


def test_a_total_stride_other_than_the_frame_hop_is_refused_at_config_load(tmp_path):
    """Stage 3 dumps 10 ms frames: a model with another hop is refused when its config is
    loaded (training config, checkpoint or random-init config), not at extraction."""
    from cpc.audio.config import load_train_config

    with pytest.raises(ConfigError, match=r"total stride of 80 samples.*160"):
        build_cpc_model({"strides": [5, 4, 2, 2, 1], "kernels": [10, 8, 4, 4, 4]})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "domain: audio\nmodel:\n  strides: [5, 4, 4, 2, 2]\n  kernels: [10, 8, 4, 4, 4]\n"
    )
    with pytest.raises(ConfigError, match=r"total stride of 320"):
        load_train_config(cfg)
    bad = {"model": config_to_dict(small_cfg()), "train": {"seed": 1}}
    bad["model"]["strides"] = [5, 4, 2, 2, 1]
    torch.save({"format": "cpc-recipes-checkpoint-v2", "step": 1, "model": {}, "config": bad},
               tmp_path / "best.pt")  # fmt: skip
    with pytest.raises(ConfigError, match="total stride"):
        load_cpc_model(tmp_path / "best.pt")


def test_default_config_is_the_paper_model_and_meets_the_contract():
    model = build_cpc_model(CPCModelConfig())
    conv = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.stride[0] for c in conv] == [5, 4, 2, 2, 2]
    assert [c.kernel_size[0] for c in conv] == [10, 8, 4, 4, 4]
    assert all(c.out_channels == 512 for c in conv)
    assert model.gru.hidden_size == 256 and model.infonce.predictors.num_steps == 12
    out = model.extract(torch.randn(2, 16160), torch.tensor([16160, 8000]))
    assert out["c"].shape == (2, 101, 256) and out["z"].shape == (2, 101, 512)
    assert not any(
        isinstance(m, torch.nn.BatchNorm1d | torch.nn.LayerNorm) for m in model.modules()
    )


def test_norm_variants_build_the_right_layers():
    bn = build_cpc_model(small_cfg(norm="batch"))
    ln = build_cpc_model(small_cfg(norm="layer"))
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules()) == 5
    assert sum(isinstance(m, ChannelLayerNorm) for m in ln.modules()) == 5
    # channel LayerNorm normalises each frame over channels
    x = torch.randn(3, 32, 7) * 5 + 2
    y = ChannelLayerNorm(32)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(3, 7), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="kernel"):
        build_cpc_model(small_cfg(strides=[5, 4], kernels=[4, 4]))


def test_input_standardisation_makes_the_model_gain_invariant():
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg())
    wave = toy_batch(2, 4000, 0)["wave"]
    a, b, c = model.extract(wave), model.extract(wave * 0.2), model.extract(wave * 5)
    torch.testing.assert_close(a["c"], b["c"], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(a["c"], c["c"], atol=1e-4, rtol=1e-3)
    raw = build_cpc_model(small_cfg(input_norm="none"))
    assert torch.equal(raw.normalize_input(wave), wave)  # "none": the waveform as is
    # standardised input: zero mean, unit variance over the valid samples, zeros past them
    x = model.normalize_input(torch.randn(2, 100) * 0.1 + 0.3, torch.tensor([100, 60]))
    assert abs(x[1, :60].std(unbiased=False).item() - 1) < 1e-3 and (x[1, 60:] == 0).all()


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_batched_extraction_matches_single_utterances(norm):
    """Padding a shorter utterance in a batch changes none of its frames."""
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg(norm=norm))
    model.eval()
    long, short = toy_batch(1, 4800, 1)["wave"][0], toy_batch(1, 3000, 2)["wave"][0]
    batch = torch.zeros(2, 4800)
    batch[0], batch[1, :3000] = long, short
    out = model.extract(batch, torch.tensor([4800, 3000]))
    alone = model.extract(short.unsqueeze(0))
    n = 3000 // 160
    assert alone["c"].shape[1] == n
    torch.testing.assert_close(out["c"][1, :n], alone["c"][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["z"][1, :n], alone["z"][0], atol=1e-6, rtol=1e-5)
    assert model.training is False
    model.train()
    model.extract(batch)
    assert model.training is True  # extract restores the mode


def test_loss_falls_on_a_learnable_signal(trained):
    first_loss, first_acc = trained.curve[0]
    assert abs(first_loss - math.log(9)) < 0.3  # chance: 1 positive among 9
    last = trained.curve[-10:]
    last_loss = sum(x[0] for x in last) / len(last)
    last_acc = sum(x[1] for x in last) / len(last)
    assert last_loss < first_loss - 0.5, trained.curve
    assert last_acc > 0.25, trained.curve  # chance is 1/9


def test_bf16_autocast_is_close_to_fp32(trained):
    batch = toy_batch(8, 3200, seed=123)
    fp32 = _loss(trained, batch)
    bf16 = _loss(trained, batch, bf16=True)
    assert torch.isfinite(bf16["loss"])
    assert abs(bf16["loss"].item() - fp32["loss"].item()) < 0.05 * fp32["loss"].item() + 0.02
    assert (bf16["accuracy"] - fp32["accuracy"]).abs().max() < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trained.encode(batch["wave"]).dtype == torch.bfloat16  # autocast really ran
    bf16["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in trained.parameters() if p.grad is not None)
    trained.zero_grad()


def test_torch_compile_is_close_to_fp32(trained):
    """Inductor takes ~40 s on 2 cores; CI traces with aot_eager unless CPC_FULL_TESTS=1."""
    backend = "inductor" if os.environ.get("CPC_FULL_TESTS") == "1" else "aot_eager"
    batch = toy_batch(8, 3200, seed=7)
    ref = _loss(trained, batch)
    model = copy.deepcopy(trained)
    model.compile(backend=backend)
    out = _loss(model, batch)
    assert abs(out["loss"].item() - ref["loss"].item()) < 1e-4
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_build_from_dict_and_load_round_trip(tmp_path, trained):
    cfg = {"model": config_to_dict(trained.cfg), "train": {"seed": 1}}
    path = save_best(tmp_path, 40, trained.state_dict(), cfg)
    model, cfg_back = load_cpc_model(path)
    assert cfg_back == cfg and model.training is False
    wave = toy_batch(2, 1600, 9)["wave"]
    torch.testing.assert_close(model.extract(wave)["c"], trained.extract(wave)["c"])
    assert build_cpc_model(cfg["model"]).cfg == trained.cfg
    # loads with weights_only=True (no pickled classes inside)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "step", "model", "config", "identity", "valid"}
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_cpc_model(path)


def test_batched_extraction_equals_one_by_one() -> None:
    """Padding rows of a batch must not leak into their last frames (every layer is masked
    past its valid length)."""
    torch.manual_seed(0)
    model = build_cpc_model({"channels": 32, "context_dim": 16})
    lengths = torch.tensor([16000, 12345, 8037])
    wave = torch.zeros(3, 16000)
    alone = []
    for i, n in enumerate(lengths.tolist()):
        x = torch.randn(n) * 0.1
        wave[i, :n] = x
        alone.append(model.extract(x[None], torch.tensor([n])))
    batched = model.extract(wave, lengths)
    for i, n in enumerate(lengths.tolist()):
        t = n // 160
        for key in ("c", "z"):
            assert alone[i][key].shape[1] == t
            torch.testing.assert_close(batched[key][i, :t], alone[i][key][0])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_row_by_row_encoder_with_a_batched_gru_equals_the_batched_model(precision) -> None:
    """``row_multiple`` (CPU extraction): the encoder row by row, each row cut at its length
    rounded up to the multiple, the GRU on the batch; the frames equal the batched model's
    (valid frames and the zeros past them), and a row alone gives its frames too."""
    torch.manual_seed(0)
    model = build_cpc_model({"channels": 32, "context_dim": 16})
    lengths = torch.tensor([3200, 16000, 8037, 160])
    wave = torch.zeros(4, 16000)
    for i, n in enumerate(lengths.tolist()):
        wave[i, :n] = torch.randn(n) * 0.1
    batched = model.extract(wave, lengths, precision=precision)
    for multiple in (160, 1600, 16000):
        rows = model.extract(wave, lengths, precision=precision, row_multiple=multiple)
        for key in ("c", "z"):
            assert rows[key].shape == batched[key].shape
            torch.testing.assert_close(rows[key], batched[key], rtol=1e-5, atol=1e-6)
    valid = lengths // 160
    z = model.extract(wave, lengths, precision=precision, row_multiple=1600)["z"]
    for i, t in enumerate(valid.tolist()):
        assert float(z[i, t:].abs().sum()) == 0.0  # nothing past a row's valid frames
    full = model.extract(wave, None, precision=precision, row_multiple=1600)
    torch.testing.assert_close(full["c"], model.extract(wave, precision=precision)["c"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_first_layer_as_frame_product_equals_the_convolution(precision) -> None:
    """On the inference path the one-channel first layer is a product of strided sample
    frames with the kernels: the convolution's values (also with an odd tail of samples)."""
    torch.manual_seed(0)
    model = build_cpc_model({"channels": 32, "context_dim": 16}).eval()
    pad, conv = list(model.encoder.layers)[:2]
    left, right = pad.padding
    x = torch.randn(3, 1637)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        fast = model.encoder._frames_cl(x[:, None, None], conv, left, right)
        ref = torch.relu(conv(pad(x[:, None])))
    assert fast.shape == (3, 32, 1, ref.shape[-1])
    assert fast.is_contiguous(memory_format=torch.channels_last)
    tol = dict(rtol=1e-5, atol=1e-6) if precision == "fp32" else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(fast[:, :, 0].float(), ref.float(), **tol)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_inference_layout_equals_the_training_layout(norm) -> None:
    """Without gradients the encoder runs channels-last on CPU (norm none); same numbers."""
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg(norm=norm)).eval()
    wave = torch.randn(3, 1637)
    lengths = torch.tensor([1637, 1200, 900])
    for lens in (None, lengths):
        with torch.no_grad():
            fast = model.encode(wave, lens)
        plain = model.encode(wave, lens).detach()  # with gradients: the training layout
        assert fast.shape == plain.shape == (3, 10, 32)
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
        if norm == "none":
            assert fast.is_contiguous()  # (B, T, C) straight for the GRU


def test_context_network_on_one_thread_equals_the_gru() -> None:
    """With several CPU threads the GRU runs on one (forward and backward): same numbers."""
    torch.manual_seed(0)
    model = build_cpc_model(small_cfg())
    z = torch.randn(2, 7, 32, requires_grad=True)
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        c = model.context(z)
        assert torch.get_num_threads() == 2  # restored
        g = torch.randn_like(c)
        c.backward(g)
        with torch.no_grad():
            c_eval = model.context(z)
    finally:
        torch.set_num_threads(n)
    got = [z.grad.clone()] + [p.grad.clone() for p in model.gru.parameters()]
    z.grad = None
    model.zero_grad()
    ref, _ = model.gru(z)
    ref.backward(g)
    want = [z.grad] + [p.grad for p in model.gru.parameters()]
    torch.testing.assert_close(c, ref)
    torch.testing.assert_close(c_eval, ref.detach())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
