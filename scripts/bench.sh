#!/usr/bin/env bash
# pgbench: direct PostgreSQL vs PgBouncer vs shardbouncer, in one run, on one
# throwaway PostgreSQL cluster.
#
#   ./scripts/bench.sh
#
# What it does:
#   1. cargo build --release (shardbouncer);
#   2. initdb a temporary PostgreSQL cluster on a free loopback port
#      (max_connections 200, fsync off), role app/secret (SCRAM), database app,
#      pgbench -i -s $BENCH_SCALE;
#   3. starts shardbouncer and PgBouncer in transaction mode, default_pool_size
#      20, SCRAM auth for clients, each on a free loopback port;
#   4. runs the same pgbench workloads against the three targets, interleaved
#      (for each workload: postgres, pgbouncer, shardbouncer):
#        select-only (-S) and tpcb-like, each with -M simple/extended/prepared,
#        and select-only -M simple -C (a new connection per transaction);
#   5. prints a table and writes it to target/bench/results.md (raw pgbench
#      output in target/bench/raw/).
# Everything is torn down on exit. Only loopback is used. With the defaults it
# takes about 7 minutes (19 runs x 15 s, plus setup).
#
# Environment (defaults in brackets):
#   BENCH_DURATION [15]  seconds per pgbench run (-T)
#   BENCH_CLIENTS  [50]  pgbench clients (-c)
#   BENCH_THREADS  [2]   pgbench threads (-j)
#   BENCH_CONNECT_CLIENTS [$BENCH_CLIENTS]  clients for the -C run
#   BENCH_SCALE    [10]  pgbench -i scale factor
#   BENCH_POOL_SIZE [20] default_pool_size for both poolers
#   BENCH_TARGETS  ["postgres pgbouncer shardbouncer"]  subset to run
#   BENCH_WORKLOADS ["select-simple select-extended select-prepared
#                     tpcb-simple tpcb-extended tpcb-prepared select-simple-connect"]
#   BENCH_OUT      [target/bench]  where results.md and raw/ go
#   BENCH_KEEP=1   keep the temp dir (logs) instead of deleting it
#   PGBOUNCER      [/usr/sbin/pgbouncer]
#
# Needs: PostgreSQL (initdb, pg_ctl, psql, pgbench; on PATH or in
# /usr/lib/postgresql/*/bin), cargo, and PgBouncer (installed with apt-get if
# missing and we are root). When run as root, PostgreSQL and PgBouncer run as
# the `postgres` OS user (both refuse to run as root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-15}
CLIENTS=${BENCH_CLIENTS:-50}
THREADS=${BENCH_THREADS:-2}
CONNECT_CLIENTS=${BENCH_CONNECT_CLIENTS:-$CLIENTS}
SCALE=${BENCH_SCALE:-10}
POOL_SIZE=${BENCH_POOL_SIZE:-20}
TARGETS=${BENCH_TARGETS:-postgres pgbouncer shardbouncer}
WORKLOADS=${BENCH_WORKLOADS:-select-simple select-extended select-prepared tpcb-simple tpcb-extended tpcb-prepared select-simple-connect}
OUT=${BENCH_OUT:-$ROOT/target/bench}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---- programs ------------------------------------------------------------------
pg_bin() { # pg_bin NAME: path of a PostgreSQL program
    local name=$1 d
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
        if [[ -x "$d/$name" ]]; then echo "$d/$name"; return; fi
    done
    die "$name not found on PATH nor in /usr/lib/postgresql/*/bin"
}
INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
PSQL=$(pg_bin psql)
PGBENCH=$(pg_bin pgbench)

