"""lhotse feature extractors: CPC representations and the MFCC baseline, 10 ms frames.

Both are registered with lhotse (``@register_extractor``), so any lhotse pipeline can use
them, e.g.::

    from lhotse import NumpyHdf5Writer, load_manifest_lazy
    from cpc.audio.extractor import CPCExtractor, CPCExtractorConfig

    extractor = CPCExtractor(CPCExtractorConfig(checkpoint="exp/cpc_small/best.pt"))
    cuts = load_manifest_lazy("data/manifests/librispeech_cuts_test.jsonl.gz")
    cuts = cuts.compute_and_store_features(
        extractor=extractor, storage_path="data/cpc/feats_test", storage_type=NumpyHdf5Writer
    )

- ``CPCExtractor`` (name ``"cpc"``): the context vectors c_t (``output="c"``, 256-d in the
  paper's model) or the encoder outputs z_t (``output="z"``, 512-d) of a trained checkpoint.
- ``MfccDeltas`` (name ``"mfcc-deltas"``): Kaldi-compatible MFCC (lhotse's ``Mfcc``: 25 ms
  povey window, 23 mel filters, 13 cepstra including c0, lifter 22, no dither) with deltas
  and delta-deltas (``torchaudio.functional.compute_deltas``, 5-frame window, applied twice):
  39 dims.

Each returns exactly ``compute_num_frames(duration, 0.01, 16000)`` frames for an input of
that duration (the shared frame contract): CPC pads the waveform with zeros to
``num_frames * 160`` samples (its total stride is 160); MFCC edge frames are repeated or
trimmed when Kaldi framing gives a different count. Inputs must be 16 kHz
(``cuts.resample(16000)`` first otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from lhotse.cut import Cut
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import Seconds

from cpc.audio.constants import FRAME_SHIFT, HOP, SAMPLING_RATE, cut_num_frames
from cpc.audio.constants import num_frames_from_samples as num_frames_for
from cpc.checkpoint import load_checkpoint
from cpc.features import BatchFn, FeatureDumpError, fit_length
from cpc.io import sha256_file


class ExtractorError(ValueError):
    """Input that a feature extractor cannot handle (the message says how to fix it)."""


def _mono(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    x = samples.numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if x.ndim == 2:
        if x.shape[0] != 1:
            raise ExtractorError(
                f"got {x.shape[0]} audio channels; features are computed on mono audio"
            )
        x = x[0]
    if x.ndim != 1:
        raise ExtractorError(f"expected samples of shape (S,) or (1, S), got {x.shape}")
    return x.astype(np.float32, copy=False)


def _check_rate(sampling_rate: int) -> None:
    if sampling_rate != SAMPLING_RATE:
        raise ExtractorError(
            f"sampling rate {sampling_rate} Hz; these features need {SAMPLING_RATE} Hz audio "
            f"(resample the cuts first: cuts.resample({SAMPLING_RATE}))"
        )


def pad_to_frames(samples: np.ndarray, num_frames: int) -> np.ndarray:
    """Zero-pad (or trim) 1-D ``samples`` to exactly ``num_frames * 160`` samples."""
    n = num_frames * HOP
    out = np.zeros(n, dtype=np.float32)
    m = min(n, samples.shape[0])
    out[:m] = samples[:m]
    return out


# --------------------------------------------------------------------------- CPC


@dataclass
class CPCExtractorConfig:
    """``checkpoint``: a CPC checkpoint (``best.pt``) written by the trainer; ``output``:
    ``"c"`` (context vectors, the GRU output) or ``"z"`` (encoder output); ``device``:
    ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; ``precision``: ``"fp32"``, or ``"bf16"`` (the
    encoder's convolutions under bfloat16 autocast, the GRU in float32: see
    :meth:`cpc.audio.model.CPCAudio.extract`; this project's models only)."""

    checkpoint: str = ""
    output: str = "c"
    device: str = "cpu"
    precision: str = "fp32"


@register_extractor
class CPCExtractor(FeatureExtractor):
    """CPC features (c_t or z_t) every 10 ms from a trained checkpoint.

    The model is loaded lazily on first use (and dropped when the extractor is pickled for
    worker processes). :meth:`from_model` wraps an in-memory model instead (e.g. an untrained
    random-init baseline)."""

    name = "cpc"
    config_type = CPCExtractorConfig

    def __init__(self, config: CPCExtractorConfig | None = None) -> None:
        super().__init__(config)
        if self.config.output not in ("c", "z"):
            raise ExtractorError(f"output must be 'c' or 'z', got {self.config.output!r}")
        if self.config.precision not in ("fp32", "bf16"):
            raise ExtractorError(
                f"precision must be 'fp32' or 'bf16', got {self.config.precision!r}"
            )
        self._model: torch.nn.Module | None = None
        self._dim: int | None = None
        self.model_config: dict[str, Any] | None = None
        # architecture of a CPC_audio checkpoint (None: its checkpoint_args.json)
        self.cpc_audio_config: Any = None

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, output: str = "c", device: str = "cpu", precision: str = "fp32"
    ) -> CPCExtractor:
        """An extractor around an already built model (not picklable to worker processes)."""
        ext = cls(
            CPCExtractorConfig(checkpoint="", output=output, device=device, precision=precision)
        )
        ext._model = model.to(device).eval()
        return ext

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            if not self.config.checkpoint:
                raise ExtractorError(
                    "CPCExtractorConfig.checkpoint is empty; give the path of a CPC checkpoint"
                )
            from cpc.audio.cpc_audio import is_cpc_audio_checkpoint, load_cpc_audio
            from cpc.audio.model import load_cpc_model

            if is_cpc_audio_checkpoint(self.config.checkpoint):
                model, cfg = load_cpc_audio(self.config.checkpoint, self.cpc_audio_config)
            else:
                model, cfg = load_cpc_model(self.config.checkpoint, map_location="cpu")
            self.model_config = cfg
            self._model = model.to(self.config.device).eval()
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.config.checkpoint:
            state["_model"] = None  # reloaded from the checkpoint in the worker
        return state

    @property
    def frame_shift(self) -> Seconds:
        return FRAME_SHIFT

    @property
    def device(self) -> str | torch.device:
        return self.config.device

    def feature_dim(self, sampling_rate: int) -> int:
        """Dimension of the chosen output (found by running the model on 20 ms of zeros)."""
        if self._dim is None:
            wave = torch.zeros(1, 2 * HOP, device=self.config.device)
            with torch.inference_mode():
                out = self.model.extract(wave, torch.tensor([2 * HOP], device=wave.device))
            self._dim = int(out[self.config.output].shape[-1])
        return self._dim

    def forward_batch(
        self, wave: torch.Tensor, lengths: torch.Tensor, row_multiple: int = 0
    ) -> torch.Tensor:
        """Model output (B, S // 160, D) for a zero-padded batch ``wave`` (B, S) with sample
        counts ``lengths`` (B,), computed on the extractor's device without gradients.
        ``row_multiple`` > 0: this project's models run the encoder row by row and the GRU on
        the batch (:meth:`cpc.audio.model.CPCAudio.extract`; faster on CPUs)."""
        from cpc.audio.model import CPCAudio

        dev = self.config.device
        opts: dict[str, Any] = {"precision": "bf16"} if self.config.precision == "bf16" else {}
        if row_multiple > 0 and isinstance(self.model, CPCAudio):
            opts["row_multiple"] = row_multiple
        with torch.inference_mode():
            out = self.model.extract(wave.to(dev), lengths.to(dev), **opts)[self.config.output]
        if out.shape[1] != wave.shape[1] // HOP:
            raise ExtractorError(
                f"the model gave {out.shape[1]} frames for {wave.shape[1]} samples; "
                f"expected {wave.shape[1] // HOP} (one per {HOP} samples)"
            )
        return out

    def extract(self, samples: np.ndarray | torch.Tensor, sampling_rate: int) -> np.ndarray:
        """(num_frames, D) float32 for mono ``samples`` (S,) or (1, S) at 16 kHz."""
        _check_rate(sampling_rate)
        x = _mono(samples)
        n = num_frames_for(x.shape[0])
        wave = torch.from_numpy(pad_to_frames(x, n))[None]
        out = self.forward_batch(wave, torch.tensor([wave.shape[1]]))
        return out[0].float().cpu().numpy()

    def extract_batch(
        self,
        samples: np.ndarray | torch.Tensor | Sequence[np.ndarray] | Sequence[torch.Tensor],
        sampling_rate: int,
        lengths: np.ndarray | torch.Tensor | None = None,
    ) -> list[np.ndarray]:
        """Batched :meth:`extract`: a list of 1-D/(1, S) arrays, or a padded (B, S) batch with
        ``lengths``. Returns one (num_frames, D) float32 array per input."""
        _check_rate(sampling_rate)
        if lengths is not None:
            batch = torch.as_tensor(samples)
            seqs = [batch[i, : int(n)].numpy() for i, n in enumerate(lengths)]
        elif isinstance(samples, np.ndarray | torch.Tensor) and np.ndim(samples) == 2:
            seqs = [np.asarray(s) for s in samples]
        elif isinstance(samples, np.ndarray | torch.Tensor):
            seqs = [np.asarray(samples)]
        else:
            seqs = [_mono(s) for s in samples]
        frames = [num_frames_for(len(s)) for s in seqs]
        wave = torch.zeros(len(seqs), max(frames, default=0) * HOP)
        for i, (s, n) in enumerate(zip(seqs, frames)):
            wave[i, : n * HOP] = torch.from_numpy(pad_to_frames(_mono(s), n))
        out = self.forward_batch(wave, torch.tensor(frames) * HOP).float().cpu().numpy()
        return [np.ascontiguousarray(out[i, :n]) for i, n in enumerate(frames)]


