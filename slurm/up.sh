#!/usr/bin/env bash
# `make slurm-up`: a single-host SLURM cluster from Debian's packages (munge, slurmctld, slurmd)
# with a slurm.conf generated for this host's cores and memory, for hydra/launcher=slurm and the
# SLURM tests. Needs root on Debian/Ubuntu. Does nothing where a cluster already answers.
# `make slurm-down` (slurm/down.sh) stops what this started.
set -euo pipefail

conf=/etc/slurm/slurm.conf
mark="# written by make slurm-up"  # a slurm.conf without it is the site's: never replaced

if sinfo -h -o %T 2>/dev/null | grep -q .; then
    echo "a SLURM cluster answers already (sinfo: $(sinfo -h -o '%P %D %T' | head -1)); using it"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "make slurm-up needs root: it installs slurm-wlm and munge and starts their daemons." \
         "Run it with sudo, or use a cluster you have (hydra/launcher=slurm submits to it)." >&2
    exit 2
fi
if [ -e "$conf" ] && ! head -1 "$conf" | grep -qF "$mark"; then
    echo "$conf exists and was not written by make slurm-up: this host has its own SLURM" \
         "setup, which is left alone. Start its daemons (e.g. systemctl start munge slurmctld" \
         "slurmd), or move $conf aside to let make slurm-up write one." >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null ||
   ! command -v mariadbd >/dev/null; then
    command -v apt-get >/dev/null || { echo "no apt-get: install slurm-wlm and munge by hand" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null 2>&1 || {
        apt-get update -qq &&
        apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null; }
fi

mkdir -p /etc/slurm
# munge: the key that signs every message between SLURM's daemons and its commands.
for d in /etc/munge /var/log/munge /run/munge /var/lib/munge; do mkdir -p "$d"; chown munge: "$d"; done
chmod 700 /etc/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    head -c 1024 /dev/urandom >/etc/munge/munge.key
    chown munge: /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then su -s /bin/sh munge -c /usr/sbin/munged; fi
munge -n | unmunge >/dev/null

# Accounting (slurmdbd over MariaDB, both Debian's): sacct, which submitit asks how a job ended;
# without it a job that dies before reporting leaves hydra/launcher=slurm waiting forever.
mkdir -p /run/mysqld /var/log/slurm && chown mysql: /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
if ! pgrep -x mariadbd >/dev/null; then
    setsid mariadbd --user=mysql --skip-networking >/var/log/slurm/mariadb.log 2>&1 </dev/null &
fi
for _ in $(seq 100); do [ -S /run/mysqld/mysqld.sock ] && break; sleep 0.2; done
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db"
# slurmdbd runs as root and reaches MariaDB's root through its socket (unix_socket, no password).
umask 077
cat >/etc/slurm/slurmdbd.conf <<CONF
$mark
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
CONF
umask 022
pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 50); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done

# slurm.conf: one node (this host, as slurmd -C sees it), one default partition.
host=$(hostname -s)
node=$(slurmd -C | head -1)
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$conf" <<CONF
$mark on $(date -u +%Y-%m-%dT%H:%M:%SZ); make slurm-down stops its daemons
ClusterName=train
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
# Jobs may be requeued (the time limit's signal, a preemption, scontrol requeue).
JobRequeue=1
# A job that asks for more than the partition has is refused at submission, not left pending.
EnforcePartLimits=ALL
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# (No cgroup.conf: slurm 22.05 has no "disabled" cgroup plugin; without the file slurmd starts.)

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in idle|mixed|allocated) break ;; esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated) echo "SLURM is up: partition debug, node $host ($(sinfo -h -o '%c CPUs, %m MB')), $state" ;;
    *) echo "SLURM did not come up (node state: ${state:-none}); see /var/log/slurm/" >&2; exit 1 ;;
esac
