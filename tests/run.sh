#!/usr/bin/env bash
# The test command: makes sure the environment exists, runs ruff (lint + format check),
# then pytest. Extra arguments go to pytest, e.g. `./tests/run.sh -k parse_options`.
# Long end-to-end tests are marked `slow`; they run a tiny variant unless CPC_FULL_TESTS=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
"$root/local/setup_env.sh" >/dev/null
. "$root/path.sh"
cd "$root"
ruff check .
ruff format --check .
exec python -m pytest "$@"
