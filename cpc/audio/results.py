"""The speech results table: stage 5's ``RESULTS.md`` beside the paper's Table 1.

Rows: CPC c_t, MFCC, random init (and any other dump probed, e.g. z_t); columns: the linear
and one-hidden-layer phone probes and the linear speaker probe; the paper's Table 1
(LibriSpeech train-clean-100, linear classifiers) beside them. Extra sections: the linear
phone probe with +-N frames of context, chance levels, the protocol, and a t-SNE figure of
utterance-mean c_t of up to 10 speakers (the paper's Figure 2).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cpc.audio.constants import HOP, PREFIX
from cpc.features import FeatureDumpError, load_dump
from cpc.results import Column, ResultsContext, ResultsSpec, pct

#: van den Oord et al. (2018), Table 1: LibriSpeech-100, test accuracy (%).
PAPER = {
    "cpc": {"phone_linear": 64.6, "phone_mlp": 72.5, "speaker_linear": 97.4},
    "mfcc": {"phone_linear": 39.7, "speaker_linear": 17.6},
    "random": {"phone_linear": 27.6, "speaker_linear": 1.87},
    "supervised": {"phone_linear": 74.6, "speaker_linear": 98.5},
}
ROWS = {
    "cpc": "CPC c_t",
    "mfcc": "MFCC + deltas",
    "random": "Random init",
}
OTHER_LABELS = {
    "cpc_z": "CPC z_t (encoder)",
    "random_z": "Random init z_t",
    "supervised": "Supervised",
}
TSNE_SPEAKERS = 10


def _preferred(tag: str) -> set[str]:
    """The dumps run.sh names for a tag."""
    return {f"cpc_{tag}", "mfcc", f"random_{tag}", f"cpc_{tag}_z", f"random_{tag}_z"}


def tsne_figure(feature_dir: str, out: Any, num_speakers: int, seed: int, title: str) -> dict:
    """t-SNE of utterance-mean features of all utterances (train and test: a picture, not an
    evaluation) of the first ``num_speakers`` speakers (sorted ids). {} if too few."""
    from sklearn.manifold import TSNE

    from cpc.plots import scatter_png

    by_spk: dict[str, list[np.ndarray]] = {}
    for part in ("train", "test"):
        for cut in load_dump(feature_dir, part, PREFIX):
            by_spk.setdefault(cut.supervisions[0].speaker, []).append(cut.load_features().mean(0))
    speakers = sorted(by_spk, key=lambda s: (len(s), s))[:num_speakers]
    x = np.stack([v for s in speakers for v in by_spk[s]]).astype(np.float64)
    labels = [s for s in speakers for _ in by_spk[s]]
    if len(x) < 5:
        logging.warning(f"t-SNE skipped: only {len(x)} utterances")
        return {}
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    scatter_png(emb.fit_transform(x), labels, out, title=title, legend_title="speaker")
    return {"speakers": speakers, "num_utterances": len(x), "perplexity": perplexity}


def _sections(ctx: ResultsContext) -> list[str]:
    found = ctx.found
    out: list[str] = []
    context_rows = [
        k for k, f in found.items() if f.get("phone") and "linear_context" in f["phone"]
    ]
    if context_rows:
        out += [
            "",
            "Extra (not in the paper): linear phone probe on each frame concatenated with its "
            "neighbours.",
            "",
            "| features | context | phone linear |",
            "|---|---:|---:|",
        ]
        for k in context_rows:
            r = found[k]["phone"]["linear_context"]
            n = r["config"]["context"]
            label = ROWS.get(k, OTHER_LABELS.get(k, k))
            out.append(f"| {label} +-{n} frames | {2 * n + 1} frames | {pct(r['accuracy'])} |")
    ref = found.get("cpc") or next(iter(found.values()))
    ph, sp = ref.get("phone"), ref.get("speaker")
    out += ["", "## Chance levels", ""]
    if ph:
        c = ph["chance"]
        out.append(
            f"- phone: majority class ({c['majority_class']}) {pct(c['majority'])}%, "
            f"uniform {pct(c['uniform'])}% ({ph['num_classes']} classes)"
        )
    if sp:
        c = sp["chance"]
        out.append(
            f"- speaker: majority {pct(c['majority'])}%, uniform {pct(c['uniform'])}% "
            f"({sp['num_speakers']} speakers)"
        )
    out += ["", "## Protocol", ""]
    if ph:
        lin, mlp = ph["linear"]["config"], ph["mlp"]["config"]
        caps = [
            f"at most {ph[k]:,} {what} frames"
            for k, what in (("max_train_frames", "training"), ("max_test_frames", "test"))
            if ph.get(k)
        ]
        subset = f", a seeded subset of whole utterances with {' and '.join(caps)}" if caps else ""
        if lin.get("schedule") == "plateau":
            how = (
                f"Adam at a constant rate divided by {round(1 / lin['gamma'])} whenever the loss "
                f"on a held-out {lin['holdout']:.0%} of the training utterances stopped "
                f"improving, and stopped at the next plateau after {lin['max_decays']} such "
                f"divisions or at {lin['epochs']} epochs (linear) and {mlp['epochs']} (MLP), "
                f"the parameters of the best check kept; linear: lr {lin['lr']}, checked every "
                f"{lin['check_every']} updates, {ph['linear'].get('updates')} updates; "
                f"MLP: one hidden layer of {mlp['hidden_dim']} ReLU units, lr {mlp['lr']}, "
                f"checked every {mlp.get('check_every')} updates, "
                f"{ph['mlp'].get('updates')} updates"
            )
        else:
            how = (
                f"Adam with cosine decay; linear: lr {lin['lr']}, {ph['linear']['epochs']} epochs "
                f"(at least {lin['min_steps']} updates); MLP: one hidden layer of "
                f"{mlp['hidden_dim']} ReLU units, lr {mlp['lr']}, {ph['mlp']['epochs']} epochs"
            )
        out.append(
            f"- phone: {ph['num_train']} train / {ph['num_test']} test frames "
            f"({ph['num_train_utts']} / {ph['num_test_utts']} utterances, the stage-1 split"
            f"{subset}); features standardised with train statistics; minibatches of "
            f"{lin['batch_size']}, {how}; seed {lin['seed']}."
        )
    if sp:
        w = sp["window_frames"]
        how = (
            f"mean of {w} frames ({w * HOP} samples) per example"
            if sp["protocol"] == "pooled"
            else "one example per 10 ms frame"
        )
        split = (
            "one held-out chapter per speaker as test set"
            if sp["holdout_chapters"]
            else "the stage-1 utterance split (every speaker in both sets)"
        )
        left = len(sp["speakers_left_out"])
        out.append(
            f"- speaker: linear, {how}; {split}; {sp['num_train']} train / {sp['num_test']} "
            f"test examples, {sp['num_speakers']} speakers"
            + (f" ({left} single-chapter speakers left out)" if left else "")
            + "."
        )
    times = [
        f"{k}: linear {f['phone']['linear']['time_per_epoch_s']:.2f} s/epoch, "
        f"MLP {f['phone']['mlp']['time_per_epoch_s']:.2f} s/epoch"
        for k, f in found.items()
        if f.get("phone")
    ]
    if times:
        out.append("- probe training time: " + "; ".join(times) + ".")
    cpc = found.get("cpc", {})
    cpc_dir = (cpc.get("phone") or cpc.get("speaker") or {}).get("feature_dir")
    tsne: dict = {}
    if cpc_dir:
        try:
            tsne = tsne_figure(
                cpc_dir,
                ctx.exp_dir / "tsne_speakers.png",
                TSNE_SPEAKERS,
                seed=42,
                title=f"t-SNE of utterance-mean c_t ({ctx.tag})",
            )
        except (FileNotFoundError, FeatureDumpError) as e:
            logging.warning(f"t-SNE skipped: {e}")
    if tsne:
        ctx.figures.append("tsne_speakers.png")
        ctx.figure_notes.append(
            f"- `tsne_speakers.png`: t-SNE of the mean c_t of {tsne['num_utterances']} "
            f"utterances of {len(tsne['speakers'])} speakers."
        )
    ctx.extra["tsne"] = tsne or None
    for f in found.values():
        if f.get("phone"):
            ctx.figure_notes.append(f"- `probe_phone/{f['dir']}/confusion_{{linear,mlp}}.png`")
    return out


SPEC = ResultsSpec(
    title="Results",
    intro=(
        "Test accuracy (%) of probes on frozen 10 ms features (this run), beside the CPC "
        "paper's Table 1 (LibriSpeech train-clean-100, 251 speakers, 41 phone classes). "
        "Phone: frame classification; speaker: linear classifier. The paper's numbers are "
        "for real LibriSpeech; on another corpus (e.g. the embedded synthetic "
        "mini-LibriSpeech) compare the ordering of the rows, not the values."
    ),
    columns=[
        Column("phone_linear", "phone linear", "phone", "linear"),
        Column("phone_mlp", "phone MLP", "phone", "mlp"),
        Column("speaker_linear", "speaker linear", "speaker", "linear"),
    ],
    rows={**ROWS},
    paper=PAPER,
    paper_only={"supervised": "Supervised"},
    preferred_dirs=_preferred,
    sections=_sections,
)
