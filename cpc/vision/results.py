"""The vision results table: ``RESULTS.md`` beside the paper's Table 3 (ImageNet linear
classification, top-1 / top-5).

Rows: CPC, random init (same architecture, untrained), raw pixels, and the supervised
encoder of the same architecture trained end to end (the ceiling), all through the same
linear probe (``probe_image_class``). Extra sections: top-5 with the paper's numbers, per-class
accuracy, chance levels, the protocol, the pre-training loss curve (``loss_curve.png``) and a
t-SNE of CPC val features (``tsne_val.png``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cpc.io import atomic_path
from cpc.results import Column, ResultsContext, ResultsSpec, pct

#: van den Oord et al. (2018), Table 3 (and CPC v2, Henaff et al. 2019): ImageNet linear
#: classification, top-1 / top-5 accuracy (%).
PAPER = {"cpc": {"top1": 48.7, "top5": 73.6}, "cpc_v2": {"top1": 71.5, "top5": 90.1}}
ROWS = {
    "cpc": "CPC encoder",
    "random": "Random init encoder",
    "pixels": "Raw pixels",
    "supervised": "Supervised encoder (end to end)",
}
TSNE_POINTS = 1000


def _preferred(tag: str) -> set[str]:
    return {f"cpc_{tag}", f"random_{tag}", "pixels", f"supervised_{tag}"}


def _top5(res: dict[str, Any] | None) -> float | None:
    lin = (res or {}).get("linear") or {}
    key = next((k for k in lin if k.startswith("top") and k.endswith("_accuracy")), None)
    return lin.get(key) if key else None


def loss_curve_png(metrics: Path, out: Path, title: str) -> dict[str, Any] | None:
    """Training and validation loss against step from the trainer's ``metrics.jsonl``."""
    if not metrics.is_file():
        return None
    curves: dict[str, list[tuple[int, float]]] = {"train": [], "valid": []}
    chance = None
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec.get("loss"), float):
            curves.get(rec.get("split", "train"), []).append((rec["step"], rec["loss"]))
            if "mi_bound" in rec:
                chance = rec["loss"] + rec["mi_bound"]  # log(number of candidates)
    if not curves["train"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for split, pts in curves.items():
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o" if split == "valid" else None, label=split)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance (log N = {chance:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    first, last = curves["train"][0], sorted(curves["train"])[-1]
    return {"chance": chance, "first": first, "last": last, "valid": sorted(curves["valid"])}


def tsne_png(feature_dir: Path, class_names: list[str], out: Path, seed: int = 0) -> dict:
    """t-SNE of up to :data:`TSNE_POINTS` val feature vectors (a fixed subset), by class."""
    from sklearn.manifold import TSNE

    from cpc.plots import scatter_png

    with np.load(feature_dir / "val.npz") as z:
        x, y = z["x"].astype(np.float64), z["y"]
    if len(x) < 10:
        return {}
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:TSNE_POINTS])
    x, y = x[pick], y[pick]
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    labels = [class_names[i] if i < len(class_names) else str(i) for i in y]
    scatter_png(emb.fit_transform(x), labels, out, title="t-SNE of CPC val features")
    return {"points": len(x), "perplexity": perplexity}