if [[ ! -x $PGBOUNCER ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing pgbouncer (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null ||
            die "apt-get install pgbouncer failed"
        # The package starts a system instance on :6432; we do not want it.
        systemctl stop pgbouncer 2>/dev/null || service pgbouncer stop 2>/dev/null || true
    fi
    [[ -x $PGBOUNCER ]] || die "PgBouncer not found at $PGBOUNCER (apt-get install pgbouncer, or set PGBOUNCER=)"
fi

as_pg() { # run a server-side program as `postgres` when we are root
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
[[ $(id -u) -ne 0 ]] || id -u postgres >/dev/null 2>&1 ||
    die "running as root but there is no 'postgres' OS user (useradd -r postgres)"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
TAKEN=()
free_port() { # a port nobody listens on and we have not handed out yet
    local p=$((20000 + RANDOM % 20000))
    while port_in_use "$p" || [[ " ${TAKEN[*]} " == *" $p "* ]]; do p=$((p + 1)); done
    TAKEN+=("$p")
    echo "$p"
}

wait_port() { # wait_port PORT WHAT PID
    local i
    for i in $(seq 1 200); do
        port_in_use "$1" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# ---- build ---------------------------------------------------------------------
say "building shardbouncer (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
SB_BIN="$TARGET_DIR/release/shardbouncer"
[[ -x $SB_BIN ]] || die "built binary not found at $SB_BIN"

# ---- temp dir and cleanup ------------------------------------------------------
TMP=$(mktemp -d /tmp/sbbench.XXXXXX)
chmod 755 "$TMP"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP"
PGDATA="$TMP/pg"
SB_PID=
PGB_PID=

cleanup() {
    set +e
    if [[ -n $SB_PID ]]; then kill -TERM "$SB_PID" 2>/dev/null; fi
    if [[ -f $TMP/pgbouncer.pid ]]; then
        kill -TERM "$(cat "$TMP/pgbouncer.pid")" 2>/dev/null
    fi
    if [[ -n $PGB_PID ]]; then kill -TERM "$PGB_PID" 2>/dev/null; fi
    if [[ -f $PGDATA/postmaster.pid ]]; then
        (cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w -s stop) >/dev/null 2>&1
    fi
    if [[ -n $SB_PID ]]; then wait "$SB_PID" 2>/dev/null; fi
    if [[ -n $PGB_PID ]]; then wait "$PGB_PID" 2>/dev/null; fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL ----------------------------------------------------------------
PG_PORT=$(free_port)
say "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT ($TMP)"
(cd "$TMP" && as_pg "$INITDB" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
# written by scripts/bench.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<EOF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF
(cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -l "$TMP/postgres.log" -w -t 60 -s start) ||
    { tail -n 30 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }

"$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null <<'EOF'
SET client_min_messages = warning;
CREATE ROLE app LOGIN PASSWORD 'secret';
CREATE DATABASE app OWNER app;
EOF
export PGPASSWORD=secret
say "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app app >"$TMP/pgbench-init.log" 2>&1 ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---- shardbouncer --------------------------------------------------------------
SB_PORT=$(free_port)
cat >"$TMP/shardbouncer.toml" <<EOF
# written by scripts/bench.sh
[listen]
addr = "127.0.0.1:$SB_PORT"

[limits]
max_client_conn = 1000

[pool]
mode = "transaction"
default_pool_size = $POOL_SIZE

[auth]
type = "scram-sha-256"

[[users]]
name = "app"
password = "secret"

[databases.app]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [{ name = "s0", host = "127.0.0.1", port = $PG_PORT }]
EOF
say "starting shardbouncer on 127.0.0.1:$SB_PORT"
SHARDBOUNCER_LOG=${SHARDBOUNCER_LOG:-warn} "$SB_BIN" --config "$TMP/shardbouncer.toml" \
    >"$TMP/shardbouncer.log" 2>&1 &
SB_PID=$!
wait_port "$SB_PORT" shardbouncer "$SB_PID" || { cat "$TMP/shardbouncer.log" >&2; die "shardbouncer did not start"; }

# ---- PgBouncer -----------------------------------------------------------------
PGB_PORT=$(free_port)
PGB_VERSION=$("$PGBOUNCER" --version | head -n1 | awk '{print $2}')
# max_prepared_statements (protocol-level prepared statements in transaction
# mode) exists from PgBouncer 1.21 on.
PGB_PREPARED=0
if printf '%s\n%s\n' 1.21.0 "$PGB_VERSION" | sort -V -C; then PGB_PREPARED=1; fi
{
    echo "; written by scripts/bench.sh"
    echo "[databases]"
    echo "app = host=127.0.0.1 port=$PG_PORT dbname=app"
    echo "[pgbouncer]"
    echo "listen_addr = 127.0.0.1"
    echo "listen_port = $PGB_PORT"
    echo "unix_socket_dir ="
    echo "auth_type = scram-sha-256"
    echo "auth_file = $TMP/userlist.txt"
    echo "pool_mode = transaction"
    echo "default_pool_size = $POOL_SIZE"
    echo "max_client_conn = 1000"
    echo "logfile = $TMP/pgbouncer.log"
    echo "pidfile = $TMP/pgbouncer.pid"
    # Quiet like shardbouncer at its default level: no line per login/logout.
    echo "log_connections = 0"
    echo "log_disconnections = 0"
    if [[ $PGB_PREPARED == 1 ]]; then echo "max_prepared_statements = 200"; fi
} >"$TMP/pgbouncer.ini"
echo '"app" "secret"' >"$TMP/userlist.txt"
chmod 600 "$TMP/userlist.txt"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP/pgbouncer.ini" "$TMP/userlist.txt"
say "starting PgBouncer $PGB_VERSION on 127.0.0.1:$PGB_PORT"
as_pg "$PGBOUNCER" -q "$TMP/pgbouncer.ini" >"$TMP/pgbouncer.out" 2>&1 &
PGB_PID=$!
wait_port "$PGB_PORT" pgbouncer "$PGB_PID" ||
    { cat "$TMP/pgbouncer.out" "$TMP/pgbouncer.log" >&2 2>/dev/null; die "PgBouncer did not start"; }

port_of() {
    case $1 in
        postgres) echo "$PG_PORT" ;;
        pgbouncer) echo "$PGB_PORT" ;;
        shardbouncer) echo "$SB_PORT" ;;
        *) die "unknown target $1" ;;
    esac
}

# ---- runs ----------------------------------------------------------------------
mkdir -p "$OUT/raw"
declare -A TPS LAT FAIL CPU
CLK_TCK=$(getconf CLK_TCK)

pooler_pid() { # the process whose CPU time a run is charged to (none for postgres)
    case $1 in
        pgbouncer) cat "$TMP/pgbouncer.pid" 2>/dev/null || true ;;
        shardbouncer) echo "$SB_PID" ;;
        *) ;;
    esac
}

