#!/usr/bin/env bash
# CPC on LibriSpeech train-clean-100 (van den Oord et al., 2018, section 3.1).
#
# Stages (numbers never change meaning):
#  -1  (--download true) download LibriSpeech (SHA-256 verified, resumable) [+ CPC labels] -> download/
#   0  corpus -> lhotse manifests (builds the embedded mini-LibriSpeech without --corpus-dir)
#   1  frame-level phone labels + train/test split -> labelled lhotse cuts, data/lang/phones.txt
#   2  CPC pre-training with torchrun (DDP) -> exp/<tag>/
#   3  10 ms feature dumps: CPC c_t, MFCC and random-init baselines -> data/<feat>/
#   4  phone probe (linear and one hidden layer) -> exp/<tag>/probe_phone/
#   5  speaker probe (linear) and the results table -> exp/<tag>/probe_speaker/, RESULTS.md
#   6  downstream ASR: CTC phone recogniser on each dump, PER and learning curve -> exp/<tag>/asr/
#   7  triphone ABX (within / across speaker) on each dump -> exp/<tag>/abx/
#
# Usage: ./run.sh [options]      e.g. ./run.sh --stage 0 --stop-stage 5
# A stage re-runs only when something it is made from changed: an option, the CONTENTS of the
# config, the seed, or an upstream stage's outputs; otherwise it is skipped. exp/<tag>/ is
# named after the config, a non-default seed and the overrides; its checkpoints record the data
# and settings they were trained on, and continuing them under other ones is refused (pass a new
# --tag, or --restart-exp true to move the old experiment aside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0                 # first stage to run (with --download true a run from stage 0 begins with stage -1)
stop_stage=5            # last stage to run (6-7, downstream ASR and ABX, are opt-in: --stop-stage 7)
corpus_dir=""           # LibriSpeech root holding train-clean-100/ (empty: build the embedded mini corpus; with --download true: download_dir/LibriSpeech)
download=false          # stage -1: true = download --download-parts of LibriSpeech into --download-dir first
download_dir=download   # stage -1: archives and LibriSpeech/ (about 6.3 GB for train-clean-100, twice that while unpacking)
download_url=http://www.openslr.org/resources  # stage -1: archives come from <url>/12/<part>.tar.gz (OpenSLR's layout; any mirror with it)
download_parts="train-clean-100 dev-clean test-clean"  # stage -1: LibriSpeech parts to download (any of the seven)
download_checksums=""   # stage -1: sha256sum-format file for archives other than the published ones (empty: built-in OpenSLR values)
labels_url=""           # stage -1: directory URL of the CPC release's label files -> download_dir/cpc_labels (the default --labels-dir then)
labels_dir=""           # dir with converted_aligned_phones.txt, train_split.txt, test_split.txt (empty: the embedded corpus's own; with --corpus-dir: forced alignment)
align=false             # stage 1: true = labels by forced alignment of the transcripts (CMUdict + an aligner trained on the corpus); --labels-dir then only gives the split and the reference the alignment is measured against
align_iterations=12     # stage 1 (alignment): train + re-align rounds after the flat start
align_states=3          # stage 1 (alignment): sub-phone states per phone (1 or 3: begin/middle/end)
align_context=0         # stage 1 (alignment): MFCC frames spliced on each side of the frame the aligner's classifier labels (0: the frame alone, with its deltas: see --align-deltas)
align_sil_states=1      # stage 1 (alignment): sub-states of a pause (1: one silence class; up to --align-states: onset ... end, like a phone's)
align_deltas=0          # stage 1 (alignment): MFCC delta order of the aligner's features (0: the 13 static MFCCs, each of its own 25 ms window; 1: + deltas, whose window spans +-2 frames; 2: + delta-deltas, +-4 frames)
align_final_deltas=2    # stage 1 (alignment): after the rounds, one more round (train, re-align) on MFCCs with this delta order, which gives the labels (2: + deltas + delta-deltas; -1: no extra round)
align_sil_frames=1      # stage 1 (alignment): shortest pause the aligner puts between words, in 10 ms frames (Kaldi's silence HMM: 5)
mini_speakers=40        # embedded corpus: number of speakers
mini_minutes=120        # embedded corpus: total minutes of audio
mini_clean=false        # embedded corpus: true = no per-chapter recording channel (clean synthesis)
seed=42                 # random seed (corpus, training, probes)
nj=2                    # parallel jobs for data preparation (stage 0: the embedded corpus, the manifests)
feature_jobs=""         # stages 3-5: the dumps and probes of the feature sets run as this many processes side by side (cores / feature_jobs threads each; empty: one per feature set, 3 by default, so no core idles while the last set finishes); logs in exp/<tag>/log/
config=conf/cpc_small.yaml   # training config (conf/cpc_paper.yaml, conf/cpc_small.yaml, conf/cpc_tiny.yaml)
overrides=""            # config overrides, space separated, e.g. "optim.lr=1e-3 train.max_steps=200"
checkpoint=""           # stages 3-7: evaluate this checkpoint instead of training one (stage 2 is skipped): another run's exp/<tag>/best.pt, or a CPC_audio checkpoint (architecture from the checkpoint_args.json beside it, or --cpc-audio-args)
cpc_audio_args=""       # architecture of a CPC_audio --checkpoint in its names, e.g. "hiddenEncoder=256 hiddenGar=256 nLevelsGRU=2 arMode=LSTM normMode=layerNorm"
tag=""                  # experiment name under exp/ (empty: config name [+ _seed<N> if not 42] [+ overrides hash])
restart_exp=false       # stage 2: if exp/<tag>/ holds checkpoints of other data/config/seed, rename it to exp/<tag>.old-<time> and train anew
nproc_per_node=""       # training processes per node (empty: number of GPUs, else 2 on CPUs: two processes of cores/2 threads train faster than one of all cores; data.batch_size is per process, so conf/cpc_small.yaml's 4 gives a global batch of 8)
nnodes=1                # number of nodes for multi-node training
node_rank=0             # this node's rank (multi-node)
rdzv_endpoint=""        # host:port of the rendezvous for multi-node training (empty: single node)
extract_precision=auto  # stage 3: bf16 = the CPC and random-init encoders' convolutions under bfloat16 autocast (the GRU stays float32; faster on CPUs with bf16 instructions, several times slower without them); fp32; auto = bf16 where the CPU (AVX512-BF16/AMX) or GPU computes bf16 natively, else fp32
dump_z=false            # stage 3: also dump the encoder output z_t (model.channels dims: 128 in cpc_small, 512 in cpc_paper)
baselines=true          # stages 3-5: also dump and probe the MFCC and random-init baselines (false: the model's own features only, e.g. for local/run_table2.sh)
speaker_protocol=pooled # stage 5: pooled (mean c_t over 20480-sample windows) or frame (per 10 ms frame)
holdout_chapters=false  # stage 5: hold whole chapters out of the speaker probe's training set
probe_max_frames=1000000  # stage 4: the phone probes use a seeded subset of whole utterances with at most this many training frames (2.8 h) and a quarter as many test frames, so their time stops growing with the corpus; 0: all
probe_block_frames=131072  # stage 4: the phone probes read the frames from the dump in blocks of whole utterances with at most this many frames (a new random order every epoch), so memory holds one block (128 MB of 256-dim features) whatever the corpus size; 0: all frames in memory
probe_schedule=plateau  # stage 4: plateau = phone probes train until the loss on 5% of the training utterances stops improving; cosine = a fixed number of epochs
probe_precision=auto    # stage 4: bf16 = the phone probes' matrix products under bfloat16 autocast (about twice as fast on CPUs with bf16 instructions, e.g. AVX512-BF16/AMX; accuracies within a fraction of a point of fp32); fp32; auto = bf16 where the machine computes bf16 natively, else fp32
probe_linear_check_every=500  # stage 4 (plateau): updates between held-out checks of the linear probes (the MLP's: 250); weak features improve by less than 0.1% per 250 updates long before a linear probe has converged
probe_min_steps=5000    # stages 4-5: linear probes train for at least this many updates (more epochs on small data), to converge like a full-batch logistic regression
asr_fractions="0.1 0.3 1.0"  # stage 6: shares of the train split for the ASR learning curve
asr_epochs=3            # stage 6: ASR training epochs (same for every feature set)
asr_min_steps=500       # stage 6: ASR trains for at least this many updates (more epochs on a small share)
asr_words=true          # stage 6: also decode words (CMUdict prefix tree + word bigram of the train transcripts) and score WER
abx_max_triplets=20000  # stage 7: ABX triplets per mode (within / across speaker) at most