def _sections(ctx: ResultsContext) -> list[str]:
    found = ctx.found
    out = ["", "## Top-5", "", "| features | top-5 | paper: top-5 |", "|---|---:|---:|"]
    top5 = {}
    for ftype, f in found.items():
        top5[ftype] = _top5(f.get("image_class"))
        paper = PAPER.get(ftype, {}).get("top5")
        label = ROWS.get(ftype, ftype)
        out.append(f"| {label} | {pct(top5[ftype])} | {'–' if paper is None else paper} |")
    out.append(f"| CPC v2 (paper only) | – | {PAPER['cpc_v2']['top5']} |")
    ctx.extra["top5"] = top5
    ref = next((f["image_class"] for f in found.values() if f.get("image_class")), None)
    if ref is None:
        return out
    names = ref["classes"]
    if len(names) <= 30:
        ftypes = [k for k in found if found[k].get("image_class")]
        out += [
            "",
            "## Per-class accuracy (top-1, val)",
            "",
            "| class | " + " | ".join(ROWS.get(k, k) for k in ftypes) + " |",
            "|---|" + "---:|" * len(ftypes),
        ]
        for c in names:
            cells = [
                pct(found[k]["image_class"]["linear"]["per_class_accuracy"].get(c)) for k in ftypes
            ]
            out.append(f"| {c} | " + " | ".join(cells) + " |")
    ch = ref["chance"]
    lin = ref["linear"]["config"]
    out += [
        "",
        "## Chance levels",
        "",
        f"- majority class ({ch['majority_class']}) {pct(ch['majority'])}%, uniform "
        f"{pct(ch['uniform'])}% ({ref['num_classes']} classes)",
        "",
        "## Protocol",
        "",
        f"- Linear probe on the frozen encoder's patch vectors mean-pooled over the grid; "
        f"{ref['num_train']} train images (a fixed subset when capped) / {ref['num_test']} val "
        f"images; features standardised with train statistics; {lin['optimizer'].upper()} "
        f"(momentum {lin['momentum']}) with lr {lin['lr']} and a step schedule (x{lin['gamma']} "
        f"at {', '.join(f'{m:.3f}' for m in lin['milestones'])} of the updates), batch "
        f"{lin['batch_size']}, {ref['linear']['epochs']} epochs, seed {lin['seed']}. The "
        "paper: SGD momentum 0.9, lr 0.1 / 0.01 / 0.001 for 50k / 25k / 10k updates of 2048.",
        "- Random init: the same model, untrained (same seed). Raw pixels: the image resized "
        "and centre-cropped, flattened. Supervised: the same encoder plus a linear layer "
        "trained end to end with cross-entropy, then probed like the others.",
    ]
    view = _eval_view(found)
    if view:
        out.append(
            "- The encoders see the evaluation view: the centre crop, no flip, and "
            + (
                "each patch's centre sub-crop padded back with zeros as in training "
                "(`--eval-view subcrop`)."
                if view == "subcrop"
                else "whole patches (`--eval-view whole`)."
            )
        )
    curve = loss_curve_png(ctx.exp_dir / "metrics.jsonl", ctx.exp_dir / "loss_curve.png", ctx.tag)
    if curve:
        ctx.figures.append("loss_curve.png")
        ctx.extra["loss_curve"] = curve
        msg = (
            f"- `loss_curve.png`: InfoNCE loss of pre-training (train, and validation at each "
            f"checkpoint); step {curve['first'][0]}: {curve['first'][1]:.3f}, step "
            f"{curve['last'][0]}: {curve['last'][1]:.3f}"
        )
        if curve["chance"] is not None:
            msg += f"; chance (log of the candidates per prediction) {curve['chance']:.3f}"
        ctx.figure_notes.append(msg + ".")
    cpc = found.get("cpc")
    if cpc is not None:
        try:
            feat_dir = Path(cpc["image_class"]["feature_dir"])  # as the probe stage saw it
            t = tsne_png(feat_dir, names, ctx.exp_dir / "tsne_val.png")
        except (OSError, ValueError) as e:
            logging.warning(f"t-SNE skipped: {e}")
            t = {}
        if t:
            ctx.figures.append("tsne_val.png")
            ctx.extra["tsne"] = t
            ctx.figure_notes.append(
                f"- `tsne_val.png`: t-SNE of {t['points']} CPC val feature vectors (a fixed "
                "subset), coloured by class."
            )
    return out


def _eval_view(found: dict[str, Any]) -> str:
    """The evaluation view recorded in the CPC dump's info.json ("" when unknown)."""
    cpc = found.get("cpc")
    try:
        info = Path(cpc["image_class"]["feature_dir"]) / "info.json" if cpc else None
        return json.loads(info.read_text())["identity"].get("eval_view", "") if info else ""
    except (OSError, ValueError, KeyError, TypeError):
        return ""


SPEC = ResultsSpec(
    title="CPC on images (linear evaluation)",
    intro=(
        "Top-1 accuracy (%) of a linear classifier on frozen, mean-pooled features of the "
        "val split, beside the paper's Table 3 (ImageNet, ResNet-v2-101; CPC v2: Henaff et "
        "al. 2019). The paper's numbers are for ImageNet: on another data set they are a "
        "reference point, not a target."
    ),
    columns=[Column("top1", "top-1", "image_class", "linear")],
    rows=ROWS,
    paper={k: {"top1": v["top1"]} for k, v in PAPER.items()},
    paper_only={"cpc_v2": "CPC v2"},
    preferred_dirs=_preferred,
    sections=_sections,
)
