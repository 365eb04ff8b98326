"""A small ctypes wrapper of libespeak-ng's C API (``speak_lib.h``) that returns the audio of a
text together with espeak-ng's phoneme events: the ground-truth alignment of synthetic speech.

The library and its data come from the PyPI package ``espeakng-loader`` (it bundles
``libespeak-ng.so`` and ``espeak-ng-data``); Debian's ``libespeak-ng1`` package is the
fallback. Synthesis runs in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with
``espeakINITIALIZE_PHONEME_EVENTS``: the synth callback receives the samples and, for every
phoneme, an ``espeakEVENT_PHONEME`` event whose ``sample`` field is the exact sample at which
that phoneme starts (counted from the start of the ``espeak_Synth`` call) and whose ``id``
union holds the phoneme mnemonic as an 8-byte string (e.g. ``'aI``, ``t#``, ``_:``).

espeak-ng keeps global state: one process has one synthesiser (``get_espeak()``), and the
audio of a text depends slightly on what the process synthesised before (the state of the
waveform generator carries over; ``espeak_Terminate`` does not reset it). Synthesis of the
same sequence of texts in a fresh process is exactly reproducible, so callers that need
reproducible audio synthesise each independent unit in its own fresh process.

Example::

    tts = get_espeak()
    tts.set_voice("en-us+f2")
    tts.set_parameters(rate=170, pitch=50, pitch_range=50)
    out = tts.synthesize("It is a truth universally acknowledged.")
    out.samples        # int16 array at out.sample_rate (22050 Hz)
    out.segments()     # [PhoneSegment('I', 0, 1408), PhoneSegment('t#', 1408, 2304), ...]
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---- constants from speak_lib.h (API revision 12) ----
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
espeakCHARS_UTF8 = 1
espeakPHONEMES = 0x100  # synth flag: text may hold phoneme input [[...]] (espeak mnemonics)
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_END = 5
espeakEVENT_MSG_TERMINATED = 6
espeakEVENT_PHONEME = 7
espeakRATE = 1
espeakPITCH = 3
espeakRANGE = 4
espeakRATE_MINIMUM = 80
espeakRATE_MAXIMUM = 450
EE_OK = 0

#: espeak-ng's native output rate (fixed by its phoneme data).
ESPEAK_SAMPLE_RATE = 22050

DEBIAN_LIBRARY = "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1"
DEBIAN_DATA = ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data")

log = logging.getLogger(__name__)


class EspeakNotFoundError(FileNotFoundError):
    """libespeak-ng or its data could not be loaded."""


class EspeakError(RuntimeError):
    """libespeak-ng refused a request (unknown voice, failed synthesis, ...)."""


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events: the mnemonic, NUL-terminated if < 8
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` (speak_lib.h): 6 ints, a pointer, then the 8-byte ``id`` union.
    On LP64 that is 40 bytes with ``user_data`` at offset 24 and ``id`` at 32."""

    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE (an enum: int)
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index at the output rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class PhonemeEvent:
    """One ``espeakEVENT_PHONEME``: the mnemonic and its start sample."""

    phoneme: str
    sample: int


@dataclass(frozen=True)
class PhoneSegment:
    """A phoneme with its half-open sample span ``[start, end)``."""

    phoneme: str
    start: int
    end: int


@dataclass
class Synthesis:
    """Output of one ``Espeak.synthesize`` call.

    samples: int16 mono audio at ``sample_rate``.
    events: the phoneme events in order (start samples are non-decreasing).
    """

    samples: np.ndarray
    sample_rate: int
    events: list[PhonemeEvent]

    def segments(self) -> list[PhoneSegment]:
        """Phonemes as ``[start, end)`` spans: each ends where the next starts, the last at the
        end of the audio. Zero-length phonemes are dropped; spans tile ``[first, len)``."""
        n = len(self.samples)
        out: list[PhoneSegment] = []
        for i, ev in enumerate(self.events):
            start = min(max(ev.sample, 0), n)
            end = self.events[i + 1].sample if i + 1 < len(self.events) else n
            end = min(max(end, start), n)
            if end > start:
                out.append(PhoneSegment(ev.phoneme, start, end))
        return out


