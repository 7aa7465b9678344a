#!/usr/bin/env bash
# The body of the SLURM launch scripts (slurm_gpu.sbatch, slurm_cpu.sbatch): runs inside the
# job's allocation, one `kmlm-jax train --distributed` task per SLURM task.
#   slurm_train.sh CONFIG WORKDIR [key=value ...]
# - Resumes when WORKDIR already holds checkpoints (a requeued job restarts this script).
# - Preemption and the time limit: SLURM sends SIGTERM to the tasks (`#SBATCH
#   --signal=TERM@300` before the limit, `scancel --signal=TERM JOB`, or `scontrol requeue
#   JOB`); every task saves a checkpoint and exits 0 with status "preempted" in
#   WORKDIR/summary.json. Then this script requeues the job itself (`scontrol requeue`):
#   SLURM requeues on node failure and preemption, not when a job reaches its time limit.
#   The requeued job resumes bit-identically from that checkpoint.
set -euo pipefail
config=${1:?usage: slurm_train.sh CONFIG WORKDIR [key=value ...]}
workdir=${2:?usage: slurm_train.sh CONFIG WORKDIR [key=value ...]}
shift 2
resume=()
if [ -d "$workdir/checkpoints" ] && [ -n "$(ls -A "$workdir/checkpoints" 2>/dev/null)" ]; then
  resume=(--resume)
fi
echo "slurm_train: job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}," \
  "${SLURM_NTASKS:-1} tasks, ${resume[*]:-fresh start}"
srun --kill-on-bad-exit=1 kmlm-jax train --config "$config" --workdir "$workdir" \
  --distributed "${resume[@]}" "$@"
status=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' \
  "$workdir/summary.json" 2>/dev/null || echo unknown)
echo "slurm_train: training ended with status $status"
if [ "$status" = preempted ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "slurm_train: requeueing job $SLURM_JOB_ID to resume from the checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
fi
