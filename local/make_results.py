#!/usr/bin/env python3
"""Stage 5 (end): the results table of an experiment, beside the paper's Table 1.

Input:  EXP_DIR/probe_phone/<feat>/results.json and EXP_DIR/probe_speaker/<feat>/results.json
        (local/probe.py, stages 4-5) for the feature dumps cpc_<tag>, mfcc, random_<tag>
        (and any other dump probed there, e.g. cpc_<tag>_z); EXP_DIR/metrics.jsonl (the
        trainer's log: "step", "loss", "accuracy" = list over k); the CPC dump's test cuts
        (for the t-SNE figure).
Output: EXP_DIR/RESULTS.md (the table, chance levels, protocol, figures),
        EXP_DIR/results.json ({"tag", "rows": {"cpc"|"mfcc"|"random"|...: {"phone_linear",
        "phone_mlp", "phone_linear_context", "speaker_linear", ...}}, "paper", "chance"}; all
        accuracies are fractions in [0, 1]),
        EXP_DIR/kstep_accuracy.png (InfoNCE prediction accuracy against k, as the paper's
        Figure 3), EXP_DIR/tsne_speakers.png (t-SNE of utterance-mean c_t of the utterances of
        up to 10 speakers, as the paper's Figure 2).

Example:
    python local/make_results.py --exp-dir exp/cpc_small --tag cpc_small
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cpc.cli import HelpFormatter
from cpc.features import FeatureDumpError, load_dump
from cpc.io import write_json_atomic, write_text_atomic
from cpc.log import setup_logging

# van den Oord et al. (2018), Table 1: LibriSpeech-100, linear classifiers, test accuracy (%).
PAPER = {
    "mfcc": {"phone_linear": 39.7, "speaker_linear": 17.6},
    "random": {"phone_linear": 27.6, "speaker_linear": 1.87},
    "cpc": {"phone_linear": 64.6, "phone_mlp": 72.5, "speaker_linear": 97.4},
    "supervised": {"phone_linear": 74.6, "speaker_linear": 98.5},
}
LABELS = {
    "cpc": "CPC c_t",
    "mfcc": "MFCC",
    "random": "Random initialization",
    "cpc_z": "CPC z_t (encoder)",
    "random_z": "Random init z_t",
    "supervised": "Supervised",
}
MAIN_ROWS = ("cpc", "mfcc", "random")


class ResultsError(ValueError):
    """Missing or inconsistent probe results (the message names what to run)."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--exp-dir", required=True, help="the experiment directory exp/<tag>")
    parser.add_argument("--tag", required=True, help="experiment tag (names the dumps)")
    parser.add_argument(
        "--tsne-speakers", type=int, default=10, help="speakers shown in the t-SNE figure"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the t-SNE embedding")
    return parser


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def collect(exp_dir: Path, tag: str) -> dict[str, dict[str, Any]]:
    """Per feature type: {"dir", "phone": results, "speaker": results}; the dumps run.sh
    names for this tag (cpc_<tag>, mfcc, random_<tag>) win over other dumps of a type."""
    preferred = {f"cpc_{tag}", "mfcc", f"random_{tag}", f"cpc_{tag}_z", f"random_{tag}_z"}
    found: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    for task in ("phone", "speaker"):
        d = exp_dir / f"probe_{task}"
        if d.is_dir():
            names |= {p.name for p in d.iterdir() if (p / "results.json").is_file()}
    for name in sorted(names, key=lambda n: (n not in preferred, n)):
        phone = _read(exp_dir / "probe_phone" / name / "results.json")
        speaker = _read(exp_dir / "probe_speaker" / name / "results.json")
        ftype = (phone or speaker or {}).get("feature_type") or name
        if ftype in found:
            logging.warning(f"{name}: another {ftype} dump ({found[ftype]['dir']}) is used")
            continue
        found[ftype] = {"dir": name, "phone": phone, "speaker": speaker}
    return found


def _acc(res: dict[str, Any] | None, key: str) -> float | None:
    if res is None or key not in res:
        return None
    return float(res[key]["accuracy"])


def build_rows(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for ftype, f in found.items():
        ph, sp = f["phone"], f["speaker"]
        rows[ftype] = {
            "feature_dir": (ph or sp or {}).get("feature_dir"),
            "dim": (ph or sp or {}).get("dim"),
            "phone_linear": _acc(ph, "linear"),
            "phone_mlp": _acc(ph, "mlp"),
            "phone_linear_context": _acc(ph, "linear_context"),
            "phone_context_frames": (
                ph["linear_context"]["config"]["context"] if ph and "linear_context" in ph else None
            ),
            "speaker_linear": _acc(sp, "linear"),
        }
    return rows


def kstep_curve(metrics: Path, last: int = 5) -> tuple[list[float], int] | None:
    """Mean over the last ``last`` records of metrics.jsonl of the per-k accuracy list, and
    the step of the last record; None if there is no such log."""
    if not metrics.is_file():
        return None
    recs = []
    with open(metrics) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            acc = rec.get("accuracy", rec.get("acc"))
            if isinstance(acc, list) and acc:
                recs.append((int(rec.get("step", 0)), acc))
    if not recs:
        return None
    recs.sort(key=lambda r: r[0])
    tail = [a for _, a in recs[-last:] if len(a) == len(recs[-1][1])]
    return np.mean(np.asarray(tail, dtype=np.float64), axis=0).tolist(), recs[-1][0]


def tsne_figure(
    feature_dir: str, out: Path, num_speakers: int, seed: int, title: str
) -> dict[str, Any] | None:
    """t-SNE of utterance-mean features of all utterances (train and test: a picture, not
    an evaluation) of the first ``num_speakers`` speakers (sorted ids). None if there are
    too few utterances."""
    from sklearn.manifold import TSNE

    from cpc.plots import scatter_png

    by_spk: dict[str, list[np.ndarray]] = {}
    for part in ("train", "test"):
        for cut in load_dump(feature_dir, part):
            spk = cut.supervisions[0].speaker
            by_spk.setdefault(spk, []).append(cut.load_features().mean(0))
    speakers = sorted(by_spk, key=lambda s: (len(s), s))[:num_speakers]
    x = np.stack([v for s in speakers for v in by_spk[s]]).astype(np.float64)
    labels = [s for s in speakers for _ in by_spk[s]]
    if len(x) < 5:
        logging.warning(f"t-SNE skipped: only {len(x)} utterances")
        return None
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        x
    )
    scatter_png(emb, labels, out, title=title)
    return {"speakers": speakers, "num_utterances": len(x), "perplexity": perplexity}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _paper(ftype: str, key: str) -> str:
    v = PAPER.get(ftype, {}).get(key)
    return "–" if v is None else f"{v:g}"


def render_markdown(
    tag: str,
    rows: dict[str, dict[str, Any]],
    found: dict[str, dict[str, Any]],
    chance: dict[str, Any],
    kstep: tuple[list[float], int] | None,
    tsne: dict[str, Any] | None,
) -> str:
    order = [k for k in MAIN_ROWS if k in rows] + sorted(k for k in rows if k not in MAIN_ROWS)
    out = [
        f"# Results: {tag}",
        "",
        "Test accuracy (%) of probes on frozen 10 ms features (this run), beside the CPC "
        "paper's Table 1 (LibriSpeech train-clean-100, 251 speakers, 41 phone classes). "
        "Phone: frame classification; speaker: linear classifier. The paper's numbers are "
        "for real LibriSpeech; on another corpus (e.g. the embedded synthetic "
        "mini-LibriSpeech) compare the ordering of the rows, not the values.",
        "",
        "| features | dim | phone linear | phone MLP | speaker linear "
        "| paper phone linear | paper phone MLP | paper speaker linear |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in order:
        r = rows[k]
        out.append(
            f"| {LABELS.get(k, k)} (`{found[k]['dir']}`) | {r['dim'] or '–'} "
            f"| {_pct(r['phone_linear'])} | {_pct(r['phone_mlp'])} | {_pct(r['speaker_linear'])} "
            f"| {_paper(k, 'phone_linear')} | {_paper(k, 'phone_mlp')} "
            f"| {_paper(k, 'speaker_linear')} |"
        )
    out.append(
        f"| {LABELS['supervised']} (paper only) | – | – | – | – "
        f"| {_paper('supervised', 'phone_linear')} | – | {_paper('supervised', 'speaker_linear')} |"
    )
    extra = [k for k in order if rows[k]["phone_linear_context"] is not None]
    if extra:
        out += [
            "",
            "Extra (not in the paper): linear phone probe on each frame concatenated with its "
            "neighbours.",
            "",
            "| features | context | phone linear |",
            "|---|---:|---:|",
        ]
        for k in extra:
            n = rows[k]["phone_context_frames"]
            out.append(
                f"| {LABELS.get(k, k)} +-{n} frames context | {2 * n + 1} frames "
                f"| {_pct(rows[k]['phone_linear_context'])} |"
            )
    out += ["", "## Chance levels", ""]
    if chance.get("phone"):
        c = chance["phone"]
        out.append(
            f"- phone: majority class ({c['majority_class']}) {_pct(c['majority'])}%, "
            f"uniform {_pct(c['uniform'])}% ({c['num_classes']} classes)"
        )
    if chance.get("speaker"):
        c = chance["speaker"]
        out.append(
            f"- speaker: majority {_pct(c['majority'])}%, uniform {_pct(c['uniform'])}% "
            f"({c['num_speakers']} speakers)"
        )
    out += ["", "## Protocol", ""]
    ref = found.get("cpc") or next(iter(found.values()))
    ph, sp = ref["phone"], ref["speaker"]
    if ph:
        lin, mlp = ph["linear"]["config"], ph["mlp"]["config"]
        out.append(
            f"- phone: {ph['num_train_frames']} train / {ph['num_test_frames']} test frames "
            f"({ph['num_train_utts']} / {ph['num_test_utts']} utterances, the stage-1 split); "
            f"features standardised with train statistics; minibatches of {lin['batch_size']}, "
            f"Adam with cosine decay; linear: lr {lin['lr']}, {ph['linear']['epochs']} epochs "
            f"(at least {lin['min_steps']} updates); MLP: one hidden layer of "
            f"{mlp['hidden_dim']} ReLU units, lr {mlp['lr']}, {ph['mlp']['epochs']} epochs; "
            f"seed {lin['seed']}."
        )
    if sp:
        how = (
            f"mean of {sp['window_frames']} frames ({sp['window_frames'] * 160} samples) "
            "per example"
            if sp["protocol"] == "pooled"
            else "one example per 10 ms frame"
        )
        split = (
            "one held-out chapter per speaker as test set"
            if sp["holdout_chapters"]
            else "the stage-1 utterance split (every speaker in both sets)"
        )
        out.append(
            f"- speaker: linear, {how}; {split}; {sp['num_train']} train / {sp['num_test']} "
            f"test examples, {sp['num_speakers']} speakers"
            + (
                f" ({len(sp['speakers_left_out'])} single-chapter speakers left out)"
                if sp["speakers_left_out"]
                else ""
            )
            + "."
        )
    times = []
    for k in order:
        p = found[k]["phone"]
        if p:
            times.append(
                f"{k}: linear {p['linear']['time_per_epoch_s']:.2f} s/epoch, "
                f"MLP {p['mlp']['time_per_epoch_s']:.2f} s/epoch"
            )
    if times:
        out.append("- probe training time: " + "; ".join(times) + ".")
    out += ["", "## Figures", ""]
    if kstep:
        acc, step = kstep
        out.append(
            f"- `kstep_accuracy.png`: InfoNCE prediction accuracy for k = 1..{len(acc)} steps "
            f"ahead at step {step} (k=1: {_pct(acc[0])}%, k={len(acc)}: {_pct(acc[-1])}%)."
        )
    if tsne:
        out.append(
            f"- `tsne_speakers.png`: t-SNE of the mean c_t of {tsne['num_utterances']} "
            f"utterances of {len(tsne['speakers'])} speakers."
        )
    for k in order:
        if found[k]["phone"]:
            out.append(f"- `probe_phone/{found[k]['dir']}/confusion_{{linear,mlp}}.png`")
    out.append("")
    return "\n".join(out)


def make_results(exp_dir: Path, tag: str, tsne_speakers: int = 10, seed: int = 42) -> dict:
    found = collect(exp_dir, tag)
    missing = [k for k in MAIN_ROWS if k not in found]
    if len(missing) == len(MAIN_ROWS):
        raise ResultsError(
            f"{exp_dir}: no probe results in probe_phone/ or probe_speaker/; run stages 4 and 5"
        )
    if missing:
        logging.warning(f"no probe results for {missing}; their rows stay empty")
    rows = build_rows(found)
    ref = found.get("cpc") or next(iter(found.values()))
    chance: dict[str, Any] = {}
    if ref["phone"]:
        chance["phone"] = {**ref["phone"]["chance"], "num_classes": ref["phone"]["num_classes"]}
    if ref["speaker"]:
        chance["speaker"] = {
            **ref["speaker"]["chance"],
            "num_speakers": ref["speaker"]["num_speakers"],
        }
    figures = []
    kstep = kstep_curve(exp_dir / "metrics.jsonl")
    if kstep:
        from cpc.plots import kstep_accuracy_png

        kstep_accuracy_png(
            {f"CPC ({tag}, step {kstep[1]})": kstep[0]},
            exp_dir / "kstep_accuracy.png",
            title="Contrastive prediction accuracy, k steps ahead",
        )
        figures.append("kstep_accuracy.png")
    else:
        logging.warning(f"{exp_dir}/metrics.jsonl has no per-k accuracy; no k-step figure")
    tsne = None
    cpc_dir = rows.get("cpc", {}).get("feature_dir")
    if cpc_dir:
        try:
            tsne = tsne_figure(
                cpc_dir,
                exp_dir / "tsne_speakers.png",
                tsne_speakers,
                seed,
                title=f"t-SNE of utterance-mean c_t ({tag})",
            )
        except (FileNotFoundError, FeatureDumpError) as e:
            logging.warning(f"t-SNE skipped: {e}")
        if tsne:
            figures.append("tsne_speakers.png")
    results = {
        "tag": tag,
        "rows": rows,
        "paper": {k: {m: v / 100 for m, v in d.items()} for k, d in PAPER.items()},
        "chance": chance,
        "kstep_accuracy": None if kstep is None else {"step": kstep[1], "accuracy": kstep[0]},
        "tsne": tsne,
        "figures": figures,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(exp_dir / "results.json", results)
    write_text_atomic(
        exp_dir / "RESULTS.md", render_markdown(tag, rows, found, chance, kstep, tsne)
    )
    return results


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        res = make_results(Path(args.exp_dir), args.tag, args.tsne_speakers, args.seed)
    except (ResultsError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    for k in MAIN_ROWS:
        r = res["rows"].get(k)
        if r:
            logging.info(
                f"{k}: phone linear {_pct(r['phone_linear'])}%, MLP {_pct(r['phone_mlp'])}%, "
                f"speaker {_pct(r['speaker_linear'])}%"
            )
    logging.info(f"wrote {args.exp_dir}/RESULTS.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
