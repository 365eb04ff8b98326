#!/usr/bin/env bash
# Run a command through slurm's srun, appending its output to a log file.
#   utils/slurm.sh [srun options...] LOG command [args...]
# Options up to the first argument that does not start with '-' (and its value) go to srun;
# e.g. utils/slurm.sh --partition gpu --gres gpu:8 exp/x/log/train.log torchrun ...
set -uo pipefail
srun_opts=()
while [ $# -gt 0 ] && [[ $1 == -* ]]; do
  if [[ $1 == *=* ]]; then srun_opts+=("$1"); shift; else srun_opts+=("$1" "$2"); shift 2; fi
done
if [ $# -lt 2 ]; then echo "usage: $0 [srun options] LOG command [args...]" >&2; exit 2; fi
if ! command -v srun >/dev/null; then echo "$0: srun not found; use utils/run_local.sh in cmd.sh" >&2; exit 1; fi
logf=$1; shift
mkdir -p "$(dirname "$logf")"
echo "# srun ${srun_opts[*]} $*" >>"$logf"
srun "${srun_opts[@]}" "$@" 2>&1 | tee -a "$logf"
exit "${PIPESTATUS[0]}"
