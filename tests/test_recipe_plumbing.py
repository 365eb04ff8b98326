"""utils/parse_options.sh and utils/stage.sh: Kaldi option semantics, stage markers."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """#!/usr/bin/env bash
# A toy recipe.
# Stages:
#   0  write a
#   1  write b
set -euo pipefail
stage=0           # first stage
stop_stage=1      # last stage
nj=2              # jobs
use_gpu=false     # a boolean
name="x y"        # a string with a space
. {root}/utils/parse_options.sh
. {root}/utils/stage.sh
echo "stage=$stage stop_stage=$stop_stage nj=$nj use_gpu=$use_gpu name=$name rest=$*"
if begin_stage 0 "write a" marks/stage0.done "nj=$nj"; then
  echo ran0 >> runs.txt
  echo "a $nj ${{A_EXTRA:-}}" > a.txt
  end_stage a.txt
fi
if begin_stage 1 "write b" marks/stage1.done "name=$name up=$(stage_sig marks/stage0.done)"; then
  echo ran1 >> runs.txt
  [ "${{FAIL1:-0}}" = 1 ] && exit 3
  end_stage
fi
"""


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "run.sh"
    p.write_text(SCRIPT.format(root=ROOT))
    p.chmod(0o755)
    return p


def run(recipe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(recipe), *args],
        cwd=recipe.parent,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def runs(recipe: Path) -> list[str]:
    f = recipe.parent / "runs.txt"
    return f.read_text().split() if f.exists() else []


def test_hyphen_and_underscore_forms(recipe: Path) -> None:
    for args in (["--stop-stage", "0"], ["--stop_stage", "0"], ["--stop-stage=0"]):
        r = run(recipe, *args)
        assert r.returncode == 0, r.stderr
        assert "stop_stage=0 " in r.stdout


def test_values_with_spaces_and_positional_rest(recipe: Path) -> None:
    r = run(recipe, "--name", "a b c", "--nj", "4", "pos1", "pos2")
    assert r.returncode == 0, r.stderr
    assert "nj=4" in r.stdout and "name=a b c" in r.stdout and "rest=pos1 pos2" in r.stdout


def test_unknown_option_refused(recipe: Path) -> None:
    r = run(recipe, "--stop-stag", "1")
    assert r.returncode != 0
    assert "unknown option --stop-stag" in r.stderr
    assert runs(recipe) == []


def test_missing_value_and_bad_boolean(recipe: Path) -> None:
    r = run(recipe, "--nj")
    assert r.returncode != 0 and "needs a value" in r.stderr
    r = run(recipe, "--use-gpu", "yes")
    assert r.returncode != 0 and "true or false" in r.stderr


def test_help_lists_every_option_with_default_and_stages(recipe: Path) -> None:
    r = run(recipe, "--help")
    assert r.returncode == 0
    assert "0  write a" in r.stdout and "1  write b" in r.stdout
    for opt, default in [("stage", "0"), ("stop-stage", "1"), ("nj", "2"), ("use-gpu", "false")]:
        line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(f"--{opt} "))
        assert line.rstrip().endswith(f"[{default}]"), line
    assert "[x y]" in r.stdout
    assert runs(recipe) == []


def test_rerun_is_noop_and_changed_option_reruns(recipe: Path) -> None:
    assert run(recipe).returncode == 0
    assert runs(recipe) == ["ran0", "ran1"]
    r = run(recipe)
    assert r.returncode == 0
    assert runs(recipe) == ["ran0", "ran1"]
    assert "already done with the same options" in r.stderr
    # Changing stage 1's option re-runs stage 1 only.
    run(recipe, "--name", "z")
    assert runs(recipe) == ["ran0", "ran1", "ran1"]
    # Changing stage 0's option re-runs stage 0, and stage 1 sees a changed upstream signature.
    r = run(recipe, "--name", "z", "--nj", "3")
    assert runs(recipe) == ["ran0", "ran1", "ran1", "ran0", "ran1"]
    assert "options changed" in r.stderr


def test_changed_or_deleted_output_reruns_the_stage_and_its_readers(recipe: Path) -> None:
    assert run(recipe).returncode == 0
    marker = (recipe.parent / "marks/stage0.done").read_text().splitlines()
    assert (
        marker[0] == "nj=2"
        and marker[1] == "outputs a.txt"
        and marker[2].startswith("outputs_md5 ")
    )
    # an output rewritten by hand: stage 0 re-runs and restores it; stage 1 read exactly
    # that content before, so it stays done
    (recipe.parent / "a.txt").write_text("edited\n")
    r = run(recipe)
    assert "outputs were deleted or changed" in r.stderr
    assert runs(recipe) == ["ran0", "ran1", "ran0"]
    run(recipe)  # nothing changed: nothing re-runs
    assert runs(recipe) == ["ran0", "ran1", "ran0"]
    (recipe.parent / "a.txt").unlink()  # a deleted output
    run(recipe)
    assert runs(recipe) == ["ran0", "ran1", "ran0", "ran0"]
    # stage 0 re-run (killed, marker gone) writing OTHER content: its reader re-runs
    (recipe.parent / "marks/stage0.done").unlink()
    run(recipe, env={"A_EXTRA": "other"})
    assert runs(recipe) == ["ran0", "ran1", "ran0", "ran0", "ran0", "ran1"]


def test_failed_stage_leaves_no_marker(recipe: Path) -> None:
    r = run(recipe, env={"FAIL1": "1"})
    assert r.returncode == 3
    assert (recipe.parent / "marks/stage0.done").exists()
    assert not (recipe.parent / "marks/stage1.done").exists()
    assert run(recipe).returncode == 0
    assert runs(recipe) == ["ran0", "ran1", "ran1"]


def test_stage_range(recipe: Path) -> None:
    run(recipe, "--stage", "1")
    assert runs(recipe) == ["ran1"]


def test_non_integer_stage_is_refused_before_anything_runs(recipe: Path) -> None:
    for args in (["--stage", "abc"], ["--stop-stage", "1x"], ["--nj=2.5"]):
        r = run(recipe, *args)
        assert r.returncode == 1
        assert f"option {args[0].split('=')[0]} takes an integer, got" in r.stderr
        assert r.stdout == ""
    assert runs(recipe) == []
    assert run(recipe, "--stage", "-1").returncode == 0  # negative stages are integers too


def test_a_range_without_any_stage_fails_and_says_so(recipe: Path) -> None:
    for args in (["--stage", "9"], ["--stage", "1", "--stop-stage", "0"]):
        r = run(recipe, *args)
        assert r.returncode == 1
        assert "no stage of this recipe lies in --stage" in r.stderr
    assert runs(recipe) == []
    # a range holding only finished stages is not an error: they are skipped
    assert run(recipe).returncode == 0
    r = run(recipe, "--stage", "1")
    assert r.returncode == 0 and "already done" in r.stderr
    # a failing stage keeps its own exit status
    assert run(recipe, "--name", "z", env={"FAIL1": "1"}).returncode == 3


def test_log_has_timestamp_and_elapsed(recipe: Path) -> None:
    r = run(recipe)
    first = r.stderr.splitlines()[0]
    # "2026-01-01 12:00:00 (run.sh:17:main) stage 0: write a"
    assert first[:4].isdigit() and first[10] == " " and "(run.sh:" in first
    assert "stage 0 (write a) done in 0m0" in r.stderr


def test_recipe_help_documents_all_options() -> None:
    recipe = ROOT / "egs/librispeech100/run.sh"
    r = subprocess.run([str(recipe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    declared = [
        ln.split("=", 1)[0]
        for ln in recipe.read_text().split("parse_options.sh")[0].splitlines()
        if ln and ln[0].islower() and "=" in ln and " " not in ln.split("=", 1)[0]
    ]
    assert "stop_stage" in declared and "mini_speakers" in declared
    for name in declared:
        assert f"--{name.replace('_', '-')} " in r.stdout, name
    for n in range(6):
        assert f"  {n}  " in r.stdout


def test_default_tag_names_config_seed_and_overrides() -> None:
    def tag(*args: str) -> str:
        cmd = f". {ROOT}/utils/stage.sh; default_tag " + " ".join(f"'{a}'" for a in args)
        return subprocess.run(
            ["bash", "-c", cmd], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert tag("conf/cpc_small.yaml", "42", "42", "") == "cpc_small"
    assert tag("conf/cpc_small.yaml", "7", "42", "") == "cpc_small_seed7"
    h = hashlib.md5(b"optim.lr=1e-3").hexdigest()[:6]
    assert tag("conf/x.yaml", "7", "42", "optim.lr=1e-3") == f"x_seed7_{h}"


def test_speech_precision_options_are_in_their_stage_markers() -> None:
    """--extract-precision (stage 3) and --probe-precision (stage 4) change the dumps and the
    probes' results: each is part of its stage's marker options (so a change re-runs the
    stage and, through its signature, the stages reading it) and reaches every command of
    that stage that it applies to."""
    text = (ROOT / "egs/librispeech100/run.sh").read_text()
    blocks = {n: text.split(f"# ---- stage {n}:")[1].split("# ---- stage")[0] for n in (3, 4)}
    marker3 = blocks[3].split("begin_stage 3")[1].split("; then")[0]
    marker4 = blocks[4].split("begin_stage 4")[1].split("; then")[0]
    assert "precision=$extract_precision" in marker3
    assert "precision=$probe_precision" in marker4
    # the CPC and random-init dumps (not MFCC) take it; every phone probe takes it
    assert blocks[3].count('--precision "$extract_precision"') == 2
    assert blocks[3].count("--feat-type random") == 1 and blocks[3].count("--feat-type cpc") == 1
    probe_precision = blocks[4].count('--precision "$probe_precision"')
    assert blocks[4].count("probe.py phone") == probe_precision == 1
    # defaults: auto for both (documented in --help), resolved to what auto means on this
    # machine before any marker is built, so the markers hold bf16 or fp32; stage 2's marker
    # holds it too (train.precision: auto in conf/cpc_small.yaml)
    head, body = text.split("parse_options.sh")
    assert "\nextract_precision=auto " in head and "\nprobe_precision=auto " in head
    resolve = body.index("native_precision=$(python -m cpc.perf auto)")
    for var in ("extract_precision", "probe_precision"):
        assert f'[ "${var}" = auto ] && {var}=$native_precision' in body[resolve:]
    assert resolve < body.index("begin_stage 2") < body.index("begin_stage 3")
    marker2 = body.split("begin_stage 2")[1].split("; then")[0]
    assert "auto_precision=$native_precision" in marker2


def _stage_sh(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; . {ROOT}/utils/stage.sh\n{script}"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_run_jobs_runs_every_job_with_its_log_and_share_of_the_cores(tmp_path: Path) -> None:
    """run_jobs NJ PREFIX FUNC ARG...: FUNC ARG for every ARG, each logged to PREFIX.ARG.log
    with OMP_NUM_THREADS = job_threads = max(1, cores / NJ); never more than NJ at once (a
    job counts the running ones under a lock); NJ = 2 really runs two side by side (job a
    waits for b to have started: it would wait forever if they ran one after the other)."""
    cores = os.cpu_count() or 1
    script = """
