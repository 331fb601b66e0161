#!/usr/bin/env bash
# shardbouncer quick start: two local PostgreSQL shards + shardbouncer in front.
#
#   ./scripts/quickstart.sh          build, start both shards, run shardbouncer in
#                                    the foreground; Ctrl-C stops it and the shards
#   ./scripts/quickstart.sh setup    build and start the shards, write the config,
#                                    leave the shards running and exit
#   ./scripts/quickstart.sh stop     stop the shards
#   ./scripts/quickstart.sh clean    stop the shards and delete .quickstart/
#
# Everything lives in ./.quickstart/: one cluster per shard (pg0, pg1; their
# unix sockets and logs are inside), shardbouncer.toml and shardmap.toml.
# Re-running reuses the clusters and reloads the demo data. The shards listen on
# 127.0.0.1:15432 and :15433 (or the next free ports), shardbouncer on
# 127.0.0.1:6432 (or the next free port). Needs PostgreSQL's initdb/pg_ctl (on
# PATH or in /usr/lib/postgresql/*/bin), psql and cargo. When run as root, the
# clusters run as the `postgres` OS user (PostgreSQL refuses to run as root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QS="$ROOT/.quickstart"
CONF_EXAMPLE="$ROOT/conf/shardbouncer.toml"
MAP_EXAMPLE="$ROOT/conf/shardmap.toml"
SHARDS=(s0 s1)

SCRIPT=quickstart
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# ---- locate PostgreSQL -------------------------------------------------------
INITDB=$(pg_bin initdb)
PG_CTL=$(pg_bin pg_ctl)
PSQL=$(pg_bin psql)

cluster_dir() { echo "$QS/pg$1"; }

stop_clusters() {
    local i dir
    for i in "${!SHARDS[@]}"; do
        dir=$(cluster_dir "$i")
        if [[ -f "$dir/data/PG_VERSION" ]] && (cd "$dir" && as_pg "$PG_CTL" -D "$dir/data" status >/dev/null 2>&1); then
            say "stopping shard ${SHARDS[$i]} ($dir)"
            (cd "$dir" && as_pg "$PG_CTL" -D "$dir/data" -m fast -w -s stop) || true
        fi
    done
}

case "${1:-run}" in
    run | setup) ;;
    stop) stop_clusters; exit 0 ;;
    clean) stop_clusters; rm -rf "$QS"; say "removed $QS"; exit 0 ;;
    -h | --help | help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown command '$1' (expected: run, setup, stop, clean)" ;;
esac
MODE=${1:-run}

# ---- build -------------------------------------------------------------------
build_shardbouncer
BIN=$SB_BIN

# ---- clusters ----------------------------------------------------------------
mkdir -p "$QS"
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$QS"; then
    die "the postgres user cannot reach $QS (a parent directory is not world-searchable); clone the repository somewhere like /srv or /tmp"
fi

# Stop clusters left running by an earlier run, so they can be reconfigured.
stop_clusters

