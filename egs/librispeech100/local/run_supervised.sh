#!/usr/bin/env bash
# The "supervised" row of the CPC paper's Table 1: the same encoder + GRU as CPC, trained end
# to end with cross-entropy on the frame phone labels (model.objective=phone), and separately
# on the speaker labels (model.objective=speaker), with the same config and budget as the CPC
# run; both probed with the same linear probes as CPC.
#
#   local/run_supervised.sh [options]        (from egs/librispeech100/, after run.sh stages 0-5)
#
# Steps:
#   1. run.sh stages 2-5 with --overrides "model.objective=phone" and with "model.objective=
#      speaker model.num_classes=<training speakers>" (each its own exp/<tag>/, resumable;
#      their dumps are feature type "supervised");
#   2. the phone probe of the phone-trained model and the speaker probe of the speaker-trained
#      model are copied into the CPC experiment (exp/<tag>/probe_{phone,speaker}/supervised_<tag>/)
#      and its RESULTS.md / results.json are rewritten with the measured supervised row.
#      (A later run.sh stage 5 keeps the row: it re-collects what is there.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=conf/cpc_small.yaml   # the CPC run's config: the supervised models get the same model, data and budget
seed=42                 # as run.sh
nj=2                    # as run.sh
tag=""                  # the CPC experiment that gets the row (empty: run.sh's default tag for --config/--seed)
probe_min_steps=5000    # as run.sh (stages 4-5)
speaker_protocol=pooled # as run.sh (stage 5)
holdout_chapters=false  # as run.sh (stage 5)

. utils/parse_options.sh
. ./path.sh
. utils/stage.sh

[ -z "$tag" ] && tag=$(default_tag "$config" "$seed" 42 "")
if [ ! -f "exp/$tag/RESULTS.md" ]; then
  log "exp/$tag/RESULTS.md does not exist: run ./run.sh --config $config --seed $seed (stages 0-5) first, or pass --tag"
  exit 1
fi
if [ ! -f data/manifests/librispeech_cuts_train.jsonl.gz ]; then
  log "no stage-1 cuts in data/manifests: run ./run.sh --stage 0 --stop-stage 1 first"
  exit 1
fi
num_speakers=$(python - "$config" <<'EOF'
import logging, sys
logging.disable(logging.INFO)
from cpc.audio.config import load_train_config
from cpc.audio.domain import build_data
cfg = load_train_config(sys.argv[1], ["model.objective=phone"])
print(len(build_data(cfg, "data/manifests").train.speakers))
EOF
)
log "supervised baselines for exp/$tag: phone (41 classes) and speaker ($num_speakers classes)"
opts=(--config "$config" --seed "$seed" --nj "$nj" --baselines false
  --probe-min-steps "$probe_min_steps" --speaker-protocol "$speaker_protocol"
  --holdout-chapters "$holdout_chapters")
declare -A sup_tag
for obj in phone speaker; do
  ovr="model.objective=$obj"
  [ "$obj" = speaker ] && ovr="$ovr model.num_classes=$num_speakers"
  sup_tag[$obj]=$(default_tag "$config" "$seed" 42 "$ovr")
  log "supervised $obj: exp/${sup_tag[$obj]} (overrides: $ovr)"
  ./run.sh --stage 2 --stop-stage 5 "${opts[@]}" --overrides "$ovr"
done

for task in phone speaker; do
  t=${sup_tag[$task]}
  src=exp/$t/probe_$task/cpc_$t/results.json
  dst=exp/$tag/probe_$task/supervised_$tag
  mkdir -p "$dst"
  cp "$src" "$dst/results.json.tmp.$$" && mv -f "$dst/results.json.tmp.$$" "$dst/results.json"
done
python "$CPC_ROOT/local/make_results.py" --exp-dir "exp/$tag" --tag "$tag"
log "supervised row: exp/$tag/RESULTS.md"