# --------------------------------------------------------------------------- MFCC baseline


@dataclass
class MfccDeltasConfig:
    """Kaldi-compatible MFCC + deltas. ``delta_order``: 0 (static only), 1 or 2;
    ``delta_window``: frames on each side of the delta regression (Kaldi's default 2)."""

    num_ceps: int = 13
    num_filters: int = 23
    use_energy: bool = False
    cepstral_lifter: int = 22
    delta_order: int = 2
    delta_window: int = 2
    device: str = "cpu"


@register_extractor
class MfccDeltas(FeatureExtractor):
    """MFCC with deltas and delta-deltas (39 dims by default), 10 ms frames."""

    name = "mfcc-deltas"
    config_type = MfccDeltasConfig

    def __init__(self, config: MfccDeltasConfig | None = None) -> None:
        super().__init__(config)
        from lhotse import Mfcc, MfccConfig

        c = self.config
        if c.delta_order not in (0, 1, 2):
            raise ExtractorError(f"delta_order must be 0, 1 or 2, got {c.delta_order}")
        self._mfcc = Mfcc(
            MfccConfig(
                sampling_rate=SAMPLING_RATE,
                frame_shift=FRAME_SHIFT,
                num_ceps=c.num_ceps,
                num_filters=c.num_filters,
                use_energy=c.use_energy,
                cepstral_lifter=c.cepstral_lifter,
                dither=0.0,
                snip_edges=False,
                device=c.device,
            )
        )

    @property
    def frame_shift(self) -> Seconds:
        return FRAME_SHIFT

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_ceps * (self.config.delta_order + 1)

    def extract(self, samples: np.ndarray | torch.Tensor, sampling_rate: int) -> np.ndarray:
        """(num_frames, 13 * (delta_order + 1)) float32 for mono 16 kHz ``samples``."""
        from torchaudio.functional import compute_deltas

        _check_rate(sampling_rate)
        x = _mono(samples)
        n = num_frames_for(x.shape[0])
        if n == 0:
            return np.zeros((0, self.feature_dim(sampling_rate)), dtype=np.float32)
        if x.shape[0] < 2 * HOP:  # shorter than a Kaldi window: pad so that framing works
            x = np.pad(x, (0, 2 * HOP - x.shape[0]))
        static = fit_length(np.asarray(self._mfcc.extract(x[None], SAMPLING_RATE)), n)
        feats = [torch.from_numpy(np.ascontiguousarray(static.T))]  # (ceps, T)
        win = 2 * self.config.delta_window + 1
        for _ in range(self.config.delta_order):
            feats.append(compute_deltas(feats[-1][None], win_length=win, mode="replicate")[0])
        return torch.cat(feats, 0).T.contiguous().numpy().astype(np.float32)


