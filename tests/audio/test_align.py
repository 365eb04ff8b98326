"""Forced alignment (cpc/audio/align.py, cpc/audio/lexicon.py): the lexicon, the Viterbi
search with optional silence, the flat start, the quality measures on known cases, and the
aligner learning a synthetic corpus whose true alignment is known from a flat start."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cpc.audio.align import (
    AlignConfig,
    Utterance,
    align_corpus,
    align_utterances,
    alignment_quality,
    build_chain,
    flat_start,
    forward_backward_batch,
    make_split,
    normalize_per_speaker,
    pause_frames,
    pronunciation_mismatch,
    runs,
    viterbi,
    viterbi_batch,
)
from cpc.audio.constants import PHONE_TO_ID
from cpc.audio.labels import read_cpc_labels
from cpc.audio.lexicon import Lexicon, cmudict_pronunciations
from tests.factories import REPO_ROOT, make_tiny_corpus

P = PHONE_TO_ID
SIL = P["SIL"]


def test_lexicon_cmudict_without_stress_and_counted_fallbacks() -> None:
    lex = Lexicon()
    assert lex.pronounce("the") == [P["DH"], P["AH"]]  # CMUdict's first entry, AH0 -> AH
    assert lex.pronounce("CAT,") == [P["K"], P["AE"], P["T"]]
    assert lex.pronounce("ILL-WILL") == lex.pronounce("ILL") + lex.pronounce("WILL")
    assert lex.pronounce("ZXQWV") == [P["SPN"]] and lex.pronounce("zxqwv") == [P["SPN"]]
    assert lex.oov == {"ZXQWV": 2} and lex.split == {"ILL-WILL": 1}
    assert lex.transcript("  THE -- CAT ") == [[P["DH"], P["AH"]], [P["K"], P["AE"], P["T"]]]


def test_lexicon_possessives_and_stress() -> None:
    words = {"CAT": ("K", "AE1", "T"), "DOG": ("D", "AO1", "G"), "ROSE": ("R", "OW1", "Z")}
    lex = Lexicon(words)
    assert lex.lookup("CAT'S") == ("K", "AE1", "T", "S")  # voiceless: S
    assert lex.lookup("dog's") == ("D", "AO1", "G", "Z")  # voiced: Z
    assert lex.lookup("ROSE'S") == ("R", "OW1", "Z", "IH0", "Z")  # sibilant: IH Z
    assert Lexicon({"BUS": ("B", "AH", "S")}).lookup("BUS'S") == ("B", "AH", "S", "IH", "Z")
    assert lex.lookup("CAT'LL") is None and lex.lookup("CAT'S'S") is None
    assert Lexicon().lookup("ELINOR'S") == Lexicon().lookup("ELINOR") + ("Z",)
    stressed = cmudict_pronunciations(stress=True)
    assert stressed["THE"] == ("DH", "AH0") and cmudict_pronunciations()["THE"] == ("DH", "AH")


def _scores(labels: list[int], strength: float = 5.0) -> np.ndarray:
    s = np.zeros((len(labels), 41))
    s[np.arange(len(labels)), labels] = strength
    return s


def test_viterbi_places_optional_silence_only_where_there_is_silence() -> None:
    a, b = P["AA"], P["B"]
    chain = build_chain([[a], [b]], min_frames=2)
    truth = [SIL] * 3 + [a] * 4 + [SIL] * 2 + [b] * 3 + [SIL]
    assert viterbi(_scores(truth), chain).tolist() == truth
    no_pause = [a] * 4 + [b] * 3  # every silence skipped
    assert viterbi(_scores(no_pause), chain).tolist() == no_pause
    # the chain forces every phone even where the scores say otherwise: min 2 frames of b
    got = viterbi(_scores([a] * 7), chain).tolist()
    assert got == [a] * 5 + [b] * 2
    with pytest.raises(ValueError, match="3 frames for a chain that needs 4"):
        viterbi(_scores([a] * 3), chain)
    # several utterances of different lengths and chains in one batch: the same paths
    rng = np.random.default_rng(0)
    chains = [chain, build_chain([[b, a, b]], min_frames=1), build_chain([[a]], min_frames=3)]
    scores = [rng.normal(size=(int(n), 41)) for n in (13, 5, 30)]
    batch = viterbi_batch(scores, chains)
    assert [x.tolist() for x in batch] == [viterbi(s, c).tolist() for s, c in zip(scores, chains)]


def _brute_force_occupancy(scores: np.ndarray, chain) -> np.ndarray:
    """Class posteriors per frame by enumerating every path of the chain's topology (start
    in the first state or the first mandatory one; stay, move on one state, or jump over an
    optional block; end in the last state or the last mandatory one)."""
    from itertools import product

    S, T = len(chain.phone), scores.shape[0]
    mandatory = np.flatnonzero(~chain.optional)
    starts, ends = {0, int(mandatory[0])}, {S - 1, int(mandatory[-1])}

    def can_follow(s: int, n: int) -> bool:
        return n in (s, s + 1) or (n > s + 1 and bool(chain.optional[s + 1 : n].all()))

    post = np.zeros_like(scores)
    for path in product(range(S), repeat=T):
        if path[0] not in starts or path[-1] not in ends:
            continue
        if not all(can_follow(a, b) for a, b in zip(path, path[1:])):
            continue
        w = np.exp(sum(scores[t, chain.phone[s]] for t, s in enumerate(path)))
        for t, s in enumerate(path):
            post[t, chain.phone[s]] += w
    return post / post.sum(1, keepdims=True)


def test_forward_backward_occupancies_equal_the_sum_over_all_paths() -> None:
    """Baum-Welch targets: per-frame class posteriors over every path through the chain,
    checked against enumeration for utterances of different lengths in one batch; with
    decisive scores they put all the mass on the Viterbi path."""
    rng = np.random.default_rng(3)
    a, b = P["AA"], P["B"]
    chains = [build_chain([[a], [b]], min_frames=1), build_chain([[b, a]], min_frames=2)]
    scores = [rng.normal(size=(6, 41)) * 2, rng.normal(size=(5, 41)) * 2]
    occ = forward_backward_batch(scores, chains, 41)
    for o, sc, ch in zip(occ, scores, chains):
        assert o.shape == sc.shape and np.allclose(o.sum(1), 1.0, atol=1e-5)
        assert np.abs(o - _brute_force_occupancy(sc, ch)).max() < 1e-5
    truth = [SIL] * 3 + [a] * 4 + [SIL] * 2 + [b] * 3 + [SIL]
    sharp = forward_backward_batch([_scores(truth)], [build_chain([[a], [b]], 2)], 41)[0]
    assert sharp.argmax(1).tolist() == truth and sharp.max(1).min() > 0.98
    with pytest.raises(ValueError, match="3 frames for a chain that needs 4"):
        forward_backward_batch([_scores([a] * 3)], [build_chain([[a], [b]], 2)], 41)


def test_minimum_pause_between_words() -> None:
    """With sil_frames N every optional silence is a block of N silence states: a pause the
    path takes lasts at least N frames, and the path can still skip the whole block."""
    a, b = P["AA"], P["B"]
    chain = build_chain([[a], [b]], min_frames=2, sil_frames=3)
    assert chain.phone.tolist() == [SIL] * 3 + [a, a] + [SIL] * 3 + [b, b] + [SIL] * 3
    assert chain.min_frames == 4
    # a 1-frame dip between the words (a stop closure, say) is no pause of 3 frames: the
    # path skips the silence, and the dip goes to a neighbouring phone
    dip = [a] * 4 + [SIL] + [b] * 4
    got = viterbi(_scores(dip), chain).tolist()
    assert got in ([a] * 5 + [b] * 4, [a] * 4 + [b] * 5)
    # with single-state silence (the old chain) the same dip becomes a 1-frame pause
    assert viterbi(_scores(dip), build_chain([[a], [b]], min_frames=2)).tolist() == dip
    # a real pause of 4 frames, and edge silences of 3, are kept
    truth = [SIL] * 3 + [a] * 4 + [SIL] * 4 + [b] * 3 + [SIL] * 3
    assert viterbi(_scores(truth), chain).tolist() == truth
    no_pause = [a] * 4 + [b] * 3  # every silence skipped, including the edges
    assert viterbi(_scores(no_pause), chain).tolist() == no_pause
    # sil_states: a pause is a run of silence sub-states (onset ... end), like a phone
    three = build_chain([[a]], min_frames=3, states=3, sil_states=3)
    assert three.phone.tolist() == [SIL, SIL + 1, SIL + 2, 3 * a, 3 * a + 1, 3 * a + 2] + [
        SIL,
        SIL + 1,
        SIL + 2,
    ]
    assert build_chain([[a]], 3, 3, sil_frames=5, sil_states=3).phone.tolist()[:5] == [
        SIL,
        SIL,
        SIL + 1,
        SIL + 2,
        SIL + 2,
    ]
    truth = [SIL, SIL + 1, SIL + 1, SIL + 2, 3 * a, 3 * a + 1, 3 * a + 2, SIL, SIL + 1, SIL + 2]
    scores = np.zeros((len(truth), 41 * 3))
    scores[np.arange(len(truth)), truth] = 5.0
    assert viterbi(scores, three).tolist() == truth
    with pytest.raises(ValueError, match="sil_states"):
        build_chain([[a]], 3, 3, sil_states=4)
    # batched Viterbi agrees with one at a time on random scores and mixed chains
    rng = np.random.default_rng(1)
    chains = [chain, build_chain([[b, a], [b]], 1, 3, sil_frames=5), build_chain([[a]], 3)]
    scores = [rng.normal(size=(int(n), 41 * 3)) for n in (17, 20, 30)]
    for sc in scores:
        sc[:, SIL] += 1.0  # silence likely enough for the paths to take pauses
    batch = viterbi_batch(scores, chains)
    assert [x.tolist() for x in batch] == [viterbi(s, c).tolist() for s, c in zip(scores, chains)]
    for x, sil, shortest in zip(batch, [SIL, 3 * SIL, SIL], [3, 5, 1]):
        _, lengths, values = runs(x)  # every pause in the path lasts at least the block
        assert (values == sil).any() and lengths[values == sil].min() >= shortest


def test_per_speaker_normalisation() -> None:
    """cmvn 'speaker': each speaker's frames, all utterances together, have mean 0 and
    variance 1 (an utterance alone need not), and speakers do not mix."""
    rng = np.random.default_rng(0)
    raw = [rng.normal(m, sd, size=(n, 3)) for m, sd, n in ((5, 2, 40), (1, 2, 60), (-3, 0.5, 50))]
    utts = [
        Utterance(f"u{i}", spk, np.zeros_like(r), [[P["AA"]]])
        for i, (r, spk) in enumerate(zip(raw, ["a", "a", "b"]))
    ]
    normalize_per_speaker(utts, raw)
    a = np.concatenate([utts[0].feats, utts[1].feats])
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(a.std(0), 1, atol=1e-4)
    assert utts[0].feats.mean() > 0.5 and utts[1].feats.mean() < -0.5  # not per utterance
    np.testing.assert_allclose(utts[2].feats, (raw[2] - raw[2].mean(0)) / (raw[2].std(0) + 1e-5))
    np.testing.assert_allclose(
        utts[0].feats,
        (raw[0] - np.concatenate(raw[:2]).mean(0)) / (np.concatenate(raw[:2]).std(0) + 1e-5),
    )


def test_sub_phone_states() -> None:
    a, b = P["AA"], P["B"]
    chain = build_chain([[a], [b]], min_frames=3, states=3)
    assert chain.phone.tolist() == [
        SIL,
        3 * a,
        3 * a + 1,
        3 * a + 2,
        SIL,
        3 * b,
        3 * b + 1,
        3 * b + 2,
        SIL,
    ]
    assert chain.min_frames == 6
    five = build_chain([[a]], min_frames=5, states=3)  # 5 mandatory frames over 3 states
    assert five.phone.tolist() == [SIL, 3 * a, 3 * a, 3 * a + 1, 3 * a + 2, 3 * a + 2, SIL]
    # Viterbi over sub-phone classes: the path runs through each phone's states in order
    truth = [SIL, 3 * a, 3 * a + 1, 3 * a + 1, 3 * a + 2, 3 * b, 3 * b + 1, 3 * b + 2, 3 * b + 2]
    scores = np.zeros((len(truth), 41 * 3))
    scores[np.arange(len(truth)), truth] = 5.0
    assert viterbi(scores, chain).tolist() == truth
    # the flat start shares the frames among the states in order (edges 0 2 3 5 6 8)
    flat = flat_start(8, build_chain([[a]], 3, 3)).tolist()
    assert flat == [SIL, SIL, 3 * a, 3 * a + 1, 3 * a + 1, 3 * a + 2, SIL, SIL]


def test_pronunciation_mismatch_counts_phone_errors() -> None:
    a, b, c = P["AA"], P["B"], P["K"]
    ref = {"u": np.array([SIL, a, a, b, b, SIL, SIL, c, c, SIL]), "v": np.array([SIL, a, SIL])}
    words = {"u": [[a, b], [a]], "v": [[a]], "w": [[b]]}  # u: c said as a; w has no reference
    assert pronunciation_mismatch(words, ref) == {
        "per": 0.25,
        "ref_phones": 4,
        "ins": 0,
        "del": 0,
        "sub": 1,
    }


def test_flat_start_and_pauses() -> None:
    chain = build_chain([[P["AA"], P["B"]], [P["IY"]]])
    two_each = [SIL, P["AA"], P["B"], P["IY"], SIL]
    assert flat_start(10, chain).tolist() == [p for p in two_each for _ in range(2)]
    energy = np.array([0.0] * 3 + [10.0] * 4 + [0.0] * 10 + [10.0] * 3 + [0.0] * 2 + [9.0])
    pauses = pause_frames(energy, min_pause=10)
    # the leading run and the 10-frame pause count; the 2-frame dip before the end does not
    assert np.flatnonzero(pauses).tolist() == [0, 1, 2, *range(7, 17)]
    lab = flat_start(len(energy), chain, pauses)
    assert (lab[pauses] == SIL).all() and lab[~pauses].tolist() == [P["AA"]] * 3 + [P["B"]] * 4 + [
        P["IY"]
    ] * 3


def test_alignment_quality_on_a_known_case() -> None:
    ref = {"u": np.array([0, 0, 5, 5, 5, 6, 6, 0]), "v": np.array([7, 7])}
    hyp = {"u": np.array([0, 5, 5, 5, 6, 6, 6, 0]), "v": np.array([7, 7]), "w": np.array([1])}
    q = alignment_quality(hyp, ref)
    assert q["utterances"] == 2 and q["frames"] == 10
    assert q["frame_agreement"] == 0.8  # frames 1 and 4 of u differ
    assert q["per_phone"]["SIL"] == {"frames": 3, "agreement": round(2 / 3, 4)}
    assert q["per_phone"]["B"] == {"frames": 2, "agreement": 1.0}
    # boundaries: 5 starts at 2 vs 1, 6 at 5 vs 4, SIL at 7 vs 7 -> 10, 10, 0 ms
    assert q["boundaries"] == 3 and q["boundary_error_median_ms"] == 10.0
    assert q["boundaries_within_20ms"] == 1.0


def test_split_is_per_speaker_and_seeded() -> None:
    spk = {f"{s}-{i}": s for s in "ab" for i in range(10)}
    split = make_split(spk, 0.2, seed=3)
    assert len(split["test"]) == 4 and {u[0] for u in split["test"]} == {"a", "b"}
    assert split == make_split(spk, 0.2, seed=3) and split != make_split(spk, 0.2, seed=4)


def test_aligner_learns_a_synthetic_corpus_from_a_flat_start() -> None:
    """Each class has its own mean vector; utterances are random words with random phone
    durations and pauses; the aligner sees only the words and recovers the alignment."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(41, 13)) * 2  # 13 columns, as static MFCCs
    vocab = [list(rng.choice(np.arange(1, 40), size=int(rng.integers(2, 5)))) for _ in range(20)]
    utts, truth = [], {}
    for i in range(60):
        words = [vocab[j] for j in rng.choice(len(vocab), size=int(rng.integers(2, 5)))]
        lab = [SIL] * int(rng.integers(5, 15))
        for w in words:
            for p in w:
                lab += [int(p)] * int(rng.integers(4, 12))
            if rng.random() < 0.3:
                lab += [SIL] * int(rng.integers(12, 20))
        lab += [SIL] * int(rng.integers(5, 15))
        lab = np.array(lab)
        feats = means[lab] + rng.normal(size=(len(lab), 13))
        energy = np.where(lab == SIL, 0.0, 10.0) + rng.normal(size=len(lab)) * 0.1
        utts.append(Utterance(f"u{i}", "s", feats.astype(np.float32), words, energy))
        truth[f"u{i}"] = lab
    cfg = AlignConfig(
        iterations=2,
        hidden=64,
        context=2,
        batch_frames=256,
        min_steps=150,
        seed=1,
        final_deltas=None,  # 13 static columns only: no richer last round
    )
    result = align_utterances(utts, cfg, truth)
    q = alignment_quality(result.labels, truth)
    flat = result.stats["iterations"]
    assert q["frame_agreement"] > 0.95 and q["boundary_error_median_ms"] == 0.0
    assert flat[-1]["frame_agreement_with_reference"] == q["frame_agreement"]
    # Baum-Welch training (soft targets from forward-backward) learns it as well
    soft = align_utterances(utts, replace(cfg, targets="soft"), truth)
    q = alignment_quality(soft.labels, truth)
    assert q["frame_agreement"] > 0.95 and q["boundary_error_median_ms"] == 0.0
    # a delta order the features were not computed with is refused, naming the fix
    with pytest.raises(ValueError, match=r"delta order 2 needs 39 feature columns.*have 13"):
        align_utterances(utts, replace(cfg, final_deltas=2))


