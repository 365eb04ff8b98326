#!/usr/bin/env bash
# Run a command on this machine, appending its output to a log file (and showing it).
#   utils/run_local.sh LOG command [args...]
# The log gets a header with the command line and the start time, and a footer with the
# exit status and elapsed time. The command's exit status is returned.
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 LOG command [args...]" >&2; exit 2; fi
logf=$1; shift
mkdir -p "$(dirname "$logf")"
t0=$(date +%s)
{ echo "# $*"; echo "# started at $(date '+%Y-%m-%d %H:%M:%S')"; } >>"$logf"
"$@" 2>&1 | tee -a "$logf"
rc=${PIPESTATUS[0]}
echo "# ended at $(date '+%Y-%m-%d %H:%M:%S') (elapsed $(( $(date +%s) - t0 ))s, exit $rc)" >>"$logf"
exit "$rc"