# --------------------------------------------------------------------------- dump sources


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpc_checkpoint_source(
    checkpoint: str,
    output: str = "c",
    device: str = "cpu",
    cpc_audio_config: Any = None,
    precision: str = "fp32",
) -> tuple[CPCExtractor, dict[str, Any]]:
    """Extractor for a trained checkpoint and the description stored in the dump's info.json
    (checkpoint path, sha256, training step, the full config it was trained with). A
    CPC_audio checkpoint (:mod:`cpc.audio.cpc_audio`) is read too: ``cpc_audio_config`` is
    its architecture (None: the checkpoint_args.json beside it); its step is not known, and
    it is always read in float32 (``precision`` applies to this project's models; the
    precision used is recorded in the source)."""
    from cpc.audio.cpc_audio import is_cpc_audio_checkpoint

    foreign = is_cpc_audio_checkpoint(checkpoint)
    if foreign and precision != "fp32":
        logging.info(f"{checkpoint}: a CPC_audio checkpoint is extracted in fp32")
        precision = "fp32"
    extractor = CPCExtractor(
        CPCExtractorConfig(checkpoint=checkpoint, output=output, device=device, precision=precision)
    )
    extractor.cpc_audio_config = cpc_audio_config
    _ = extractor.model  # load now: a bad checkpoint fails before any work
    if foreign:
        step = None
    else:
        step = load_checkpoint(checkpoint, map_location="cpu").get("step")
    source = {
        "kind": "checkpoint",
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "step": None if step is None else int(step),
        "output": output,
        "precision": precision,
        "config": extractor.model_config,
    }
    return extractor, source


