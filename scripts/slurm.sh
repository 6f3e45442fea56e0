#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with accounting and one declared GPU: for evo's tests
# (session fixture) and for trying evo's SLURM features (sbatch, sacct, submitit, hydra-submitit-launcher) locally.
#
#   bash scripts/slurm.sh start    # install the packages if missing (apt, root), start all daemons, wait until
#                                  # `srun -N1 true` works; a no-op if the cluster is already up and healthy
#   bash scripts/slurm.sh install  # only install the packages if missing (apt, root); starts nothing
#   bash scripts/slurm.sh stop     # cancel all jobs, stop every daemon this script started (idempotent)
#   bash scripts/slurm.sh status   # one line per daemon + sinfo; exit 0 if healthy, else 1
#   bash scripts/slurm.sh clean    # stop, then delete the state folder and the /etc/slurm links
#
# Daemons, in start order: munged (auth), mariadbd (accounting DB on 127.0.0.1:$EVO_SLURM_DB_PORT), slurmdbd,
# slurmctld, slurmd. No systemd: each runs in the foreground of its own session, and its PID is kept by this script.
# Cluster "evo": node $(hostname -s) with all CPUs, ~90% of RAM and gres gpu:1 (declared with File=/dev/null, so a
# job asking for a GPU gets CUDA_VISIBLE_DEVICES=0 on a machine without one); partition "debug" (default);
# accounts "root" (root's default) and "evo" (root is a member, so `--account=evo` works).
#
# State: ${EVO_SLURM_DIR:-/tmp/evo-slurm}: etc/ (config), log/, pids/, run/, spool/, munge/, mysql/ (DB data).
# Config: Debian's tools read /etc/slurm/slurm.conf (compiled-in default) and the gres.conf / slurmdbd.conf next to
# it. Those three are symlinks into $EVO_SLURM_DIR/etc, so sbatch/sacct/squeue/scancel work as plain commands with
# no env var. A /etc/slurm/*.conf that this script did not write is never replaced (start fails instead).
# Needs root. Env: EVO_SLURM_DIR (state folder), EVO_SLURM_DB_PORT (default 3307, so a system MariaDB keeps 3306).
set -euo pipefail

STATE=${EVO_SLURM_DIR:-/tmp/evo-slurm}
DB_PORT=${EVO_SLURM_DB_PORT:-3307}
CLUSTER=evo
ETC=/etc/slurm
MARK="# Written by evo's scripts/slurm.sh; edit that script, not this file."
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop goes in reverse
PKGS=(slurm-wlm slurmdbd munge mariadb-server mariadb-client)
export PATH=$PATH:/usr/sbin:/sbin
HOST=$(hostname -s)
T0=$(date +%s.%N)

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: $*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- processes
pid_of() { cat "$STATE/pids/$1" 2>/dev/null || true; }
log_of() { if [ "$1" = munged ]; then echo "$STATE/log/munged.out"; else echo "$STATE/log/$1.log"; fi; }

alive() {   # alive PID NAME: PID is a live (not zombie) process called NAME (guards against PID reuse)
  local pid=$1 name=$2 stat
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }; [ "${stat%% *}" != Z ]
}

running() { alive "$(pid_of "$1")" "$1"; }

