#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the Slurm test (tests/test_slurm.py) and CI.
#
#   .ci/slurm-cluster.sh install   Debian's Slurm (22.05 on bookworm), munge, slurmdbd, MariaDB
#   .ci/slurm-cluster.sh start     write the configs, start the daemons, wait for an idle node
#   .ci/slurm-cluster.sh status    daemons, node, account (exit 1 unless all are up)
#   .ci/slurm-cluster.sh stop      cancel jobs, stop the daemons this script started, by PID
#
# Needs root (it writes /etc/slurm and starts daemons); no systemd. The cluster:
#   cluster "stylemerge", partition "ci", account "stylemerge" (root is a member), one node
#   (this host, 127.0.0.1) with the machine's CPUs and memory and two fake GPUs (gres
#   gpu:fake:2, device files that are clones of /dev/null), so that jobs can use the real
#   GPU request form (--gpus=fake:1). Accounting runs through slurmdbd and a private MariaDB
#   (own data directory and port), so `sacct` works: the Slurm executor plugin polls job
#   status with sacct, and without accounting sacct fails and Snakemake waits forever.
# Everything it creates lives in $STYLEMERGE_SLURM_DIR (default /var/lib/stylemerge-slurm),
# apart from /etc/slurm/{slurm,gres,slurmdbd}.conf, which `stop` removes again. It refuses to
# overwrite a slurm.conf it did not write; `start` wipes the previous cluster's state (jobs,
# accounting database, logs).
set -euo pipefail

STATE=${STYLEMERGE_SLURM_DIR:-/var/lib/stylemerge-slurm}
CONF_DIR=/etc/slurm
DB_PORT=${STYLEMERGE_SLURM_DB_PORT:-33306}
CLUSTER=stylemerge
PARTITION=ci
ACCOUNT=stylemerge
FAKE_GPUS=2
MARKER="# Written by stylemerge .ci/slurm-cluster.sh: a one-node test cluster."
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
HOST=$(hostname -s)
RUN=$STATE/run

say() { printf 'slurm-cluster: %s\n' "$*"; }
die() {
    printf 'slurm-cluster: error: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (it installs packages, writes /etc/slurm, starts daemons)"
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}

cmd_install() {
    need_root
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "installed already: ${PACKAGES[*]}"
        return
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"${TMPDIR:-/tmp}/stylemerge-slurm-install.log" 2>&1 ||
        {
            tail -n 30 "${TMPDIR:-/tmp}/stylemerge-slurm-install.log" >&2
            die "apt-get install failed"
        }
    say "installed: Slurm $(dpkg-query -W -f='${Version}' slurmctld)"
}

# --- processes -------------------------------------------------------------------------------