job() {
  ( flock 9; n=$(( $(cat running) + 1 )); echo $n > running
    [ $n -gt "$(cat peak)" ] && echo $n > peak; true ) 9>lock
  echo "$1 threads=$OMP_NUM_THREADS/$job_threads" >> seen
  touch started.$1
  if [ "$1" = a ] && [ "$NJ" -ge 2 ]; then
    for _ in $(seq 600); do [ -f started.b ] && break; sleep 0.05; done
    [ -f started.b ] || exit 9
  fi
  ( flock 9; echo $(( $(cat running) - 1 )) > running ) 9>lock
  echo "result of $1"
}
echo 0 > running; echo 0 > peak
run_jobs "$NJ" logs/job job a b c d
echo "rc=$?"
"""
    for nj in (1, 2):
        d = tmp_path / f"nj{nj}"
        d.mkdir()
        r = _stage_sh(f"NJ={nj}\n{script}", d)
        assert r.returncode == 0, r.stderr
        assert "rc=0" in r.stdout
        threads = max(1, cores // nj)
        assert sorted((d / "seen").read_text().split("\n")[:-1]) == [
            f"{j} threads={threads}/{threads}" for j in "abcd"
        ]
        assert int((d / "peak").read_text()) <= nj
        for j in "abcd":
            assert (d / f"logs/job.{j}.log").read_text() == f"result of {j}\n"
            assert f"job {j} done in " in r.stderr and f": result of {j}" in r.stderr
        assert not list(d.glob("logs/*.rc"))
    assert int((tmp_path / "nj2" / "peak").read_text()) == 2


def test_num_words_counts_the_items_of_a_list(tmp_path: Path) -> None:
    """The job count of stages 3-5 without --feature-jobs: one job per feature set."""
    r = _stage_sh('feats="cpc_small mfcc  random_small"\nnum_words $feats; num_words', tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "0"]


def test_run_jobs_reports_each_failed_job_after_all_have_ended(tmp_path: Path) -> None:
    script = """
job() {
  echo "working on $1"
  [ "$1" != b ] || { echo "b broke: bad input"; return 4; }
  echo ok > out.$1
}
if run_jobs 2 logs/job job a b c; then echo "rc=0"; else echo "rc=$?"; fi
"""
    r = _stage_sh(script, tmp_path)
    assert "rc=1" in r.stdout
    assert (tmp_path / "out.a").exists() and (tmp_path / "out.c").exists()
    assert "job b failed (exit 4)" in r.stderr and "b broke: bad input" in r.stderr
    assert "job a failed" not in r.stderr and "job c failed" not in r.stderr
    r = _stage_sh("if run_jobs 0 logs0/job job a; then echo rc=0; else echo rc=$?; fi", tmp_path)
    assert "rc=2" in r.stdout and "must be a positive integer, got '0'" in r.stderr
    assert "--nj 2" in r.stderr and not (tmp_path / "logs0").exists()


def test_gpus_or_gives_the_cpu_default_without_gpus() -> None:
    r = subprocess.run(
        ["bash", "-c", f". {ROOT}/utils/stage.sh; gpus_or 2; gpus_or_one"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert r.stdout.split() == ["2", "1"]
