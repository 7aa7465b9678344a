#!/usr/bin/env bash
# One host, all its local devices (CPU, one or more GPUs, or a single TPU VM).
#   launch/single_host.sh configs/xlmr_base_kmlm_mix.py [WORKDIR] [key=value ...]
# Resumes automatically when WORKDIR already holds checkpoints.
set -euo pipefail
config=${1:?usage: launch/single_host.sh CONFIG [WORKDIR] [key=value ...]}
workdir=${2:-workdir/$(basename "$config" .py)}
shift $(( $# >= 2 ? 2 : 1 ))
resume=()
if [ -d "$workdir/checkpoints" ] && [ -n "$(ls -A "$workdir/checkpoints" 2>/dev/null)" ]; then
  resume=(--resume)
fi
exec kmlm-jax train --config "$config" --workdir "$workdir" "${resume[@]}" "$@"
