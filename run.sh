#!/usr/bin/env bash
# cpc-recipes entry point. Makes sure the Python environment exists (local/setup_env.sh,
# a no-op when it is already there), then runs a recipe with every option passed through.
#
#   ./run.sh [--recipe librispeech100] [recipe options...]
#   ./run.sh --stage 0 --stop-stage 5            # the LibriSpeech-100 recipe, stages 0-5
#   ./run.sh --help                              # the recipe's options and stages
#
# The recipe runs in its own directory (egs/<recipe>/), where it writes data/ and exp/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
recipe=librispeech100
if [ "${1:-}" = "--recipe" ]; then recipe=$2; shift 2; fi
if [ ! -x "$root/egs/$recipe/run.sh" ]; then
  echo "run.sh: no recipe '$recipe'; available: $(ls "$root/egs" | tr '\n' ' ')" >&2
  exit 1
fi
CPC_VENV=$("$root/local/setup_env.sh" | tail -n 1)
export CPC_VENV
cd "$root/egs/$recipe"
exec ./run.sh "$@"
