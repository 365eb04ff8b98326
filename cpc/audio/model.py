"""The CPC speech model of van den Oord et al. (2018), section 3.1.

``g_enc``: five 1-D convolutions (strides 5, 4, 2, 2, 2; kernels 10, 8, 4, 4, 4; 512 channels;
ReLU) from the 16 kHz waveform to ``z_t`` every 10 ms. ``g_ar``: a GRU (256 units) from ``z``
to ``c_t``. Predictors ``W_k`` (k = 1..K) score ``z_{t+k}^T W_k c_t`` in the InfoNCE loss
(:mod:`cpc.infonce`).

Frame count. Each convolution is zero-padded by ``kernel - stride`` samples in total
(``(kernel - stride) // 2`` on the left, the rest on the right), so a layer maps ``L``
inputs to exactly ``L // stride`` outputs and the encoder maps ``S`` samples to exactly
``S // 160`` frames, for any ``S``. A caller wanting ``compute_num_frames(d)`` frames
zero-pads the waveform to ``num_frames * 160`` samples first.

Input normalisation (``input_norm``). Raw 16 kHz speech has a standard deviation around
0.1; fed as is, the paper's un-normalised network stays at chance for hundreds of steps.
``"standardize"`` (the default) rescales every input sequence inside the model to zero mean
and unit variance over its valid samples (``lengths``), before the first convolution:

- nothing is estimated from data or stored, so a random-init baseline and every checkpoint
  see their input exactly as training did, with no statistics file to carry around;
- it removes the recording gain, which varies between chapters of an audiobook corpus and is
  not what the representation should encode;
- at extraction time the statistics come from the whole utterance instead of a 1.28 s
  training window. Audiobook utterances are mostly speech, so the scale differs little; the
  same choice (per-utterance standardisation at inference, crops in training) is what
  wav2vec 2.0's ``normalize`` option does.

``"none"`` feeds the waveform unchanged (for ablations: the paper's setting).

Encoder normalisation (``norm``): ``"none"`` (paper), ``"batch"`` (BatchNorm1d) or
``"layer"`` (LayerNorm over channels at every frame) after each convolution, before ReLU.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from cpc.audio.config import CPCModelConfig, validate_model_config
from cpc.config import from_dict
from cpc.infonce import InfoNCE

# Variance floor of the input standardisation: std 1e-4 (a few 16-bit steps), so that
# digital silence is not blown up to unit variance.
EPS = 1e-8


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, T)`` activations, independently per frame."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return ChannelLayerNorm(channels)
    raise ValueError(f"unknown norm {kind!r}; choose none, batch or layer")


class Encoder(nn.Module):
    """g_enc: ``(B, S)`` waveform -> ``(B, C, S // prod(strides))`` features (before transpose)."""

    def __init__(self, channels: int, strides: list[int], kernels: list[int], norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for s, k in zip(strides, kernels):
            total = k - s
            layers += [
                nn.ConstantPad1d((total // 2, total - total // 2), 0.0),
                nn.Conv1d(in_ch, channels, kernel_size=k, stride=s),
                _norm_layer(norm, channels),
                nn.ReLU(),
            ]
            in_ch = channels
        self.layers = nn.Sequential(*layers)
        self.hop = math.prod(strides)
        self.channels = channels

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths`` (B,) valid samples: each layer's output past its valid length
        (``length // stride``) is zeroed, so a padded row of a batch gives exactly the frames
        it gives alone (the next layer's kernel sees zeros there, as it sees its padding)."""
        if wave.shape[-1] < self.hop:  # no complete frame: the convolutions cannot run
            return wave.new_zeros(wave.shape[0], self.channels, 0)
        if lengths is None:
            return self.layers(wave.unsqueeze(1))
        x = wave.unsqueeze(1)
        valid = lengths.to(wave.device)
        for block in self.blocks():
            x = block(x)
            valid = torch.div(valid, block[1].stride[0], rounding_mode="floor")
            t = torch.arange(x.shape[-1], device=x.device)
            x = x * (t.view(1, 1, -1) < valid.view(-1, 1, 1)).to(x.dtype)
        return x

    def blocks(self) -> list[nn.Sequential]:
        """The layers grouped per convolution: (pad, conv, norm, relu)."""
        mods = list(self.layers)
        return [nn.Sequential(*mods[i : i + 4]) for i in range(0, len(mods), 4)]


class CPCAudio(nn.Module):
    """CPC on raw speech: encoder, GRU context network, InfoNCE predictors.

    Attributes: ``hop`` (samples per frame, 160), ``z_dim`` (channels), ``c_dim`` (GRU size).

    ``forward(batch, generator=None)`` is the training step's loss: ``batch["wave"]`` (B, S)
    float waveforms, ``batch["group"]`` (B,) speaker ids (for the same-speaker negative
    strategies), optional ``batch["lengths"]`` (B,) valid samples. Returns the dict of
    :func:`cpc.infonce.info_nce` (``loss``, ``accuracy`` per k, ``mi_bound``, ...).

    ``extract(wave, lengths)`` returns the representations (no gradients, eval mode).
    """

    def __init__(self, cfg: CPCModelConfig) -> None:
        super().__init__()
        validate_model_config(cfg)
        self.cfg = cfg
        self.hop = math.prod(cfg.strides)
        self.z_dim = cfg.channels
        self.c_dim = cfg.context_dim
        self.encoder = Encoder(cfg.channels, cfg.strides, cfg.kernels, cfg.norm)
        self.gru = nn.GRU(
            cfg.channels, cfg.context_dim, num_layers=cfg.gru_layers, batch_first=True
        )
        self.infonce = InfoNCE(
            cfg.context_dim,
            cfg.channels,
            cfg.prediction_steps,
            cfg.num_negatives,
            cfg.negatives,
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (``num_samples // hop``)."""
        return num_samples // self.hop

    def normalize_input(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply ``input_norm`` to ``(B, S)`` waveforms; samples past ``lengths`` become 0."""
        if self.cfg.input_norm == "none" or wave.shape[1] == 0:
            return wave
        wave = wave.float()
        if lengths is None:
            mean = wave.mean(dim=1, keepdim=True)
            var = wave.var(dim=1, unbiased=False, keepdim=True)
            return (wave - mean) * torch.rsqrt(var + EPS)
        valid = (
            torch.arange(wave.shape[1], device=wave.device).view(1, -1)
            < lengths.to(wave.device).view(-1, 1)
        ).to(wave.dtype)
        n = valid.sum(dim=1, keepdim=True).clamp_min(1.0)
        mean = (wave * valid).sum(dim=1, keepdim=True) / n
        var = (((wave - mean) * valid) ** 2).sum(dim=1, keepdim=True) / n
        return (wave - mean) * torch.rsqrt(var + EPS) * valid

    def encode(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, S)`` waveform -> ``z`` of shape ``(B, S // hop, channels)``."""
        if wave.dim() != 2:
            raise ValueError(f"wave must be (batch, samples), got shape {tuple(wave.shape)}")
        return self.encoder(self.normalize_input(wave, lengths), lengths).transpose(1, 2)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, T, C) -> ``c`` (B, T, context_dim) (causal: c_t sees z_1..z_t)."""
        if z.shape[1] == 0:
            return z.new_zeros(z.shape[0], 0, self.c_dim)
        c, _ = self.gru(z)
        return c

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        wave = batch["wave"]
        lengths = batch.get("lengths")
        z = self.encode(wave, lengths)
        c = self.context(z)
        frame_lengths = (
            None if lengths is None else torch.div(lengths, self.hop, rounding_mode="floor")
        )
        return self.infonce(c, z, batch.get("group"), frame_lengths, generator)

    @torch.no_grad()
    def extract(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Representations of raw 16 kHz waveforms.

        Args:
            wave: (B, S) float waveforms, zero-padded past each ``lengths[b]``.
            lengths: (B,) valid samples per row (default: all S). They set the input
                normalisation statistics; frames past ``lengths[b] // hop`` are padding.

        Returns:
            ``{"c": (B, T, context_dim), "z": (B, T, channels)}`` with ``T == S // hop``.
            Runs in eval mode without gradients; the module's mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            z = self.encode(wave, lengths)
            c = self.context(z)
        finally:
            self.train(was_training)
        return {"c": c, "z": z}


def build_cpc_model(model_cfg: CPCModelConfig | dict[str, Any]) -> CPCAudio:
    """A randomly initialised :class:`CPCAudio` (seed the global RNG first for a fixed init).

    ``model_cfg`` is a :class:`CPCModelConfig` or its dict (the ``model`` section of a config).
    """
    if isinstance(model_cfg, dict):
        model_cfg = from_dict(CPCModelConfig, model_cfg, "model config")
    return CPCAudio(model_cfg)


def load_cpc_model(
    checkpoint_path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[CPCAudio, dict[str, Any]]:
    """Load a trained model from a checkpoint written by the trainer (or ``best.pt``).

    Loads with ``torch.load(weights_only=True)``. Returns ``(model, cfg_dict)``: the model in
    eval mode on ``map_location`` and the full resolved training config as a plain dict (its
    ``model`` section built the model). Raises :class:`cpc.checkpoint.CheckpointError` for a
    missing, truncated or foreign file.
    """
    from cpc.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(checkpoint_path, map_location=map_location)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(
            f"{checkpoint_path}: no model config inside; is it a cpc-recipes checkpoint?"
        )
    model = build_cpc_model(cfg["model"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint_path}: weights do not match its config: {e}") from e
    model.to(map_location)
    model.eval()
    return model, cfg


__all__ = [
    "CPCAudio",
    "CPCModelConfig",
    "ChannelLayerNorm",
    "Encoder",
    "build_cpc_model",
    "load_cpc_model",
]
