"""Learning curves and the results table of the dmlab recipe (returns, not probes).

Inputs, in an experiment directory ``exp/<tag>/``: the training runs ``<agent>_seed<N>/``
(``metrics.jsonl`` of :class:`cpc.trainer.Trainer`, whose ``episodes`` and ``return_sum``
give the mean return of the training episodes of each log interval; ``best.pt`` for the
frames per step), ``eval/<name>.json`` (stage 3) and ``env_check.json`` (stage 0).

Outputs: ``curves.png`` (mean training-episode return against environment frames, mean and
min-max band over seeds, one line per agent: the shape of the paper's Figure 6),
``RESULTS.md`` and ``results.json``.
"""

from __future__ import annotations

import json
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cpc.checkpoint import load_checkpoint
from cpc.io import write_json_atomic, write_text_atomic

AGENTS = ("baseline", "cpc")
RUN = re.compile(r"^(baseline|cpc)_seed(\d+)$")
PAPER = (
    "The paper (section 3.4, Figure 6) reports learning curves on five DeepMind Lab levels, "
    "no table: the CPC auxiliary loss helps on four of the five."
)


def frames_per_step(run_dir: Path) -> int:
    """Environment frames per optimizer step of a run (all processes), from its best.pt."""
    state = load_checkpoint(run_dir / "best.pt")
    cfg, ident = state["config"], state.get("identity") or {}
    grad_accum = int(cfg["train"].get("grad_accum", 1))
    processes = int(ident.get("processes_x_grad_accum", grad_accum)) // grad_accum
    return int(cfg["data"]["num_envs"] * cfg["data"]["unroll"] * cfg["env"]["action_repeat"]) * (
        processes
    )


def training_curve(run_dir: Path) -> dict[str, list[float]]:
    """``frames`` and mean training-episode ``returns`` per log interval (intervals in
    which no episode ended are left out), plus ``time`` (seconds of training)."""
    fps = frames_per_step(run_dir)
    frames, returns, times = [], [], []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") != "train" or not rec.get("episodes"):
                continue
            frames.append(rec["step"] * fps)
            returns.append(rec["return_sum"] / rec["episodes"])
            times.append(rec.get("time", 0.0))
    return {"frames": frames, "returns": returns, "time": times}