pids_named() {   # every live process called $1 (no procps on minimal images; zombies excluded)
  local f pid
  for f in /proc/[0-9]*/comm; do
    [ "$(cat "$f" 2>/dev/null)" = "$1" ] || continue
    pid=${f#/proc/}; pid=${pid%/comm}
    if alive "$pid" "$1"; then echo "$pid"; fi
  done
  return 0
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

show_logs() {   # show_logs NAME: the last lines of its log (and of its stderr, which has fatal config errors)
  local log="$STATE/log/$1.log" out="$STATE/log/$1.out" n=15
  if [ -s "$log" ]; then echo "---- $log (last lines) ----" >&2; tail -n 15 "$log" >&2; n=5; fi
  if [ -s "$out" ]; then echo "---- $out (last lines) ----" >&2; tail -n "$n" "$out" >&2; fi
  return 0
}

fail() {   # fail NAME MESSAGE
  echo "slurm.sh: $1 $2; logs: $STATE/log/$1.log $STATE/log/$1.out" >&2
  show_logs "$1"
  exit 1
}

launch() {   # launch NAME CMD...: start CMD (a foreground daemon) in its own session, detached from our stdio
  local name=$1; shift
  # 9>&-: the daemon must not inherit the lock; </dev/null >file: a caller capturing our output must not wait on it
  setsid "$@" </dev/null >"$STATE/log/$name.out" 2>&1 9>&- &
  local pid=$! i
  echo "$pid" >"$STATE/pids/$name"
  STARTED+=("$name")
  # Until setsid/setpriv have exec'd, the process is not yet called NAME: wait, or it looks dead at once.
  for ((i = 0; i < 50; i++)); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ] || return 0
    [ -d "/proc/$pid" ] || return 0
    sleep 0.05
  done
}

wait_until() {   # wait_until NAME SECONDS CMD...: poll CMD until it succeeds; fail if NAME dies or time runs out
  local name=$1 secs=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    running "$name" || fail "$name" "exited during start-up"
    [ "$(date +%s)" -lt "$end" ] || fail "$name" "not ready after ${secs}s"
    sleep 0.2
  done
}

check_foreign() {   # refuse to start NAME next to a copy this script does not own (port/socket clash)
  local p
  p=$(pids_named "$1" | grep -vx "$(pid_of "$1")" | head -n 1 || true)
  [ -z "$p" ] || die "another $1 is running (pid $p) that this script did not start (state $STATE); stop it first"
}

stop_pid() {   # stop_pid NAME: SIGTERM, wait on the PID (daemons unlink pid files early), SIGKILL after 30 s
  local name=$1 pid i
  pid=$(pid_of "$name")
  if alive "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do alive "$pid" "$name" || break; sleep 0.1; done
    if alive "$pid" "$name"; then
      echo "slurm.sh: $name (pid $pid) ignored SIGTERM for 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" "$name" || break; sleep 0.1; done
    fi
  fi
  rm -f "$STATE/pids/$name"
}

# ---------------------------------------------------------------- health
node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n 1; }

healthy() {
  local d s
  for d in "${DAEMONS[@]}"; do
    if [ "$d" = munged ]; then munge_ok || return 1; else running "$d" || return 1; fi
  done
  timeout 10 scontrol ping 2>/dev/null | grep -q "is UP" || return 1
  s=$(node_state)
  case $s in idle | mix | alloc | comp) ;; *) return 1 ;; esac
  timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"
}

# ---------------------------------------------------------------- install
install_packages() {
  local c missing=
  for c in munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin slurmdbd slurmctld slurmd \
    sbatch sacct sacctmgr; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
  done
  [ -n "$missing" ] || return 0
  [ "$(id -u)" = 0 ] || die "missing:$missing; installing needs root (or install ${PKGS[*]} yourself)"
  command -v apt-get >/dev/null 2>&1 ||
    die "missing:$missing; no apt-get here: install SLURM 22.05 (slurmctld, slurmd, slurmdbd), munge and MariaDB yourself"
  say "installing ${PKGS[*]} (apt-get; missing:$missing) ..."
  local policy=/usr/sbin/policy-rc.d ours=
  if [ ! -e "$policy" ]; then   # keep apt from starting the packages' own services (a system MariaDB, munge, slurm*)
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PKGS[@]}"; } >"$STATE/log/apt.log" 2>&1; then
    [ -z "$ours" ] || rm -f "$policy"
    tail -n 20 "$STATE/log/apt.log" >&2
    die "apt-get install ${PKGS[*]} failed; full log: $STATE/log/apt.log"
  fi
  [ -z "$ours" ] || rm -f "$policy"
}

