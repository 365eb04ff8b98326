"""Checkpoints trained elsewhere: the CPC_audio format (facebookresearch/CPC_audio, the
Libri-light CPC baselines), and a small upstream interface in the s3prl manner.

CPC_audio checkpoint layout (``checkpoint_<N>.pt``): a dict whose ``"gEncoder"`` entry is the
state dict of its CPC model, with

- ``gEncoder.conv{0..4}.{weight,bias}``: five 1-D convolutions, kernels 10, 8, 4, 4, 4, strides
  5, 4, 2, 2, 2, paddings 3, 2, 1, 1, 1 (160 samples per frame), ``hidden_encoder`` channels;
- ``gEncoder.batchNorm{0..4}.*``: the normalisation after each convolution (followed by a
  ReLU): ``layerNorm`` = a per-frame normalisation over channels (mean, unbiased variance,
  eps 1e-5) with weight and bias of shape (1, C, 1); ``batchNorm`` (running statistics),
  ``instanceNorm`` (affine), or ``ID`` (none, no keys);
- ``gAR.baseNet.*``: the autoregressive network, an ``LSTM``, ``GRU`` or ``RNN`` of
  ``n_levels`` layers and ``hidden_gar`` units (batch first).

The architecture comes from ``checkpoint_args.json`` beside the checkpoint (keys
``hiddenEncoder``, ``hiddenGar``, ``nLevelsGRU``, ``arMode``, ``normMode``) or from the model
options given here (:class:`CpcAudioConfig`). Weights are mapped by name; a missing or
unexpected key is refused with its name (no silent partial load). The waveform is fed as is
(CPC_audio does not normalise it).

:class:`CPCUpstream` wraps this model or the project's :class:`cpc.audio.model.CPCAudio`:
a list of 16 kHz waveforms in, per-layer hidden states (z_t, the encoder output, and c_t, the
context) out, 100 frames per second (``downsample_rate`` 160).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpc.audio.constants import HOP, SAMPLING_RATE
from cpc.checkpoint import CheckpointError
from cpc.io import Pathlike

KERNELS = (10, 8, 4, 4, 4)
STRIDES = (5, 4, 2, 2, 2)
PADDINGS = (3, 2, 1, 1, 1)
NORMS = ("layerNorm", "batchNorm", "instanceNorm", "ID")
AR_MODES = ("LSTM", "GRU", "RNN")
ARGS_FILE = "checkpoint_args.json"


@dataclass
class CpcAudioConfig:
    """Architecture of a CPC_audio model (their argument names in brackets)."""

    hidden_encoder: int = 256  # [hiddenEncoder]
    hidden_gar: int = 256  # [hiddenGar]
    n_levels: int = 1  # [nLevelsGRU]
    ar_mode: str = "GRU"  # [arMode]: LSTM, GRU or RNN
    norm_mode: str = "layerNorm"  # [normMode]

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> CpcAudioConfig:
        """From CPC_audio's checkpoint_args.json (missing keys keep the defaults)."""
        names = {
            "hiddenEncoder": "hidden_encoder",
            "hiddenGar": "hidden_gar",
            "nLevelsGRU": "n_levels",
            "arMode": "ar_mode",
            "normMode": "norm_mode",
        }
        return cls(**{ours: args[theirs] for theirs, ours in names.items() if theirs in args})


class _ChannelNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "layerNorm":
        return _ChannelNorm(channels)
    if kind == "batchNorm":
        return nn.BatchNorm1d(channels)
    if kind == "instanceNorm":
        return nn.InstanceNorm1d(channels, affine=True)
    return nn.Identity()


class CpcAudioModel(nn.Module):
    """The CPC_audio encoder + autoregressive network, with the project's ``extract`` API."""

    def __init__(self, cfg: CpcAudioConfig) -> None:
        super().__init__()
        if cfg.norm_mode not in NORMS or cfg.ar_mode not in AR_MODES:
            raise CheckpointError(
                f"CPC_audio model: normMode {cfg.norm_mode!r} (choose from {NORMS}) or arMode "
                f"{cfg.ar_mode!r} (choose from {AR_MODES}) is not supported"
            )
        self.cfg = cfg
        h = cfg.hidden_encoder
        self.convs = nn.ModuleList(
            nn.Conv1d(1 if i == 0 else h, h, k, stride=s, padding=p)
            for i, (k, s, p) in enumerate(zip(KERNELS, STRIDES, PADDINGS))
        )
        self.norms = nn.ModuleList(_norm(cfg.norm_mode, h) for _ in KERNELS)
        rnn = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[cfg.ar_mode]
        self.rnn = rnn(h, cfg.hidden_gar, num_layers=cfg.n_levels, batch_first=True)
        self.hop = HOP
        self.z_dim, self.c_dim = h, cfg.hidden_gar

    @torch.no_grad()
    def extract(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"z": (B, T, hidden_encoder), "c": (B, T, hidden_gar)}``, T = S // 160, for a
        (B, S) waveform batch (``lengths`` unused: CPC_audio sees the padded batch)."""
        self.eval()
        x = wave.float()[:, None, :]
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        z = x.transpose(1, 2)[:, : wave.shape[1] // HOP]
        c, _ = self.rnn(z)
        return {"z": z, "c": c}


def _their_name(ours: str) -> str:
    """Our parameter name -> CPC_audio's (``convs.0.weight`` -> ``gEncoder.conv0.weight``)."""
    head, idx, rest = (ours.split(".", 2) + ["", ""])[:3]
    if head == "convs":
        return f"gEncoder.conv{idx}.{rest}"
    if head == "norms":
        return f"gEncoder.batchNorm{idx}.{rest}"
    if head == "rnn":
        return "gAR.baseNet." + ours.split(".", 1)[1]
    raise KeyError(ours)