declare -r _seed_default=$seed
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

# ---- derived values ----
if [ "$download" = true ]; then
  [ "$stage" -eq 0 ] && stage=-1
  [ -z "$corpus_dir" ] && corpus_dir=$download_dir/LibriSpeech
  [ -z "$labels_dir" ] && [ -n "$labels_url" ] && labels_dir=$download_dir/cpc_labels
fi
max_frame_diff=3  # labels vs audio: frame-count mismatch tolerated (trim/pad) before refusing
if [ -z "$corpus_dir" ]; then
  mini_dir=download/mini_librispeech
  corpus_root=$mini_dir/LibriSpeech
  [ -z "$labels_dir" ] && labels_dir=$mini_dir/labels
else
  mini_dir=""
  corpus_root=$corpus_dir
  if [ -z "$labels_dir" ]; then
    log "no --labels-dir: stage 1 forced-aligns the transcripts (--align true)"
    align=true
  fi
fi
if [ ! -f "$config" ]; then
  log "--config $config does not exist (choose one of: $(ls conf/*.yaml | tr '\n' ' '))"
  exit 1
fi
config_md5=$(md5sum <"$config" | cut -c1-12)  # stages depend on the config's contents
if [ -n "$checkpoint" ]; then
  if [ ! -f "$checkpoint" ]; then
    log "--checkpoint $checkpoint does not exist"
    exit 1
  fi
  ckpt_sig="$(md5sum <"$checkpoint" | cut -c1-12) args=${cpc_audio_args// /,}"
  [ -z "$tag" ] && tag=ext_$(basename "$checkpoint" .pt)_$(printf '%s' "$ckpt_sig" | md5sum | cut -c1-6)