def random_init_source(
    config: str | None,
    overrides: list[str] | None = None,
    seed: int = 42,
    output: str = "c",
    device: str = "cpu",
    precision: str = "fp32",
) -> tuple[CPCExtractor, dict[str, Any]]:
    """Extractor for the untrained model of a training config (``torch.manual_seed(seed)``
    then ``build_cpc_model``): the random-init baseline. Its info.json source records the
    model section of the config, the seed and the extraction precision."""
    from cpc.audio.config import load_train_config
    from cpc.audio.model import build_cpc_model
    from cpc.config import config_to_dict

    cfg = load_train_config(config, overrides)
    torch.manual_seed(seed)
    model = build_cpc_model(cfg.model)
    extractor = CPCExtractor.from_model(model, output=output, device=device, precision=precision)
    source = {
        "kind": "random_init",
        "config_file": None if config is None else str(config),
        "overrides": list(overrides or []),
        "seed": int(seed),
        "output": output,
        "precision": precision,
        "config": {"model": config_to_dict(cfg.model)},
    }
    return extractor, source


def mfcc_source(config: MfccDeltasConfig | None = None) -> tuple[MfccDeltas, dict[str, Any]]:
    """The MFCC baseline extractor and its info.json description."""
    extractor = MfccDeltas(config)
    cfg = {k: v for k, v in asdict(extractor.config).items() if k != "device"}
    source = {
        "kind": "mfcc",
        "extractor": MfccDeltas.name,
        "variant": (
            f"Kaldi-compatible MFCC (lhotse Mfcc: 25 ms povey window, {cfg['num_filters']} mel "
            f"filters, {cfg['num_ceps']} cepstra incl. c0, lifter {cfg['cepstral_lifter']}, "
            f"no dither) + {cfg['delta_order']} orders of deltas "
            f"(window {2 * cfg['delta_window'] + 1}) = "
            f"{extractor.feature_dim(SAMPLING_RATE)} dims, no CMVN"
        ),
        "config": cfg,
    }
    return extractor, source


# --------------------------------------------------------------------------- batches of cuts


def load_waveform(cut: Cut, num_frames: int | None = None, pad: bool = True) -> np.ndarray:
    """Mono 16 kHz float32 samples of ``cut``, zero-padded (or trimmed) to exactly
    ``num_frames * HOP`` samples (default: the cut's frame count), so that a model with a
    total stride of ``HOP`` yields exactly ``num_frames`` frames. ``pad=False``: as stored."""
    if cut.sampling_rate != SAMPLING_RATE:
        cut = cut.resample(SAMPLING_RATE)
    audio = cut.load_audio()
    if audio.ndim == 2:
        if audio.shape[0] != 1:
            raise FeatureDumpError(
                f"utterance {cut.id}: {audio.shape[0]} audio channels; features are computed "
                "on mono audio (select one channel in the manifest)"
            )
        audio = audio[0]
    if not pad:
        return audio.astype(np.float32, copy=False)
    n = cut_num_frames(cut) if num_frames is None else num_frames
    return pad_to_frames(audio, n)


