#!/usr/bin/env bash
# GPU benchmark and smoke test for one NVIDIA GPU (sized for an H200; about 4 minutes).
#
#   local/bench_gpu.sh [--out-dir DIR] [--steps N] [--config NAME] [--device cuda|cpu]
#
# Needs only the repository and its environment (local/setup_env.sh); it builds a tiny
# embedded corpus itself. Without a visible NVIDIA GPU it prints a message and exits 0.
#
#   1. the paper config (egs/librispeech100/conf/cpc_paper.yaml) with bf16 autocast and
#      torch.compile on one GPU, at the paper's 8 windows per GPU and at 64: steps/s, audio
#      hours per hour (= audio s/s), model FLOP/s as a fraction (MFU) of the bf16 matmul peak
#      measured in the same run; the nominal H200 dense bf16 peak (989 TFLOP/s) is printed
#      for reference. Also feature extraction on the GPU (x real time).
#   2. a DDP smoke run: torchrun with 1 process, nccl backend, a few DDP steps of the paper
#      model, checking the loss is finite and the ranks hold identical parameters.
#   3. the real training entry point (local/train.py under torchrun, cpc_tiny.yaml, bf16) for
#      20 steps on the tiny corpus: data loading with pinned memory, resumable checkpoints.
# Outputs in DIR (default: bench_gpu): bench_b8.json, bench_b64.json (local/bench.py's JSON),
# ddp_smoke.json, train_tiny/ (the experiment directory of step 3), and the tables on stdout.
# --config picks another config for steps 1-2; --device cpu runs the same steps on the CPU
# (gloo instead of nccl), to check the script itself, e.g. --device cpu --config cpc_tiny.
set -euo pipefail

out_dir=bench_gpu
steps=30
config=cpc_paper
device=cuda
while [ $# -gt 0 ]; do
  case $1 in
    --out-dir) out_dir=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_gpu.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (bench_gpu.sh) $*" >&2; }

case $device in
  cuda|cpu) ;;
  *) echo "bench_gpu.sh: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;;
esac
if [ "$device" = cuda ] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; }; then
  echo "bench_gpu.sh: no NVIDIA GPU found (nvidia-smi lists none); skipping the GPU benchmark"
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CPC_VENV=$("$root/local/setup_env.sh" | tail -n 1)
export CPC_VENV
. "$root/path.sh"
if [ "$device" = cuda ]; then
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench_gpu.sh: torch in $CPC_VENV sees no CUDA device; skipping the GPU benchmark"
    exit 0
  fi
  nvidia-smi -L >&2
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd -P)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bench=(python "$root/local/bench.py" --device "$device" --configs "$config" --nproc 1
  --steps "$steps" --warmup 10 --quick true --work-dir "$work/bench")

log "1a. $config, bf16 + torch.compile, 8 windows per step (the paper's per-GPU batch)"
"${bench[@]}" --precision bf16 --compile true --parts peak,train,extract \
  --json "$out_dir/bench_b8.json"
log "1b. the same at 64 windows per step"
"${bench[@]}" --precision bf16 --compile true --parts peak,train \
  --override data.batch_size=64 --json "$out_dir/bench_b64.json"

log "2. DDP smoke run: torchrun, 1 process ($([ "$device" = cuda ] && echo nccl || echo gloo))"
torchrun --standalone --nproc-per-node 1 "$root/local/bench.py" --ddp-smoke \
  "$out_dir/ddp_smoke.json" --device "$device" --configs "$config" --steps 3

log "3. local/train.py under torchrun on $device (cpc_tiny, bf16, 20 steps)"
rm -rf "$out_dir/train_tiny"
torchrun --standalone --nproc-per-node 1 "$root/local/train.py" \
  --config "$root/egs/librispeech100/conf/cpc_tiny.yaml" --exp-dir "$out_dir/train_tiny" \
  --manifest-dir "$work/bench/corpus/manifests" \
  --override train.device="$device" train.precision=bf16 train.max_steps=20 train.progress_bar=false
test -f "$out_dir/train_tiny/best.pt"

log "done; results in $out_dir (nominal H200 dense bf16 peak: 989 TFLOP/s)"