def find_espeak() -> tuple[str, str | None]:
    """Locate libespeak-ng: the ``espeakng-loader`` package first, then Debian's
    ``libespeak-ng1``. Returns ``(library_path, data_path)``; ``data_path`` None means the
    library's compiled-in default. Raises ``EspeakNotFoundError`` naming both options."""
    tried: list[str] = []
    try:
        import espeakng_loader

        lib = espeakng_loader.get_library_path()
        data = espeakng_loader.get_data_path()
        if Path(lib).is_file():
            return lib, data
        tried.append(f"espeakng-loader: no library at {lib}")
    except ImportError:
        tried.append("espeakng-loader: not installed")
    except Exception as e:  # its get_data_path() raises RuntimeError when data are missing
        tried.append(f"espeakng-loader: {e}")
    if Path(DEBIAN_LIBRARY).is_file():
        return DEBIAN_LIBRARY, None
    tried.append(f"Debian libespeak-ng1: no {DEBIAN_LIBRARY}")
    raise EspeakNotFoundError(
        "espeak-ng is not available ("
        + "; ".join(tried)
        + "). Install the PyPI package espeakng-loader into the environment "
        "(local/setup_env.sh does this), or the Debian package libespeak-ng1 "
        "(apt-get install libespeak-ng1)."
    )


