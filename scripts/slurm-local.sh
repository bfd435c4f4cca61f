#!/usr/bin/env bash
# A single-machine Slurm for the cluster tests: munged, slurmctld and slurmd on localhost, with two
# partitions over one CPU node and no accounting database. Nothing in /etc/slurm is touched: the
# configuration lives in $PEFT_SLURM_DIR and clients find it through SLURM_CONF.
#
#   scripts/slurm-local.sh install   # apt-get install slurm-wlm munge (Debian/Ubuntu, as root)
#   scripts/slurm-local.sh start     # prints the SLURM_CONF to export
#   scripts/slurm-local.sh stop
set -euo pipefail
dir=${PEFT_SLURM_DIR:-/tmp/peft-bench-slurm}
conf=$dir/slurm.conf
host=$(hostname -s)

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

start() {
  if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "a slurmctld or slurmd already runs here; stop it first (its ports would clash)" >&2
    return 1
  fi
  mkdir -p "$dir"/{state,spool,log}
  cat >"$conf" <<CONF
ClusterName=peftbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=second Nodes=$host MaxTime=INFINITE State=UP
CONF
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  pgrep -x munged >/dev/null || munged --force
  slurmctld -f "$conf"
  slurmd -f "$conf"
  export SLURM_CONF=$conf
  for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && { echo "SLURM_CONF=$conf"; return 0; }
    sleep 0.5
  done
  echo "slurm did not come up; logs in $dir/log" >&2
  return 1
}

stop() {
  # cancel what is left (a test that failed may leave a hanging job), then the daemons
  SLURM_CONF=$conf scancel --user "$(id -un)" 2>/dev/null || true
  for _ in $(seq 20); do
    SLURM_CONF=$conf squeue -h 2>/dev/null | grep -q . || break
    sleep 0.5
  done
  for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  for _ in $(seq 20); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 0.5
  done
  rm -rf "$dir"
}

"${1:?usage: slurm-local.sh install|start|stop}"
