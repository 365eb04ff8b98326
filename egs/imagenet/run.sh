#!/usr/bin/env bash
# CPC on images (van den Oord et al., 2018, section 3.2): ILSVRC-2012 layout, embedded
# Fashion-MNIST by default.
#
# Stages (numbers never change meaning):
#   0  image tree -> validated manifests (builds the embedded Fashion-MNIST tree without
#      --data-dir) -> data/manifests/{classes.txt,train.tsv,val.tsv,info.json}
#   1  CPC pre-training with torchrun (DDP) -> exp/<tag>/
#   2  supervised baseline: the same encoder + a linear layer, trained end to end
#      -> exp/<tag>/supervised/
#   3  image-level feature dumps (frozen encoders, mean-pooled grid): CPC, random init,
#      raw pixels, supervised -> data/feats/<name>/
#   4  linear probes (SGD, step schedule; top-1/top-5) and the results table
#      -> exp/<tag>/probe_image_class/, exp/<tag>/RESULTS.md, results.json, figures
#
# Usage: ./run.sh [options]      e.g. ./run.sh --stage 0 --stop-stage 4
#        ./run.sh --config conf/cpc_tiny.yaml     # every stage on a small embedded subset (tests, CI)
# A stage re-runs only when something it is made from changed: an option, the CONTENTS of the
# config, the seed, or an upstream stage's outputs; otherwise it is skipped. Checkpoints record
# the data and settings they were trained on; continuing them under other ones is refused (pass
# a new --tag, or --restart-exp true to move the old experiment aside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0                 # first stage to run
stop_stage=4            # last stage to run
data_dir=""             # ILSVRC-2012-style root with train/<wnid>/*.JPEG and val/ (empty: the embedded Fashion-MNIST)
devkit_dir=""           # ILSVRC2012 devkit (data/meta.mat, data/ILSVRC2012_validation_ground_truth.txt) for a flat val/
skip_bad=false          # stage 0: leave undecodable images out of the manifests (false: stop, naming them)
mini_train_per_class=0  # embedded data: train images per class (0: all 6000)
mini_val_per_class=0    # embedded data: val images per class (0: all 1000)
seed=42                 # random seed (training, random-init baseline, probes)
nj=2                    # parallel jobs for data preparation, torch threads for the feature encoders
config=conf/cpc_small.yaml   # training config (conf/cpc_small.yaml, conf/cpc_tiny.yaml, conf/cpc_paper.yaml)
overrides=""            # config overrides, space separated, e.g. "optim.lr=2e-4 train.max_steps=200"
supervised_steps=0      # stage 2: training steps of the supervised baseline (0: the config's train.max_steps, the same budget as CPC)
tag=""                  # experiment name under exp/ (empty: config name [+ _seed<N> if not 42] [+ overrides hash])
restart_exp=false       # stages 1-2: if the exp dir holds checkpoints of other data/config/seed, rename it and train anew
nproc_per_node=""       # training processes per node (empty: number of GPUs, else 1)
nnodes=1                # number of nodes for multi-node training
node_rank=0             # this node's rank (multi-node)
rdzv_endpoint=""        # host:port of the rendezvous for multi-node training (empty: single node)
eval_view=subcrop       # stage 3: patches the frozen encoders see: subcrop = each patch's centre data.subcrop square zero-padded as in training; whole = whole patches
pixel_size=28           # stage 3: side of the raw-pixel baseline's images (28: Fashion-MNIST's own; 32 for ImageNet)
probe_train_images=10000  # stage 3: train images the probes use (a fixed subset; 0: all)
probe_epochs=136        # stage 4: linear-probe epochs (the paper: 85k updates x 2048 images, about 136 ImageNet epochs)
probe_batch=256         # stage 4: linear-probe minibatch (the paper: 2048 of 1.28M images)
tiny=false              # true: conf/cpc_tiny.yaml on a small embedded subset (also implied by --config .../cpc_tiny.yaml): options left at their defaults become 40 train / 10 val images per class, all of them probed, 20 probe epochs

declare -r _seed_default=$seed
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

# ---- derived values ----
if [ "$tiny" = true ]; then config=conf/cpc_tiny.yaml; fi
if [ "$(basename "$config")" = cpc_tiny.yaml ]; then
  [ "$mini_train_per_class" = 0 ] && mini_train_per_class=40
  [ "$mini_val_per_class" = 0 ] && mini_val_per_class=10
  [ "$probe_train_images" = 10000 ] && probe_train_images=0
  [ "$probe_epochs" = 136 ] && probe_epochs=20
fi
if [ ! -f "$config" ]; then
  log "--config $config does not exist (choose one of: $(ls conf/*.yaml | tr '\n' ' '))"
  exit 1
fi
config_md5=$(md5sum <"$config" | cut -c1-12)  # stages depend on the config's contents
[ -z "$tag" ] && tag=$(default_tag "$config" "$seed" "$_seed_default" "$overrides")
[ -z "$nproc_per_node" ] && nproc_per_node=$(gpus_or_one)
exp=exp/$tag
manifests=data/manifests
data_marks=data/.stages
exp_marks=$exp/.stages
if [ -z "$data_dir" ]; then
  image_root=download/fashion_mnist
  data_opts="embedded=fashion_mnist train_per_class=$mini_train_per_class val_per_class=$mini_val_per_class"
