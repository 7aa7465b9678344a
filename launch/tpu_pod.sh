#!/usr/bin/env bash
# All workers of a Cloud TPU pod slice run the same command; JAX finds its peers.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/xlmr_large_kmlm_mix.py /mnt/shared/workdir [key=value ...]
# Assumes kmlm-jax is checked out and set up (`make venv`) at ~/kmlm-jax on every worker and
# that WORKDIR is a path every worker sees (a mounted bucket or NFS).
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [key=value ...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  cd ~/kmlm-jax &&
  resume=\$( [ -n \"\$(ls -A $workdir/checkpoints 2>/dev/null)\" ] && echo --resume ) &&
  .venv/bin/kmlm-jax train --config $config --workdir $workdir --distributed \$resume $extra"