def _binned(curves: list[dict[str, list[float]]], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the mean return in ``bins`` equal frame bins up to the shortest run's end:
    (bin centres, (runs, bins) array with NaN for empty bins)."""
    end = min(c["frames"][-1] for c in curves)
    edges = np.linspace(0, end, bins + 1)
    out = np.full((len(curves), bins), np.nan)
    for i, c in enumerate(curves):
        f, r = np.asarray(c["frames"]), np.asarray(c["returns"])
        for j in range(bins):
            sel = (f > edges[j]) & (f <= edges[j + 1])
            if sel.any():
                out[i, j] = r[sel].mean()
    return (edges[:-1] + edges[1:]) / 2, out


def curves_png(runs: dict[str, list[dict]], random_mean: float | None, path: Path, title: str):
    """Mean training return against frames, mean over seeds and min-max band per agent."""
    from cpc.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, curves in runs.items():
        if not curves:
            continue
        x, y = _binned(curves, bins=20)
        keep = ~np.isnan(y).all(0)  # bins in which no run finished an episode are left out
        x, y = x[keep], y[:, keep]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a run without episodes in a bin
            mean, lo, hi = np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0)
        label = f"{'A2C + CPC' if agent == 'cpc' else 'A2C'} ({len(curves)} seeds)"
        ax.plot(x, mean, label=label)
        ax.fill_between(x, lo, hi, alpha=0.25)
    if random_mean is not None:
        ax.axhline(random_mean, color="grey", ls="--", label="random policy")
    ax.set_xlabel("environment frames")
    ax.set_ylabel("mean episode return (training)")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _read_eval(eval_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(eval_dir.glob("*.json")):
        out[p.stem] = json.loads(p.read_text())
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def make_results(exp_dir: Path, tag: str, seeds: list[int] | None = None) -> dict[str, Any]:
    """Write curves.png, RESULTS.md and results.json for ``exp_dir`` (see module doc), from
    the runs of ``seeds`` (None: every run found)."""
    exp_dir = Path(exp_dir)
    evals = _read_eval(exp_dir / "eval")
    if not evals:
        raise FileNotFoundError(f"{exp_dir}/eval/ holds no evaluation: run stage 3 first")
    check_path = exp_dir / "env_check.json"
    check = json.loads(check_path.read_text()) if check_path.is_file() else {}
    runs: dict[str, list[dict]] = {a: [] for a in AGENTS}
    per_agent: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in AGENTS}
    for d in sorted(p for p in exp_dir.iterdir() if p.is_dir() and RUN.match(p.name)):
        agent, seed = RUN.match(d.name).groups()
        if seeds is not None and int(seed) not in seeds:
            continue
        if not (d / "best.pt").is_file():
            continue
        curve = training_curve(d)
        runs[agent].append(curve)
        ev = evals.get(d.name)
        per_agent[agent][int(seed)] = {
            "eval_mean": None if ev is None else ev["mean"],
            "eval_sem": None if ev is None else ev["sem"],
            "eval_episodes": None if ev is None else ev["episodes"],
            "frames": curve["frames"][-1] if curve["frames"] else 0,
            "train_minutes": round(curve["time"][-1] / 60, 2) if curve["time"] else None,
            "final_train_return": curve["returns"][-1] if curve["returns"] else None,
        }
    rand = evals.get("random")
    rows: dict[str, dict[str, Any]] = {}
    if rand is not None:
        rows["random"] = {"mean": rand["mean"], "std_over_seeds": None, "seeds": {}}
    for agent in AGENTS:
        means = [v["eval_mean"] for v in per_agent[agent].values() if v["eval_mean"] is not None]
        rows[agent] = {
            "mean": float(np.mean(means)) if means else None,
            "std_over_seeds": float(np.std(means, ddof=1)) if len(means) > 1 else None,
            "min": float(np.min(means)) if means else None,
            "max": float(np.max(means)) if means else None,
            "seeds": per_agent[agent],
        }
    figures = []
    if any(runs.values()):
        level = check.get("level") or next(iter(evals.values())).get("level", "")
        curves_png(runs, rand["mean"] if rand else None, exp_dir / "curves.png", f"{tag}: {level}")
        figures.append("curves.png")
    verdicts = _verdicts(rows)
    suite = check.get("suite") or next(iter(evals.values())).get("suite")
    level = check.get("level") or next(iter(evals.values())).get("level")
    episodes = next(iter(evals.values())).get("episodes")
    lines = [
        f"# Results: {tag} ({suite} / {level})",
        "",
        f"Mean episode return over {episodes} evaluation episodes per policy (the same "
        "environment seeds for every policy; agents sample from their policy), per training "
        "seed, then the mean and standard deviation over seeds. Generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "| agent | mean over seeds | std over seeds | min .. max | per seed (mean ± sem) | frames "
        "per run | training min per run |",
        "|---|---|---|---|---|---|---|",
    ]
    if rand is not None:
        lines.append(
            f"| random policy | {_fmt(rand['mean'])} | – | – | {_fmt(rand['mean'])} ± "
            f"{_fmt(rand['sem'])} | – | – |"
        )
    for agent in AGENTS:
        r = rows[agent]
        seeds = r["seeds"]
        cells = ", ".join(
            f"{s}: {_fmt(v['eval_mean'])} ± {_fmt(v['eval_sem'])}" for s, v in sorted(seeds.items())
        )
        frames = sorted({v["frames"] for v in seeds.values()})
        minutes = [v["train_minutes"] for v in seeds.values() if v["train_minutes"] is not None]
        name = "A2C + CPC" if agent == "cpc" else "A2C (baseline)"
        lines.append(
            f"| {name} | {_fmt(r['mean'])} | {_fmt(r['std_over_seeds'])} | "
            f"{_fmt(r.get('min'))} .. {_fmt(r.get('max'))} | {cells or 'pending'} | "
            f"{', '.join(str(f) for f in frames) or '–'} | "
            f"{_fmt(float(np.mean(minutes))) if minutes else '–'} |"
        )
    lines += ["", *[f"- {v}" for v in verdicts], "", f"Paper: {PAPER}", ""]
    if check:
        lines += [
            f"Environment (stage 0): {check.get('num_actions')} actions, observation "
            f"{check.get('observation_shape')}, action repeat {check.get('action_repeat')}, "
            f"{check.get('steps_per_sec_vector')} agent steps/s with "
            f"{check.get('num_envs')} environments in {check.get('num_workers')} workers "
            f"(random policy), simulator {check.get('simulator_version')}.",
            "",
        ]
    if figures:
        lines += [
            "Figures:",
            "- `curves.png`: mean return of the training episodes against environment frames, "
            "mean over seeds with the min-max band (the shape of the paper's Figure 6).",
            "",
        ]
    res = {
        "tag": tag,
        "suite": suite,
        "level": level,
        "eval_episodes": episodes,
        "rows": rows,
        "verdicts": verdicts,
        "paper": PAPER,
        "figures": figures,
        "environment": check,
    }
    write_text_atomic(exp_dir / "RESULTS.md", "\n".join(lines))
    write_json_atomic(exp_dir / "results.json", res)
    return res


def _verdicts(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Plain sentences: baseline vs random, CPC vs baseline, with the spread over seeds."""
    out = []
    rand, base, cpc = rows.get("random"), rows.get("baseline"), rows.get("cpc")

    def spread(r: dict) -> str:
        sd = r.get("std_over_seeds")
        n = len(r["seeds"])
        return (
            f"{r['mean']:.2f} (std {sd:.2f} over {n} seeds)"
            if sd is not None
            else (f"{r['mean']:.2f} ({n} seed)")
        )

    if rand and base and base["mean"] is not None:
        above = base["min"] > rand["mean"]
        out.append(
            f"Baseline vs random: {spread(base)} against {rand['mean']:.2f}; "
            + (
                "every seed is above the random policy."
                if above
                else "NOT every seed is above the random policy."
            )
        )
    if base and cpc and base["mean"] is not None and cpc["mean"] is not None:
        diff = cpc["mean"] - base["mean"]
        sds = [r["std_over_seeds"] for r in (base, cpc) if r["std_over_seeds"] is not None]
        noise = max(sds) if sds else 0.0
        if abs(diff) <= noise:
            word = "no clear difference at this budget (the gap is within one std over seeds)"
        elif diff > 0:
            word = "CPC helps at this budget (the gap exceeds the std over seeds)"
        else:
            word = "CPC does not help at this budget (it is worse by more than the std over seeds)"
        out.append(f"CPC vs baseline: {spread(cpc)} against {spread(base)}: {word}.")
    return out
