#!/usr/bin/env bash
# Soak: many clients through a few server connections, for a while, with zero
# errors allowed.
#
#   ./scripts/soak.sh                 # 10,000 clients, 20 servers, 60 s
#   SOAK_CLIENTS=2000 SOAK_SECONDS=20 ./scripts/soak.sh
#
# What it does:
#   1. cargo build --release;
#   2. initdb a throwaway PostgreSQL cluster on a free loopback port (fsync off),
#      role app/secret, database app, pgbench -i -s $SOAK_SCALE;
#   3. starts shardbouncer in transaction mode with default_pool_size
#      $SOAK_POOL_SIZE and max_client_conn above $SOAK_CLIENTS (clients log in
#      with trust; shardbouncer logs in to Postgres with SCRAM);
#   4. runs pgbench -N (a real read-write transaction: BEGIN, UPDATE, SELECT,
#      INSERT, END) with $SOAK_CLIENTS clients for $SOAK_SECONDS seconds,
#      logging a sample of transactions; samples shardbouncer's RSS every second;
#   5. reports transactions, failures, TPS, p50/p99/max latency and RSS (idle
#      before, peak, and after the clients left), and exits non-zero on any
#      failed or aborted client, or fewer servers than expected in use.
# Everything is torn down on exit; only loopback is used.
#
# Environment (defaults in brackets):
#   SOAK_CLIENTS [10000]  pgbench clients
#   SOAK_SECONDS [60]     duration
#   SOAK_POOL_SIZE [20]   default_pool_size
#   SOAK_THREADS [2]      pgbench threads
#   SOAK_SCALE   [10]     pgbench scale (rows in pgbench_accounts / 100,000)
#   SOAK_SAMPLE  [0.05]   fraction of transactions logged for latency
#   SOAK_KEEP=1           keep the temp dir (logs)
#
# Needs initdb, pg_ctl, psql and pgbench (PATH or /usr/lib/postgresql/*/bin) and
# cargo. As root, PostgreSQL runs as the `postgres` OS user and the file-descriptor
# limit is raised for both pgbench and shardbouncer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${SOAK_CLIENTS:-10000}
SECONDS_=${SOAK_SECONDS:-60}
POOL_SIZE=${SOAK_POOL_SIZE:-20}
THREADS=${SOAK_THREADS:-2}
SCALE=${SOAK_SCALE:-10}
SAMPLE=${SOAK_SAMPLE:-0.05}

SCRIPT=soak
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
PSQL=$(pg_bin psql)
PGBENCH=$(pg_bin pgbench)

need_postgres_user
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Descriptors: one per client in pgbench and in shardbouncer, plus slack.
NEED_FDS=$((CLIENTS + 1024))
if [[ $(ulimit -Hn) != unlimited && $(ulimit -Hn) -lt $NEED_FDS ]]; then
    [[ $(id -u) -eq 0 ]] || die "ulimit -Hn is $(ulimit -Hn); $NEED_FDS descriptors needed"
    ulimit -Hn "$NEED_FDS"
fi
ulimit -Sn "$NEED_FDS"

build_shardbouncer --quiet

