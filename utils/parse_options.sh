#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts. Source it AFTER declaring the options as
# shell variables with their defaults:
#
#   stage=0          # first stage to run
#   stop_stage=5     # last stage to run
#   . utils/parse_options.sh
#
# Then `--stop-stage 3` and `--stop_stage 3` both set stop_stage=3 (also `--stop-stage=3`).
# An option that was not declared is refused. A variable's documentation is the comment
# on its declaration line: `--help` prints every option, its default and that comment, and
# the script's header block (lines starting with "# " before the first blank line after
# the shebang), which lists the stages. Boolean options take `true`/`false`; options whose
# default is an integer take integers.
# Non-option arguments are left in "$@".

_po_script=${BASH_SOURCE[1]:-$0}
# A recipe that cd's into its own directory first (egs/*/run.sh) was started by a path that
# no longer resolves from there: read it from the current directory.
[ -f "$_po_script" ] || _po_script=./${_po_script##*/}

_po_help() {
  # Header: comment lines after the shebang, up to the first non-comment line.
  awk 'NR==1 && /^#!/ {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$_po_script"
  echo
  echo "Options (default in brackets):"
  # Declarations: lines `name=value   # doc` before the line that sources this file.
  awk '/parse_options\.sh/ {exit}
       /^[a-z_][a-z0-9_]*=/ {
         line=$0; doc=""
         if (match(line, /[ \t]+#[ \t]?/)) { doc=substr(line, RSTART+RLENGTH); line=substr(line, 1, RSTART-1) }
         eq=index(line, "="); name=substr(line, 1, eq-1); val=substr(line, eq+1)
         gsub(/^["'"'"']|["'"'"']$/, "", val); gsub(/_/, "-", name)
         printf "  --%-22s %s [%s]\n", name, doc, val }' "$_po_script"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _po_help; exit 0 ;;
    --*=*) _po_name=${1%%=*}; _po_val=${1#*=}; shift ;;
    --*)
      _po_name=$1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value (see --help)" >&2; exit 1; fi
      _po_val=$2; shift 2 ;;
    *) break ;;
  esac
  _po_var=${_po_name#--}; _po_var=${_po_var//-/_}
  if ! [[ $_po_var =~ ^[a-z_][a-z0-9_]*$ ]] || [ -z "${!_po_var+x}" ]; then
    echo "$0: unknown option $_po_name (see $0 --help)" >&2; exit 1
  fi
  # Booleans stay booleans.
  if [ "${!_po_var}" = true ] || [ "${!_po_var}" = false ]; then
    if [ "$_po_val" != true ] && [ "$_po_val" != false ]; then
      echo "$0: option $_po_name takes true or false, got '$_po_val'" >&2; exit 1
    fi
  fi
  # Integers stay integers (stages, sizes, seeds): `--stage abc` is refused here, not later.
  if [[ ${!_po_var} =~ ^-?[0-9]+$ ]] && ! [[ $_po_val =~ ^-?[0-9]+$ ]]; then
    echo "$0: option $_po_name takes an integer, got '$_po_val'" >&2; exit 1
  fi
  printf -v "$_po_var" '%s' "$_po_val"
done
unset _po_name _po_val _po_var
true