# alive PID: the process exists and has not exited (a zombie whose parent has not reaped it
# yet has exited).
alive() {
    kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# pid_of NAME: the PID in $RUN/NAME.pid if that process is alive and is NAME, else nothing.
pid_of() {
    local name=$1 pid
    pid=$({ tr -dc 0-9 <"$RUN/$name.pid"; } 2>/dev/null) || return 1
    [[ -n $pid ]] && alive "$pid" || return 1
    # The PID must still belong to that daemon (Debian's slurmctld and slurmd are
    # alternatives for slurmctld-wlm and slurmd-wlm; mariadbd may call itself mysqld).
    grep -qxE "(${name}|${name}-wlm|mysqld)" "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

# stop_pid NAME: SIGTERM, then SIGKILL after 20 s.
stop_pid() {
    local name=$1 pid i
    pid=$(pid_of "$name") || {
        rm -f "$RUN/$name.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
    say "stopped $name (pid $pid) in $(((i + 9) / 10)) s"
}

# wait_for WHAT SECONDS COMMAND...: retry COMMAND every 0.2 s.
wait_for() {
    local what=$1 seconds=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up in ${seconds} s (logs: $STATE/log)"
}

# daemon_pid NAME PIDFILE: wait for a daemon's own pid file, copy it to $RUN/NAME.pid.
daemon_pid() {
    local name=$1 file=$2
    wait_for "$name" 30 test -s "$file"
    [[ $file == "$RUN/$name.pid" ]] || cp "$file" "$RUN/$name.pid"
    pid_of "$name" >/dev/null || die "$name exited at start (logs: $STATE/log)"
}

# --- configuration ---------------------------------------------------------------------------

write_configs() {
    local cpus mem_mb db_pass=$1
    cpus=$(nproc)
    # Leave 1 GiB to the daemons and the Snakemake process that submits the jobs.
    mem_mb=$(($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
    mkdir -p "$CONF_DIR"
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
# State, logs and PID files: $STATE. Stop it with .ci/slurm-cluster.sh stop.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups in containers: track job processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# Per-core and per-memory scheduling, so that jobs share the node; without DefMemPerCPU a
# job without --mem would take all of the node's memory and jobs would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
GresTypes=gpu
ReturnToService=2
# The node line below is authoritative even where the hardware reports otherwise.
SlurmdParameters=config_overrides
MinJobAge=300
KillWait=5
InactiveLimit=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:fake:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
# Fake GPUs: character devices 1:3 (clones of /dev/null). Slurm only needs the files to
# exist; jobs that request them get CUDA_VISIBLE_DEVICES like on a real GPU node.
NodeName=$HOST Name=gpu Type=fake File=$STATE/dev/gpu[0-$((FAKE_GPUS - 1))]
EOF
    # slurmdbd refuses a config that others can read (it holds the database password).
    (
        umask 077
        cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    )
}

# --- daemons ---------------------------------------------------------------------------------

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged: already running (not started here, will not be stopped here)"
        return
    fi
    install -d -o munge -g munge -m 0700 "$STATE/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" </dev/null >/dev/null 2>&1
    daemon_pid munged "$STATE/munge/munged.pid"
    wait_for munged 10 bash -c "munge -n | unmunge"
    say "munged: pid $(pid_of munged)"
}

# shellcheck disable=SC2120 # arguments come through wait_for
mariadb_sql() {
    mariadb --no-defaults --socket="$STATE/mysql/mysqld.sock" -u root "$@"
}

start_mariadb() {
    local db_pass=$1
    install -d -o mysql -g mysql -m 0750 "$STATE/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$STATE/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (log: $STATE/log/mariadb-install.log)"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
        --socket="$STATE/mysql/mysqld.sock" --pid-file="$STATE/mysql/mariadbd.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$STATE/mysql/mariadb.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1 &
    daemon_pid mariadbd "$STATE/mysql/mariadbd.pid"
    wait_for mariadbd 60 mariadb_sql -e "SELECT 1"
    mariadb_sql <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    say "mariadbd: pid $(pid_of mariadbd), port $DB_PORT"
}

start_slurmdbd() {
    /usr/sbin/slurmdbd </dev/null >>"$STATE/log/slurmdbd.out" 2>&1
    daemon_pid slurmdbd "$RUN/slurmdbd.pid"
    wait_for slurmdbd 30 sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
        description="stylemerge CI" organization=stylemerge >/dev/null
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" \
        defaultaccount="$ACCOUNT" >/dev/null
    say "slurmdbd: pid $(pid_of slurmdbd); account $ACCOUNT"
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null; }

node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]]; }

start_slurm() {
    /usr/sbin/slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1
    daemon_pid slurmctld "$RUN/slurmctld.pid"
    wait_for slurmctld 30 scontrol ping
    /usr/sbin/slurmd </dev/null >>"$STATE/log/slurmd.out" 2>&1
    daemon_pid slurmd "$RUN/slurmd.pid"
    local i
    for ((i = 0; i < 150; i++)); do
        node_ready && break
        sleep 0.2
    done
    node_ready || {
        sinfo -R >&2 || true
        die "node $HOST is '$(node_state)', not idle (logs: $STATE/log)"
    }
    say "slurmctld: pid $(pid_of slurmctld); slurmd: pid $(pid_of slurmd); node $HOST $(node_state)"
}

running() { pid_of slurmctld >/dev/null || pid_of slurmd >/dev/null || pid_of slurmdbd >/dev/null; }

cmd_start() {
    need_root
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "not installed: ${missing[*]} (run: $0 install)"
    if [[ -e $CONF_DIR/slurm.conf ]] && ! grep -qxF "$MARKER" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf was not written by this script: not touching it"
    fi
    if running; then
        say "already running"
        cmd_status
        return
    fi
    local t0=$SECONDS db_pass
    # Processes of a previous run that this script started but did not stop.
    cmd_stop >/dev/null
    rm -rf "$STATE"
    mkdir -p "$STATE"/{slurmctld,slurmd,log,dev} "$RUN"
    local i
    for ((i = 0; i < FAKE_GPUS; i++)); do
        mknod -m 0666 "$STATE/dev/gpu$i" c 1 3
    done
    db_pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    write_configs "$db_pass"
    start_munge
    start_mariadb "$db_pass"
    start_slurmdbd
    start_slurm
    say "cluster up in $((SECONDS - t0)) s: partition $PARTITION, account $ACCOUNT, $FAKE_GPUS fake GPUs"
}

cmd_stop() {
    need_root
    if pid_of slurmctld >/dev/null; then
        # Jobs first: their slurmstepd processes outlive slurmd.
        local ids i
        ids=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n $ids ]]; then
            say "cancelling jobs: ${ids//$'\n'/ }"
            # shellcheck disable=SC2086
            scancel $ids || true
            for ((i = 0; i < 100; i++)); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
    fi
    local name file
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        stop_pid "$name"
    done
    # Without a slurm.conf the Slurm tools fail at once; with one whose controller is down
    # they wait for it, and so does every `snakemake` start (the Slurm executor plugin asks
    # `scontrol show config` when it loads): ~10 s each.
    for file in slurm.conf gres.conf slurmdbd.conf; do
        if [[ -e $CONF_DIR/$file ]] && grep -qxF "$MARKER" "$CONF_DIR/$file"; then
            rm -f "$CONF_DIR/$file"
        fi
    done
}

cmd_status() {
    local ok=0 name pid
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(pid_of "$name"); then
            say "$name: running, pid $pid"
        elif [[ $name == munged ]] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            say "munged: running (not started here)"
        else
            say "$name: not running"
            ok=1
        fi
    done
    if ((ok == 0)); then
        say "node $HOST: $(node_state)"
        node_ready || ok=1
        sacctmgr -n -P list assoc user=root format=cluster,account,user 2>/dev/null |
            sed 's/^/slurm-cluster: association: /'
    fi
    return $ok
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac
