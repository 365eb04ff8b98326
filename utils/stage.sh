#!/usr/bin/env bash
# Logging and stage bookkeeping for recipe scripts. Source after utils/parse_options.sh.
#
#   log "message"                      timestamped, with file:line, on stderr
#   if begin_stage N "what" MARKER "k1=v1 k2=v2 ..."; then
#     ... the stage's commands ...
#     end_stage OUTPUT_FILE...
#   fi
#   run_jobs NJ LOG_PREFIX FUNC ARG...  `FUNC ARG` for every ARG, NJ at a time (below)
#   num_words WORD...                  how many words (one job per item: run_jobs "$(num_words $list)")
#
# The options string is the stage's identity: every resolved option, config contents (as a
# hash), the seed, and the signatures of the upstream stages it reads (stage_sig MARKER).
# end_stage writes the marker atomically: the options on its first line, then the output
# files it was given and the md5 of their contents. begin_stage returns false (and logs why)
# when N is outside [stage, stop_stage], or when the marker records exactly the same options
# AND its outputs still have the recorded contents: a finished stage is a no-op on re-run;
# a changed option, or an output deleted or rewritten since, re-runs it. A stage that fails
# or is killed leaves no marker (any old marker is removed at its start), so the next run
# redoes it. stage_sig covers the outputs' md5, so a stage re-run that writes different
# outputs re-runs the stages that read them. Output paths must not contain spaces.

log() {
  # Report the recipe line that called us (skipping this file's own helpers).
  local i=1
  while [ "${BASH_SOURCE[$i]:-}" = "${BASH_SOURCE[0]}" ]; do i=$((i + 1)); done
  local fname=${BASH_SOURCE[$i]:-$0}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname##*/}:${BASH_LINENO[$((i - 1))]}) $*" >&2
}

_stage_num="" _stage_marker="" _stage_opts="" _stage_t0=0 _stage_what=""
_stage_called="" _stage_in_range=""

# A run whose --stage/--stop-stage range holds none of the recipe's stages did nothing:
# say so and fail, rather than exit 0 silently (e.g. `--stage 9` in a recipe with stages 0-5,
# or --stage after --stop-stage). Installed as an EXIT trap by the first begin_stage call.
_stage_check_range() {
  local rc=$?
  if [ $rc -eq 0 ] && [ -z "$_stage_in_range" ]; then
    log "no stage of this recipe lies in --stage ${stage:-0} .. --stop-stage ${stop_stage:-999}: nothing was run (see --help for the stages)"
    exit 1
  fi
  exit $rc
}

begin_stage() {
  local n=$1 what=$2 marker=$3 opts=$4
  if [ -z "$_stage_called" ]; then
    _stage_called=1
    trap _stage_check_range EXIT
  fi
  if [ "$n" -lt "${stage:-0}" ] || [ "$n" -gt "${stop_stage:-999}" ]; then
    return 1
  fi
  _stage_in_range=1
  if [ -f "$marker" ] && [ "$(head -n 1 "$marker")" = "$opts" ]; then
    local files recorded
    files=$(sed -n 's/^outputs //p' "$marker")
    recorded=$(sed -n 's/^outputs_md5 //p' "$marker")
    # shellcheck disable=SC2086
    if [ "$(_outputs_md5 $files)" = "$recorded" ]; then
      log "stage $n ($what): already done with the same options, skipping ($marker)"
      return 1
    fi
    log "stage $n ($what): its outputs were deleted or changed since it finished, running it again"
    rm -f "$marker"
  fi
  if [ -f "$marker" ]; then
    log "stage $n ($what): options changed since the last run, running it again"
    diff <(head -n 1 "$marker" | tr ' ' '\n') <(tr ' ' '\n' <<<"$opts") | grep '^[<>]' | sed 's/^/    /' >&2 || true
    rm -f "$marker"
  fi
  _stage_num=$n _stage_marker=$marker _stage_opts=$opts _stage_what=$what _stage_t0=$(date +%s)
  log "stage $n: $what"
  return 0
}

