"""The model: causality of the context network, per-patch encoding, InfoNCE that learns."""

from __future__ import annotations

import math

import pytest
import torch

from cpc.vision.config import VisionModelConfig
from cpc.vision.model import CPCVision, MaskedContext, SupervisedVision

SMALL = dict(
    stem="conv3",
    stem_channels=8,
    widths=[4, 8, 8],
    blocks=[1, 1, 1],
    strides=[1, 2, 2],
    norm="layer",
    context_channels=16,
    context_layers=3,
    prediction_steps=3,
)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_context_row_i_sees_rows_up_to_i_only(kernel: int) -> None:
    torch.manual_seed(0)
    net = MaskedContext(6, 8, layers=3, kernel=kernel)
    z = torch.randn(2, 6, 7, 7)
    c = net(z)
    for r in range(7):
        z2 = z.clone()
        z2[:, :, r] += torch.randn(2, 6, 7)  # change every patch of row r
        c2 = net(z2)
        assert torch.equal(c[:, :, :r], c2[:, :, :r])  # rows above: unchanged, bit for bit
        assert not torch.allclose(c[:, :, r], c2[:, :, r])  # the row itself does see it


def test_predictions_from_rows_above_never_see_a_changed_row() -> None:
    torch.manual_seed(0)
    model = CPCVision(VisionModelConfig(**SMALL))
    x = torch.randn(2, 7, 7, 1, 8, 8)
    z, pred = model.predictions(x)  # columns: (B * W, H, D), (B * W, H, K, D)
    for r in (1, 4, 6):
        x2 = x.clone()
        x2[:, r] = torch.randn(2, 7, 1, 8, 8)
        z2, pred2 = model.predictions(x2)
        assert torch.equal(pred[:, :r], pred2[:, :r])
        assert torch.equal(z[:, :r], z2[:, :r]) and torch.equal(z[:, r + 1 :], z2[:, r + 1 :])
        assert not torch.allclose(z[:, r], z2[:, r])


def test_each_patch_is_encoded_alone() -> None:
    torch.manual_seed(0)
    model = CPCVision(VisionModelConfig(**SMALL))
    x = torch.randn(3, 7, 7, 1, 8, 8)
    z = model.encode(x)
    x2 = x.clone()
    x2[1, 2, 5] = 5.0
    z2 = model.encode(x2)
    changed = (z - z2).abs().amax(dim=1) > 0
    assert changed.sum() == 1 and changed[1, 2, 5]  # layer norm shares no statistics


def test_infonce_leaves_chance_on_a_tiny_run() -> None:
    """Images made of a few smooth random blobs: rows below are predictable from rows above.
    The all-pairs loss starts at log(N), N = every patch of the batch, and must fall well
    below it; a sampling bug (e.g. the positive not among the candidates, or targets
    misaligned with contexts) keeps it at chance."""
    torch.manual_seed(0)
    model = CPCVision(VisionModelConfig(**SMALL))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    b = 8
    n = b * 7 * 7
    losses = []
    for step in range(40):  # about 15 s on one busy core
        img = torch.nn.functional.interpolate(torch.randn(b, 1, 4, 4, generator=gen), size=32)
        grid = img.unfold(2, 8, 4).unfold(3, 8, 4).permute(0, 2, 3, 1, 4, 5)
        out = model({"patches": grid.contiguous()})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        if step == 0:
            assert abs(losses[0] - math.log(n)) < 0.3
            assert float(out["mi_bound"]) == pytest.approx(math.log(n) - losses[0], abs=1e-4)
    assert sum(losses[-5:]) / 5 < math.log(n) - 0.5  # measured: 5.97 -> 5.27 in 40 steps
    assert float(out["accuracy"][0]) > 4 / n  # several times chance (1/N); measured 8/N


def test_supervised_model_shapes() -> None:
    torch.manual_seed(0)
    model = SupervisedVision(VisionModelConfig(**SMALL), num_classes=10)
    out = model({"patches": torch.randn(4, 7, 7, 1, 8, 8), "label": torch.tensor([0, 1, 2, 3])})
    assert out["loss"].shape == () and out["accuracy"].shape == (1,)
    assert abs(float(out["loss"].detach()) - math.log(10)) < 1.0


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_channels_last_encoding_gives_the_same_features(norm: str) -> None:
    """Feature extraction runs channels-last (faster on CPU): the same features as the
    default memory order, to float32 rounding."""
    from cpc.vision.model import encode_grid

    torch.manual_seed(0)
    model = CPCVision(VisionModelConfig(**{**SMALL, "norm": norm})).eval()
    patches = torch.randn(3, 5, 5, 1, 8, 8)
    with torch.inference_mode():
        ref = encode_grid(model.encoder, patches)
        model.encoder.to(memory_format=torch.channels_last)
        fast = encode_grid(model.encoder, patches, channels_last=True)
    assert fast.shape == ref.shape == (3, 32, 5, 5)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