# Tenants per shard, from the [tenants] table of the example shard map.
tenants_of() { # tenants_of SHARD_NAME: print the tenant ids placed on that shard
    awk -v shard="$1" '
        /^[[:space:]]*\[/ { in_t = ($0 ~ /^[[:space:]]*\[tenants\][[:space:]]*$/); next }
        in_t && /=/ {
            line = $0; sub(/#.*/, "", line)
            split(line, kv, "=")
            k = kv[1]; v = kv[2]
            gsub(/[[:space:]"]/, "", k); gsub(/[[:space:]"]/, "", v)
            if (v == shard && k != "") print k
        }' "$MAP_EXAMPLE"
}

PORTS=()
for i in "${!SHARDS[@]}"; do
    dir=$(cluster_dir "$i")
    data="$dir/data"
    port=$(next_free_port $((15432 + i)) "${PORTS[@]}")
    PORTS+=("$port")

    if [[ ! -f "$data/PG_VERSION" ]]; then
        say "creating shard ${SHARDS[$i]} in $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$dir"
        (cd "$dir" && as_pg "$INITDB" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1) ||
            { cat "$dir/initdb.log" >&2; die "initdb failed for $dir"; }
        echo "include_if_exists = 'quickstart.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    else
        say "reusing shard ${SHARDS[$i]} in $dir"
    fi

    # Rewritten on every run: the port may change.
    as_pg tee "$data/quickstart.conf" >/dev/null <<EOF
# written by scripts/quickstart.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
password_encryption = 'scram-sha-256'
max_connections = 200
EOF
    as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF
# written by scripts/quickstart.sh
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF

    say "starting shard ${SHARDS[$i]} on 127.0.0.1:$port"
    (cd "$dir" && as_pg "$PG_CTL" -D "$data" -l "$dir/postgres.log" -w -t 60 -s start) ||
        { tail -n 30 "$dir/postgres.log" >&2; die "PostgreSQL did not start for $dir"; }

    # Role, database and demo data (idempotent: the table is reloaded every run).
    values=$(tenants_of "${SHARDS[$i]}" |
        awk '{ printf "%s(%s, '\''tenant %s: alice'\''), (%s, '\''tenant %s: bob'\'')", (NR > 1 ? ", " : ""), $1, $1, $1, $1 }')
    "$PSQL" -h "$dir" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null <<EOF
SET client_min_messages = warning;
SELECT format('CREATE ROLE app LOGIN PASSWORD %L', 'secret')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
ALTER ROLE app LOGIN PASSWORD 'secret';
SELECT 'CREATE DATABASE app OWNER app'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
\connect app
SET client_min_messages = warning;
SET ROLE app;
CREATE TABLE IF NOT EXISTS accounts (tenant_id bigint NOT NULL, name text NOT NULL);
TRUNCATE accounts;
${values:+INSERT INTO accounts (tenant_id, name) VALUES $values;}
EOF
done

# ---- shardbouncer config -----------------------------------------------------
LISTEN_PORT=$(next_free_port 6432 "${PORTS[@]}")
METRICS_PORT=$(next_free_port 9930 "${PORTS[@]}" "$LISTEN_PORT")
cp "$MAP_EXAMPLE" "$QS/shardmap.toml"
sed -e "s/127\.0\.0\.1:6432\"/127.0.0.1:$LISTEN_PORT\"/" \
    -e "s/127\.0\.0\.1:9930\"/127.0.0.1:$METRICS_PORT\"/" \
    -e "s/port = 15432 }/port = @PORT_S0@ }/" \
    -e "s/port = 15433 }/port = @PORT_S1@ }/" \
    -e "s/@PORT_S0@/${PORTS[0]}/" \
    -e "s/@PORT_S1@/${PORTS[1]}/" \
    -e '1i # Generated by scripts/quickstart.sh from conf/shardbouncer.toml (re-running overwrites it).' \
    "$CONF_EXAMPLE" |
    awk '
        # The quick start also gets an admin console user.
        /^\[databases\.app\]/ && !done {
            print "# Admin console user (quick start only)."
            print "[[users]]"; print "name = \"admin\""; print "password = \"admin\""; print ""
            done = 1
        }
        { print }' >"$QS/shardbouncer.toml"
grep -q "name = \"s0\", host = \"127.0.0.1\", port = ${PORTS[0]} }" "$QS/shardbouncer.toml" &&
    grep -q "name = \"s1\", host = \"127.0.0.1\", port = ${PORTS[1]} }" "$QS/shardbouncer.toml" || die "could not fill the shard ports into $QS/shardbouncer.toml"

CONN="host=127.0.0.1 port=$LISTEN_PORT dbname=app user=app password=secret"
cat <<EOF

shardbouncer quick start is ready.
  shard s0: 127.0.0.1:${PORTS[0]}  tenants $(tenants_of s0 | paste -sd, -)   (log: .quickstart/pg0/postgres.log)
  shard s1: 127.0.0.1:${PORTS[1]}  tenants $(tenants_of s1 | paste -sd, -)   (log: .quickstart/pg1/postgres.log)
  config:   .quickstart/shardbouncer.toml   shard map: .quickstart/shardmap.toml
  metrics:  http://127.0.0.1:$METRICS_PORT/metrics

Try, in another terminal:
  psql "$CONN options=-ctenant_id=42" -c "SELECT current_setting('port'), * FROM accounts"
  psql "$CONN options=-ctenant_id=1" -c "SELECT current_setting('port'), * FROM accounts"
  psql "$CONN" -c "/* tenant_id=43 */ SELECT current_setting('port'), * FROM accounts"
  psql "$CONN" -c "SELECT current_setting('port'), * FROM accounts WHERE tenant_id = 2"
  psql "host=127.0.0.1 port=$LISTEN_PORT dbname=shardbouncer user=admin password=admin" -c "SHOW POOLS"

EOF

if [[ $MODE == setup ]]; then
    say "shards left running; start shardbouncer with: $BIN --config $QS/shardbouncer.toml"
    say "stop the shards with: ./scripts/quickstart.sh stop"
    exit 0
fi

# ---- run ---------------------------------------------------------------------
# Not `exec`: the shell stays to stop the shards when shardbouncer exits.
# shardbouncer runs in the background of this script so that Ctrl-C / SIGTERM
# can be forwarded to it as SIGTERM (graceful shutdown).
trap stop_clusters EXIT
say "running shardbouncer on 127.0.0.1:$LISTEN_PORT (Ctrl-C to stop)"
"$BIN" --config "$QS/shardbouncer.toml" &
BOUNCER_PID=$!
trap 'kill -TERM "$BOUNCER_PID" 2>/dev/null || true' INT TERM
status=0
while :; do
    # wait returns early (status > 128) when a trapped signal arrives; keep
    # waiting while shardbouncer shuts down.
    wait "$BOUNCER_PID" && status=0 || status=$?
    kill -0 "$BOUNCER_PID" 2>/dev/null || break
done
exit "$status"
