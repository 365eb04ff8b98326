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

Supervised baselines (``objective``: ``phone`` or ``speaker``, the paper's Table 1
"supervised" row): the same encoder and GRU, trained end to end with the cross-entropy of a
linear layer on ``c_t`` at every frame, against the frame's phone label (``batch["phone"]``,
(B, T), -100 = no label) or the window's speaker (``batch["group"]``); frames past a row's
valid length and classes outside the head are ignored. ``forward`` then returns ``loss`` and
``accuracy`` (a one-entry vector: frame accuracy), and the model has no InfoNCE predictors.

Encoder normalisation (``norm``): ``"none"`` (paper), ``"batch"`` (BatchNorm1d) or
``"layer"`` (LayerNorm over channels at every frame) after each convolution, before ReLU.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpc.audio.config import CPCModelConfig, validate_model_config
from cpc.audio.constants import PHONES
from cpc.config import from_dict
from cpc.gru import gru_sequence, one_thread, supports
from cpc.infonce import InfoNCE
from cpc.perf import keep_freed_memory, trim_if_grown

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
        it gives alone (the next layer's kernel sees zeros there, as it sees its padding).

        Without gradients on a CPU (extraction), and without normalisation layers, the
        convolutions run on channels-last activations: oneDNN then needs no layout reorders
        (measured: 25% faster; equal to the plain layout up to float rounding). The output is
        then a (B, C, T) view whose transpose (B, T, C) is contiguous. There the first layer
        (one input channel) is a matrix product of the strided sample frames with the
        kernels (:meth:`_frames_cl`), which writes channels-last directly: under bf16
        autocast oneDNN's convolution of a one-channel input spent three quarters of the
        encoder's time converting its output's layout (measured on an AMX CPU: 45 -> 14 ms
        for 10 s of audio)."""
        if wave.shape[-1] < self.hop:  # no complete frame: the convolutions cannot run
            return wave.new_zeros(wave.shape[0], self.channels, 0)
        mods = list(self.layers)
        cl = (
            not torch.is_grad_enabled()
            and wave.device.type == "cpu"
            and all(isinstance(m, nn.Identity) for m in mods[2::4])
        )
        x = wave[:, None, None] if cl else wave.unsqueeze(1)
        valid = None if lengths is None else lengths.to(wave.device)
        for i in range(0, len(mods), 4):
            x = self._block_cl(x, *mods[i : i + 2]) if cl else self._block(x, *mods[i : i + 4])
            if valid is not None:
                valid = torch.div(valid, mods[i + 1].stride[0], rounding_mode="floor")
                keep = torch.arange(x.shape[-1], device=x.device).view(1, -1) < valid.view(-1, 1)
                x = x * keep.view(x.shape[0], *([1] * (x.dim() - 2)), -1).to(x.dtype)
        return x.squeeze(2) if cl else x

    @staticmethod
    def _block(
        x: torch.Tensor, pad: nn.Module, conv: nn.Module, norm: nn.Module, relu: nn.Module
    ) -> torch.Tensor:
        """``relu(norm(conv(pad(x))))``, cheaper: a symmetric padding is left to the
        convolution (no padded copy of the input), and the ReLU runs in place (neither the
        convolution nor the norms need their output for the backward pass)."""
        left, right = pad.padding
        if left == right:
            x = F.conv1d(x, conv.weight, conv.bias, conv.stride, left)
        else:
            x = conv(pad(x))
        return torch.relu_(norm(x))

    @staticmethod
    def _block_cl(x: torch.Tensor, pad: nn.Module, conv: nn.Module) -> torch.Tensor:
        """``relu(conv(pad(x)))`` on (B, C, 1, L) channels-last activations (no gradients)."""
        left, right = pad.padding
        if conv.in_channels == 1:
            return Encoder._frames_cl(x, conv, left, right)
        if left != right:
            x, left = F.pad(x, (left, right)), 0
        w = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        return torch.relu_(F.conv2d(x, w, conv.bias, (1, conv.stride[0]), (0, left)))

    @staticmethod
    def _frames_cl(x: torch.Tensor, conv: nn.Module, left: int, right: int) -> torch.Tensor:
        """``relu(conv(pad(x)))`` for a one-channel input (B, 1, 1, S), as the product of the
        (B, L, kernel) strided frames of the padded samples with the (kernel, C) weights:
        (B, L, C), returned as its (B, C, 1, L) channels-last view. The same sums as the
        convolution's, up to float rounding."""
        k, s = conv.kernel_size[0], conv.stride[0]
        wave = F.pad(x.reshape(x.shape[0], x.shape[-1]), (left, right))
        frames = wave.unfold(1, k, s)  # (B, L, k), a view
        out = F.linear(frames, conv.weight.view(conv.out_channels, k), conv.bias)
        return torch.relu_(out.permute(0, 2, 1).unsqueeze(2))

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
        if cfg.objective == "cpc":
            self.infonce = InfoNCE(
                cfg.context_dim,
                cfg.channels,
                cfg.prediction_steps,
                cfg.num_negatives,
                cfg.negatives,
                across_ranks=cfg.negatives_across_ranks,
            )
        else:
            n = cfg.num_classes or (len(PHONES) if cfg.objective == "phone" else 0)
            self.head = nn.Linear(cfg.context_dim, n)

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
        if z.device.type == "cpu" and not torch.compiler.is_compiling():
            if torch.is_grad_enabled() and supports(self.gru):
                # one autograd node instead of a dozen per frame; float32 recurrence
                return gru_sequence(self.gru, z)
            if not torch.is_autocast_enabled("cpu"):
                with one_thread():  # the recurrence's small steps gain nothing from threads
                    return self.gru(z)[0]
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
        if self.cfg.objective != "cpc":
            return self.supervised_loss(c, batch, frame_lengths)
        return self.infonce(c, z, batch.get("group"), frame_lengths, generator)

    def frame_targets(
        self, batch: dict[str, torch.Tensor], num_frames: int, frame_lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, T) int64 class per frame for the supervised objectives; -100 = ignored (frames
        past ``frame_lengths``, labels outside the head's classes)."""
        if self.cfg.objective == "phone":
            if "phone" not in batch:
                raise ValueError("model.objective=phone needs batch['phone'] (frame labels)")
            y = batch["phone"].long()
            if y.shape[1] != num_frames:
                raise ValueError(f"batch['phone'] has {y.shape[1]} frames, the model {num_frames}")
        else:
            y = batch["group"].long().view(-1, 1).expand(-1, num_frames)
        y = y.to(self.head.weight.device)
        bad = (y < 0) | (y >= self.head.out_features)
        if frame_lengths is not None:
            t = torch.arange(num_frames, device=y.device).view(1, -1)
            bad |= t >= frame_lengths.to(y.device).view(-1, 1)
        return y.masked_fill(bad, -100)

    def supervised_loss(
        self, c: torch.Tensor, batch: dict[str, torch.Tensor], frame_lengths: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of the linear head on every frame of ``c`` (see the module doc)."""
        y = self.frame_targets(batch, c.shape[1], frame_lengths)
        logits = self.head(c).float()
        valid = y >= 0
        n = valid.sum().clamp_min(1)
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, y.reshape(-1), reduction="sum") / n
        correct = ((logits.argmax(-1) == y) & valid).sum()
        acc = correct.float() / n
        return {"loss": loss, "accuracy": acc.detach().view(1)}

    @torch.no_grad()
    def extract(
        self,
        wave: torch.Tensor,
        lengths: torch.Tensor | None = None,
        precision: str = "fp32",
        row_multiple: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Representations of raw 16 kHz waveforms.

        Args:
            wave: (B, S) float waveforms, zero-padded past each ``lengths[b]``.
            lengths: (B,) valid samples per row (default: all S). They set the input
                normalisation statistics; frames past ``lengths[b] // hop`` are padding.

        Returns:
            ``{"c": (B, T, context_dim), "z": (B, T, channels)}`` with ``T == S // hop``,
            float32. Runs in eval mode without gradients; the module's mode is restored
            afterwards.

        ``precision="bf16"``: the encoder's convolutions run under bfloat16 autocast (``z``
        is then rounded to bf16 and returned as float32); the input normalisation and the GRU
        stay float32, so the recurrence accumulates no bf16 rounding over time.

        ``row_multiple`` > 0 (for CPUs): the encoder runs one row at a time, on the row's
        samples up to its length rounded up to a multiple of ``row_multiple`` (few distinct
        shapes, so oneDNN reuses its kernels), and the GRU then runs once on the whole batch.
        The convolutions gain nothing from a batch on a CPU, and padding costs them, while
        the GRU's 100 sequential steps per second cost about as much for 8 rows as for one
        (measured: 21 -> 8 ms per 10 s of audio at 8 rows, one thread). The same values as
        the batched encoder up to float rounding: every layer zeroes its output past a row's
        length either way.
        """
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"extraction precision {precision!r} is not one of fp32, bf16")
        # Small blocks are kept for reuse; blocks of 8 MiB and more (a batch's waveform and
        # activations, sized by its utterances) are mapped and handed back: kept in the heap
        # as well, their varying sizes fragmented it and the process grew with the corpus
        # (one CPC dump's extraction: 5.3 GB peak at 10 h against 0.93 GB with this setting).
        keep_freed_memory(mmap_threshold=8 << 20)
        was_training = self.training
        self.eval()
        try:
            if row_multiple > 0 and wave.shape[0] > 1:
                z = self._encode_rows(wave, lengths, precision, row_multiple)
            else:
                z = self._encode_for_extract(wave, lengths, precision)
            c = self.context(z)
        finally:
            self.train(was_training)
        trim_if_grown()  # the batches' varying sizes fragment the heap: hand it back now and then
        return {"c": c, "z": z}

    def _encode_for_extract(
        self, wave: torch.Tensor, lengths: torch.Tensor | None, precision: str
    ) -> torch.Tensor:
        """``z`` (B, T, C) float32 of :meth:`extract` for a whole batch."""
        if precision != "bf16":
            return self.encode(wave, lengths)
        wave = self.normalize_input(wave, lengths)  # float32, outside autocast
        with torch.autocast(wave.device.type, dtype=torch.bfloat16):
            z = self.encoder(wave, lengths).transpose(1, 2)
        return z.float()

    def _encode_rows(
        self, wave: torch.Tensor, lengths: torch.Tensor | None, precision: str, multiple: int
    ) -> torch.Tensor:
        """``z`` (B, T, C) of :meth:`extract`, the encoder run row by row (``row_multiple``)."""
        b, s = wave.shape
        lens = [s] * b if lengths is None else [int(n) for n in lengths.tolist()]
        z = wave.new_zeros(b, s // self.hop, self.z_dim)
        for i, n in enumerate(lens):
            m = min(s, -(-n // multiple) * multiple)
            zi = self._encode_for_extract(wave[i : i + 1, :m], torch.tensor([n]), precision)
            z[i, : zi.shape[1]] = zi[0]
        return z


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