def pad_waveforms(cuts: Sequence[Cut], multiple: int = HOP) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``cuts`` (see :func:`load_waveform`) into a zero-padded batch.

    Returns ``(wave, lengths)``: a float32 tensor (B, S) and int64 sample counts (B,), each a
    multiple of ``HOP``; S is the longest count rounded up to a multiple of ``multiple``
    (itself a multiple of ``HOP``), so batches take one of few shapes."""
    if multiple <= 0 or multiple % HOP:
        raise ValueError(
            f"pad multiple must be a positive multiple of {HOP} samples, got {multiple}"
        )
    waves = [load_waveform(c) for c in cuts]
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
    longest = int(lengths.max()) if waves else 0
    batch = torch.zeros(len(waves), -(-longest // multiple) * multiple)
    for i, w in enumerate(waves):
        batch[i, : w.shape[0]] = torch.from_numpy(w)
    return batch, lengths


def waveform_batch_fn(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pad_multiple: int = HOP
) -> BatchFn:
    """Wrap a waveform model into a :data:`cpc.features.BatchFn`.

    ``model_fn(wave (B, S) float32, lengths (B,) int64) -> (B, S // HOP, D)`` (it moves the
    batch to its device); the returned function loads and pads a batch of cuts (to a multiple
    of ``pad_multiple`` samples, see :func:`pad_waveforms`) and returns one float32 array
    (frames of the cut, D) per cut, in input order. The model must give each row the frames
    it gives alone (``CPCAudio`` zeroes every layer's output past the row's length)."""

    def fn(cuts: list[Cut]) -> list[np.ndarray]:
        wave, lengths = pad_waveforms(cuts, pad_multiple)
        with torch.inference_mode():
            out = model_fn(wave, lengths)
        out = out.float().cpu().numpy()
        if out.shape[1] != wave.shape[1] // HOP:
            raise FeatureDumpError(
                f"model gave {out.shape[1]} frames for {wave.shape[1]} samples; expected "
                f"{wave.shape[1] // HOP} (one frame per {HOP} samples)"
            )
        return [np.ascontiguousarray(out[i, : int(n) // HOP]) for i, n in enumerate(lengths)]

    return fn


def per_cut_batch_fn(fn: Callable[[np.ndarray], np.ndarray]) -> BatchFn:
    """Wrap a per-utterance function ``fn(samples (S,) float32, unpadded) -> (frames, D)``
    into a :data:`cpc.features.BatchFn` (for baselines such as MFCC that need no batching)."""

    def batch_fn(cuts: list[Cut]) -> list[np.ndarray]:
        return [fn(load_waveform(c, pad=False)) for c in cuts]

    return batch_fn


def extraction_batching(
    device: str, max_batch_duration: float = -1.0, pad_multiple_s: float = -1.0
) -> tuple[float, int]:
    """Stage 3's batching on ``device``: ``(max_duration seconds per batch, pad multiple in
    samples)``. A negative argument takes the device's default: on a CPU batches of 100 s
    (the encoder runs row by row and the GRU on the batch, see :func:`batch_fn_for`) padded
    to whole seconds (few shapes, so oneDNN reuses its kernels); on a GPU batches of 120 s
    padded to the hop."""
    cpu = torch.device(device).type == "cpu"
    max_dur = max_batch_duration if max_batch_duration >= 0 else (100.0 if cpu else 120.0)
    pad_s = pad_multiple_s if pad_multiple_s >= 0 else (1.0 if cpu else 0.0)
    return max_dur, max(1, round(pad_s * SAMPLING_RATE / HOP)) * HOP


def batch_fn_for(extractor: FeatureExtractor, pad_multiple: int = HOP) -> BatchFn:
    """A :data:`cpc.features.BatchFn` for ``extractor``: CPC runs padded batches (lengths
    rounded up to ``pad_multiple`` samples) through the model (on a CPU the encoder row by
    row, each row rounded up to ``pad_multiple``, and the GRU on the batch), other
    extractors run per utterance."""
    if isinstance(extractor, CPCExtractor):
        # forward_batch moves the batch to the extractor's device
        rows = pad_multiple if torch.device(extractor.device).type == "cpu" else 0
        return waveform_batch_fn(partial(extractor.forward_batch, row_multiple=rows), pad_multiple)
    return per_cut_batch_fn(lambda x: extractor.extract(x, SAMPLING_RATE))