class Espeak:
    """The process's espeak-ng synthesiser (use ``get_espeak()``; espeak-ng is a singleton).

    library / data_path: override the library file and the espeak-ng-data directory
    (default: ``find_espeak()``).
    """

    def __init__(self, library: str | None = None, data_path: str | None = None) -> None:
        if library is None:
            library, data_path = find_espeak()
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as e:
            raise EspeakNotFoundError(
                f"cannot load {library}: {e}. Install the PyPI package espeakng-loader or the "
                "Debian package libespeak-ng1."
            ) from e
        self.library = library
        self.data_path = data_path
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        # Noise sources (breathy voices) draw from libc's rand() or, in espeak-ng >= 1.52,
        # from its own generator; both are seeded before each synthesis when a seed is given.
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = ctypes.c_int
        self._libc = ctypes.CDLL(None)
        self._libc.srand.argtypes = [ctypes.c_uint]
        self._libc.srand.restype = None

        path = data_path.encode() if data_path else None
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, path, espeakINITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise EspeakNotFoundError(
                f"espeak_Initialize failed for {library} with data {data_path or '(default)'}; "
                "reinstall espeakng-loader or the Debian packages libespeak-ng1 and espeak-ng-data"
            )
        self.sample_rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _SynthCallback(self._on_synth)  # kept alive as long as self
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self.voice: str | None = None

    def _on_synth(self, wav, numsamples, events) -> int:  # noqa: ANN001 (ctypes pointers)
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while True:
            ev = events[i]
            if ev.type == espeakEVENT_LIST_TERMINATED:
                break
            if ev.type == espeakEVENT_PHONEME:
                name = ev.id.string.decode("utf-8", errors="replace")  # stops at the NUL
                self._events.append(PhonemeEvent(name, int(ev.sample)))
            i += 1
        return 0

    def set_voice(self, name: str) -> None:
        """Select a voice by name, with an optional variant: ``"en-us"``, ``"en-us+m3"``,
        ``"en-us+f2"``. Raises ``EspeakError`` for an unknown voice."""
        if "+" in name and self.data_path:  # espeak-ng silently ignores unknown variants
            variant = name.split("+", 1)[1]
            if not (Path(self.data_path) / "voices" / "!v" / variant).is_file():
                raise EspeakError(
                    f"espeak-ng has no voice variant {variant!r} "
                    f"(no {Path(self.data_path) / 'voices' / '!v' / variant})"
                )
        err = self._lib.espeak_SetVoiceByName(name.encode())
        if err != EE_OK:
            raise EspeakError(f"espeak-ng has no voice {name!r} (error {err})")
        self.voice = name

    def set_parameters(
        self, rate: int | None = None, pitch: int | None = None, pitch_range: int | None = None
    ) -> None:
        """Set the speaking rate (words per minute, 80-450), the base pitch (0-100, 50 normal)
        and the pitch range (0-100, 0 monotone, 50 normal). None leaves a value as it is."""
        for param, value, lo, hi in (
            (espeakRATE, rate, espeakRATE_MINIMUM, espeakRATE_MAXIMUM),
            (espeakPITCH, pitch, 0, 100),
            (espeakRANGE, pitch_range, 0, 100),
        ):
            if value is None:
                continue
            if not lo <= int(value) <= hi:
                raise ValueError(f"espeak parameter {param}: {value} is outside {lo}..{hi}")
            err = self._lib.espeak_SetParameter(param, int(value), 0)
            if err != EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed (error {err})")

    def get_parameter(self, param: int) -> int:
        """The current value of an ``espeak_PARAMETER`` (e.g. ``espeakRATE``)."""
        return int(self._lib.espeak_GetParameter(param, 1))

    def synthesize(self, text: str, seed: int | None = None, phonemes: bool = False) -> Synthesis:
        """Speak ``text`` (UTF-8, plain text, no SSML) and return the audio and phoneme events.
        The event samples count from the start of this call's audio. ``seed`` seeds the
        random generators espeak-ng uses for noise (breathy voices); without it, other code
        in the process that calls libc's ``rand()`` can change the audio. ``phonemes``: words
        written ``[[...]]`` in espeak-ng's phoneme mnemonics (e.g. ``[[h@l'oU]]``) are spoken
        as written instead of by espeak-ng's spelling rules (``espeakPHONEMES``)."""
        data = text.encode("utf-8") + b"\0"
        flags = espeakCHARS_UTF8 | (espeakPHONEMES if phonemes else 0)
        with self._lock:
            if seed is not None:
                self._libc.srand(seed & 0xFFFFFFFF)
                if self._set_rand_seed is not None:
                    self._set_rand_seed(seed & 0x7FFFFFFF)
            self._chunks = []
            self._events = []
            err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, flags, None, None)
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        if err != EE_OK:
            raise EspeakError(f"espeak_Synth failed (error {err}) for text {text[:60]!r}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return Synthesis(samples.astype(np.int16, copy=False), self.sample_rate, events)


def stock_data_path() -> str:
    """The espeak-ng-data directory of the library ``find_espeak()`` finds (the wheel's, or
    Debian's compiled-in default). Raises ``EspeakNotFoundError`` when there is none."""
    _, data = find_espeak()
    for path in [data] if data else list(DEBIAN_DATA):
        if (Path(path) / "phontab").is_file():
            return str(path)
    raise EspeakNotFoundError(
        f"no espeak-ng-data directory found ({data or ', '.join(DEBIAN_DATA)}); reinstall "
        "espeakng-loader or the Debian package espeak-ng-data"
    )


_INSTANCE: Espeak | None = None
_INSTANCE_PID: int | None = None


def get_espeak(data_path: str | None = None) -> Espeak:
    """The process-wide synthesiser, created on first use (one per process). ``data_path``:
    initialise it with this espeak-ng-data directory (e.g. one holding extra voice variants,
    ``cpc.audio.voices.make_data_dir``) instead of the library's own; a process that already
    has a synthesiser on another data directory cannot switch (espeak-ng is a singleton)."""
    global _INSTANCE, _INSTANCE_PID
    if _INSTANCE is None or _INSTANCE_PID != os.getpid():
        library = find_espeak()[0] if data_path else None
        _INSTANCE = Espeak(library, data_path) if data_path else Espeak()
        _INSTANCE_PID = os.getpid()
        log.debug("espeak-ng %s from %s", _INSTANCE.version, _INSTANCE.library)
    elif data_path and _INSTANCE.data_path != data_path:
        raise EspeakError(
            f"this process's espeak-ng already uses data {_INSTANCE.data_path}; "
            f"{data_path} needs a fresh process"
        )
    return _INSTANCE
