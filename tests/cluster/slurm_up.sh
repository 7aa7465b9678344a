#!/usr/bin/env bash
# A one-machine SLURM cluster (slurmctld + slurmd on this host, munge, slurmdbd for sacct).
#   tests/cluster/slurm_up.sh        installs (Debian's slurm-wlm 22.05), configures, starts,
#                                    waits until `sinfo` shows the node idle
#   tests/cluster/slurm_up.sh down   stops the daemons
# Idempotent: running it twice leaves one running cluster. Needs root (CI runs as root).
set -euo pipefail
action=${1:-up}
conf_dir=/etc/slurm
node=$(hostname -s)

running() {  # any of the named daemons (pgrep -x takes names of at most 15 characters)
  for daemon in "$@"; do
    pgrep -x "$daemon" >/dev/null && return 0
  done
  return 1
}

stop() {
  for daemon in slurmd slurmctld slurmdbd munged mariadbd; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    running slurmd slurmctld slurmdbd munged mariadbd || return 0
    sleep 0.2
  done
}

if [ "$action" = down ]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
    || ! command -v mariadbd >/dev/null; then
  packages=(slurm-wlm slurmdbd munge mariadb-server)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null \
    || { apt-get update -q >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null; }
fi

# munge: one key, the daemon as root (--force: no separate munge user needed).
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
chmod 400 /etc/munge/munge.key
chown -R root:root /etc/munge /var/lib/munge /var/log/munge /run/munge
pgrep -x munged >/dev/null || munged --force

# Accounting (sacct): MariaDB on its socket, slurmdbd on localhost.
if ! pgrep -x mariadbd >/dev/null; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  (mariadbd --user=mysql >/var/log/mysql-kmlm.log 2>&1 &)
  for _ in $(seq 60); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
fi
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'kmlm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
mkdir -p "$conf_dir"
cat > "$conf_dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=kmlm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$conf_dir/slurmdbd.conf"
mkdir -p /var/log/slurm
pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done

cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf_dir/slurm.conf.new" <<CONF
ClusterName=kmlm
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
JobRequeue=1
KillWait=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
if ! cmp -s "$conf_dir/slurm.conf.new" "$conf_dir/slurm.conf" 2>/dev/null; then
  mv "$conf_dir/slurm.conf.new" "$conf_dir/slurm.conf"
  stop_slurm=1
else
  rm "$conf_dir/slurm.conf.new"
  stop_slurm=0
fi
if [ "$stop_slurm" = 1 ]; then  # a new configuration: restart both daemons
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 100); do
    running slurmd slurmctld || break
    sleep 0.2
  done
fi
sacctmgr -n list cluster format=cluster | grep -qw kmlm || sacctmgr -i add cluster kmlm >/dev/null
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated) echo "slurm: node $node $state ($cpus CPUs)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm: node $node did not become idle (state: ${state:-none}); see /var/log/slurm" >&2
exit 1
