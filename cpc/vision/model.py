"""CPC on image patches (paper section 3.2) and its supervised counterpart.

- :class:`ResNetV2Encoder`: a pre-activation ResNet (He et al. 2016, "v2") without batch
  norm, applied to every patch on its own: a stem, three stacks of bottleneck blocks (the
  paper uses ResNet-v2-101's first three: 3, 4 and 23 blocks, 1024 output channels), a final
  norm + ReLU, and a spatial mean pool to one vector ``z`` per patch. ``norm: layer``
  normalises each patch's activations over channels and positions (GroupNorm with one
  group): no statistics are shared between patches or images, unlike batch norm, which CPC v2
  found to leak information across the patches of a batch.
- :class:`MaskedContext`: a PixelCNN-style context network over the grid of ``z``: a 1x1
  projection, then residual convolutions whose kernels see only the current row and the
  rows above it (and neighbouring columns), so ``c[i, j]`` depends on rows ``<= i`` only.
- :class:`CPCVision`: encoder + context + :class:`cpc.infonce.InfoNCE`: from ``c[i, j]``,
  ``W_k c[i, j]`` predicts ``z[i + k, j]`` for ``k = 1..K`` (rows below, same column);
  every other patch of the (per-process) batch is a negative (all-pairs path). A column of
  the grid is one "sequence" of :mod:`cpc.infonce` (rows are its time axis).
  With ``negatives_across_ranks`` (training under torchrun), the targets of every process
  are gathered (:func:`cpc.infonce.gather_across_ranks`) and each process scores its
  predictions against the patches of the whole global micro-batch: the negatives of one
  process-batch of ``B * W`` images (1 process) rather than ``B`` (each process).
- :class:`SupervisedVision`: the same encoder, mean-pooled over the grid, and a linear
  classifier trained end to end with cross-entropy (the ceiling baseline).

Both models take a batch ``{"patches": (B, H, W, C, P, P) float, "label": (B,)}`` and
return the trainer's dict (``loss`` + metrics).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpc.infonce import InfoNCE
from cpc.vision.config import VisionModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels) if kind == "layer" else nn.Identity()


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: (norm, ReLU, 1x1) -> (norm, ReLU, 3x3/stride) ->
    (norm, ReLU, 1x1 to ``width * expansion``), plus the input (projected by a 1x1/stride
    convolution of the pre-activated input when the shape changes)."""

    def __init__(self, cin: int, width: int, expansion: int, stride: int, norm: str) -> None:
        super().__init__()
        cout = width * expansion
        self.pre = nn.Sequential(_norm(norm, cin), nn.ReLU())
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.body = nn.Sequential(
            _norm(norm, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            _norm(norm, width),
            nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False),
        )
        self.project = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        short = self.project(a) if self.project is not None else x
        return short + self.body(self.conv1(a))


class ResNetV2Encoder(nn.Module):
    """Patches ``(N, C, P, P)`` -> ``(N, D)``: the third stack's output, mean-pooled."""

    def __init__(self, cfg: VisionModelConfig, in_channels: int) -> None:
        super().__init__()
        if cfg.stem == "conv3":
            self.stem = nn.Conv2d(in_channels, cfg.stem_channels, 3, padding=1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, cfg.stem_channels, 7, stride=2, padding=3, bias=False),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        layers: list[nn.Module] = []
        cin = cfg.stem_channels
        for width, n, first_stride in zip(cfg.widths, cfg.blocks, cfg.strides):
            for j in range(n):
                stride = first_stride if j == 0 else 1
                layers.append(Bottleneck(cin, width, cfg.expansion, stride, cfg.norm))
                cin = width * cfg.expansion
        self.stacks = nn.Sequential(*layers)
        self.post = nn.Sequential(_norm(cfg.norm, cin), nn.ReLU())
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.stacks(self.stem(x))).mean(dim=(2, 3))


def encode_grid(
    encoder: nn.Module, patches: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """``(B, H, W, C, P, P)`` patches -> ``(B, D, H, W)`` grid of patch vectors.

    ``channels_last``: feed the patches in channels-last memory order (the encoder's weights
    should be converted too, ``encoder.to(memory_format=torch.channels_last)``): the same
    values, and on CPUs about twice as fast for these small convolutions (oneDNN)."""
    b, h, w = patches.shape[:3]
    x = patches.reshape(b * h * w, *patches.shape[3:])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    z = encoder(x)
    return z.view(b, h, w, -1).permute(0, 3, 1, 2)


class MaskedConv(nn.Module):
    """A ``k x k`` convolution whose output at row ``i`` sees rows ``i - k + 1 .. i`` only
    (zero padding above, none below) and columns ``j - k//2 .. j + k//2``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv2d(channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        return self.conv(F.pad(x, (k // 2, k // 2, k - 1, 0)))


class MaskedContext(nn.Module):
    """``z`` grid ``(B, D, H, W)`` -> context grid ``(B, C, H, W)``; ``c[:, :, i]`` depends
    on ``z[:, :, :i + 1]`` only (top to bottom)."""

    def __init__(self, in_dim: int, channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_dim, channels, 1)
        self.layers = nn.ModuleList(MaskedConv(channels, kernel) for _ in range(layers))
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.inp(z)
        for layer in self.layers:
            x = x + layer(F.relu(x))
        return self.out(F.relu(x))


def columns(grid: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W)`` -> ``(B * W, H, D)``: each column of the grid as a sequence of rows."""
    b, d, h, w = grid.shape
    return grid.permute(0, 3, 2, 1).reshape(b * w, h, d)


class CPCVision(nn.Module):
    """Encoder + masked context network + InfoNCE over the rows below (module docstring)."""

    def __init__(self, cfg: VisionModelConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ResNetV2Encoder(cfg, in_channels)
        d = self.encoder.out_dim
        self.context = MaskedContext(
            d, cfg.context_channels, cfg.context_layers, cfg.context_kernel
        )
        self.infonce = InfoNCE(
            cfg.context_channels,
            d,
            cfg.prediction_steps,
            num_negatives=0,
            strategy=cfg.negatives,
            across_ranks=cfg.negatives_across_ranks,
        )

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C, P, P)`` -> ``z`` grid ``(B, D, H, W)``."""
        return encode_grid(self.encoder, patches)

    def predictions(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, W_k c)`` as columns: ``(B * W, H, D)`` and ``(B * W, H, K, D)``."""
        z = self.encode(patches)
        c = self.context(z)
        return columns(z), self.infonce.predictors(columns(c))

    def forward(self, batch: dict[str, Any], generator: Any = None) -> dict[str, torch.Tensor]:
        z = self.encode(batch["patches"])
        c = self.context(z)
        # negatives_across_ranks: InfoNCE gathers every process's patches (cpc.infonce)
        return self.infonce(columns(c), columns(z))


class SupervisedVision(nn.Module):
    """The same encoder, mean-pooled over the grid, with a linear classifier."""

    def __init__(self, cfg: VisionModelConfig, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.encoder = ResNetV2Encoder(cfg, in_channels)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        return encode_grid(self.encoder, patches)

    def forward(self, batch: dict[str, Any], generator: Any = None) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.encode(batch["patches"]).mean(dim=(2, 3)))
        label = batch["label"]
        return {
            "loss": F.cross_entropy(logits, label),
            "accuracy": (logits.argmax(-1) == label).float().mean().reshape(1),
        }
