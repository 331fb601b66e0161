#!/usr/bin/env bash
# Overhead benchmark: direct PostgreSQL vs PgBouncer vs shardbouncer, in one
# run, on one throwaway PostgreSQL cluster (issue 10).
#
#   ./scripts/bench.sh                                 # the work tree
#   BENCH_REV=HEAD ./scripts/bench.sh                  # a committed revision
#   BENCH_SB_BIN=/path/to/shardbouncer ./scripts/bench.sh
#
# Three sections (BENCH_SECTIONS, default all of them):
#
#  pgbench   For each workload, pgbench against PostgreSQL, PgBouncer and
#            shardbouncer back to back (interleaved, so drift of the machine
#            hits all three alike). Per run: TPS, average latency, failed
#            transactions (and aborted clients), pooler CPU time per
#            transaction (utime+stime from /proc/<pid>/stat) and pooler
#            context switches per transaction (voluntary + nonvoluntary, summed
#            over /proc/<pid>/task/*/status), and the involuntary ones alone
#            (preemptions: on a small machine where pgbench and Postgres share
#            the cores, most of them). The CPU and context-switch deltas
#            cover the steady state only: from pgbench's first progress report
#            (-P 1, one second after every client has connected) to the end;
#            the transactions counted are the total minus those of that first
#            second. So logins (SCRAM for 1000 clients) are not charged to the
#            transactions, except in the -C workload where they are the point.
#  routing   shardbouncer alone: a routed database with 2 shards (both on the
#            same cluster and database) against the same shardbouncer's
#            unrouted database, with a pgbench custom script whose tenant comes
#            from (startup) PGOPTIONS=-ctenant_id=1, (comment) /* tenant_id=N */,
#            (scan) WHERE aid = N AND tenant_id = T in the text, (bind)
#            tenant_id = $2 under -M extended. In the routed database every
#            tenant the script uses lives on shard s0 (explicit citus hash
#            ranges: s0 owns the whole hash space, s1 exists but is empty), so
#            both databases have the same single pool of BENCH_POOL_SIZE servers
#            and the difference is the routing work alone. (spread) is the scan
#            script on a database whose tenants are split evenly over both
#            shards, with BENCH_POOL_SIZE/2 servers per shard (same total), so
#            transactions alternate between two pools.
#  idle      A fresh PgBouncer and a fresh shardbouncer (trust auth, transaction
#            mode, pool 20, max_client_conn N+100): scripts/idle_clients.py
#            connects N logged-in idle clients and reads the pooler's RSS
#            before, with N connected, after each ran one SELECT 1 through the
#            pool, and after all of them disconnected; it also times the N
#            logins and counts errors.
#
# Output: the tables on stdout and in $BENCH_OUT/results.md; raw pgbench and
# idle_clients.py output in $BENCH_OUT/raw/. Everything is torn down on exit;
# only 127.0.0.1 is used. With the defaults it takes about 12 minutes.
#
# Environment (defaults in brackets):
#   BENCH_DURATION [15]     seconds per pgbench run (-T), plus
#   BENCH_CONNECT_ALLOW [15] seconds per 1000 clients for pgbench to connect them
#                           (-T counts from before the logins; 1000 clients: -T 30)
#   BENCH_THREADS  [2]      pgbench threads (-j)
#   BENCH_SCALE    [10]     pgbench -i scale factor
#   BENCH_POOL_SIZE [20]    default_pool_size for both poolers
#   BENCH_ROUNDS   [1]      repeat every pgbench/routing comparison this often
#                           (target order alternates); tables show medians
#   BENCH_SECTIONS ["pgbench routing idle"]
#   BENCH_TARGETS  ["postgres pgbouncer shardbouncer"]
#   BENCH_WORKLOADS ["select-simple:10 select-simple:100 select-simple:1000
#                     select-extended:100 tpcb-simple:100 select-prepared:100"]
#       NAME:CLIENTS, NAME = select|tpcb - simple|extended|prepared [-connect]
#       (-S or the built-in tpcb-like script; -connect adds -C)
#   BENCH_CLIENTS  [100]    clients for a workload given without :CLIENTS
#   BENCH_ROUTE_VARIANTS ["startup comment scan bind spread"]
#   BENCH_ROUTE_CLIENTS [100]   pgbench clients in the routing section
#   BENCH_ROUTE_TENANTS [1000]  tenants in the routing table (rows: 100 per tenant)
#   BENCH_ROUTE_ROUNDS [2]  rounds of every routing comparison (off/on, then on/off)
#   BENCH_IDLE_CLIENTS [10000]  idle clients (0 skips the idle section)
#   BENCH_IDLE_CONCURRENCY [128] logins in flight while connecting them
#   BENCH_IDLE_TARGETS ["pgbouncer shardbouncer"]
#   BENCH_WAIT_QUIET [0]    before the first run and before every pgbench run,
#                           wait for the machine to be idle (< 15% CPU busy over
#                           2 s, niced jobs not counted; costs 2 s per run), at most this many seconds
#                           in all; the time waited is in the report
#   BENCH_REV               build shardbouncer from this git revision (git
#                           archive into target/bench-rev/) instead of the work tree
#   BENCH_SB_BIN            use this shardbouncer binary, build nothing
#   BENCH_SB_WORKERS        shardbouncer's [limits] workers (unset: its default,
#                           half the CPU cores); older binaries do not know the key
#   BENCH_OUT      [target/bench]  where results.md and raw/ go
#   BENCH_KEEP=1            keep the temp dir (logs, configs) instead of deleting it
#   PGBOUNCER      [/usr/sbin/pgbouncer]
#
# Needs: PostgreSQL (initdb, pg_ctl, psql, pgbench; on PATH or in
# /usr/lib/postgresql/*/bin), cargo, python3 (idle section), and PgBouncer
# (installed with apt-get if missing and we are root). When run as root,
# PostgreSQL and PgBouncer run as the `postgres` OS user (both refuse to run as
# root), and the open-files limit is raised for the 1000-client and idle runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-15}
THREADS=${BENCH_THREADS:-2}
SCALE=${BENCH_SCALE:-10}
POOL_SIZE=${BENCH_POOL_SIZE:-20}
ROUNDS=${BENCH_ROUNDS:-1}
SECTIONS=${BENCH_SECTIONS:-pgbench routing idle}
TARGETS=${BENCH_TARGETS:-postgres pgbouncer shardbouncer}
WORKLOADS=${BENCH_WORKLOADS:-select-simple:10 select-simple:100 select-simple:1000 select-extended:100 tpcb-simple:100 select-prepared:100}
DEFAULT_CLIENTS=${BENCH_CLIENTS:-100}
ROUTE_VARIANTS=${BENCH_ROUTE_VARIANTS:-startup comment scan bind spread}
ROUTE_CLIENTS=${BENCH_ROUTE_CLIENTS:-100}
ROUTE_TENANTS=${BENCH_ROUTE_TENANTS:-1000}
ROUTE_ROUNDS=${BENCH_ROUTE_ROUNDS:-2}
ROUTE_ROWS=$((ROUTE_TENANTS * 100))
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-10000}
IDLE_CONCURRENCY=${BENCH_IDLE_CONCURRENCY:-128}
IDLE_TARGETS=${BENCH_IDLE_TARGETS:-pgbouncer shardbouncer}
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
CONNECT_ALLOW=${BENCH_CONNECT_ALLOW:-15}
OUT=${BENCH_OUT:-$ROOT/target/bench}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
STARTED=$(date +%s)