fi
[ -z "$tag" ] && tag=$(default_tag "$config" "$seed" "$_seed_default" "$overrides")
[ -z "$nproc_per_node" ] && nproc_per_node=$(gpus_or 2)
# What precision auto means on this machine (train.precision: auto in the config, the options
# above), resolved once: the stage markers hold the precision used, not the word auto.
native_precision=$(python -m cpc.perf auto)
[ "$extract_precision" = auto ] && extract_precision=$native_precision
[ "$probe_precision" = auto ] && probe_precision=$native_precision
exp=exp/$tag
manifests=data/manifests
data_marks=data/.stages
exp_marks=$exp/.stages

# ---- stage -1: download ----
if [ "$download" = true ] && begin_stage -1 "download LibriSpeech ($download_parts)" $data_marks/stage-1.done \
    "parts=${download_parts// /,} url=$download_url checksums=$([ -n "$download_checksums" ] && md5sum <"$download_checksums" | cut -c1-12) labels_url=$labels_url"; then
  dl_args=(--target-dir "$download_dir" --parts $download_parts --base-url "$download_url"
    --report data/download.json)
  [ -n "$download_checksums" ] && dl_args+=(--checksums "$download_checksums")
  [ -n "$labels_url" ] && dl_args+=(--labels-url "$labels_url" --labels-dir "$labels_dir" \
    --check-labels true --corpus-dir "$corpus_dir")
  python local/download.py "${dl_args[@]}"
  end_stage data/download.json $(for p in $download_parts; do echo "$download_dir/LibriSpeech/$p/.completed"; done)
fi

# ---- stage 0: corpus -> lhotse manifests ----
if [ -n "$mini_dir" ]; then
  # The builder's code is part of the corpus's identity: a corpus built by another version of
  # it (other pronunciations, voices, channels) is rebuilt, never silently reused.
  builder_md5=$(cd "$CPC_ROOT" && cat cpc/audio/{mini_librispeech,espeak,voices,text,lexicon,constants}.py \
    egs/librispeech100/local/make_mini_librispeech.py | md5sum | cut -c1-10)
  corpus_opts="mini_speakers=$mini_speakers mini_minutes=$mini_minutes mini_clean=$mini_clean seed=$seed builder=$builder_md5"
else
  corpus_opts="corpus_dir=$(cd "$corpus_dir" 2>/dev/null && pwd -P || echo "$corpus_dir")"
fi
if begin_stage 0 "prepare lhotse manifests" $data_marks/stage0.done "$corpus_opts"; then
  if [ -n "$mini_dir" ]; then
    log "building the embedded mini-LibriSpeech in $mini_dir"
    python local/make_mini_librispeech.py --out-dir "$mini_dir" \
      --speakers "$mini_speakers" --minutes "$mini_minutes" --clean "$mini_clean" \
      --seed "$seed" --num-jobs "$nj"
  fi
  python local/prepare_manifests.py --corpus-dir "$corpus_root" --output-dir $manifests \
    --num-jobs "$nj"
  if [ -z "$mini_dir" ] && [ -n "$labels_dir" ]; then  # the real corpus's labels, by content
    python local/download.py --parts --labels-dir "$labels_dir" --check-labels true \
      --corpus-dir "$corpus_root" --report $manifests/labels_check.json
  fi
  end_stage $manifests/librispeech_recordings_train-clean-100.jsonl.gz \
    $manifests/librispeech_supervisions_train-clean-100.jsonl.gz
