#!/usr/bin/env python3
"""How the speech recipe's cost grows with the corpus: wall time, CPU time and peak memory of
stages 0, 1, 3, 4 and 5 of egs/librispeech100 on embedded corpora of several sizes.

For every --hours H it sets up a copy of the recipe in WORK/h<H>/ (run.sh, cmd.sh and conf/
copied; local/, utils/ and path.sh linked, as a user would set one up elsewhere) and runs
``./run.sh --stage S --stop-stage S`` for each stage on an embedded mini-LibriSpeech of H
hours (--speakers speakers, the recipe's default seed), evaluating one fixed checkpoint
(--checkpoint; without it, stage 2 of the recipe trains cpc_small for --train-steps steps on
the smallest corpus first: its quality does not matter here, only its architecture). Stage 2
itself is not measured: its cost is the config's step budget, not the corpus size.

Per stage: wall seconds, user and system CPU seconds, and the peak resident memory (RSS) of
the largest process the stage ran (``os.wait4`` on run.sh: the maximum over the stage's whole
process tree; this process is made a subreaper, so workers orphaned by their parent, like the
corpus builder's multiprocessing forkserver workers, are reaped and counted too). Per size:
the corpus hours, the frames of the probes' training sets and the disk used by data/ (each
dump, the manifests) and by the synthesised corpus.

Fits (least squares over the measured sizes): per stage wall = a + b * hours and CPU
seconds likewise; peak RSS at the largest size over peak RSS at the smallest (flat memory:
close to 1). Extrapolations of the fits to 100 h and 960 h are written beside, marked as
such.

Output: a table on stdout and, with --json PATH, a JSON file:
  machine                  cores, load average at start and end (other processes distort
                           the wall times; CPU seconds are far less sensitive)
  sizes.<H>                hours (measured), stages.<S>: wall_s, user_s, sys_s, cpu_s,
                           max_rss_mb; disk_mb: per data/ directory and the corpus
  fit.<S>                  wall_s_per_hour, wall_s_at_0h, cpu_s_per_hour, rss_ratio
                           (largest / smallest size), rss_mb_by_hours
  extrapolated.<H>.<S>     wall_s and cpu_s from the fit (100 and 960 h; an extrapolation)

Sizes can be measured by separate runs (e.g. at the same time, each in its own --work-dir)
and combined afterwards with --merge A.json B.json --json ALL.json (fits over all sizes).

Example (from the repository root; about 15 minutes on 2 idle cores):
  local/bench_scale.py --hours 1 2 --json exp/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "librispeech100"
STAGES = (0, 1, 3, 4, 5)
EXTRAPOLATE_HOURS = (100, 960)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hours", type=float, nargs="+", default=[1, 2, 5, 10], help="corpus sizes")
    p.add_argument("--speakers", type=int, default=40, help="speakers of every corpus")
    p.add_argument("--work-dir", default="exp/bench_scale", help="recipe copies go here")
    p.add_argument("--checkpoint", default="", help="fixed checkpoint (empty: train one)")
    p.add_argument("--train-steps", type=int, default=10, help="steps of that checkpoint")
    p.add_argument("--stages", type=int, nargs="+", default=list(STAGES), help="stages to time")
    p.add_argument("--nj", type=int, default=2, help="--nj of the recipe")
    p.add_argument(
        "--run-args", default="", help="more run.sh options for every stage, space separated"
    )
    p.add_argument("--keep", action="store_true", help="keep each size's data after measuring")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument(
        "--merge", nargs="+", default=[], help="combine these result files (no measuring)"
    )
    return p


def recipe_copy(dst: Path) -> Path:
    """A copy of the recipe as a user would set one up elsewhere (reused when present)."""
    if (dst / "run.sh").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("run.sh", "cmd.sh"):
        shutil.copy2(RECIPE / name, dst / name)
    shutil.copytree(RECIPE / "conf", dst / "conf", dirs_exist_ok=True)
    for name in ("local", "utils", "path.sh"):
        (dst / name).symlink_to((RECIPE / name).resolve())
    return dst


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``): worker processes whose
    parent exits first (e.g. a multiprocessing forkserver's workers) are then reaped here, so
    their CPU time and memory are counted. False where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_orphans(timeout: float = 60.0) -> list:
    """Wait for every remaining child (adopted orphans); their rusages."""
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pid, _, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.2)
            continue
        out.append(ru)
    return out


def timed(cmd: list[str], cwd: Path, log_path: Path) -> dict[str, float]:
    """Run ``cmd``; wall seconds, CPU seconds and the peak RSS (MB) of its process tree
    (orphaned descendants included when this process is a subreaper)."""
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.time() - t0
    usages = [ru, *_reap_orphans()]
    code = proc.returncode
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) failed with {code}; {log_path}:\n{tail}")
    user = sum(u.ru_utime for u in usages)
    sys_s = sum(u.ru_stime for u in usages)
    return {
        "wall_s": round(wall, 2),
        "user_s": round(user, 2),
        "sys_s": round(sys_s, 2),
        "cpu_s": round(user + sys_s, 2),
        "max_rss_mb": round(max(u.ru_maxrss for u in usages) / 1024, 1),  # Linux: kilobytes
        "orphans_reaped": len(usages) - 1,
    }


def du_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return round(total / 2**20, 1)


def corpus_hours(d: Path) -> float | None:
    info = d / "download" / "mini_librispeech" / "info.json"
    try:
        return round(json.loads(info.read_text())["total_minutes"] / 60, 3)
    except (OSError, KeyError, ValueError):
        return None


def probe_rows(d: Path) -> dict[str, Any]:
    out = {}
    for res in sorted(d.glob("exp/*/probe_phone/*/results.json")):
        r = json.loads(res.read_text())
        out[res.parent.name] = {"num_train": r.get("num_train"), "num_test": r.get("num_test")}
    return out


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: ``(a, b)`` (one point: through the origin)."""
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def fits(sizes: dict[str, Any], stages: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    hours = sorted(sizes, key=float)
    fit: dict[str, Any] = {}
    extra: dict[str, Any] = {str(h): {} for h in EXTRAPOLATE_HOURS}
    for s in stages:
        xs = [float(h) for h in hours]
        wall = [sizes[h]["stages"][str(s)]["wall_s"] for h in hours]
        cpu = [sizes[h]["stages"][str(s)]["cpu_s"] for h in hours]
        rss = [sizes[h]["stages"][str(s)]["max_rss_mb"] for h in hours]
        a_w, b_w = fit_line(xs, wall)
        a_c, b_c = fit_line(xs, cpu)
        fit[str(s)] = {
            "wall_s_per_hour": round(b_w, 2),
            "wall_s_at_0h": round(a_w, 2),
            "cpu_s_per_hour": round(b_c, 2),
            "cpu_s_at_0h": round(a_c, 2),
            "rss_mb_by_hours": dict(zip(hours, rss)),
            "rss_ratio": round(rss[-1] / rss[0], 3),
        }
        for h in EXTRAPOLATE_HOURS:
            extra[str(h)][str(s)] = {
                "wall_s": round(a_w + b_w * h),
                "cpu_s": round(a_c + b_c * h),
                "note": "extrapolated from the fit, not measured",
            }
    return fit, extra


def format_table(res: dict[str, Any]) -> str:
    lines = ["hours  stage   wall_s    cpu_s  max_rss_mb"]
    for h, size in res["sizes"].items():
        for s, m in size["stages"].items():
            lines.append(
                f"{h:>5}  {s:>5}  {m['wall_s']:>7.1f}  {m['cpu_s']:>7.1f}  {m['max_rss_mb']:>10.1f}"
            )
    lines.append("stage  wall_s/h  cpu_s/h  rss(largest)/rss(smallest)")
    for s, f in res["fit"].items():
        w, c, r = f["wall_s_per_hour"], f["cpu_s_per_hour"], f["rss_ratio"]
        lines.append(f"{s:>5}  {w:>8.1f}  {c:>7.1f}  {r:>6.3f}")
    return "\n".join(lines)


def merge(paths: list[str]) -> dict[str, Any]:
    """One result from several runs' JSON files: their sizes (a later file's stages replace an
    earlier one's for the same size), fits over the stages measured at every size."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    sizes: dict[str, Any] = {}
    for r in runs:  # a later file's stages replace an earlier one's for the same size
        for h, size in r["sizes"].items():
            old = sizes.setdefault(h, {"stages": {}})
            old.update({k: v for k, v in size.items() if k != "stages"})
            old["stages"].update(size["stages"])
    stages = sorted(
        {int(s) for s in next(iter(sizes.values()))["stages"]}.intersection(
            *({int(s) for s in size["stages"]} for size in sizes.values())
        )
    )
    res = {
        "machine": {"cores": runs[0]["machine"]["cores"], "runs": [r["machine"] for r in runs]},
        "speakers": runs[0]["speakers"],
        "checkpoint": [r.get("checkpoint") for r in runs],
        "stages": stages,
        "sizes": dict(sorted(sizes.items(), key=lambda kv: float(kv[0]))),
        "merged_from": paths,
    }
    res["fit"], res["extrapolated"] = fits(res["sizes"], stages)
    return res


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.merge:
        res = merge(args.merge)
        print(format_table(res))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    subreaper = become_subreaper()
    hours = sorted(args.hours)
    stages = sorted(args.stages)
    extra_args = args.run_args.split()
    res: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "orphans_counted": subreaper,
        "speakers": args.speakers,
        "stages": stages,
        "sizes": {},
    }
    checkpoint = args.checkpoint and str(Path(args.checkpoint).resolve())
    if not checkpoint:
        checkpoint = str(work / "checkpoint.pt")
        if not Path(checkpoint).is_file():
            d = recipe_copy(work / "checkpoint")
            logging.info(f"training the fixed checkpoint ({args.train_steps} steps) in {d}")
            overrides = f"train.max_steps={args.train_steps} train.save_interval={args.train_steps}"
            cmd = ["./run.sh", "--stop-stage=2", "--mini-minutes=10", "--overrides", overrides]
            timed(cmd, d, work / "checkpoint.log")
            found = sorted(d.glob("exp/*/best.pt"))
            if not found:
                raise RuntimeError(f"no exp/*/best.pt in {d} after stage 2")
            shutil.copy2(found[0], checkpoint)
    res["checkpoint"] = checkpoint
    for h in hours:
        key = f"{h:g}"
        d = recipe_copy(work / f"h{key}")
        for name in ("data", "download", "exp"):  # every stage must really run
            shutil.rmtree(d / name, ignore_errors=True)
        corpus = [
            f"--mini-minutes={round(h * 60, 3):g}",
            f"--mini-speakers={args.speakers}",
            f"--nj={args.nj}",
            *extra_args,
        ]
        size: dict[str, Any] = {"stages": {}}
        for s in stages:
            logging.info(f"{key} h: stage {s}")
            cmd = ["./run.sh", f"--stage={s}", f"--stop-stage={s}", *corpus]
            cmd += [f"--checkpoint={checkpoint}"]
            size["stages"][str(s)] = m = timed(cmd, d, work / f"h{key}_stage{s}.log")
            logging.info(f"{key} h stage {s}: {m}")
        size["hours"] = corpus_hours(d)
        size["probe_rows"] = probe_rows(d)
        size["disk_mb"] = {p.name: du_mb(p) for p in sorted((d / "data").iterdir()) if p.is_dir()}
        size["disk_mb"]["corpus"] = du_mb(d / "download")
        res["sizes"][key] = size
        if not args.keep:
            for name in ("data", "download", "exp"):
                shutil.rmtree(d / name, ignore_errors=True)
        if args.json:  # partial results survive an interrupted run
            Path(args.json).write_text(json.dumps(res, indent=1))
    res["fit"], res["extrapolated"] = fits(res["sizes"], stages)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