SCRIPT=bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $ROUTE_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUTE_ROUNDS must be a positive integer"
[[ $IDLE_CLIENTS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_CLIENTS must be a number"
[[ $IDLE_CLIENTS -gt 0 ]] || SECTIONS=${SECTIONS//idle/}

# ---- workloads -----------------------------------------------------------------
wl_name() { echo "${1%%:*}"; }
wl_clients() { if [[ $1 == *:* ]]; then echo "${1##*:}"; else echo "$DEFAULT_CLIENTS"; fi; }
wl_flags() { # pgbench flags of a workload name
    local n=$1 f=()
    case $n in
        select-*) f+=(-S) ;;
        tpcb-*) ;;
        *) die "unknown workload $n (expected select-... or tpcb-...)" ;;
    esac
    case $n in
        *-simple*) f+=(-M simple) ;;
        *-extended*) f+=(-M extended) ;;
        *-prepared*) f+=(-M prepared) ;;
        *) die "unknown workload $n (expected -simple, -extended or -prepared)" ;;
    esac
    [[ $n != *-connect ]] || f+=(-C)
    echo "${f[*]}"
}
MAX_CLIENTS=$ROUTE_CLIENTS
for w in $WORKLOADS; do
    wl_flags "$(wl_name "$w")" >/dev/null
    c=$(wl_clients "$w")
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "bad client count in workload $w"
    ((c <= MAX_CLIENTS)) || MAX_CLIENTS=$c
done

# ---- programs ------------------------------------------------------------------
INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
PSQL=$(pg_bin psql)
PGBENCH=$(pg_bin pgbench)
PYTHON=${PYTHON:-python3}
if has_section idle; then command -v "$PYTHON" >/dev/null || die "python3 is needed for the idle section"; fi

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

need_postgres_user

# Open files: a pooler holds one per client (plus its servers), pgbench and the
# idle client one per connection. Children inherit the limit; runuser resets the
# soft limit, so PgBouncer raises it again (start_pgbouncer).
NOFILE_WANT=$(((MAX_CLIENTS > IDLE_CLIENTS ? MAX_CLIENTS : IDLE_CLIENTS) + 1024))
if (($(ulimit -Sn) < NOFILE_WANT)); then
    if (($(ulimit -Hn) < NOFILE_WANT)) && [[ $(id -u) -eq 0 ]]; then ulimit -Hn "$NOFILE_WANT" 2>/dev/null || true; fi
    ulimit -Sn "$NOFILE_WANT" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
fi
(($(ulimit -Sn) >= NOFILE_WANT)) || say "warning: open files limit $(ulimit -Sn) < $NOFILE_WANT; big client counts may fail"

# ---- shardbouncer binary -------------------------------------------------------
if [[ -n ${BENCH_SB_BIN:-} ]]; then
    SB_BIN=$BENCH_SB_BIN
    SB_REV="(prebuilt $SB_BIN)"
elif [[ -n ${BENCH_REV:-} ]]; then
    REV_SHA=$(git -C "$ROOT" rev-parse --verify "${BENCH_REV}^{commit}") || die "unknown revision $BENCH_REV"
    REV_DIR="$ROOT/target/bench-rev"
    if [[ $(cat "$REV_DIR/src/.bench-rev" 2>/dev/null) != "$REV_SHA" ]]; then
        say "exporting $BENCH_REV ($REV_SHA) to $REV_DIR/src"
        rm -rf "$REV_DIR/src"
        mkdir -p "$REV_DIR/src"
        git -C "$ROOT" archive --format=tar "$REV_SHA" | tar -x -C "$REV_DIR/src"
        echo "$REV_SHA" >"$REV_DIR/src/.bench-rev"
    fi
    say "building shardbouncer $BENCH_REV (cargo build --release)"
    (cd "$REV_DIR/src" && CARGO_TARGET_DIR="$REV_DIR/target" cargo build --release --quiet)
    SB_BIN="$REV_DIR/target/release/shardbouncer"
    SB_REV=$(git -C "$ROOT" log --oneline -1 "$REV_SHA")
