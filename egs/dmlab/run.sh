#!/usr/bin/env bash
# A2C with a CPC auxiliary loss on first-person 3D tasks (van den Oord et al., 2018,
# section 3.4): DeepMind Lab where it is installed, ViZDoom (embedded default) or MiniGrid.
#
# Stages (numbers never change meaning):
#   0  environment check: renders headless, random-policy steps/s -> exp/<tag>/env_check.json, frame.png
#   1  baseline A2C, one run per seed                             -> exp/<tag>/baseline_seed<N>/
#   2  A2C + CPC auxiliary loss, one run per seed                 -> exp/<tag>/cpc_seed<N>/
#   3  evaluation: mean return over N episodes per seed, and a random policy -> exp/<tag>/eval/
#   4  learning curves (return vs frames, mean and spread over seeds), RESULTS.md, results.json
#
# Usage: ./run.sh [options]      e.g. ./run.sh --stage 0 --stop-stage 4
#        ./run.sh --tiny true    every stage on a tiny MiniGrid variant (a minute or two)
#        ./run.sh --levels paper the paper's five levels (their ViZDoom analogues with the
#                                ViZDoom config; conf/dmlab.yaml for DeepMind Lab itself)
# Each level gets its own experiment exp/<tag>/ (tag: config name [+ level if not the
# config's] [+ overrides hash]). A stage re-runs only when something it is made from changed
# (an option, the CONTENTS of the config, a seed, an upstream stage's outputs); otherwise it
# is skipped. A killed training run resumes from its last checkpoint when run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0                  # first stage to run
stop_stage=4             # last stage to run
config=conf/vizdoom.yaml # training config (conf/vizdoom.yaml, conf/dmlab.yaml, conf/tiny.yaml)
tiny=false               # true: conf/tiny.yaml (MiniGrid, seconds per run), check_steps 200, eval_episodes 4
levels=""                # empty: the config's env.level; "paper": the paper's five levels (analogues under ViZDoom, levels without one skipped); or a space-separated list
seeds="1 2 3"            # training seeds (one baseline and one CPC run each)
overrides=""             # config overrides for both agents, space separated, e.g. "optim.lr=5e-4 train.max_steps=200"
check_steps=2000         # stage 0: random steps timed
eval_episodes=50         # stage 3: evaluation episodes per policy and seed
eval_envs=8              # stage 3: environments played in parallel
eval_seed=0              # stage 3: environment seed of the evaluation episodes (same for every policy)
tag=""                   # experiment name prefix under exp/ (empty: the config's name [+ overrides hash])
restart_exp=false        # stages 1-2: if a run dir holds checkpoints of other inputs, rename it to <dir>.old-<time> and train anew

. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

# ---- derived values ----
if [ "$tiny" = true ]; then
  config=conf/tiny.yaml
  check_steps=200
  eval_episodes=4
fi
if [ ! -f "$config" ]; then
  log "--config $config does not exist (choose one of: $(ls conf/*.yaml | tr '\n' ' '))"
  exit 1
fi
config_md5=$(md5sum <"$config" | cut -c1-12)
suite=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['env']['suite'])" "$config")
default_level=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['env']['level'])" "$config")
if [ "$levels" = paper ]; then
  levels=$(python -c "
import sys
from cpc.rl.envs import DMLAB_ANALOGUES, DMLAB_LEVELS
for lv in DMLAB_LEVELS:
    if sys.argv[1] == 'dmlab':
        print(lv)
    elif DMLAB_ANALOGUES[lv]:
        print(DMLAB_ANALOGUES[lv])
    else:
        print(f'{lv}: no {sys.argv[1]} analogue, skipped', file=sys.stderr)
" "$suite" | tr '\n' ' ')
fi
[ -z "$levels" ] && levels=$default_level
base_tag=${tag:-$(basename "$config" .yaml)}
[ -z "$tag" ] && [ -n "$overrides" ] && base_tag=${base_tag}_$(printf '%s' "$overrides" | md5sum | cut -c1-6)

for level in $levels; do
  exp_tag=$base_tag
  [ "$level" != "$default_level" ] && exp_tag=${base_tag}_$level
  exp=exp/$exp_tag
  marks=$exp/.stages
  level_over="env.level=$level $overrides"
  ident="config=$config config_md5=$config_md5 level=$level overrides=${overrides// /,}"
  log "level $level -> $exp"

  # ---- stage 0: environment check ----
  if begin_stage 0 "environment check ($level)" $marks/stage0.done "$ident steps=$check_steps"; then
    # shellcheck disable=SC2086
    python local/check_env.py --config "$config" --override $level_over --out-dir $exp \
      --steps "$check_steps"
    end_stage $exp/env_check.json
  fi

  # ---- stages 1-2: training runs (one per seed) ----
  for agent in baseline cpc; do
    n=1; [ $agent = cpc ] && n=2
    cpc_flag=false; [ $agent = cpc ] && cpc_flag=true
    if begin_stage $n "$agent training, seeds $seeds ($level)" $marks/stage$n.done \
        "$ident seeds=${seeds// /,} env=$(stage_sig $marks/stage0.done)"; then
      outs=""
      for s in $seeds; do
        run_dir=$exp/${agent}_seed$s
        # shellcheck disable=SC2206
        train_args=(--config "$config" --exp-dir $run_dir --seed "$s" --override $level_over model.cpc=$cpc_flag)
        train_exp $n $run_dir python "${train_args[@]}"
        outs="$outs $run_dir/best.pt"
      done
      # shellcheck disable=SC2086
      end_stage $outs
    fi
  done

  # ---- stage 3: evaluation ----
  if begin_stage 3 "evaluation, $eval_episodes episodes per policy ($level)" $marks/stage3.done \
      "$ident episodes=$eval_episodes envs=$eval_envs eval_seed=$eval_seed base=$(stage_sig $marks/stage1.done) cpc=$(stage_sig $marks/stage2.done)"; then
    ckpts=()
    outs="$exp/eval/random.json"
    for agent in baseline cpc; do
      for s in $seeds; do
        ckpts+=("${agent}_seed$s=$exp/${agent}_seed$s/best.pt")
        outs="$outs $exp/eval/${agent}_seed$s.json"
      done
    done
    rm -rf $exp/eval  # only this stage's policies, never an old seed's
    # shellcheck disable=SC2086
    python local/evaluate.py --config "$config" --override $level_over --out-dir $exp/eval \
      --checkpoints "${ckpts[@]}" --episodes "$eval_episodes" --num-envs "$eval_envs" \
      --seed "$eval_seed"
    # shellcheck disable=SC2086
    end_stage $outs
  fi

  # ---- stage 4: curves and results ----
  if begin_stage 4 "learning curves and results ($level)" $marks/stage4.done \
      "$ident seeds=${seeds// /,} eval=$(stage_sig $marks/stage3.done)"; then
    # shellcheck disable=SC2086
    python local/make_results.py --exp-dir $exp --tag "$exp_tag" --seeds $seeds
    end_stage $exp/RESULTS.md $exp/results.json
    log "results: $exp/RESULTS.md"
  fi
done