# ---------------------------------------------------------------- config
put() {   # put FILE MODE: write stdin to FILE only if it changed (running daemons see an untouched file)
  local tmp="$1.tmp"
  cat >"$tmp"
  chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

conf_is_ours() {   # /etc/slurm/NAME is absent, ours (links into $STATE or carries MARK), or a dangling link
  local dst="$ETC/$1"
  [ -e "$dst" ] || return 0
  [ "$(readlink "$dst" 2>/dev/null)" = "$STATE/etc/$1" ] || grep -qF "$MARK" "$dst" 2>/dev/null
}

link_confs() {   # /etc/slurm/NAME -> $STATE/etc/NAME for the three files, or none if one belongs to someone else
  local f
  for f in slurm.conf gres.conf slurmdbd.conf; do
    conf_is_ours "$f" || die "$ETC/$f exists and was not written by this script (a real cluster's config?); move it away first"
  done
  mkdir -p "$ETC"
  for f in slurm.conf gres.conf slurmdbd.conf; do
    [ "$(readlink "$ETC/$f" 2>/dev/null)" = "$STATE/etc/$f" ] || ln -sfn "$STATE/etc/$f" "$ETC/$f"
  done
}

write_config() {
  local cpus mem pw
  cpus=$(getconf _NPROCESSORS_ONLN)   # the machine's cores, not the caller's affinity (nproc would be 1 in a pinned process)
  mem=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  [ -s "$STATE/etc/db.pw" ] || (umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/etc/db.pw")
  pw=$(cat "$STATE/etc/db.pw")

  put "$STATE/etc/slurm.conf" 644 <<EOF
$MARK
ClusterName=$CLUSTER
# The address is given, so nothing depends on how the host name resolves.
SlurmctldHost=$HOST(127.0.0.1)
# Daemons run as root: no slurm user and no ownership juggling of the state folder.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials expire after 10 s (default 120): a requeued job may restart ~11 s later instead of ~121 s.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups/systemd needed: track job processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# A node that was down (e.g. after stop/start) returns to service as soon as its slurmd registers.
ReturnToService=2
# The node line below is the truth (it may claim less than the hardware): no INVAL node on odd machines.
SlurmdParameters=config_overrides
# Allocate cores and memory, so several small jobs share the node (two 1-CPU jobs on 2 CPUs).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that does not set --mem would be given the node's whole memory.
DefMemPerCPU=$((mem / cpus))
# A cancelled job gets SIGKILL 5 s after SIGTERM (default 30): keeps tests quick.
KillWait=5
# Scheduler passes every 5 s (defaults 60/30 s): a requeued job starts as soon as it is eligible again (~11 s).
SchedulerParameters=sched_interval=5,bf_interval=5
GresTypes=gpu
# Accounting: real job states in sacct (submitit polls sacct), --account checked against the associations.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  put "$STATE/etc/gres.conf" 644 <<EOF
$MARK
# One GPU declared without a GPU: File=/dev/null gives the node gpu:1 and jobs asking for it CUDA_VISIBLE_DEVICES=0.
# (Count=1 without File= leaves the node INVAL.) A real node would use File=/dev/nvidia0; this build has no NVML.
NodeName=$HOST Name=gpu File=/dev/null
EOF

  # slurmdbd insists on mode 600, owned by SlurmUser (root): it holds the DB password.
  put "$STATE/etc/slurmdbd.conf" 600 <<EOF
$MARK
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=$HOST
SlurmUser=root
DebugLevel=info
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
EOF

  link_confs
}

# ---------------------------------------------------------------- start steps
start_munged() {
  if munge_ok; then return 0; fi   # a system munged (same /run/munge socket) is fine: use it
  check_foreign munged
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && chown munge:munge /etc/munge && chmod 700 /etc/munge
    setpriv --reuid=munge --regid=munge --init-groups mungekey --create --keyfile=/etc/munge/munge.key
  fi
  # munged refuses to run as root; its socket dir must belong to munge.
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  # In the foreground munged logs to stderr only: its log is log/munged.out.
  launch munged setpriv --reuid=munge --regid=munge --init-groups \
    munged -F --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed"
  wait_until munged 15 munge_ok
}

sql() { mariadb --no-defaults --socket="$STATE/mysql/mysqld.sock" -uroot "$@"; }

start_mariadbd() {
  running mariadbd && return 0
  check_foreign mariadbd
  if [ ! -d "$STATE/mysql/data/mysql" ]; then
    rm -rf "$STATE/mysql/data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$STATE/log/mariadbd.out" 2>&1 ||
      fail mariadbd "could not initialise its data folder (mariadb-install-db)"
  fi
  touch "$STATE/log/mariadbd.log" && chown mysql:mysql "$STATE/log/mariadbd.log"
  # Own port and socket (a system MariaDB may hold 3306); small buffers: 2 shared cores, tests only.
  launch mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
    --socket="$STATE/mysql/mysqld.sock" --pid-file="$STATE/mysql/mariadbd.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve --log-error="$STATE/log/mariadbd.log" \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-lock-wait-timeout=900 --max-connections=64
  wait_until mariadbd 60 mariadb-admin --no-defaults --socket="$STATE/mysql/mysqld.sock" -uroot ping
  local pw
  pw=$(cat "$STATE/etc/db.pw")
  sql <<EOF || fail mariadbd "could not create the slurm_acct_db database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

sacctmgr_has() { timeout 10 sacctmgr -n -P "$@" 2>/dev/null | grep -q .; }

start_slurmdbd() {
  if ! running slurmdbd; then
    check_foreign slurmdbd
    launch slurmdbd slurmdbd -D
    wait_until slurmdbd 60 timeout 10 sacctmgr -n -P show cluster format=cluster
  fi
  # Register before slurmctld starts, so it finds its cluster. Adding the cluster also creates account root with
  # user root in it (root's default account).
  sacctmgr_has show cluster "$CLUSTER" format=cluster ||
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null || fail slurmdbd "could not add cluster $CLUSTER"
  sacctmgr_has show account evo format=account ||
    sacctmgr -i -Q add account evo cluster="$CLUSTER" description=evo organization=evo >/dev/null ||
    fail slurmdbd "could not add account evo"
  local u
  for u in root ${SUDO_USER:-}; do   # also whoever ran sudo, so their jobs pass AccountingStorageEnforce
    sacctmgr_has show assoc where cluster="$CLUSTER" user="$u" account=evo format=user ||
      sacctmgr -i -Q add user "$u" account=evo cluster="$CLUSTER" >/dev/null ||
      fail slurmdbd "could not add user $u to account evo"
  done
}

start_slurmctld() {
  running slurmctld && return 0
  check_foreign slurmctld
  # -i: ignore unreadable state files instead of refusing to start. No -c: job ids keep counting up across
  # restarts, so they never collide with jobs already in the accounting DB.
  launch slurmctld slurmctld -D -i
  wait_until slurmctld 60 sh -c 'timeout 10 scontrol ping | grep -q "is UP"'
}

node_ready() {
  local s
  s=$(node_state)
  case $s in
    idle | mix | alloc | comp) return 0 ;;
    drain | drng | drain\* | down | fail | inval)   # left unusable by an earlier run: put it back in service
      scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1
}

start_slurmd() {
  if ! running slurmd; then
    check_foreign slurmd
    launch slurmd slurmd -D
  fi
  wait_until slurmd 60 node_ready
}

# ---------------------------------------------------------------- commands
lock() {   # one start/stop at a time (e.g. several pytest workers)
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 300 9 || die "timed out waiting for another slurm.sh in $STATE"
}

STARTED=()   # daemons launched by this call: stopped again if the start fails half-way

rollback() {
  local i
  [ "${#STARTED[@]}" -gt 0 ] || return 0
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[i]}"; done
  echo "slurm.sh: start failed; stopped what it had started (${STARTED[*]}); logs kept in $STATE/log" >&2
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "needs root (daemons, /etc/slurm, apt-get)"
  lock
  trap 'rc=$?; [ "$rc" = 0 ] || rollback; exit "$rc"' EXIT
  if healthy; then
    say "SLURM cluster '$CLUSTER' already running and healthy (state $STATE; checked in $(elapsed) s)"
    return 0
  fi
  local d
  for d in "${DAEMONS[@]:1}"; do running "$d" || check_foreign "$d"; done   # before touching /etc/slurm
  mkdir -p "$STATE"/{etc,log,pids,run,spool/slurmctld,spool/slurmd,munge,mysql}
  chmod 755 "$STATE" "$STATE/etc"   # slurm.conf must be readable by every user who submits jobs
  chmod 700 "$STATE/munge"
  install_packages
  chown munge:munge "$STATE/munge"
  chown mysql:mysql "$STATE/mysql" && chmod 750 "$STATE/mysql"
  write_config
  start_munged
  start_mariadbd
  start_slurmdbd
  start_slurmctld
  start_slurmd
  if [ -z "$(squeue -h -o %i 2>/dev/null)" ]; then   # (with jobs left from before, srun would queue behind them)
    timeout 60 srun -N1 -n1 -t 1 --mem=16 -J slurm.sh-check true >/dev/null 2>"$STATE/log/srun-check.err" ||
      { cat "$STATE/log/srun-check.err" >&2; fail slurmd "is up but 'srun -N1 true' failed"; }
  fi
  local cpus mem
  read -r cpus mem < <(sinfo -h -N -n "$HOST" -o "%c %m" | head -n 1)
  say "SLURM cluster '$CLUSTER' up in $(elapsed) s (node $HOST: $cpus CPUs, $mem MB, gpu:1; partition debug;" \
    "state $STATE; config $ETC/slurm.conf)"
}