else
    build_shardbouncer --quiet
fi
[[ -x $SB_BIN ]] || die "shardbouncer binary not found at $SB_BIN"

# ---- temp dir and cleanup ------------------------------------------------------
TMP=$(mktemp -d /tmp/sbbench.XXXXXX)
chmod 755 "$TMP"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP"
PGDATA="$TMP/pg"
SB_PID=
PGB_PID=
EXTRA_PIDS=()   # PIDs of the idle section's poolers

cleanup() {
    set +e
    local p
    for p in $SB_PID $PGB_PID "${EXTRA_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for f in "$TMP"/pgbouncer*.pid; do [[ -f $f ]] && kill -TERM "$(cat "$f" 2>/dev/null)" 2>/dev/null; done
    if [[ -f $PGDATA/postmaster.pid ]]; then
        (cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w -s stop) >/dev/null 2>&1
    fi
    for p in $SB_PID $PGB_PID "${EXTRA_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL ----------------------------------------------------------------
free_port PG_PORT
PG_MAX_CONN=$((MAX_CLIENTS + 4 * POOL_SIZE + 100))
((PG_MAX_CONN >= 200)) || PG_MAX_CONN=200
say "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT ($TMP), max_connections $PG_MAX_CONN"
(cd "$TMP" && as_pg "$INITDB" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
# written by scripts/bench.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
password_encryption = 'scram-sha-256'
max_connections = $PG_MAX_CONN
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
PM_PID=$(head -n1 "$PGDATA/postmaster.pid")

psql_admin() { "$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres >/dev/null <<'EOF'
SET client_min_messages = warning;
CREATE ROLE app LOGIN PASSWORD 'secret';
CREATE DATABASE app OWNER app;
EOF
export PGPASSWORD=secret
say "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app app >"$TMP/pgbench-init.log" 2>&1 ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
if has_section routing; then
    # The routing section's table: pgbench_accounts-like rows with a tenant key,
    # ROUTE_TENANTS tenants of 100 rows each; the tenant of account aid is
    # (aid - 1) % ROUTE_TENANTS + 1, so a script can name it without a lookup.
    psql_admin -d app >/dev/null <<EOF
SET client_min_messages = warning;
CREATE TABLE bench_accounts (aid int PRIMARY KEY, tenant_id int NOT NULL, abalance int NOT NULL, filler char(84));
INSERT INTO bench_accounts SELECT g, (g - 1) % $ROUTE_TENANTS + 1, 0, '' FROM generate_series(1, $ROUTE_ROWS) g;
ALTER TABLE bench_accounts OWNER TO app;
VACUUM ANALYZE bench_accounts;
EOF
fi

# ---- shardbouncer (SCRAM; also the routing section's databases) -----------------
free_port SB_PORT
cat >"$TMP/shardmap-s0.toml" <<'EOF'
# written by scripts/bench.sh: citus hashing, but s0 owns the whole hash space
version = 1
method = "citus"
[[hash_ranges]]
min = -2147483648
max = 2147483647
shard = "s0"
EOF
cat >"$TMP/shardmap-spread.toml" <<'EOF'
# written by scripts/bench.sh: citus hashing, int32 hash space split in two
version = 1
method = "citus"
EOF
cat >"$TMP/shardbouncer.toml" <<EOF
# written by scripts/bench.sh
[listen]
addr = "127.0.0.1:$SB_PORT"

[limits]
max_client_conn = $((MAX_CLIENTS + 100))
${BENCH_SB_WORKERS:+workers = $BENCH_SB_WORKERS}

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

# routing section: two shards on the same cluster and database
[databases.routed]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [
    { name = "s0", host = "127.0.0.1", port = $PG_PORT },
    { name = "s1", host = "127.0.0.1", port = $PG_PORT },
]
[databases.routed.routing]
shard_map = "shardmap-s0.toml"

[databases.spread]
dbname = "app"
server_user = "app"
server_password = "secret"
default_pool_size = $(((POOL_SIZE + 1) / 2))
shards = [
    { name = "s0", host = "127.0.0.1", port = $PG_PORT },
    { name = "s1", host = "127.0.0.1", port = $PG_PORT },
]
[databases.spread.routing]
shard_map = "shardmap-spread.toml"
EOF
"$SB_BIN" --check --config "$TMP/shardbouncer.toml" >"$TMP/shardbouncer-check.log" 2>&1 ||
    { cat "$TMP/shardbouncer-check.log" >&2; die "shardbouncer --check rejected the generated config"; }
say "starting shardbouncer on 127.0.0.1:$SB_PORT"
SHARDBOUNCER_LOG=${SHARDBOUNCER_LOG:-warn} "$SB_BIN" --config "$TMP/shardbouncer.toml" \
    >"$TMP/shardbouncer.log" 2>&1 &
SB_PID=$!
wait_port "$SB_PORT" "$SB_PID" || { cat "$TMP/shardbouncer.log" >&2; die "shardbouncer did not start"; }

# ---- PgBouncer -----------------------------------------------------------------
PGB_VERSION=$("$PGBOUNCER" --version | head -n1 | awk '{print $2}')
# max_prepared_statements (protocol-level prepared statements in transaction
# mode) exists from PgBouncer 1.21 on.
PGB_PREPARED=0
if printf '%s\n%s\n' 1.21.0 "$PGB_VERSION" | sort -V -C; then PGB_PREPARED=1; fi

write_pgbouncer_ini() { # write_pgbouncer_ini NAME PORT AUTH_TYPE MAX_CLIENT_CONN
    local name=$1 port=$2 auth=$3 maxc=$4
    {
        echo "; written by scripts/bench.sh"
        echo "[databases]"
        echo "app = host=127.0.0.1 port=$PG_PORT dbname=app"
        echo "[pgbouncer]"
        echo "listen_addr = 127.0.0.1"
        echo "listen_port = $port"
        echo "unix_socket_dir ="
        echo "auth_type = $auth"
        echo "auth_file = $TMP/userlist.txt"
        echo "pool_mode = transaction"
        echo "default_pool_size = $POOL_SIZE"
        echo "max_client_conn = $maxc"
        echo "logfile = $TMP/$name.log"
        echo "pidfile = $TMP/$name.pid"
        # Quiet like shardbouncer at its default level: no line per login/logout.
        echo "log_connections = 0"
        echo "log_disconnections = 0"
        if [[ $PGB_PREPARED == 1 ]]; then echo "max_prepared_statements = 200"; fi
    } >"$TMP/$name.ini"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$TMP/$name.ini"
}
start_pgbouncer() { # start_pgbouncer NAME PORT: prints the pid of the daemon
    local name=$1 port=$2 bg i
    # shellcheck disable=SC2016
    as_pg sh -c 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; shift; exec "$@"' sh \
        "$(ulimit -Sn)" "$PGBOUNCER" -q "$TMP/$name.ini" >"$TMP/$name.out" 2>&1 &
    bg=$!
    wait_port "$port" "$bg" ||
        { cat "$TMP/$name.out" "$TMP/$name.log" >&2 2>/dev/null; die "PgBouncer ($name) did not start"; }
    for i in $(seq 1 100); do [[ -s $TMP/$name.pid ]] && break; sleep 0.05; done
    cat "$TMP/$name.pid"
}
echo '"app" "secret"' >"$TMP/userlist.txt"
chmod 600 "$TMP/userlist.txt"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP/userlist.txt"

free_port PGB_PORT
write_pgbouncer_ini pgbouncer "$PGB_PORT" scram-sha-256 $((MAX_CLIENTS + 100))
say "starting PgBouncer $PGB_VERSION on 127.0.0.1:$PGB_PORT"
PGB_PID=$(start_pgbouncer pgbouncer "$PGB_PORT")

port_of() {
    case $1 in
        postgres) echo "$PG_PORT" ;;
        pgbouncer) echo "$PGB_PORT" ;;
        shardbouncer) echo "$SB_PORT" ;;
        *) die "unknown target $1" ;;
    esac
}
pooler_pid() { # the process whose CPU time a run is charged to (none for postgres)
    case $1 in
        pgbouncer) echo "$PGB_PID" ;;
        shardbouncer) echo "$SB_PID" ;;
        *) ;;
    esac
}

