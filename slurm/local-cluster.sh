#!/bin/bash
# A real one-node SLURM cluster on this machine, to run slurm/stage*.sh unchanged without a cluster
# (the tests do; docs/scale.md). Debian's slurmctld + slurmd + munge, 8 fake GPUs (character
# devices like /dev/null) so `--gpus-per-node=8` schedules, and CPUs=16 declared so a 2-core
# machine accepts the scripts' headers. Needs root.
#
#   slurm/local-cluster.sh install   # apt-get the packages if slurmctld is missing
#   slurm/local-cluster.sh start     # configure, start munged, slurmctld, slurmd; wait for an idle node
#   slurm/local-cluster.sh stop      # stop all three (by their pid files)
set -euo pipefail

HOST=$(hostname -s)  # slurmd registers under the short name
CONF=/etc/slurm
LOGS=/var/log/slurm

install() {
    if command -v slurmctld >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
    mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd "$LOGS" /run/munge
    cat >"$CONF/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
AuthType=auth/munge
GresTypes=gpu
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmUser=root
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
KillWait=30
# A requeued job waits for its old credential to expire (default 120 s) before it may start again.
AuthInfo=cred_expire=5
NodeName=$HOST CPUs=16 RealMemory=16000 Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    for i in 0 1 2 3 4 5 6 7; do
        [ -e /dev/fakegpu$i ] || mknod /dev/fakegpu$i c 1 3
    done
    echo "NodeName=$HOST Name=gpu File=/dev/fakegpu[0-7]" >"$CONF/gres.conf"
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    mkdir -p /var/lib/munge /var/log/munge
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
}

running() {  # running PIDFILE
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
    install
    stop
    configure
    su -s /bin/sh munge -c /usr/sbin/munged
    munge -n | unmunge >/dev/null
    slurmctld -c -L "$LOGS/ctld.log"   # -c: a clean start, no jobs from an earlier session
    slurmd -L "$LOGS/d.log"
    for _ in $(seq 60); do
        state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*) return ;;
            *inval* | *drain* | *down*) scontrol update nodename="$HOST" state=resume || true ;;
        esac
        sleep 0.5
    done
    echo "local-cluster: node $HOST is not idle (state: ${state:-none}); see $LOGS" >&2
    exit 1
}

stop_pid() {  # stop_pid PIDFILE
    if running "$1"; then
        local pid
        pid=$(cat "$1")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$1"
}

stop() {
    if running /run/slurmctld.pid; then
        scontrol shutdown >/dev/null 2>&1 || true   # stops slurmctld (and lets slurmd see it go)
    fi
    stop_pid /run/slurmctld.pid
    stop_pid /run/slurmd.pid
    stop_pid /run/munge/munged.pid
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