cmd_stop() {
  if [ ! -d "$STATE/pids" ]; then say "not running (no state in $STATE)"; return 0; fi
  [ "$(id -u)" = 0 ] || die "needs root"
  lock
  local d i jobs any=
  for d in "${DAEMONS[@]}"; do if running "$d"; then any=1; fi; done
  if [ -z "$any" ]; then say "not running (state in $STATE)"; return 0; fi
  if running slurmctld; then   # cancel jobs first, so no job steps outlive slurmd and the DB records them
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null || true)" ] && break
        sleep 0.1
      done
    fi
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_pid "${DAEMONS[i]}"; done
  # Job steps whose slurmd is gone (only when no slurmd at all is left on this machine).
  if [ -z "$(pids_named slurmd)" ]; then
    for d in $(pids_named slurmstepd); do kill -KILL "$d" 2>/dev/null || true; done
  fi
  say "stopped in $(elapsed) s (state kept in $STATE)"
}

cmd_status() {
  local d pid ok=0
  for d in "${DAEMONS[@]}"; do
    pid=$(pid_of "$d")
    if alive "$pid" "$d"; then
      printf '%-10s running (pid %s), log %s\n' "$d" "$pid" "$(log_of "$d")"
    elif [ "$d" = munged ] && munge_ok; then
      printf '%-10s running (not started by this script)\n' "$d"
    else
      printf '%-10s stopped\n' "$d"; ok=1
    fi
  done
  if [ "$ok" = 0 ]; then
    timeout 10 sinfo || true
    healthy || ok=1
  fi
  if [ "$ok" = 0 ]; then echo "healthy"; else echo "not healthy"; fi
  return "$ok"
}

cmd_clean() {
  cmd_stop
  local f
  for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -L "$ETC/$f" ] && [ "$(readlink "$ETC/$f")" = "$STATE/etc/$f" ]; then rm -f "$ETC/$f"; fi
  done
  rm -rf "$STATE"
  say "removed $STATE and its /etc/slurm links"
}

case ${1:-} in
  install) mkdir -p "$STATE/log" && install_packages ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  clean) cmd_clean ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