# ---- measurement helpers -------------------------------------------------------
mkdir -p "$OUT/raw"
rm -f "$OUT"/raw/*.txt
CLK_TCK=$(getconf CLK_TCK)

snap() { # snap PID: "<utime+stime ticks> <context switches> <involuntary ones>" (all threads), or "- - -"
    local pid=$1 ticks ctx
    if [[ -z $pid || ! -r /proc/$pid/stat ]]; then echo "- - -"; return; fi
    # Fields after the parenthesised command name; utime and stime are 14 and 15.
    ticks=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
    ctx=$(cat /proc/"$pid"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches:/ { s += $2 }
             /^nonvoluntary_ctxt_switches:/ { s += $2; n += $2 }
             END { print s + 0, n + 0 }')
    echo "$ticks $ctx"
}

cpu_busy_pct() { # cpu_busy_pct SECONDS: whole-machine CPU busy % over that time (niced jobs excluded)
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $3+$5+$6 }' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $3+$5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# Others' CPU: how much of the machine went to processes that are not part of
# the benchmark (other jobs on a shared box), so a contaminated run can be told
# from a slow one. Machine user+nice+system time from /proc/stat, minus ours:
# our postmaster with its reaped backends and its live children, the poolers,
# and this shell with its reaped children (pgbench, psql, python, an exited
# shardbouncer). Other work trees' test clusters also run as `postgres`, so
# processes are picked by ancestry and pid, not by user.
DEAD_TICKS=0    # CPU of poolers we stopped and cannot see reaped (PgBouncer under runuser)
machine_snap() { # machine_snap VAR: VAR="<epoch> <machine busy ticks> <our ticks>"
    if [[ $(id -u) -ne 0 ]]; then printf -v "$1" '%s' "- - -"; return; fi
    # `times` must run in this shell (not in a $(...) subshell) to see its children.
    times >"$TMP/times"
    printf -v "$1" '%s %s %s' "$EPOCHREALTIME" "$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat)" "$(ours_ticks)"
}
ours_ticks() {
    {
        awk -v hz="$CLK_TCK" 'NR <= 2 { for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } }
            END { printf "%.0f\n", s * hz }' "$TMP/times"
        echo "$DEAD_TICKS"
        # /proc/PID/stat without "(comm) ": pid state ppid ... utime=$13 stime=$14 cutime=$15 cstime=$16
        cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^\([0-9]*\) (.*) /\1 /' |
            awk -v pm="${PM_PID:-0}" -v pools=" $SB_PID $PGB_PID ${EXTRA_PIDS[*]} " '
                $1 == pm { s += $13 + $14 + $15 + $16; next }
                $3 == pm { s += $13 + $14; next }
                index(pools, " " $1 " ") { s += $13 + $14 }
                END { print s + 0 }'
    } | awk '{ s += $1 } END { print s + 0 }'
}
proc_ticks() { # proc_ticks PID: utime+stime
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}
others_pct() { # others_pct SNAP0 SNAP1: % of all CPUs used by foreign processes in between
    awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        if (x[1] == "-" || y[1] <= x[1]) exit;
        f = (y[2] - x[2]) - (y[3] - x[3]); if (f < 0) f = 0;
        printf "%.0f", 100 * f / ((y[1] - x[1]) * hz * n) }'
}

reset_tables() { # what pgbench does before a run, done once directly for every target
    psql_admin -d app -c 'VACUUM pgbench_branches' -c 'VACUUM pgbench_tellers' \
        -c 'TRUNCATE pgbench_history' >/dev/null
    psql_admin -d app -c 'CHECKPOINT' >/dev/null
}

# Results of every run, keyed "<row>|<target>|<round>": TPS LAT FAIL CPU CTX
# (context switches per transaction) INV (the involuntary ones) OTH.
declare -A TPS LAT FAIL CPU CTX INV OTH

# measure KEY PID RAW PGBENCH-ARGS...: runs pgbench -P 1 and records the results.
measure() {
    local key=$1 pid=$2 raw=$3
    shift 3
    local s0="$TMP/snap0" s1 rc m0
    rm -f "$s0"
    machine_snap m0
    # pgbench's progress reports arrive on stderr, unbuffered; the first one (1 s
    # after all clients are connected) starts the CPU/context-switch window.
    {
        "$PGBENCH" "$@" -P 1 2>&1
        echo "pgbench exit status: $?"
    } | tee "$raw" | {
        while IFS= read -r line; do
            if [[ $line == progress:* ]]; then
                echo "$(snap "$pid") $EPOCHREALTIME $line" >"$s0"
                break
            fi
        done
        cat >/dev/null
    }
    s1=$(snap "$pid")
    local e1=$EPOCHREALTIME
    local m1
    machine_snap m1
    OTH[$key]=$(others_pct "$m0" "$m1")
    rc=$(awk '/^pgbench exit status: / { print $4 }' "$raw")
    local tps lat failed aborted txns
    tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$raw")
    lat=$(awk '/^latency average = / { printf "%.2f", $4; exit }' "$raw")
    failed=$(awk '/^number of failed transactions: / { print $5; exit }' "$raw")
    aborted=$(grep -Ec 'client [0-9]+ (script [0-9]+ )?aborted' "$raw" || true)
    txns=$(awk '/^number of transactions actually processed: / { split($6, a, "/"); print a[1]; exit }' "$raw")
    TPS[$key]=${tps:-}
    LAT[$key]=${lat:-}
    FAIL[$key]=${failed:-?}
    if [[ ${aborted:-0} -gt 0 ]]; then FAIL[$key]+=" +${aborted} aborted"; fi
    if [[ $rc != 0 || -z $tps ]]; then
        printf '   pgbench failed (exit %s); last lines of %s:\n' "$rc" "$raw" >&2
        grep -v '^progress:' "$raw" | tail -n 5 >&2
        FAIL[$key]+=" (exit $rc)"
    fi
    CPU[$key]=""
    CTX[$key]=""
    INV[$key]=""
    if [[ -s $s0 && -n $pid && ${txns:-0} -gt 0 ]]; then
        # s0: "<ticks> <ctx> <involuntary> <epoch> progress: 1.0 s, 12345.6 tps,
        # lat ..."; the first report covers the time since pgbench started
        # (connecting included).
        local c0 x0 v0 e0 t1 tps1 c1 x1 v1 window secs
        read -r c0 x0 v0 e0 _ t1 _ tps1 _ <"$s0"
        read -r c1 x1 v1 <<<"$s1"
        if [[ $c0 != - && $c1 != - ]]; then
            window=$(awk -v n="$txns" -v t="$t1" -v r="$tps1" 'BEGIN { printf "%.0f", n - t * r }')
            secs=$(awk -v a="$e0" -v b="$e1" 'BEGIN { printf "%.1f", b - a }')
            echo "measured window: $window transactions in $secs s after the first progress report at $t1 s;" \
                "pooler ticks $c0 -> $c1 (CLK_TCK $CLK_TCK), context switches $x0 -> $x1 (involuntary $v0 -> $v1)" >>"$raw"
            if awk -v s="$secs" -v d="$DURATION" 'BEGIN { exit !(s < d / 2) }'; then
                say "warning: steady-state window only $secs s (clients took long to connect; raise BENCH_CONNECT_ALLOW)"
            fi
            if ((window > 0)); then
                CPU[$key]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$window" \
                    'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
                CTX[$key]=$(awk -v d=$((x1 - x0)) -v n="$window" 'BEGIN { printf "%.2f", d / n }')
                INV[$key]=$(awk -v d=$((v1 - v0)) -v n="$window" 'BEGIN { printf "%.2f", d / n }')
            fi
        fi
    fi
    printf '   tps %s, latency %s ms, failed %s, pooler CPU %s us/txn, %s ctx switches/txn (%s involuntary), others %s%% CPU\n' \
        "${tps:--}" "${lat:--}" "${FAIL[$key]}" "${CPU[$key]:--}" "${CTX[$key]:--}" "${INV[$key]:--}" "${OTH[$key]:--}" >&2
}

run_seconds() { # run_seconds CLIENTS WORKLOAD: pgbench -T, i.e. the duration plus time to connect
    # pgbench -T counts from before the clients connect (1000 SCRAM logins take
    # 5-12 s here); the measurement window starts once they are connected.
    if [[ $2 == *-connect ]]; then echo "$DURATION"; else echo $((DURATION + $1 * CONNECT_ALLOW / 1000)); fi
}

median() { # median VALUES...: median of the numeric ones, "" if none
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
              else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2; print (m == int(m) ? m : sprintf("%.2f", m)) } }'
}
MAX_ROUNDS=$((ROUNDS > ROUTE_ROUNDS ? ROUNDS : ROUTE_ROUNDS))
med() { # med ARRAY ROW TARGET: median over the rounds
    local -n arr=$1
    local r vals=()
    for ((r = 1; r <= MAX_ROUNDS; r++)); do vals+=("${arr[$2|$3|$r]:-}"); done
    median "${vals[@]}"
}
fails() { # fails ROW TARGET: failures of every round, joined
    local r v out=""
    for ((r = 1; r <= MAX_ROUNDS; r++)); do
        v=${FAIL[$1|$2|$r]:-}
        [[ -z $v || $v == 0 ]] || out+="${out:+; }$v"
    done
    echo "${out:-0}"
}
ratio() { # ratio A B [DIGITS]
    if [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, a / b }'
    else
        printf '%s' '-'
    fi
}
order() { # order ROUND ITEMS...: the items, reversed in even rounds
    local r=$1
    shift
    if ((r % 2)); then echo "$*"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
QUIET_WAITED=0
wait_quiet() { # with BENCH_WAIT_QUIET: wait until others leave the machine (one budget for the whole run)
    ((WAIT_QUIET > QUIET_WAITED)) || return 0
    local busy
    while busy=$(cpu_busy_pct 2); ((busy >= 15 && QUIET_WAITED < WAIT_QUIET)); do
        say "machine busy (${busy}% CPU); waiting for it to be quiet (waited $QUIET_WAITED of $WAIT_QUIET s)"
        sleep 3
        QUIET_WAITED=$((QUIET_WAITED + 5))
    done
}
wait_quiet
BUSY_START=$(cpu_busy_pct 3)
TOP_START=$(top -bn1 -w 200 | awk 'NR > 7 && $9 + 0 >= 5 { printf "%s%s %s%% (%s)", sep, $12, $9, $2; sep = ", " }')
if ((BUSY_START >= 15)); then
    say "warning: the machine was ${BUSY_START}% busy before the runs: ${TOP_START:-?}"
fi

machine_snap M_START

# ---- section: pgbench ----------------------------------------------------------
if has_section pgbench; then
    for w in $WORKLOADS; do
        name=$(wl_name "$w")
        clients=$(wl_clients "$w")
        read -r -a flags <<<"$(wl_flags "$name")"
        for ((r = 1; r <= ROUNDS; r++)); do
            for t in $(order "$r" $TARGETS); do
                key="$w|$t|$r"
                raw="$OUT/raw/$name-c$clients.$t.r$r.txt"
                if [[ $t == pgbouncer && $name == *-prepared* && $PGB_PREPARED == 0 ]]; then
                    say "$w / $t: skipped (PgBouncer $PGB_VERSION has no max_prepared_statements; needs >= 1.21)"
                    echo "skipped: PgBouncer $PGB_VERSION lacks max_prepared_statements" >"$raw"
                    TPS[$key]="n/a"
                    continue
                fi
                reset_tables
                wait_quiet
                say "$w / $t (round $r): pgbench ${flags[*]} -c $clients -j $THREADS -T $(run_seconds "$clients" "$name")"
                measure "$key" "$(pooler_pid "$t")" "$raw" -n -h 127.0.0.1 -p "$(port_of "$t")" -U app \
                    "${flags[@]}" -c "$clients" -j "$THREADS" -T "$(run_seconds "$clients" "$name")" app
            done
        done
    done
fi

# ---- section: routing ----------------------------------------------------------
# variant -> "database for routing on|pgbench -M|script|PGOPTIONS"
declare -A ROUTE_SPEC=(
    [startup]="routed|simple|plain|-c tenant_id=1"
    [comment]="routed|simple|comment|"
    [scan]="routed|simple|scan|"
    [bind]="routed|extended|scan|"
    [spread]="spread|simple|scan|"
)
declare -A ROUTE_DESC=(
    [startup]='startup parameter `PGOPTIONS=-ctenant_id=1`'
    [comment]='comment `/* tenant_id=:t */ SELECT ... WHERE aid = :aid`'
    [scan]='scan `WHERE aid = :aid AND tenant_id = :t` (literal)'
    [bind]='Bind `WHERE aid = $1 AND tenant_id = $2` (`-M extended`)'
    [spread]='scan, tenants split over both shards (2 pools of half size)'
)
if has_section routing; then
    cat >"$TMP/route-plain.sql" <<EOF
\set aid random(1, $ROUTE_ROWS)
SELECT abalance FROM bench_accounts WHERE aid = :aid;
EOF
    cat >"$TMP/route-comment.sql" <<EOF
\set aid random(1, $ROUTE_ROWS)
\set t (:aid - 1) % $ROUTE_TENANTS + 1
/* tenant_id=:t */ SELECT abalance FROM bench_accounts WHERE aid = :aid;
EOF
    cat >"$TMP/route-scan.sql" <<EOF
\set aid random(1, $ROUTE_ROWS)
\set t (:aid - 1) % $ROUTE_TENANTS + 1
SELECT abalance FROM bench_accounts WHERE aid = :aid AND tenant_id = :t;
EOF
    cp "$TMP"/route-*.sql "$OUT/raw/"
    for v in $ROUTE_VARIANTS; do
        [[ -n ${ROUTE_SPEC[$v]:-} ]] || die "unknown routing variant $v (startup comment scan bind spread)"
        IFS='|' read -r db mode script opts <<<"${ROUTE_SPEC[$v]}"
        for ((r = 1; r <= ROUTE_ROUNDS; r++)); do
            for side in $(order "$r" off on); do
                key="route-$v|$side|$r"
                raw="$OUT/raw/route-$v.$side.r$r.txt"
                d=app o=""
                if [[ $side == on ]]; then d=$db o=$opts; fi
                wait_quiet
                say "routing $v / $side (round $r): pgbench -M $mode -f route-$script.sql -c $ROUTE_CLIENTS, database $d${o:+, PGOPTIONS=$o}"
                PGOPTIONS=$o measure "$key" "$SB_PID" "$raw" -n -h 127.0.0.1 -p "$SB_PORT" -U app \
                    -M "$mode" -f "$TMP/route-$script.sql" -c "$ROUTE_CLIENTS" -j "$THREADS" \
                    -T "$(run_seconds "$ROUTE_CLIENTS" route)" "$d"
            done
        done
    done
fi

# ---- section: idle clients -----------------------------------------------------
declare -A IDLE
if has_section idle; then
    idle_maxc=$((IDLE_CLIENTS + 100))
    for t in $IDLE_TARGETS; do
        free_port port
        case $t in
            pgbouncer)
                write_pgbouncer_ini pgbouncer-idle "$port" trust "$idle_maxc"
                say "idle: starting a fresh PgBouncer (trust) on 127.0.0.1:$port"
                pid=$(start_pgbouncer pgbouncer-idle "$port")
                EXTRA_PIDS+=("$pid")
                ;;
            shardbouncer)
                cat >"$TMP/shardbouncer-idle.toml" <<EOF
# written by scripts/bench.sh (idle section)
[listen]
addr = "127.0.0.1:$port"
[limits]
max_client_conn = $idle_maxc
${BENCH_SB_WORKERS:+workers = $BENCH_SB_WORKERS}
[pool]
mode = "transaction"
default_pool_size = $POOL_SIZE
[auth]
type = "trust"
[[users]]
name = "app"
password = "secret"
[databases.app]
dbname = "app"
server_user = "app"
server_password = "secret"
shards = [{ name = "s0", host = "127.0.0.1", port = $PG_PORT }]
EOF
                say "idle: starting a fresh shardbouncer (trust) on 127.0.0.1:$port"
                SHARDBOUNCER_LOG=${SHARDBOUNCER_LOG:-warn} "$SB_BIN" --config "$TMP/shardbouncer-idle.toml" \
                    >"$TMP/shardbouncer-idle.log" 2>&1 &
                pid=$!
                EXTRA_PIDS+=("$pid")
                wait_port "$port" "$pid" || { cat "$TMP/shardbouncer-idle.log" >&2; die "shardbouncer (idle) did not start"; }
                ;;
            *) die "unknown idle target $t" ;;
        esac
        nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
        ((nofile > IDLE_CLIENTS)) || say "warning: $t may run out of file descriptors (limit $nofile)"
        raw="$OUT/raw/idle.$t.txt"
        say "idle: $IDLE_CLIENTS clients to $t (pid $pid)"
        "$PYTHON" "$ROOT/scripts/idle_clients.py" --port "$port" --user app --dbname app --pid "$pid" \
            --clients "$IDLE_CLIENTS" --concurrency "$IDLE_CONCURRENCY" --warmup "$POOL_SIZE" >"$raw" 2>&1 ||
            say "idle: $t had errors (see $raw)"
        grep -v '^RESULT ' "$raw" >&2 || true
        line=$(grep '^RESULT ' "$raw" || true)
        for kv in ${line#RESULT }; do IDLE[$t,${kv%%=*}]=${kv#*=}; done
        # PgBouncer is reaped by runuser, so its CPU would vanish from ours_ticks.
        [[ $t != pgbouncer ]] || DEAD_TICKS=$((DEAD_TICKS + $(proc_ticks "$pid")))
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
fi

# ---- report --------------------------------------------------------------------
machine_snap M_END
OTHERS_ALL=$(others_pct "$M_START" "$M_END")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))
{
    echo "# Overhead benchmark: PostgreSQL vs PgBouncer vs shardbouncer"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); host: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr); whole run: $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
    echo "- $("$PGBENCH" --version); $("$PG_CTL" --version | sed 's/pg_ctl/server/'); PgBouncer $PGB_VERSION; shardbouncer: $SB_REV"
    echo "- pgbench -j $THREADS -T $DURATION (+ $CONNECT_ALLOW s per 1000 clients to connect) -P 1, scale $SCALE; pool size $POOL_SIZE, transaction mode, SCRAM client auth (idle section: trust); rounds: $ROUNDS"
    echo "- PostgreSQL: fsync/synchronous_commit/full_page_writes off, shared_buffers 256MB, max_connections $PG_MAX_CONN"
    echo "- machine before the runs: ${BUSY_START}% CPU busy${TOP_START:+ (${TOP_START})}; load average (1/5/15 min) before: $LOAD_START, after: $LOAD_END (pgbench, PostgreSQL and the pooler share the machine)"
    ((WAIT_QUIET == 0)) || echo "- waited $QUIET_WAITED s (budget $WAIT_QUIET s) for other jobs to leave the machine"
    echo "- CPU used by processes outside the benchmark (\"others' CPU\", % of all $(nproc) CPUs) over all measurements: ${OTHERS_ALL:-?}%"
    if has_section pgbench; then
        echo
        echo "## pgbench"
        echo
        echo "Pooler CPU = user+system time of the pooler process per transaction; ctx sw = its voluntary+involuntary context switches (all threads) per transaction, and the involuntary ones (preemptions) alone; all over the steady state (after the first 1 s progress report, so logins are excluded except with -C). Latency = pgbench's average, ms.$( ((ROUNDS == 1)) || echo " Medians of $ROUNDS rounds.")"
        echo
        echo "| workload | clients | target | TPS | latency ms | failed | pooler CPU µs/tx | ctx sw/tx | involuntary/tx | others' CPU % |"
        echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        for w in $WORKLOADS; do
            name=$(wl_name "$w")
            clients=$(wl_clients "$w")
            for t in $TARGETS; do
                if [[ ${TPS[$w|$t|1]:-} == n/a ]]; then
                    printf '| %s | %s | %s | n/a | | | | | | |\n' "$name" "$clients" "$t"
                    continue
                fi
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$clients" "$t" \
                    "$(med TPS "$w" "$t")" "$(med LAT "$w" "$t")" "$(fails "$w" "$t")" \
                    "$(med CPU "$w" "$t")" "$(med CTX "$w" "$t")" "$(med INV "$w" "$t")" "$(med OTH "$w" "$t")"
            done
        done
        if has_target pgbouncer && has_target shardbouncer; then
            echo
            echo "shardbouncer / PgBouncer (TPS above 1 and CPU, ctx sw below 1 favour shardbouncer):"
            echo
            echo "| workload | clients | TPS | pooler CPU/tx | ctx sw/tx | shardbouncer TPS / postgres TPS | PgBouncer TPS / postgres TPS |"
            echo "|---|---:|---:|---:|---:|---:|---:|"
            for w in $WORKLOADS; do
                printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(wl_name "$w")" "$(wl_clients "$w")" \
                    "$(ratio "$(med TPS "$w" shardbouncer)" "$(med TPS "$w" pgbouncer)")" \
                    "$(ratio "$(med CPU "$w" shardbouncer)" "$(med CPU "$w" pgbouncer)")" \
                    "$(ratio "$(med CTX "$w" shardbouncer)" "$(med CTX "$w" pgbouncer)")" \
                    "$(ratio "$(med TPS "$w" shardbouncer)" "$(med TPS "$w" postgres)")" \
                    "$(ratio "$(med TPS "$w" pgbouncer)" "$(med TPS "$w" postgres)")"
            done
        fi
        if [[ $PGB_PREPARED == 0 && " $TARGETS " == *" pgbouncer "* && $WORKLOADS == *prepared* ]]; then
            echo
            echo "PgBouncer $PGB_VERSION predates max_prepared_statements (1.21), so -M prepared is not run against it (n/a)."
        fi
    fi
    if has_section routing; then
        echo
        echo "## Routing on vs off (shardbouncer only)"
        echo
        echo "pgbench -c $ROUTE_CLIENTS -j $THREADS -T $DURATION, $ROUTE_ROUNDS rounds (off/on, then on/off; medians), custom scripts on bench_accounts ($ROUTE_ROWS rows, $ROUTE_TENANTS tenants); off = database \`app\` (one shard, unrouted), on = database \`routed\` (2 shards, default routing sources; the tenants used live on s0, so one pool of $POOL_SIZE like \`app\`) or \`spread\` (tenants split over 2 shards, $(((POOL_SIZE + 1) / 2)) servers each). The off run of every row sends the same script (without PGOPTIONS) to \`app\`."
        echo
        echo "| key from | TPS on | TPS off | TPS on/off | CPU µs/tx on | CPU µs/tx off | CPU on/off | ctx sw/tx on | ctx sw/tx off | failed on / off | others' CPU % on / off |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for v in $ROUTE_VARIANTS; do
            k="route-$v"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |\n' "${ROUTE_DESC[$v]}" \
                "$(med TPS "$k" on)" "$(med TPS "$k" off)" "$(ratio "$(med TPS "$k" on)" "$(med TPS "$k" off)" 3)" \
                "$(med CPU "$k" on)" "$(med CPU "$k" off)" "$(ratio "$(med CPU "$k" on)" "$(med CPU "$k" off)" 3)" \
                "$(med CTX "$k" on)" "$(med CTX "$k" off)" "$(fails "$k" on)" "$(fails "$k" off)" \
                "$(med OTH "$k" on)" "$(med OTH "$k" off)"
        done
    fi
    if has_section idle; then
        echo
        echo "## Idle clients ($IDLE_CLIENTS, trust auth, pool $POOL_SIZE)"
        echo
        echo "RSS (VmRSS) of a freshly started pooler: *before* = after a warm-up of $POOL_SIZE clients that opened the server pool and left; *idle* = with all clients logged in and idle for 3 s; *after 1 txn* = after each client ran one \`SELECT 1\` through the pool and is idle again (3 s); *after* = once every client disconnected and the pooler closed their sockets. Logins: scripts/idle_clients.py (python asyncio, $IDLE_CONCURRENCY logins in flight; the client shares the machine)."
        echo
        echo "| pooler | clients logged in | login time s | login errors | pooler CPU µs/login | txn time s | txn errors | RSS before KiB | RSS idle KiB | KiB/client idle | KiB/client after 1 txn | RSS after KiB | after / before |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for t in $IDLE_TARGETS; do
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" \
                "${IDLE[$t,connected]:--}" "${IDLE[$t,connect_s]:--}" "${IDLE[$t,connect_errors]:--}" \
                "${IDLE[$t,connect_cpu_us_per_client]:--}" \
                "${IDLE[$t,txn_s]:--}" "${IDLE[$t,txn_errors]:--}" "${IDLE[$t,rss_before_kib]:--}" \
                "${IDLE[$t,rss_idle_kib]:--}" "${IDLE[$t,kib_per_client_idle]:--}" \
                "${IDLE[$t,kib_per_client_after_txn]:--}" "${IDLE[$t,rss_after_kib]:--}" \
                "${IDLE[$t,after_over_before]:--}"
        done
        if [[ -n ${IDLE[shardbouncer,kib_per_client_idle]:-} && -n ${IDLE[pgbouncer,kib_per_client_idle]:-} ]]; then
            echo
            echo "shardbouncer / PgBouncer: KiB per idle client $(ratio "${IDLE[shardbouncer,kib_per_client_idle]}" "${IDLE[pgbouncer,kib_per_client_idle]}" 1)x, login time $(ratio "${IDLE[shardbouncer,connect_s]}" "${IDLE[pgbouncer,connect_s]}")x."
        fi
    fi
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
echo
say "written to $OUT/results.md (raw output in $OUT/raw/); took $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
