#!/usr/bin/env bash
# Logging and stage bookkeeping for recipe scripts. Source after utils/parse_options.sh.
#
#   log "message"                      timestamped, with file:line, on stderr
#   if begin_stage N "what" MARKER "k1=v1 k2=v2 ..."; then
#     ... the stage's commands ...
#     end_stage
#   fi
#
# begin_stage returns false (and logs why) when N is outside [stage, stop_stage] or when the
# marker file exists and records exactly the same resolved options: a finished stage is a
# no-op on re-run, a changed option re-runs it. end_stage writes the marker atomically and
# logs the elapsed time. A stage that fails or is killed leaves no marker (and any old
# marker was removed at its start), so the next run redoes it.

log() {
  # Report the recipe line that called us (skipping this file's own helpers).
  local i=1
  while [ "${BASH_SOURCE[$i]:-}" = "${BASH_SOURCE[0]}" ]; do i=$((i + 1)); done
  local fname=${BASH_SOURCE[$i]:-$0}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname##*/}:${BASH_LINENO[$((i - 1))]}) $*" >&2
}

_stage_num="" _stage_marker="" _stage_opts="" _stage_t0=0 _stage_what=""

begin_stage() {
  local n=$1 what=$2 marker=$3 opts=$4
  if [ "$n" -lt "${stage:-0}" ] || [ "$n" -gt "${stop_stage:-999}" ]; then
    return 1
  fi
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$opts" ]; then
    log "stage $n ($what): already done with the same options, skipping ($marker)"
    return 1
  fi
  if [ -f "$marker" ]; then
    log "stage $n ($what): options changed since the last run, running it again"
    diff <(tr ' ' '\n' <"$marker") <(tr ' ' '\n' <<<"$opts") | grep '^[<>]' | sed 's/^/    /' >&2 || true
    rm -f "$marker"
  fi
  _stage_num=$n _stage_marker=$marker _stage_opts=$opts _stage_what=$what _stage_t0=$(date +%s)
  log "stage $n: $what"
  return 0
}

end_stage() {
  mkdir -p "$(dirname "$_stage_marker")"
  printf '%s\n' "$_stage_opts" > "$_stage_marker.tmp.$$"
  mv -f "$_stage_marker.tmp.$$" "$_stage_marker"
  local dt=$(( $(date +%s) - _stage_t0 ))
  log "stage $_stage_num ($_stage_what) done in $(printf '%dm%02ds' $((dt / 60)) $((dt % 60)))"
}

# Signature of a finished stage, to fold into later stages' options: when an earlier stage
# re-runs with other options, the stages that read its outputs see a changed signature.
stage_sig() {
  if [ -f "$1" ]; then md5sum <"$1" | cut -c1-10; else echo none; fi
}
