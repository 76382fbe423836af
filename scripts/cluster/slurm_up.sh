#!/usr/bin/env bash
# Stand up a throwaway single-node SLURM 22.05 cluster on this machine, from
# Debian 12's packages, to run the workflow's SLURM profile against the real
# thing (tests/cluster/). Needs root and no systemd; loopback only.
#
#   bash scripts/cluster/slurm_up.sh            # packages (if missing), config, daemons
#   bash scripts/cluster/slurm_up.sh --install-only   # only the packages (scripts/setup.sh --test)
#   export SLURM_CONF=/tmp/brainmets-slurm/etc/slurm.conf   # printed at the end
#   sinfo; sbatch ...; sacct ...
#   bash scripts/cluster/slurm_down.sh          # stop every daemon it started, by pid file
#
# The cluster lives in $SLURM_DIR (config, munge key, accounting database,
# state, logs, pid files); it does not touch /etc/munge or /var/lib/mysql.
# Two shared places remain:
# - /etc/slurm/slurm.conf becomes a symlink to $SLURM_DIR/etc/slurm.conf.
#   SLURM_CONF alone is not enough: inside a job the Snakemake jobstep plugin
#   starts its `srun` with every SLURM_* variable but a few removed, SLURM_CONF
#   included, and srun then only finds the default path. A real file there (a
#   real cluster's) is never replaced; slurm_down.sh removes the symlink.
# - munge's standard socket, /run/munge/munge.socket.2 (with AuthInfo=socket=
#   elsewhere, sacctmgr still used the standard one and could not reach
#   slurmdbd): a munged already answering there is used as it is (one node:
#   every credential goes through the same daemon) and left running; otherwise
#   one is started with a private key, and slurm_down.sh stops it again.
#
# Accounting (default, WITH_ACCOUNTING=1): slurmdbd + a private MariaDB, so
# `sacct` works. That is what real clusters run and what the Snakemake SLURM
# plugin queries by default (`--slurm-status-command sacct`); it also gives the
# test per-job records (job name, rule comment, state, partition).
# WITH_ACCOUNTING=0 skips slurmdbd and MariaDB (faster, fewer packages); then
# `sacct` does not work and Snakemake needs `--slurm-status-command squeue`
# (MinJobAge is 600 s here, so finished jobs stay visible to squeue).
#
# Environment:
#   SLURM_DIR        where everything lives (default /tmp/brainmets-slurm; wiped on
#                    start). Its parent must be traversable by the munge and mysql
#                    users (not a 0700 directory such as pytest's tmp root).
#   WITH_ACCOUNTING  1 (default) or 0, see above
#   SLURM_INSTALL    1 (default): apt-get install missing packages; 0: fail naming them
#   SLURM_PORT_BASE  slurmctld port; slurmd, slurmdbd, MariaDB use the next three
#                    (default 6817 -> 6817..6820)
#
# Packages (Debian 12): munge slurmctld slurmd slurm-client, and with
# accounting slurmdbd mariadb-server.
set -euo pipefail
# Root's tools (runuser, the daemons) live in the sbin directories, which a minimal PATH
# (env -i, cron) leaves out.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

INSTALL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --install-only) INSTALL_ONLY=1 ;;
    *) echo "usage: $0 [--install-only]" >&2; exit 2 ;;
  esac
done
SLURM_DIR=${SLURM_DIR:-/tmp/brainmets-slurm}
WITH_ACCOUNTING=${WITH_ACCOUNTING:-1}
SLURM_INSTALL=${SLURM_INSTALL:-1}
PORT_BASE=${SLURM_PORT_BASE:-6817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER=brainmets
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "[slurm_up] $*"; }
die() { echo "[slurm_up] ERROR: $*" >&2; exit 1; }

# ------------------------------------------------------------------ prerequisites
[ "$(id -u)" = 0 ] || die "must run as root (daemons run as root/munge/mysql); current user: $(id -un)"
case "$SLURM_DIR" in /*) ;; *) die "SLURM_DIR must be an absolute path, got '$SLURM_DIR'" ;; esac
# MariaDB's socket path must fit in a unix socket address (108 bytes).
[ ${#SLURM_DIR} -le 80 ] || die "SLURM_DIR is too long for unix sockets (${#SLURM_DIR} > 80 chars): $SLURM_DIR"

PKGS="munge slurmctld slurmd slurm-client"
if [ "$WITH_ACCOUNTING" = 1 ]; then PKGS="$PKGS slurmdbd mariadb-server"; fi
missing=""
for pkg in $PKGS; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  [ "$SLURM_INSTALL" = 1 ] || die "missing Debian packages:$missing (apt-get install$missing)"
  command -v apt-get >/dev/null || die "missing Debian packages:$missing, and apt-get is not available"
  say "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting system daemons (without
  # systemd they would start munge and MariaDB, and slurmctld's fails with no config).
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ -n "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
fi
if [ "$INSTALL_ONLY" = 1 ]; then say "packages installed:$PKGS"; exit 0; fi

# ------------------------------------------------------------------ clean slate
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
  [ -L "$SYSTEM_CONF" ] || die "$SYSTEM_CONF is a real file (a real SLURM installation?); not touching it"
  other=$(readlink "$SYSTEM_CONF")
  other_dir=${other%/etc/slurm.conf}
  if [ "$other_dir" != "$SLURM_DIR" ] && [ -s "$other_dir/run/slurmctld.pid" ] \
      && kill -0 "$(cat "$other_dir/run/slurmctld.pid")" 2>/dev/null; then
    die "another cluster of this script is running from $other_dir; stop it first: SLURM_DIR=$other_dir bash $HERE/slurm_down.sh"
  fi
fi
# Daemons a previous run left behind (same SLURM_DIR) are stopped by their pid files.
[ -d "$SLURM_DIR" ] && SLURM_DIR="$SLURM_DIR" bash "$HERE/slurm_down.sh" >/dev/null 2>&1 || true
for port in $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is in use (another SLURM or database?); stop it or set SLURM_PORT_BASE"
  fi
done
rm -rf "$SLURM_DIR"
mkdir -p "$SLURM_DIR"/{etc,state,spool,log,run}
chmod 755 "$SLURM_DIR"

# If anything below fails: show the logs, stop what was started.
on_error() {
  echo "[slurm_up] FAILED; log tails from $SLURM_DIR/log:" >&2
  for f in "$SLURM_DIR"/log/*; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  SLURM_DIR="$SLURM_DIR" bash "$HERE/slurm_down.sh" >&2 || true
}
trap on_error ERR

# wait_for SECONDS WHAT CMD...: poll CMD (itself bounded) every 0.25 s; fail naming WHAT. With
# WAIT_PID set, give up at once when that process (the daemon awaited) has died.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local tries=$((seconds * 4))
  for _ in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
      echo "[slurm_up] ERROR: $what: the process exited" >&2; return 1
    fi
    sleep 0.25
  done
  echo "[slurm_up] ERROR: timed out after ${seconds}s waiting for $what" >&2
  return 1
}

# ------------------------------------------------------------------ munge
munge_works() { timeout 10 bash -c 'munge -n | unmunge'; }
if munge_works >/dev/null 2>&1; then
  say "using the munged already running on /run/munge (left running by slurm_down.sh)"
else
  MUNGE_DIR=$SLURM_DIR/munge
  mkdir -p "$MUNGE_DIR" /run/munge
  head -c 1024 /dev/urandom > "$MUNGE_DIR/munge.key"
  touch "$SLURM_DIR/log/munged.log"
  chown munge:munge "$MUNGE_DIR" "$MUNGE_DIR/munge.key" /run/munge "$SLURM_DIR/log/munged.log"
  chmod 700 "$MUNGE_DIR"; chmod 400 "$MUNGE_DIR/munge.key"; chmod 755 /run/munge
  # A socket left by a munged that died would make the new one refuse to start.
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed" \
    --log-file="$SLURM_DIR/log/munged.log"
  wait_for 10 "munged ($SLURM_DIR/log/munged.log)" munge_works
fi

# ------------------------------------------------------------------ slurm.conf
export SLURM_CONF=$SLURM_DIR/etc/slurm.conf
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$SYSTEM_CONF"
# Memory SLURM may hand out: 90% of the machine (RealMemory must be set, or --mem requests fail).
MEM_MB=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
if [ "$WITH_ACCOUNTING" = 1 ]; then
  ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# sacct shows the job's --comment (the Snakemake plugin puts the rule name there)
AccountingStoreFlags=job_comment"
else
  ACCOUNTING="AccountingStorageType=accounting_storage/none"
fi
cat > "$SLURM_CONF" <<EOF
# Written by brainmets scripts/cluster/slurm_up.sh: a throwaway single-node cluster.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
# No cgroups in containers: plain /proc process tracking, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$ACCOUNTING
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for 10 minutes (squeue as status command).
MinJobAge=600
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# ------------------------------------------------------------------ accounting: MariaDB + slurmdbd
if [ "$WITH_ACCOUNTING" = 1 ]; then
  DB_DIR=$SLURM_DIR/mysql
  mkdir -p "$DB_DIR"; chown mysql:mysql "$DB_DIR"
  touch "$SLURM_DIR/log/mariadb.log"; chown mysql:mysql "$SLURM_DIR/log/mariadb.log"
  # --no-defaults: ignore /etc/mysql; a private datadir, socket and loopback port.
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" \
    --auth-root-authentication-method=socket --skip-test-db > "$SLURM_DIR/log/mariadb-install.log" 2>&1
  /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" \
    --socket="$DB_DIR/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$DB_DIR/mariadbd.pid" --log-error="$SLURM_DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 > /dev/null 2>&1 &
  WAIT_PID=$! wait_for 60 "MariaDB ($SLURM_DIR/log/mariadb.log)" mariadb-admin --no-defaults --connect-timeout=5 --socket="$DB_DIR/mysqld.sock" ping
  DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mariadb --no-defaults --socket="$DB_DIR/mysqld.sock" -uroot -e "
    CREATE DATABASE slurm_acct_db;
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$SLURM_DIR/etc/slurmdbd.conf" <<EOF
# Written by brainmets scripts/cluster/slurm_up.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=$SLURM_DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$SLURM_DIR/etc/slurmdbd.conf"
  # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF.
  /usr/sbin/slurmdbd
  wait_for 60 "slurmdbd ($SLURM_DIR/log/slurmdbd.log)" timeout 10 sacctmgr -n list cluster
  timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ------------------------------------------------------------------ controller + compute node
/usr/sbin/slurmctld
# -N: the node is "localhost" whatever the machine's hostname is.
/usr/sbin/slurmd -N localhost
node_idle() { [ "$(timeout 10 sinfo -h -n localhost -o %T 2>/dev/null)" = idle ]; }
wait_for 60 "node 'localhost' to become idle ($SLURM_DIR/log/slurmd.log, slurmctld.log)" node_idle
# One real job end to end (allocation, step launch, munge credentials) before handing over.
timeout 60 srun -N1 -n1 -p debug true
trap - ERR

cat > "$SLURM_DIR/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
EOF
say "SLURM up in $SLURM_DIR (cluster '$CLUSTER', partition 'debug', $(nproc) CPUs, ${MEM_MB} MB, accounting=$WITH_ACCOUNTING)"
say "use it with: export SLURM_CONF=$SLURM_CONF   (or: source $SLURM_DIR/env.sh)"
