#!/usr/bin/env bash
# `make slurm-down`: stop the daemons `make slurm-up` started (a site's own SLURM, whose
# slurm.conf make slurm-up did not write, is left alone). Jobs still running are killed.
set -euo pipefail
conf=/etc/slurm/slurm.conf
if [ -e "$conf" ] && ! head -1 "$conf" | grep -qF "# written by make slurm-up"; then
    echo "$conf was not written by make slurm-up: this host's SLURM is left running" >&2
    exit 2
fi
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pkill -x "$daemon" 2>/dev/null || continue
    for _ in $(seq 50); do pgrep -x "$daemon" >/dev/null || break; sleep 0.2; done
done
echo "SLURM stopped (slurmd, slurmctld, slurmdbd, MariaDB, munged)"
