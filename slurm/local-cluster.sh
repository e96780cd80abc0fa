#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests and for trying the batch scripts.
#
# Usage:   slurm/local-cluster.sh start|stop|status
#          eval "$(slurm/local-cluster.sh env)"   # then sbatch, squeue, ... talk to it
#
# start    starts munged, slurmctld and slurmd on 127.0.0.1 (one node "localhost" in
#          partition "debug") and waits until the node is idle; prints the SLURM_CONF line.
# stop     cancels its jobs and stops the three daemons by the PIDs in their pid files.
# status   says whether the daemons are running (exit 0) or not (exit 1).
#
# Needs Debian's slurmctld, slurmd, slurm-client and munge packages and root (slurmd
# launches jobs); exit status 3 means "cannot start Slurm here", with the reason on stderr.
# Everything (config, munge key and socket, state, spool, logs, pid files) lives in
# SLURM_LOCAL_DIR; nothing under /etc or /var is used.
#
# Settings (environment variables, all optional):
#   SLURM_LOCAL_DIR=build/slurm   SLURM_LOCAL_CPUS=4 (CPUs the node declares)
#   SLURM_LOCAL_PORT=16817 (slurmctld; slurmd uses the next port)
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin  # the daemons live there; not every root PATH has it

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(mkdir -p "${SLURM_LOCAL_DIR:-$REPO/build/slurm}" && cd "${SLURM_LOCAL_DIR:-$REPO/build/slurm}" && pwd)
CPUS=${SLURM_LOCAL_CPUS:-4}
PORT=${SLURM_LOCAL_PORT:-16817}
export SLURM_CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
DAEMONS=(slurmd slurmctld munged)

cannot_start() {
    echo "local-cluster: cannot start Slurm: $*" >&2
    exit 3
}

pid_of() {  # the PID in daemon $1's pid file, if that process is alive
    local file=$DIR/run/$1.pid
    [[ -s $file ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

write_config() {
    cat >"$SLURM_CONF" <<EOF
# Written by slurm/local-cluster.sh: one node on 127.0.0.1, all state under $DIR.
ClusterName=mpigd-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# The pip mpich wheel speaks PMI-2; with --mpi=none srun would start N size-1 worlds.
MpiDefault=pmi2
# The node may declare more CPUs than the host has (oversubscribed tests).
SlurmdParameters=config_overrides
# An afterok on a failed job is cancelled instead of pending forever.
DependencyParameters=kill_invalid_depend
# Finished jobs leave the queue quickly, so sbatch --wait polls every 2 s.
MinJobAge=5
ReturnToService=2
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    install -d -o munge -g munge -m 0711 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" \
        --seed-file="$DIR/munge/munged.seed" || return 1
    ln -sf "$DIR/munge/munged.pid" "$DIR/run/munged.pid"
}

wait_until_idle() {  # polls sinfo for up to 30 s
    local state="" deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        state=$(timeout 5 sinfo -h -n localhost -o %T 2>/dev/null || true)
        [[ $state == idle ]] && return 0
        sleep 0.2
    done
    cannot_start "node localhost is '${state:-unknown}' after 30 s; see $DIR/log/"
}

start() {
    local daemon
    for daemon in slurmctld slurmd munged mungekey sinfo sbatch runuser; do
        command -v "$daemon" >/dev/null ||
            cannot_start "$daemon not found (apt-get install slurmctld slurmd slurm-client munge)"
    done
    [[ $(id -u) == 0 ]] || cannot_start "slurmd must run as root (running as $(id -un))"
    id munge >/dev/null 2>&1 || cannot_start "no munge user (is the munge package installed?)"
    ((${#SOCKET} < 100)) || cannot_start "socket path too long: $SOCKET (set SLURM_LOCAL_DIR)"
    if status >/dev/null; then
        echo "local-cluster: already running"
        echo "export SLURM_CONF=$SLURM_CONF"
        return 0
    fi
    stop >/dev/null
    mkdir -p "$DIR"/{state,spool,log,run}
    rm -rf "${DIR:?}"/state/* "${DIR:?}"/spool/*
    chmod 0755 "$DIR"
    write_config
    start_munge || cannot_start "munged did not start; see $DIR/munge/munged.log"
    slurmctld || cannot_start "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -N localhost || cannot_start "slurmd did not start; see $DIR/log/slurmd.log"
    wait_until_idle
    echo "local-cluster: node localhost idle with $CPUS CPUs; state in $DIR"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
    local daemon pid
    if [[ -n $(pid_of slurmctld) ]]; then
        scancel --partition=debug >/dev/null 2>&1 || true
    fi
    for daemon in "${DAEMONS[@]}"; do
        pid=$(pid_of "$daemon") || continue
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
        fi
        echo "local-cluster: stopped $daemon ($pid)"
    done
}

status() {
    local daemon running=0
    for daemon in "${DAEMONS[@]}"; do
        if pid_of "$daemon" >/dev/null; then
            echo "$daemon: running ($(pid_of "$daemon"))"
            running=$((running + 1))
        else
            echo "$daemon: not running"
        fi
    done
    ((running == ${#DAEMONS[@]}))
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
