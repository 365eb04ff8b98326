# How recipe stages launch their jobs. `$train_cmd LOG command args...` runs the command
# and appends its output to LOG; `$cpu_cmd` is the same for CPU-only jobs.
#
# Local machine (default):
export train_cmd="utils/run_local.sh"
export cpu_cmd="utils/run_local.sh"
#
# Slurm: uncomment and adjust. utils/slurm.sh submits with srun and waits, so stages stay
# sequential and resumable; options before the log file go to srun. For multi-node
# training pass --nnodes N --rdzv-endpoint HOST:PORT to run.sh and launch one task per node.
# export train_cmd="utils/slurm.sh --partition gpu --gres gpu:8 --cpus-per-task 32 --time 72:00:00"
# export cpu_cmd="utils/slurm.sh --partition cpu --cpus-per-task 8 --time 4:00:00"
