#!/usr/bin/env bash
# Instructions per transaction (issue 10): run each pooler under valgrind's
# callgrind and count the user-space instructions it executes per pgbench
# transaction. Unlike wall-clock runs (scripts/bench.sh), the count is the same
# from run to run of one binary whatever else the machine is doing, so a change
# of one percent shows; it does not see the kernel's work (system calls,
# wake-ups), which is most of a pooler's CPU on loopback.
#
#   ./scripts/instructions.sh                      # the work tree's release build
#   INSTR_SB_BIN=/path/to/shardbouncer ./scripts/instructions.sh
#   INSTR_TARGETS="shardbouncer pgbouncer" ./scripts/instructions.sh
#
# One throwaway PostgreSQL cluster (trust auth, `pgbench -i -s 1`), each pooler
# in transaction mode with a pool of 20 and trust client auth. Per workload:
# `INSTR_WARM` transactions per client first (servers connected, caches warm),
# then the counters are zeroed (`callgrind_control -z`), `INSTR_TX`
# transactions per client run, and the counters are dumped. The count per
# transaction is the dump's total over the transactions; the new clients'
# logins fall inside the window (trust auth: a few hundred instructions per
# transaction at 10 clients and 1,000 transactions each).
#
# Workloads (INSTR_WORKLOADS, NAME:CLIENTS):
#   select-simple, select-extended, select-prepared   pgbench -S -M ...
#   tpcb-simple                                        the built-in tpcb-like script
#   routed-simple, routed-extended                     -S on a two-shard database
#       whose map puts every tenant on s0, the tenant given at connect
#       (PGOPTIONS=-ctenant_id=1): the routing work on top of select-*;
#       shardbouncer only.
#
# Environment (defaults in brackets):
#   INSTR_WORKLOADS ["select-simple:10 select-simple:100 select-extended:10
#                     select-prepared:10 tpcb-simple:10 routed-simple:10
#                     routed-extended:10"]
#   INSTR_TARGETS  [shardbouncer]   also: pgbouncer (Debian's, select-simple,
#                                   select-extended and tpcb-simple only)
#   INSTR_TX       [1000]  transactions per client, counted
#   INSTR_WARM     [200]   transactions per client before the counters are zeroed
#   INSTR_SB_BIN           a shardbouncer binary (default: cargo build --release)
#   INSTR_KEEP=1           keep the temp dir with the callgrind dumps
#                          (callgrind_annotate FILE shows where the work goes)
#   PGBOUNCER      [/usr/sbin/pgbouncer]
#
# Needs valgrind (callgrind_control), PostgreSQL's initdb, pg_ctl, psql and
# pgbench. As root, PostgreSQL and PgBouncer run as the `postgres` OS user.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKLOADS=${INSTR_WORKLOADS:-select-simple:10 select-simple:100 select-extended:10 select-prepared:10 tpcb-simple:10 routed-simple:10 routed-extended:10}
TARGETS=${INSTR_TARGETS:-shardbouncer}
TX=${INSTR_TX:-1000}
WARM=${INSTR_WARM:-200}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

SCRIPT=instructions
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
PSQL=$(pg_bin psql)
PGBENCH=$(pg_bin pgbench)
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    die "valgrind (with callgrind_control) is needed: apt-get install valgrind"
if [[ " $TARGETS " == *" pgbouncer "* && ! -x $PGBOUNCER ]]; then
    die "PgBouncer not found at $PGBOUNCER (apt-get install pgbouncer, or set PGBOUNCER=)"
fi

need_postgres_user

# ---- shardbouncer binary -------------------------------------------------------
if [[ -n ${INSTR_SB_BIN:-} ]]; then
    SB_BIN=$INSTR_SB_BIN
    SB_REV="(prebuilt $SB_BIN)"
else
    build_shardbouncer --quiet
fi
[[ -x $SB_BIN ]] || die "shardbouncer binary not found at $SB_BIN"

TMP=$(mktemp -d /tmp/sbinstr.XXXXXX)
chmod 755 "$TMP"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP"
PGDATA="$TMP/pg"
POOLER_PID=
VG_PID=