def is_cpc_audio_checkpoint(path: Pathlike) -> bool:
    """True when ``path`` holds a CPC_audio checkpoint (a dict with a ``gEncoder`` entry)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not one
        return False
    return isinstance(state, dict) and isinstance(state.get("gEncoder"), dict)


def load_cpc_audio(
    path: Pathlike, cfg: CpcAudioConfig | None = None
) -> tuple[CpcAudioModel, dict[str, Any]]:
    """Load a CPC_audio checkpoint. The architecture: ``cfg`` if given, else
    ``checkpoint_args.json`` beside the file, else an error saying to give the model options.
    Returns ``(model in eval mode, description)``; CheckpointError names any missing or
    unexpected weight."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read it as a torch checkpoint ({e})") from e
    if not isinstance(state, dict) or not isinstance(state.get("gEncoder"), dict):
        raise CheckpointError(
            f"{path}: not a CPC_audio checkpoint (no 'gEncoder' state dict inside)"
        )
    if cfg is None:
        args_file = path.parent / ARGS_FILE
        if not args_file.is_file():
            raise CheckpointError(
                f"{path}: no {ARGS_FILE} beside it; give the architecture as model options "
                "(--cpc-audio-args hiddenEncoder=256 hiddenGar=256 nLevelsGRU=2 arMode=LSTM "
                "normMode=layerNorm)"
            )
        cfg = CpcAudioConfig.from_args(json.loads(args_file.read_text()))
    model = CpcAudioModel(cfg)
    counter = "num_batches_tracked"  # BatchNorm's step counter: not a weight
    theirs = {k: v for k, v in state["gEncoder"].items() if not k.endswith(counter)}
    wanted = {_their_name(k): k for k in model.state_dict() if not k.endswith(counter)}
    missing = sorted(set(wanted) - set(theirs))
    unexpected = sorted(set(theirs) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the CPC_audio architecture {asdict(cfg)}: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}. Check the "
            "model options (or checkpoint_args.json)"
        )
    mapped = {wanted[k]: v for k, v in theirs.items()}
    own = model.state_dict()
    bad = [k for k, v in mapped.items() if own[k].shape != v.shape]
    if bad:
        raise CheckpointError(
            f"{path}: shapes differ from the architecture {asdict(cfg)} for "
            + ", ".join(
                f"{_their_name(k)} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
                for k in bad[:5]
            )
        )
    model.load_state_dict(mapped, strict=False)
    model.eval()
    return model, {"format": "CPC_audio", "architecture": asdict(cfg)}


class CPCUpstream(nn.Module):
    """s3prl-style upstream: ``forward(wavs)`` with ``wavs`` a list of 1-D 16 kHz float
    tensors returns ``{"hidden_states": [z, c], "last_hidden_state": c, "lengths": (B,)}``,
    each (B, T_max, D) zero-padded past ``lengths`` frames; ``downsample_rate`` = 160 samples,
    ``frame_rate`` = 100 per second."""

    downsample_rate = HOP
    frame_rate = SAMPLING_RATE / HOP
    layer_names = ("z", "c")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_checkpoint(cls, path: Pathlike, cfg: CpcAudioConfig | None = None) -> CPCUpstream:
        """A project checkpoint (``best.pt``) or a CPC_audio one."""
        if is_cpc_audio_checkpoint(path):
            return cls(load_cpc_audio(path, cfg)[0])
        from cpc.audio.model import load_cpc_model

        return cls(load_cpc_model(path)[0])

    @torch.no_grad()
    def forward(self, wavs: list[torch.Tensor]) -> dict[str, Any]:
        lengths = torch.tensor([int(w.shape[-1]) for w in wavs])
        wave = torch.zeros(len(wavs), int(lengths.max()) if len(wavs) else 0)
        for i, w in enumerate(wavs):
            wave[i, : w.shape[-1]] = w.reshape(-1).float()
        out = self.model.extract(wave, lengths)
        frames = lengths // HOP
        mask = (torch.arange(out["c"].shape[1])[None, :] < frames[:, None])[..., None]
        states = [out[name] * mask for name in self.layer_names]
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": frames}
