#!/usr/bin/env bash
# The CPC paper's Table 2 in one command: phone classification accuracy of CPC trained with
# K = 2, 4, 8, 12, 16 prediction steps, and with each of the five negative-sampling strategies.
#
#   local/run_table2.sh [options]        (from egs/librispeech100/)
#
# Steps:
#   1. stages 0-1 of run.sh (corpus, labels), shared by every variant;
#   2. every variant: run.sh stages 2-4 (training, the CPC feature dump, the phone probes)
#      with its config overrides, in its own exp/<tag>/ (the tag comes from run.sh's identity
#      mechanism: config name + a hash of the overrides); each variant is resumable on its
#      own (a re-run skips its finished stages) and a failed variant does not stop the others;
#      with several GPUs, up to one variant per GPU runs at a time;
#   3. the table: $out_dir/TABLE2.md, table2.json and table2_k.png (phone accuracy against K),
#      the paper's numbers beside; a variant that has not finished shows "pending".
#
# Variants (names for --variants): k2 k4 k8 k12 k16 (model.prediction_steps=K, the config's
# negatives), and mixed_speaker same_speaker mixed_speaker_excl same_speaker_excl
# current_sequence (model.prediction_steps=12, model.negatives=<name>, batches of
# data.windows_per_speaker=--speaker-windows windows per speaker for all five, so the
# strategies differ only in where the negatives come from). Every variant is trained and
# probed exactly as the main recipe, with the config's budget.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=conf/cpc_small.yaml   # training config of every variant (its budget: train.max_steps)
variants="k2 k4 k8 k12 k16 mixed_speaker same_speaker mixed_speaker_excl same_speaker_excl current_sequence"  # which rows to train now (the table always lists all ten)
speaker_windows=4       # negatives variants: data.windows_per_speaker (same-speaker strategies need >= 2)
extra_overrides=""      # added to every variant's overrides, e.g. "train.max_steps=500"
corpus_dir=""           # as run.sh: LibriSpeech root (empty: the embedded corpus)
labels_dir=""           # as run.sh
mini_speakers=40        # as run.sh: embedded corpus
mini_minutes=120        # as run.sh
mini_clean=false        # as run.sh
seed=42                 # as run.sh
nj=2                    # as run.sh
probe_min_steps=5000    # as run.sh (stage 4)
gpus=""                 # variants run at once: one per GPU (empty: the number of visible GPUs; 0 or 1: one after another)
out_dir=exp/table2      # where TABLE2.md, table2.json, table2_k.png and the variants' logs go

. utils/parse_options.sh
. ./path.sh
. utils/stage.sh

all_variants="k2 k4 k8 k12 k16 mixed_speaker same_speaker mixed_speaker_excl same_speaker_excl current_sequence"
overrides_of() {  # the config overrides of a variant
  case $1 in
    k[0-9]*) echo "model.prediction_steps=${1#k}" ;;
    mixed_speaker | same_speaker | mixed_speaker_excl | same_speaker_excl | current_sequence)
      echo "model.prediction_steps=12 model.negatives=$1 data.windows_per_speaker=$speaker_windows" ;;
    *) return 1 ;;
  esac
}
for v in $variants; do
  if ! overrides_of "$v" >/dev/null || [[ " $all_variants " != *" $v "* ]]; then
    log "--variants: unknown variant $v (choose from: $all_variants)"
    exit 1
  fi
done
if [ -z "$gpus" ]; then
  gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
fi
[ "$gpus" -lt 1 ] && gpus=1
run_opts=(--config "$config" --seed "$seed" --nj "$nj" --mini-speakers "$mini_speakers"
  --mini-minutes "$mini_minutes" --mini-clean "$mini_clean")
[ -n "$corpus_dir" ] && run_opts+=(--corpus-dir "$corpus_dir")
[ -n "$labels_dir" ] && run_opts+=(--labels-dir "$labels_dir")
mkdir -p "$out_dir/log"

log "Table 2: stages 0-1 (shared by every variant)"
./run.sh --stage 0 --stop-stage 1 "${run_opts[@]}"

# run.sh names exp/<tag> after the config and a hash of the overrides (utils/stage.sh)
declare -A tag_of ovr_of
for v in $all_variants; do
  ovr_of[$v]="$(overrides_of "$v")${extra_overrides:+ $extra_overrides}"
  tag_of[$v]=$(default_tag "$config" "$seed" 42 "${ovr_of[$v]}")  # 42: run.sh's default seed
done

run_variant() {  # v slot: run.sh stages 2-4 for one variant, on GPU `slot` when there are several
  local v=$1 slot=$2 env=() one=()
  if [ "$gpus" -gt 1 ]; then env=(env CUDA_VISIBLE_DEVICES="$slot"); one=(--nproc-per-node 1); fi
  "${env[@]}" ./run.sh --stage 2 --stop-stage 4 "${run_opts[@]}" "${one[@]}" \
    --overrides "${ovr_of[$v]}" --baselines false --probe-min-steps "$probe_min_steps" \
    >"$out_dir/log/$v.log" 2>&1
}

declare -A started  # tags already launched: variants with the same overrides share one run
failed=()
running=()  # "pid:variant:slot"
read -r -a free_slots <<<"$(seq -s ' ' 0 $((gpus - 1)))"  # GPUs not in use
for v in $variants; do
  t=${tag_of[$v]}
  if [ -n "${started[$t]:-}" ]; then
    log "variant $v is exp/$t, already run for ${started[$t]}"
    continue
  fi
  while [ ${#free_slots[@]} -eq 0 ]; do  # wait for a variant to finish and free its GPU
    wait -n || true
    keep=()
    for r in "${running[@]}"; do
      IFS=: read -r pid rv slot <<<"$r"
      if kill -0 "$pid" 2>/dev/null; then keep+=("$r"); continue; fi
      wait "$pid" || { failed+=("$rv"); log "variant $rv failed: see $out_dir/log/$rv.log"; }
      free_slots+=("$slot")
    done
    running=("${keep[@]}")
  done
  slot=${free_slots[0]}
  free_slots=("${free_slots[@]:1}")
  started[$t]=$v
  log "variant $v: exp/$t (overrides: ${ovr_of[$v]}), log $out_dir/log/$v.log"
  run_variant "$v" "$slot" &
  running+=("$!:$v:$slot")
done
for r in "${running[@]}"; do
  IFS=: read -r pid rv slot <<<"$r"
  wait "$pid" || { failed+=("$rv"); log "variant $rv failed: see $out_dir/log/$rv.log"; }
done

rows=()
for v in $all_variants; do rows+=("$v=${tag_of[$v]}"); done
python local/make_table2.py --exp-root exp --output-dir "$out_dir" --config "$config" \
  --rows "${rows[@]}"
log "Table 2: $out_dir/TABLE2.md"
if [ ${#failed[@]} -gt 0 ]; then
  log "failed variants (their rows are pending; re-run to resume them): ${failed[*]}"
  exit 1
fi