TMP=$(mktemp -d /tmp/sbsoak.XXXXXX)
chmod 755 "$TMP"
[[ $(id -u) -ne 0 ]] || chown postgres: "$TMP"
PGDATA="$TMP/pg"
SB_PID=
SAMPLER_PID=
cleanup() {
    set +e
    [[ -z $SAMPLER_PID ]] || kill "$SAMPLER_PID" 2>/dev/null
    [[ -z $SB_PID ]] || { kill -TERM "$SB_PID" 2>/dev/null; wait "$SB_PID" 2>/dev/null; }
    [[ ! -f $PGDATA/postmaster.pid ]] ||
        (cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w -s stop) >/dev/null 2>&1
    if [[ ${SOAK_KEEP:-0} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port PG_PORT
say "PostgreSQL on 127.0.0.1:$PG_PORT"
(cd "$TMP" && as_pg "$INITDB" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1) || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
max_connections = $((POOL_SIZE + 20))
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
(cd "$TMP" && as_pg "$PG_CTL" -D "$PGDATA" -l "$TMP/postgres.log" -w -t 60 -s start) ||
    { tail -n 30 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
"$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null <<'EOF'
SET client_min_messages = warning;
CREATE ROLE app LOGIN PASSWORD 'secret';
CREATE DATABASE app OWNER app;
EOF
PGPASSWORD=secret "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app app \
    >"$TMP/pgbench-init.log" 2>&1 || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

free_port SB_PORT
cat >"$TMP/shardbouncer.toml" <<EOF
[listen]
addr = "127.0.0.1:$SB_PORT"

[limits]
max_client_conn = $((CLIENTS + 100))

[pool]
mode = "transaction"
default_pool_size = $POOL_SIZE
# Queueing behind $POOL_SIZE servers is the point: no client may time out.
query_wait_timeout = "0s"

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
say "shardbouncer on 127.0.0.1:$SB_PORT (default_pool_size $POOL_SIZE)"
"$SB_BIN" --config "$TMP/shardbouncer.toml" >"$TMP/shardbouncer.log" 2>&1 &
SB_PID=$!
wait_port "$SB_PORT" "$SB_PID" 10 || { cat "$TMP/shardbouncer.log" >&2; die "shardbouncer did not start"; }
RSS_IDLE=$(rss_kib "$SB_PID")

# RSS once a second while the soak runs.
(while kill -0 "$SB_PID" 2>/dev/null; do rss_kib "$SB_PID"; sleep 1; done) >"$TMP/rss.txt" &
SAMPLER_PID=$!

say "pgbench -N: $CLIENTS clients, $SECONDS_ s"
set +e
(cd "$TMP" && "$PGBENCH" -n -N -h 127.0.0.1 -p "$SB_PORT" -U app -c "$CLIENTS" -j "$THREADS" \
    -T "$SECONDS_" -l --sampling-rate="$SAMPLE" --log-prefix="$TMP/tx" app) >"$TMP/pgbench.out" 2>&1
PGBENCH_RC=$?
set -e
SERVERS=$("$PSQL" -h "$TMP" -p "$PG_PORT" -U postgres -d postgres -XAtq \
    -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND usename = 'app'")
# Once the clients are gone, RSS should come back down.
for _ in $(seq 1 50); do
    [[ $(ls "/proc/$SB_PID/fd" 2>/dev/null | wc -l) -lt $((POOL_SIZE + 64)) ]] && break
    sleep 0.2
done
# Freed memory goes back to the OS at the next maintenance tick (once a second):
# take the lowest RSS over the next few seconds.
RSS_AFTER=$(rss_kib "$SB_PID")
for _ in $(seq 1 10); do
    sleep 0.5
    r=$(rss_kib "$SB_PID"); [[ $r -ge $RSS_AFTER ]] || RSS_AFTER=$r
done
kill "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=
RSS_PEAK=$(sort -n "$TMP/rss.txt" | tail -n 1)

# Latency (µs) is the third field of pgbench's per-transaction log.
cat "$TMP"/tx.* 2>/dev/null | awk '{print $3}' | sort -n >"$TMP/lat.txt" || true
pct() { awk -v p="$1" '{a[NR]=$1} END {if (NR==0) {print "n/a"; exit} i=int(NR*p); if (i<1) i=1; printf "%.1f", a[i]/1000}' "$TMP/lat.txt"; }

TXNS=$(awk -F': ' '/number of transactions actually processed/ {split($2, a, "/"); print a[1]}' "$TMP/pgbench.out")
FAILED=$(awk -F': ' '/number of failed transactions/ {split($2, a, " "); print a[1]}' "$TMP/pgbench.out")
TPS=$(awk '/^tps = / {print $3; exit}' "$TMP/pgbench.out")
ABORTED=$(grep -c "aborted in command\|client .* aborted\|error:" "$TMP/pgbench.out" || true)

cat <<EOF

soak: $CLIENTS clients through $POOL_SIZE server connections for $SECONDS_ s
  transactions   ${TXNS:-0} (tps ${TPS:-n/a})
  failed         ${FAILED:-n/a}; pgbench errors/aborted clients: $ABORTED; exit status $PGBENCH_RC
  latency (ms)   p50 $(pct 0.50)  p99 $(pct 0.99)  max $(pct 1.0)  (sample of $(wc -l <"$TMP/lat.txt") transactions)
  servers used   $SERVERS (app backends on Postgres at the end)
  RSS (MiB)      idle $((RSS_IDLE / 1024))  peak $((RSS_PEAK / 1024))  after clients left $((RSS_AFTER / 1024))
EOF
if [[ $PGBENCH_RC -ne 0 || ${FAILED:-0} != 0 || $ABORTED -ne 0 || -z ${TXNS:-} ]]; then
    tail -n 20 "$TMP/pgbench.out" >&2
    die "soak failed"
fi
[[ $SERVERS -le $POOL_SIZE ]] || die "$SERVERS server connections, more than default_pool_size $POOL_SIZE"