fi

# ---- stage 1: phone labels + split -> labelled cuts ----
# With --align true the labels are made by local/align.py in data/align (CPC release format);
# --labels-dir, when given, then only provides the split and the reference for the agreement.
stage1_labels=$labels_dir
align_opts=(--iterations "$align_iterations" --states "$align_states" --context "$align_context"
  --sil-frames "$align_sil_frames" --sil-states "$align_sil_states" --deltas "$align_deltas"
  --final-deltas "$align_final_deltas" --seed "$seed")
if [ "$align" = true ]; then
  stage1_labels=data/align
  [ -n "$labels_dir" ] && align_opts+=(--split-dir "$labels_dir" --reference-dir "$labels_dir")
fi
if begin_stage 1 "attach phone labels, split train/test" $data_marks/stage1.done \
    "labels_dir=$labels_dir align=$align align_opts=$(IFS=,; echo "${align_opts[*]}") max_frame_diff=$max_frame_diff corpus=$(stage_sig $data_marks/stage0.done)"; then
  if [ "$align" = true ]; then
    python local/align.py --manifest-dir $manifests --output-dir data/align "${align_opts[@]}"
  fi
  python local/prepare_labels.py --manifest-dir $manifests --labels-dir "$stage1_labels" \
    --lang-dir data/lang --max-frame-diff $max_frame_diff
  end_stage $manifests/librispeech_cuts_train.jsonl.gz $manifests/librispeech_cuts_test.jsonl.gz \
    data/lang/phones.txt
fi

# ---- stage 2: CPC pre-training (torchrun, DDP) ----
[ -n "$checkpoint" ] && [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && \
  log "stage 2 skipped: evaluating --checkpoint $checkpoint"
if [ -z "$checkpoint" ] && begin_stage 2 "CPC pre-training ($tag)" $exp_marks/stage2.done \
    "config=$config config_md5=$config_md5 overrides=${overrides// /,} seed=$seed nproc=$nproc_per_node nnodes=$nnodes auto_precision=$native_precision data=$(stage_sig $data_marks/stage1.done)"; then
  train_args=(--config "$config" --exp-dir $exp --data-dir $manifests --seed "$seed")
  # shellcheck disable=SC2206
  [ -n "$overrides" ] && train_args+=(--override $overrides)
  train_exp 2 $exp torchrun "${train_args[@]}"
  end_stage $exp/best.pt
fi

# ---- stage 3: feature dumps ----
dump_dirs="cpc_$tag mfcc random_$tag"
if [ "$dump_z" = true ]; then dump_dirs="$dump_dirs cpc_${tag}_z random_${tag}_z"; fi
baselines_sig=""  # only a run without baselines says so: the default's identity is unchanged
if [ "$baselines" != true ]; then
  baselines_sig="baselines=false "
  dump_dirs="cpc_$tag"
  if [ "$dump_z" = true ]; then dump_dirs="$dump_dirs cpc_${tag}_z"; fi
fi
probe_feats=$dump_dirs
if [ -n "$checkpoint" ]; then
  model_sig="checkpoint=$ckpt_sig"
  cpc_ckpt=$checkpoint
else
  model_sig="train=$(stage_sig $exp_marks/stage2.done)"
  cpc_ckpt=$exp/best.pt
fi
if begin_stage 3 "feature dumps (cpc, mfcc, random init)" $exp_marks/stage3.done \
    "dump_z=$dump_z precision=$extract_precision ${baselines_sig}$model_sig data=$(stage_sig $data_marks/stage1.done)"; then
  extract_one() {
    case $1 in
      cpc)
        # shellcheck disable=SC2086
        python local/extract_features.py --feat-type cpc --checkpoint "$cpc_ckpt" \
          ${cpc_audio_args:+--cpc-audio-args $cpc_audio_args} \
          --manifest-dir $manifests --output-dir data/cpc_$tag --dump-z "$dump_z" \
          --num-jobs "$job_threads" --precision "$extract_precision" ;;
      mfcc)
        python local/extract_features.py --feat-type mfcc \
          --manifest-dir $manifests --output-dir data/mfcc --num-jobs "$job_threads" ;;
      random)
        # shellcheck disable=SC2086
        python local/extract_features.py --feat-type random --config "$config" \
          ${overrides:+--override $overrides} --seed "$seed" --dump-z "$dump_z" \
          --manifest-dir $manifests --output-dir data/random_$tag --num-jobs "$job_threads" \
          --precision "$extract_precision" ;;
    esac
  }
  extract_types=cpc
  if [ "$baselines" = true ]; then extract_types="cpc random mfcc"; fi
  # shellcheck disable=SC2086
  run_jobs "${feature_jobs:-$(num_words $extract_types)}" $exp/log/extract extract_one $extract_types
  end_stage $(for f in $dump_dirs; do echo data/$f/info.json; done)