else
  image_root=$data_dir
  data_opts="data_dir=$(cd "$data_dir" 2>/dev/null && pwd -P || echo "$data_dir") devkit_dir=$devkit_dir"
fi

# local/train.py under torchrun (utils/stage.sh's train_exp: refuses, or with --restart-exp
# moves aside, an exp dir of other inputs first).
train() {  # train STAGE EXP_DIR TRAIN_ARGS...
  local stage_n=$1 exp_dir=$2; shift 2
  train_exp "$stage_n" "$exp_dir" torchrun --exp-dir "$exp_dir" --data-dir $manifests \
    --seed "$seed" "$@"
}

# ---- stage 0: image tree -> manifests ----
if begin_stage 0 "validate images, write manifests" $data_marks/stage0.done \
    "$data_opts skip_bad=$skip_bad"; then
  if [ -z "$data_dir" ]; then
    python local/make_fashion_mnist.py --out-dir "$image_root" --num-jobs "$nj" \
      --train-per-class "$mini_train_per_class" --val-per-class "$mini_val_per_class"
  fi
  python local/prepare_manifests.py --data-dir "$image_root" --output-dir $manifests \
    --devkit-dir "$devkit_dir" --skip-bad "$skip_bad" --num-jobs "$nj"
  end_stage $manifests/classes.txt $manifests/train.tsv $manifests/val.tsv
fi

# ---- stage 1: CPC pre-training (torchrun, DDP) ----
train_opts=()
# shellcheck disable=SC2206
[ -n "$overrides" ] && train_opts=(--override $overrides)
if begin_stage 1 "CPC pre-training ($tag)" $exp_marks/stage1.done \
    "config=$config config_md5=$config_md5 overrides=${overrides// /,} seed=$seed nproc=$nproc_per_node nnodes=$nnodes data=$(stage_sig $data_marks/stage0.done)"; then
  train 1 $exp --config "$config" "${train_opts[@]}"
  end_stage $exp/best.pt
fi

# ---- stage 2: supervised baseline (same encoder, end to end) ----
if begin_stage 2 "supervised baseline ($tag)" $exp_marks/stage2.done \
    "config=$config config_md5=$config_md5 overrides=${overrides// /,} steps=$supervised_steps seed=$seed nproc=$nproc_per_node nnodes=$nnodes data=$(stage_sig $data_marks/stage0.done)"; then
  num_classes=$(wc -l <$manifests/classes.txt)
  sup=(model.objective=supervised model.num_classes="$num_classes")
  [ "$supervised_steps" != 0 ] && sup+=(train.max_steps="$supervised_steps")
  # shellcheck disable=SC2206
  train 2 $exp/supervised --config "$config" --override $overrides "${sup[@]}"
  end_stage $exp/supervised/best.pt
fi

# ---- stage 3: feature dumps ----
feats="cpc_$tag random_$tag pixels supervised_$tag"
if begin_stage 3 "feature dumps (cpc, random init, pixels, supervised)" $exp_marks/stage3.done \
    "eval_view=$eval_view pixel_size=$pixel_size probe_train_images=$probe_train_images seed=$seed config_md5=$config_md5 overrides=${overrides// /,} cpc=$(stage_sig $exp_marks/stage1.done) sup=$(stage_sig $exp_marks/stage2.done) data=$(stage_sig $data_marks/stage0.done)"; then
  common=(--manifest-dir $manifests --max-train-images "$probe_train_images" --num-threads "$nj" --num-workers 1)
  python local/extract_features.py --feat-type cpc --checkpoint $exp/best.pt \
    --eval-view "$eval_view" --output-dir data/feats/cpc_$tag "${common[@]}"
  python local/extract_features.py --feat-type random --config "$config" "${train_opts[@]}" \
    --eval-view "$eval_view" --seed "$seed" --output-dir data/feats/random_$tag "${common[@]}"
  python local/extract_features.py --feat-type pixels --pixel-size "$pixel_size" \
    --output-dir data/feats/pixels "${common[@]}"
  python local/extract_features.py --feat-type supervised --checkpoint $exp/supervised/best.pt \
    --eval-view "$eval_view" --output-dir data/feats/supervised_$tag "${common[@]}"
  end_stage $(for f in $feats; do echo data/feats/$f/info.json; done)
fi

# ---- stage 4: linear probes + results ----
if begin_stage 4 "linear probes and results table" $exp_marks/stage4.done \
    "seed=$seed probe_epochs=$probe_epochs feats=$(stage_sig $exp_marks/stage3.done)"; then
  for feat in $feats; do
    python $CPC_ROOT/local/probe.py image_class --feature-dir data/feats/$feat \
      --classes $manifests/classes.txt --output-dir $exp/probe_image_class/$feat \
      --seed "$seed" --epochs "$probe_epochs" --batch-size "$probe_batch" --min-steps 0
  done
  python $CPC_ROOT/local/make_results.py --exp-dir $exp --tag "$tag"
  end_stage $(for f in $feats; do echo $exp/probe_image_class/$f/results.json; done) \
    $exp/RESULTS.md $exp/results.json
  log "results: $exp/RESULTS.md"
fi