# md5 of the named files' contents, in order ("none" for no files; a missing file counts
# as the word "missing").
_outputs_md5() {
  [ $# -eq 0 ] && { echo none; return; }
  local f
  for f in "$@"; do
    if [ -f "$f" ]; then md5sum <"$f"; else echo missing; fi
  done | md5sum | cut -c1-16
}

end_stage() {
  mkdir -p "$(dirname "$_stage_marker")"
  local f
  for f in "$@"; do
    [ -f "$f" ] || { log "stage $_stage_num: expected output $f was not written"; return 1; }
  done
  { printf '%s\n' "$_stage_opts"
    printf 'outputs %s\n' "$*"
    printf 'outputs_md5 %s\n' "$(_outputs_md5 "$@")"; } > "$_stage_marker.tmp.$$"
  mv -f "$_stage_marker.tmp.$$" "$_stage_marker"
  local dt=$(( $(date +%s) - _stage_t0 ))
  log "stage $_stage_num ($_stage_what) done in $(printf '%dm%02ds' $((dt / 60)) $((dt % 60)))"
}

# Signature of a finished stage (its options and its outputs' md5), to fold into later
# stages' options: when an earlier stage re-runs with other options or writes other outputs,
# the stages that read them see a changed signature.
stage_sig() {
  if [ -f "$1" ]; then md5sum <"$1" | cut -c1-10; else echo none; fi
}

# train_exp STAGE EXP_DIR LAUNCHER TRAIN_ARGS...
#   Trains (or resumes) the experiment EXP_DIR with local/train.py TRAIN_ARGS, logging to
#   EXP_DIR/log/train.log through $train_cmd (cmd.sh). When EXP_DIR already exists, a
#   preflight (`--check-only`) first refuses checkpoints of other inputs (data, config,
#   seed) with one clear message, before any process starts; with $restart_exp = true the
#   old directory is moved aside (never deleted). LAUNCHER: `torchrun` (DDP with
#   $nproc_per_node processes on $nnodes nodes; rendezvous at $rdzv_endpoint with
#   $node_rank when set, else standalone) or `python` (one process).
train_exp() {
  local stage=$1 exp=$2 launcher=$3 rc=0
  shift 3
  if [ -d "$exp" ]; then
    local world=1
    [ "$launcher" = torchrun ] && world=$(( ${nproc_per_node:-1} * ${nnodes:-1} ))
    python "$CPC_ROOT/local/train.py" "$@" --check-only true --restart-exp "${restart_exp:-false}" \
      --world-size "$world" || rc=$?
    if [ $rc -ne 0 ]; then
      log "stage $stage stopped: see the error above"
      exit 1
    fi
  fi
  local launch=(python)
  if [ "$launcher" = torchrun ]; then
    launch=(torchrun --nproc-per-node "$nproc_per_node" --nnodes "$nnodes")
    if [ -n "${rdzv_endpoint:-}" ]; then
      launch+=(--node-rank "$node_rank" --rdzv-backend c10d --rdzv-endpoint "$rdzv_endpoint")
    else
      launch+=(--standalone)
    fi
  fi
  # torchrun gives each of several processes 1 OpenMP thread unless told otherwise: share the
  # cores among them instead (2 processes on 16 cores: 8 threads each).
  local nproc_node=${nproc_per_node:-1}
  if [ "$launcher" = torchrun ] && [ "$nproc_node" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
    local threads=$(( $(nproc) / nproc_node ))
    [ "$threads" -lt 1 ] && threads=1
    OMP_NUM_THREADS=$threads $train_cmd "$exp/log/train.log" "${launch[@]}" "$CPC_ROOT/local/train.py" "$@"
  else
    $train_cmd "$exp/log/train.log" "${launch[@]}" "$CPC_ROOT/local/train.py" "$@"
  fi
}

# default_tag CONFIG SEED DEFAULT_SEED OVERRIDES
#   The experiment name (exp/<tag>) when --tag is not given: the config file's name, plus
#   _seed<SEED> when SEED is not DEFAULT_SEED, plus a hash of OVERRIDES when there are any.
default_tag() {
  local t
  t=$(basename "$1" .yaml)
  if [ "$2" != "$3" ]; then t=${t}_seed$2; fi
  if [ -n "$4" ]; then t=${t}_$(printf '%s' "$4" | md5sum | cut -c1-6); fi
  echo "$t"
}

# gpus_or N: the number of visible GPUs, or N without any (torchrun's --nproc-per-node).
gpus_or() {
  python -c "import torch; print(torch.cuda.device_count() or $1)"
}

# gpus_or_one: the number of visible GPUs, or 1 without any.
gpus_or_one() {
  gpus_or 1
}

# num_words WORD... : prints how many words it was given (e.g. the job count of run_jobs
#   for one job per item of a list).
num_words() {
  echo $#
}

# run_jobs NJ LOG_PREFIX FUNC ARG...
#   Runs `FUNC ARG` for every ARG, at most NJ at a time, in the background (Kaldi's
#   `run.pl JOB=1:NJ`): one job per ARG, its output in LOG_PREFIX.ARG.log, with
#   OMP_NUM_THREADS and $job_threads set to the job's share of the cores, max(1, cores / NJ).
#   Small models use a core better as one of NJ single-threaded processes than as one of the
#   threads of a single process. Logs each job's start, and its end with the elapsed time and
#   the last line of its log. Returns 0 when every job succeeded; otherwise, once all have
#   ended, names each failed job and shows the end of its log, and returns 1.
run_jobs() {
  local nj=$1 prefix=$2 fn=$3 arg threads failed=0 t0
  shift 3
  if ! [[ $nj =~ ^[1-9][0-9]*$ ]]; then
    log "run_jobs: the number of parallel jobs must be a positive integer, got '$nj' (pass e.g. --nj 2)"
    return 2
  fi
  threads=$(( $(nproc) / nj ))
  [ "$threads" -lt 1 ] && threads=1
  mkdir -p "$(dirname "$prefix")"
  for arg in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$nj" ]; do wait -n || true; done
    rm -f "$prefix.$arg.rc"
    log "job $arg started ($threads thread(s)): $prefix.$arg.log"
    (
      export OMP_NUM_THREADS=$threads job_threads=$threads
      t0=$(date +%s)
      rc=0
      "$fn" "$arg" >"$prefix.$arg.log" 2>&1 || rc=$?
      echo "$rc" >"$prefix.$arg.rc"
      if [ "$rc" -eq 0 ]; then
        log "job $arg done in $(( $(date +%s) - t0 ))s: $(tail -n 1 "$prefix.$arg.log" | cut -c1-300)"
      fi
    ) &
  done
  wait
  for arg in "$@"; do
    if [ "$(cat "$prefix.$arg.rc" 2>/dev/null)" != 0 ]; then
      log "job $arg failed (exit $(cat "$prefix.$arg.rc" 2>/dev/null || echo '?')); the end of $prefix.$arg.log:"
      tail -n 20 "$prefix.$arg.log" >&2
      failed=1
    fi
    rm -f "$prefix.$arg.rc"
  done
  return $failed
}