stop_pooler() {
    [[ -n $POOLER_PID ]] || return 0
    [[ -z $VG_PID ]] || kill -TERM "$VG_PID" 2>/dev/null || true
    kill -TERM "$POOLER_PID" 2>/dev/null || true
    wait "$POOLER_PID" 2>/dev/null || true
    POOLER_PID=
    VG_PID=
}
cleanup() {
    set +e
    stop_pooler
    if [[ -f $PGDATA/postmaster.pid ]]; then
        (cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w -s stop) >/dev/null 2>&1
    fi
    if [[ ${INSTR_KEEP:-0} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL ----------------------------------------------------------------
free_port PG_PORT
say "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT ($TMP)"
(cd "$TMP" && as_pg "$INITDB" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
(cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -l "$TMP/postgres.log" -w -t 60 -s start) ||
    { tail -n 30 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
"$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null <<'EOF'
SET client_min_messages = warning;
CREATE ROLE app LOGIN;
CREATE DATABASE app OWNER app;
EOF
"$PGBENCH" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U app app >"$TMP/pgbench-init.log" 2>&1 ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---- pooler configurations -------------------------------------------------------
cat >"$TMP/shardmap-s0.toml" <<'EOF'
# citus hashing, s0 owns the whole hash space
version = 1
method = "citus"
[[hash_ranges]]
min = -2147483648
max = 2147483647
shard = "s0"
EOF
write_sb_config() { # write_sb_config PORT
    cat >"$TMP/shardbouncer.toml" <<EOF
[listen]
addr = "127.0.0.1:$1"
[limits]
max_client_conn = 1000
[pool]
mode = "transaction"
default_pool_size = 20
[auth]
type = "trust"
[[users]]
name = "app"
[databases.app]
dbname = "app"
server_user = "app"
shards = [{ name = "s0", host = "127.0.0.1", port = $PG_PORT }]
[databases.routed]
dbname = "app"
server_user = "app"
shards = [
    { name = "s0", host = "127.0.0.1", port = $PG_PORT },
    { name = "s1", host = "127.0.0.1", port = $PG_PORT },
]
[databases.routed.routing]
shard_map = "shardmap-s0.toml"
EOF
}
write_pgb_config() { # write_pgb_config PORT
    cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
log_connections = 0
log_disconnections = 0
logfile = $TMP/pgbouncer.log
EOF
    echo '"app" ""' >"$TMP/userlist.txt"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$TMP/pgbouncer.ini" "$TMP/userlist.txt"
}

start_pooler() { # start_pooler TARGET PORT: under callgrind, counting from the start
    local target=$1 port=$2 out="$TMP/callgrind.$1.%p"
    # Names written out in every dump, so that each dump reads alone.
    local vg=(valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no
        --compress-strings=no --compress-pos=no)
    case $target in
        shardbouncer)
            write_sb_config "$port"
            SHARDBOUNCER_LOG=warn "${vg[@]}" "$SB_BIN" --config "$TMP/shardbouncer.toml" \
                >"$TMP/pooler.$target.log" 2>&1 &
            ;;
        pgbouncer)
            write_pgb_config "$port"
            as_pg "${vg[@]}" "$PGBOUNCER" "$TMP/pgbouncer.ini" >"$TMP/pooler.$target.log" 2>&1 &
            ;;
    esac
    POOLER_PID=$!
    # Up to 60 s: valgrind starts slowly.
    wait_port "$port" "$POOLER_PID" 60 || { cat "$TMP/pooler.$target.log" >&2; die "$target did not start"; }
    # The process under valgrind (for PgBouncer not $!, which is runuser): its
    # pid is in the name of the dump file callgrind opened at its start.
    local f
    f=$(ls "$TMP"/callgrind."$target".* | head -n1)
    VG_PID=${f##*.}
}

vg_control() { # vg_control -z|-d: zero or dump the counters of the pooler under callgrind
    # (as the user valgrind runs as: vgdb finds its pipes by user)
    if [[ $target == pgbouncer ]]; then
        as_pg callgrind_control "$1" "$VG_PID" >/dev/null 2>&1
    else
        callgrind_control "$1" "$VG_PID" >/dev/null 2>&1
    fi || die "callgrind_control $1 $VG_PID failed"
}

# The total of the newest dump of the process under callgrind.
last_total() {
    local f
    f=$(ls -v "$TMP"/callgrind."$1".*.* 2>/dev/null | tail -n1)
    [[ -n $f ]] || die "no callgrind dump for $1"
    awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

wl_flags() { # pgbench flags and database of a workload
    case $1 in
        select-simple) echo "app|-S -M simple" ;;
        select-extended) echo "app|-S -M extended" ;;
        select-prepared) echo "app|-S -M prepared" ;;
        tpcb-simple) echo "app|-M simple" ;;
        routed-simple) echo "routed|-S -M simple" ;;
        routed-extended) echo "routed|-S -M extended" ;;
        *) die "unknown workload $1" ;;
    esac
}

declare -A RESULT
for target in $TARGETS; do
    free_port port
    say "starting $target under callgrind on 127.0.0.1:$port"
    start_pooler "$target" "$port"
    for w in $WORKLOADS; do
        name=${w%%:*}
        clients=${w##*:}
        IFS='|' read -r db flags <<<"$(wl_flags "$name")"
        if [[ $target == pgbouncer && ($db != app || $name == *prepared*) ]]; then continue; fi
        opts=""
        [[ $db != routed ]] || opts="-c tenant_id=1"
        # pgbench -t per client; -j 2 as scripts/bench.sh
        run() { PGOPTIONS=$opts "$PGBENCH" -n $flags -c "$clients" -j 2 -t "$1" \
            -h 127.0.0.1 -p "$port" -U app "$db" >"$TMP/pgbench.$target.$name.$clients.$1.log" 2>&1 ||
            { cat "$TMP/pgbench.$target.$name.$clients.$1.log" >&2; die "pgbench $w against $target failed"; }; }
        run "$WARM"
        vg_control -z
        run "$TX"
        vg_control -d
        total=$(last_total "$target")
        per=$((total / (clients * TX)))
        RESULT["$target|$w"]=$per
        say "$target $w: $per instructions per transaction"
    done
    stop_pooler
done

echo
echo "instructions per transaction (callgrind; $TX transactions per client after $WARM; shardbouncer $SB_REV)"
echo
printf '| workload |'
for target in $TARGETS; do printf ' %s |' "$target"; done
echo
printf '|---|'
for target in $TARGETS; do printf -- '---:|'; done
echo
for w in $WORKLOADS; do
    printf '| %s |' "$w"
    for target in $TARGETS; do printf ' %s |' "${RESULT["$target|$w"]:--}"; done
    echo
done