def test_align_corpus_reports_bad_transcripts(tmp_path: Path) -> None:
    from cpc.audio.librispeech import prepare_librispeech_manifests

    corpus = make_tiny_corpus(tmp_path / "c", speakers=2, chapters=1, utts=4)
    trans = sorted(corpus.part_dir.glob("*/*/*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    empty, long_, oov = (lines[i].split()[0] for i in range(3))
    lines[0] = empty + " "
    lines[1] = long_ + " " + " ".join(["SEVEN"] * 200)  # 1000 phones: far too long
    lines[2] = oov + " THE QXZZY CAT"
    trans.write_text("\n".join(lines) + "\n")
    manifests = tmp_path / "m"
    prepare_librispeech_manifests(corpus.corpus_dir, manifests)
    out = tmp_path / "align"
    cfg = AlignConfig(iterations=1, hidden=16, context=1)
    align_corpus(manifests, out, cfg, split_dir=corpus.labels_dir, reference_dir=corpus.labels_dir)
    stats = json.loads((out / "alignment_stats.json").read_text())
    # the round on the static MFCCs, then the extra one on MFCC + deltas + delta-deltas
    assert len(stats["iterations"]) == 2 and stats["config"]["final_deltas"] == 2
    assert set(stats["failed"]) == {empty, long_}
    assert stats["failed"][empty].startswith("empty transcript")
    assert stats["failed"][long_].startswith("too short for its transcript")
    assert stats["oov_words"] == {"QXZZY": 1} and stats["oov_tokens"] == 1
    assert stats["aligned"] == len(corpus.utt_ids) - 2
    labels = read_cpc_labels(out)  # the CPC release format, as stage 1 reads it
    assert set(labels.alignments) == set(corpus.utt_ids) - {empty, long_}
    for u, lab in labels.alignments.items():
        assert len(lab) == corpus.num_frames[u]
    assert set(labels.splits["train"]) | set(labels.splits["test"]) <= set(labels.alignments)
    q = json.loads((out / "alignment_quality.json").read_text())
    assert q["utterances"] == stats["aligned"]


def test_aligner_feature_delta_orders(tmp_path: Path) -> None:
    """--deltas 0/1/2: the 13 static MFCCs alone, with deltas, with deltas and delta-deltas
    (the static part the same in each); the command line's value reaches AlignConfig."""
    import importlib.util

    from cpc.audio.align import load_corpus_cuts, prepare_utterances
    from cpc.audio.librispeech import prepare_librispeech_manifests

    corpus = make_tiny_corpus(tmp_path / "c", speakers=1, chapters=1, utts=2)
    prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "m")
    cuts = load_corpus_cuts(tmp_path / "m")
    feats = {d: prepare_utterances(cuts, Lexicon(), deltas=d)[0] for d in (0, 1, 2)}
    for d, dim in ((0, 13), (1, 26), (2, 39)):
        assert [u.feats.shape[1] for u in feats[d]] == [dim, dim]
        for u, ref in zip(feats[d], feats[2]):
            assert np.allclose(u.feats[:, :13], ref.feats[:, :13])
            assert np.array_equal(u.energy, ref.energy)
    spec = importlib.util.spec_from_file_location(
        "align_cli", REPO_ROOT / "egs/librispeech100/local/align.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.get_parser().parse_args(["--deltas", "1", "--targets", "soft"])
    cfg = cli.make_config(args)
    assert (cfg.deltas, cfg.targets) == (1, "soft")
    args = cli.get_parser().parse_args(["--final-deltas", "-1"])
    assert cli.make_config(args).final_deltas is None
    assert cli.make_config(cli.get_parser().parse_args([])) == AlignConfig()


STUB_ALIGN = """import json, sys
with open("align_argv.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""
STUB_LABELS = """import pathlib
for p in ("data/manifests/librispeech_cuts_train.jsonl.gz",
          "data/manifests/librispeech_cuts_test.jsonl.gz", "data/lang/phones.txt"):
    pathlib.Path(p).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(p).write_text("stub")
"""


def test_recipe_align_context_reaches_the_aligner(tmp_path: Path) -> None:
    """run.sh --align-context N is passed to local/align.py as --context N (which the real
    script's parser reads into AlignConfig.context), is part of stage 1's identity (a new
    value re-runs the stage, the same one skips it), and its default is the aligner's."""
    import importlib.util
    import re
    import shutil

    from tests.factories import make_recipe_copy, run_recipe

    d = make_recipe_copy(tmp_path / "recipe")
    (d / "local").unlink()  # stand-ins for the aligner and the label stage: record, write
    (d / "local").mkdir()
    (d / "local/align.py").write_text(STUB_ALIGN)
    (d / "local/prepare_labels.py").write_text(STUB_LABELS)
    (d / "download").mkdir()
    one = ["--stage", "1", "--stop-stage", "1", "--align", "true", "--nproc-per-node", "1"]

    def argvs() -> list[list[str]]:
        f = d / "align_argv.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

    run_recipe(d, *one, "--align-context", "2")
    run_recipe(d, *one, "--align-context", "2")  # same options: stage 1 skipped
    r = run_recipe(d, *one, "--align-context", "0")  # another context: stage 1 re-runs
    assert "options changed" in r.stderr
    r = run_recipe(d, *one, "--align-context", "0", "--align-sil-frames", "4")  # re-runs too
    assert "options changed" in r.stderr
    last = ["--align-context", "0", "--align-sil-frames", "4", "--align-sil-states", "3"]
    r = run_recipe(d, *one, *last)
    assert "options changed" in r.stderr
    r = run_recipe(d, *one, *last, "--align-deltas", "2", "--align-final-deltas", "-1")
    assert "options changed" in r.stderr
    shutil.rmtree(d / "data")
    run_recipe(d, *one)  # the default
    calls = argvs()
    assert len(calls) == 6

    spec = importlib.util.spec_from_file_location(
        "align_cli", REPO_ROOT / "egs/librispeech100/local/align.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    contexts = [cli.get_parser().parse_args(a).context for a in calls]
    default = int(re.search(r"^align_context=(\d+)", (d / "run.sh").read_text(), re.M)[1])
    assert contexts == [2, 0, 0, 0, 0, default]
    assert default == AlignConfig().context == cli.get_parser().parse_args([]).context
    # --align-sil-frames likewise reaches AlignConfig.sil_frames, with the aligner's default
    sil = [cli.get_parser().parse_args(a).sil_frames for a in calls]
    sil_default = int(re.search(r"^align_sil_frames=(\d+)", (d / "run.sh").read_text(), re.M)[1])
    assert sil == [sil_default, sil_default, 4, 4, 4, sil_default]
    assert sil_default == AlignConfig().sil_frames == cli.get_parser().parse_args([]).sil_frames
    states = [cli.get_parser().parse_args(a).sil_states for a in calls]
    st_default = int(re.search(r"^align_sil_states=(\d+)", (d / "run.sh").read_text(), re.M)[1])
    assert states == [st_default, st_default, st_default, 3, 3, st_default]
    assert st_default == AlignConfig().sil_states == cli.get_parser().parse_args([]).sil_states
    deltas = [cli.get_parser().parse_args(a).deltas for a in calls]
    d_default = int(re.search(r"^align_deltas=(\d+)", (d / "run.sh").read_text(), re.M)[1])
    assert deltas == [d_default] * 4 + [2, d_default]
    assert d_default == AlignConfig().deltas == cli.get_parser().parse_args([]).deltas == 0
    fd = re.search(r"^align_final_deltas=(\w+)", (d / "run.sh").read_text(), re.M)[1]
    finals = [cli.make_config(cli.get_parser().parse_args(a)).final_deltas for a in calls]
    assert finals == [2, 2, 2, 2, None, 2]  # run.sh's -1: no extra round
    assert int(fd) == cli.get_parser().parse_args([]).final_deltas == 2
    assert AlignConfig().final_deltas == 2


def test_align_cli_refuses_bad_settings_before_any_work(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "align"
    bad = ["--sil-states", "4", "--sil-frames", "0", "--iterations", "0", "--context", "-1"]
    r = subprocess.run(
        [
            sys.executable,
            "egs/librispeech100/local/align.py",
            "--manifest-dir",
            str(tmp_path / "none"),
            "--output-dir",
            str(out),
            *bad,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for message in (
        "--sil-states must be between 1 and --states (3), not 4",
        "--sil-frames must be at least 1, not 0",
        "--iterations must be at least 1, not 0",
        "--context must be 0 or more, not -1",
    ):
        assert message in r.stderr
    assert not out.exists()  # nothing read or written
    with pytest.raises(ValueError, match="--cmvn must be"):
        AlignConfig(cmvn="global")
    with pytest.raises(ValueError, match="--deltas must be 0, 1 or 2, not 3"):
        AlignConfig(deltas=3)
    with pytest.raises(ValueError, match="--targets must be 'hard' or 'soft'"):
        AlignConfig(targets="viterbi")