fi

# ---- stage 4: phone probes ----
if begin_stage 4 "phone probes" $exp_marks/stage4.done \
    "seed=$seed min_steps=$probe_min_steps max_frames=$probe_max_frames block_frames=$probe_block_frames schedule=$probe_schedule linear_check_every=$probe_linear_check_every precision=$probe_precision feats=$(stage_sig $exp_marks/stage3.done)"; then
  phone_probe() {
    python $CPC_ROOT/local/probe.py phone --feature-dir data/$1 --lang-dir data/lang \
      --output-dir $exp/probe_phone/$1 --seed "$seed" --min-steps "$probe_min_steps" \
      --max-train-frames "$probe_max_frames" --max-test-frames $((probe_max_frames / 4)) \
      --block-frames "$probe_block_frames" --schedule "$probe_schedule" --precision "$probe_precision" \
      --linear-check-every "$probe_linear_check_every" \
      --num-threads "$job_threads"
  }
  # shellcheck disable=SC2086
  run_jobs "${feature_jobs:-$(num_words $probe_feats)}" $exp/log/probe_phone phone_probe $probe_feats
  end_stage $(for f in $probe_feats; do echo $exp/probe_phone/$f/results.json; done)
fi

# ---- stage 5: speaker probes + results ----
if begin_stage 5 "speaker probes and results table" $exp_marks/stage5.done \
    "seed=$seed min_steps=$probe_min_steps protocol=$speaker_protocol holdout_chapters=$holdout_chapters feats=$(stage_sig $exp_marks/stage3.done) phone=$(stage_sig $exp_marks/stage4.done)"; then
  speaker_probe() {
    python $CPC_ROOT/local/probe.py speaker --feature-dir data/$1 \
      --output-dir $exp/probe_speaker/$1 --seed "$seed" --min-steps "$probe_min_steps" \
      --protocol "$speaker_protocol" --holdout-chapters "$holdout_chapters" \
      --num-threads "$job_threads"
  }
  # shellcheck disable=SC2086
  run_jobs "${feature_jobs:-$(num_words $probe_feats)}" $exp/log/probe_speaker speaker_probe $probe_feats
  python $CPC_ROOT/local/make_results.py --exp-dir $exp --tag "$tag" --domain audio
  end_stage $(for f in $probe_feats; do echo $exp/probe_speaker/$f/results.json; done) \
    $exp/RESULTS.md $exp/results.json
  log "results: $exp/RESULTS.md"
fi

# ---- stage 6: downstream ASR ----
if begin_stage 6 "downstream ASR (CTC phone recogniser)" $exp_marks/stage6.done \
    "seed=$seed fractions=${asr_fractions// /,} epochs=$asr_epochs min_steps=$asr_min_steps words=$asr_words feats=$(stage_sig $exp_marks/stage3.done)"; then
  # shellcheck disable=SC2046,SC2086
  python local/train_asr.py --feature-dir $(for f in $probe_feats; do echo data/$f; done) \
    --output-dir $exp/asr --fractions $asr_fractions --epochs "$asr_epochs" \
    --min-steps "$asr_min_steps" --words "$asr_words" --seed "$seed"
  end_stage $exp/asr/results.json $exp/asr/RESULTS.md
  log "ASR results: $exp/asr/RESULTS.md"
fi

# ---- stage 7: ABX ----
if begin_stage 7 "triphone ABX" $exp_marks/stage7.done \
    "seed=$seed max_triplets=$abx_max_triplets feats=$(stage_sig $exp_marks/stage3.done)"; then
  # shellcheck disable=SC2046
  python local/abx.py --feature-dir $(for f in $probe_feats; do echo data/$f; done) \
    --output-dir $exp/abx --max-triplets "$abx_max_triplets" --seed "$seed"
  end_stage $exp/abx/results.json $exp/abx/RESULTS.md
  log "ABX results: $exp/abx/RESULTS.md"
fi