cpu_ticks() { # utime + stime of PID in clock ticks (all threads)
    [[ -n $1 && -r /proc/$1/stat ]] || return 0
    # Fields after the parenthesised command name; utime and stime are 14 and 15.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

reset_tables() { # what pgbench does before a run, done once directly for every target
    "$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -d app -X -q -v ON_ERROR_STOP=1 \
        -c 'VACUUM pgbench_branches' -c 'VACUUM pgbench_tellers' -c 'TRUNCATE pgbench_history' >/dev/null
    "$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -d app -X -q -c 'CHECKPOINT' >/dev/null
}

run_one() { # run_one WORKLOAD TARGET
    local w=$1 t=$2 port args=() clients=$CLIENTS raw
    port=$(port_of "$t")
    case $w in
        select-*) args+=(-S) ;;
        tpcb-*) ;;
        *) die "unknown workload $w" ;;
    esac
    case $w in
        *-simple*) args+=(-M simple) ;;
        *-extended*) args+=(-M extended) ;;
        *-prepared*) args+=(-M prepared) ;;
    esac
    if [[ $w == *-connect ]]; then
        args+=(-C)
        clients=$CONNECT_CLIENTS
    fi
    raw="$OUT/raw/$w.$t.txt"
    if [[ $t == pgbouncer && $w == *-prepared* && $PGB_PREPARED == 0 ]]; then
        say "$w / $t: skipped (PgBouncer $PGB_VERSION has no max_prepared_statements; needs >= 1.21)"
        TPS[$w,$t]="n/a"
        LAT[$w,$t]=""
        CPU[$w,$t]=""
        FAIL[$w,$t]=""
        echo "skipped: PgBouncer $PGB_VERSION lacks max_prepared_statements" >"$raw"
        return
    fi
    reset_tables
    say "$w / $t: pgbench ${args[*]} -c $clients -j $THREADS -T $DURATION"
    local rc=0 pid cpu0 cpu1
    pid=$(pooler_pid "$t")
    cpu0=$(cpu_ticks "$pid")
    "$PGBENCH" -n -h 127.0.0.1 -p "$port" -U app "${args[@]}" -c "$clients" -j "$THREADS" \
        -T "$DURATION" app >"$raw" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$pid")
    local tps lat failed txns
    tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$raw")
    lat=$(awk '/^latency average = / { printf "%.2f", $4; exit }' "$raw")
    failed=$(awk '/^number of failed transactions: / { print $5; exit }' "$raw")
    txns=$(awk '/^number of transactions actually processed: / { print $6; exit }' "$raw")
    CPU[$w,$t]=""
    if [[ -n $cpu0 && -n $cpu1 && ${txns:-0} -gt 0 ]]; then
        # user+system time of the pooler process per transaction, in microseconds
        CPU[$w,$t]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.0f", d / hz * 1e6 / n }')
    fi
    if [[ $rc -ne 0 || -z $tps ]]; then
        printf '   pgbench failed (exit %s); last lines of %s:\n' "$rc" "$raw" >&2
        tail -n 5 "$raw" >&2
        tps="${tps:-0} (exit $rc)"
    fi
    TPS[$w,$t]=$tps
    LAT[$w,$t]=$lat
    FAIL[$w,$t]=${failed:-0}
    printf '   tps %s, latency %s ms, failed %s, pooler CPU %s us/txn\n' "$tps" "${lat:--}" "${failed:-0}" "${CPU[$w,$t]:--}" >&2
}

