#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm_up.sh (same SLURM_DIR):
# cancel its jobs, then stop each daemon by the pid file it wrote (slurmd,
# slurmctld, slurmdbd, MariaDB, munged), TERM first and KILL after a grace
# period, and remove its /etc/slurm/slurm.conf symlink. Never kills by process
# name. Safe to run twice or after a failed start; leaves SLURM_DIR (logs) in
# place for inspection.
set -uo pipefail
# Root's tools (runuser, the daemons) live in the sbin directories, which a minimal PATH
# (env -i, cron) leaves out.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
SLURM_DIR=${SLURM_DIR:-/tmp/brainmets-slurm}
export SLURM_CONF=$SLURM_DIR/etc/slurm.conf

# Jobs first, while the controller still answers: their steps (slurmstepd and
# the job's processes) are not children of any daemon we hold a pid for.
if [ -s "$SLURM_DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$SLURM_DIR/run/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scancel --user="$(id -un)" 2>/dev/null
  for _ in $(seq 60); do
    [ -z "$(timeout 5 squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
    sleep 0.25
  done
fi

# stop PIDFILE NAME: TERM, wait up to 10 s (or until only a zombie is left), then KILL.
# A pid file whose process is gone, or whose pid now belongs to another program
# (reused after a reboot), is only removed.
stop() {
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; return 0 ;; esac
  # Debian's binaries are NAME-wlm behind a NAME symlink.
  case "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" in
    "$name" | "$name"-wlm) ;;
    *) rm -f "$pidfile"; return 0 ;;
  esac
  if ! kill -TERM "$pid" 2>/dev/null; then rm -f "$pidfile"; return 0; fi
  for _ in $(seq 40); do
    grep -qs '^State:[[:space:]]*[^Z]' "/proc/$pid/status" || { rm -f "$pidfile"; echo "[slurm_down] stopped $name ($pid)"; return 0; }
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$pidfile"
  echo "[slurm_down] killed $name ($pid) after 10 s"
}
# Each daemon takes 1-2 s to exit: stop them in three parallel waves, in
# dependency order (the controller flushes to slurmdbd, slurmdbd to MariaDB).
stop "$SLURM_DIR/run/slurmd.pid" slurmd & stop "$SLURM_DIR/run/slurmctld.pid" slurmctld & wait
stop "$SLURM_DIR/run/slurmdbd.pid" slurmdbd
# munged.pid exists only when slurm_up.sh started munged itself.
stop "$SLURM_DIR/mysql/mariadbd.pid" mariadbd & stop "$SLURM_DIR/munge/munged.pid" munged & wait
# The default-path symlink slurm_up.sh made, if it still points here.
[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ] && rm -f /etc/slurm/slurm.conf
exit 0