for w in $WORKLOADS; do
    for t in $TARGETS; do
        run_one "$w" "$t"
    done
done

# ---- report --------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
cell() { # cell WORKLOAD TARGET
    local tps=${TPS[$1,$2]:-} lat=${LAT[$1,$2]:-} failed=${FAIL[$1,$2]:-}
    [[ -n $tps ]] || { printf '%s' '-'; return; }
    if [[ -n $lat ]]; then printf '%s / %s' "$tps" "$lat"; else printf '%s' "$tps"; fi
    if [[ -n $failed && $failed != 0 ]]; then printf ' (%s failed)' "$failed"; fi
}
ratio() { # shardbouncer tps / pgbouncer tps
    local a=${TPS[$1,shardbouncer]:-} b=${TPS[$1,pgbouncer]:-}
    if [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ && $b -gt 0 ]]; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
    else
        printf '%s' '-'
    fi
}
{
    echo "# pgbench: PostgreSQL vs PgBouncer vs shardbouncer"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); host: $(nproc) CPUs, $(uname -sr)"
    echo "- $("$PGBENCH" --version); $("$PG_CTL" --version | sed 's/pg_ctl/server/'); PgBouncer $PGB_VERSION; $("$SB_BIN" --version 2>/dev/null || echo shardbouncer) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "- pgbench -c $CLIENTS -j $THREADS -T $DURATION (-C runs: -c $CONNECT_CLIENTS), scale $SCALE, pool size $POOL_SIZE, transaction mode, SCRAM client auth"
    echo "- load average (1/5/15 min) before the runs: $LOAD_START; after: $LOAD_END (pgbench, PostgreSQL and the poolers share the machine)"
    echo "- PostgreSQL: fsync/synchronous_commit/full_page_writes off, shared_buffers 256MB, max_connections 200"
    echo
    echo "Cells: tps / average latency in ms (pgbench -n; tables vacuumed and history truncated before every run)."
    echo
    printf '| workload | pgbench flags |'
    for t in $TARGETS; do printf ' %s |' "$t"; done
    printf ' shardbouncer / pgbouncer |\n'
    printf '|---|---|'
    for t in $TARGETS; do printf '%s' '---:|'; done
    printf '%s\n' '---:|'
    for w in $WORKLOADS; do
        flags=""
        case $w in select-*) flags="-S " ;; esac
        case $w in
            *-simple*) flags+="-M simple" ;;
            *-extended*) flags+="-M extended" ;;
            *-prepared*) flags+="-M prepared" ;;
        esac
        [[ $w != *-connect ]] || flags+=" -C"
        printf '| %s | `%s` |' "$w" "$flags"
        for t in $TARGETS; do printf ' %s |' "$(cell "$w" "$t")"; done
        printf ' %s |\n' "$(ratio "$w")"
    done
    if [[ " $TARGETS " == *" pgbouncer "* || " $TARGETS " == *" shardbouncer "* ]]; then
        echo
        echo "Pooler CPU time (user+system, from /proc) per transaction, in microseconds:"
        echo
        printf '| workload |'
        for t in $TARGETS; do [[ $t == postgres ]] || printf ' %s |' "$t"; done
        printf '\n|---|'
        for t in $TARGETS; do [[ $t == postgres ]] || printf '%s' '---:|'; done
        printf '\n'
        for w in $WORKLOADS; do
            printf '| %s |' "$w"
            for t in $TARGETS; do [[ $t == postgres ]] || printf ' %s |' "${CPU[$w,$t]:--}"; done
            printf '\n'
        done
    fi
    if [[ $PGB_PREPARED == 0 && " $TARGETS " == *" pgbouncer "* ]]; then
        echo
        echo "PgBouncer $PGB_VERSION predates max_prepared_statements (1.21), so -M prepared is not run against it (n/a)."
    fi
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
echo
say "written to $OUT/results.md (raw pgbench output in $OUT/raw/)"
