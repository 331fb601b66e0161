#!/usr/bin/env bash
# Capture what real PostgreSQL clients send and turn it into fuzz seeds.
#
#   fuzz/capture/capture.sh            # writes fuzz/seeds/<target>/...
#
# Starts a throwaway PostgreSQL (127.0.0.1 only, as the `postgres` OS user when
# run as root), puts proxy.py in front of it, and runs psql, pgbench -M
# simple/extended/prepared, tokio-postgres (./tokio-client, built offline),
# asyncpg and PgJDBC sessions through the proxy. split.py then cuts the recorded
# client bytes into startup packets and messages for each fuzz target. Needs
# what .ci/run installs (PostgreSQL, psql, pgbench, asyncpg, Java with
# /usr/share/java/postgresql.jar).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seeds=$here/../seeds
work=$(mktemp -d /tmp/sbcapture.XXXXXX)
chmod 755 "$work"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $(id -u) -eq 0 ]]; then chown postgres "$work"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cleanup() {
    [[ -n ${proxy_pid:-} ]] && kill "$proxy_pid" 2>/dev/null || true
    as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

as_pg "$bin/initdb" -D "$work/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
fsync = off
password_encryption = 'scram-sha-256'
CONF
cat >"$work/data/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w -s start
as_pg psql -X -q -h "$work" -p "$port" -U postgres -d postgres <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'secret';
CREATE DATABASE app OWNER app;
\connect app
CREATE TABLE accounts (tenant_id bigint NOT NULL, name text NOT NULL, balance numeric NOT NULL DEFAULT 0);
INSERT INTO accounts SELECT g % 50, 'acme', g FROM generate_series(1, 200) g;
ALTER TABLE accounts OWNER TO app;
SQL

raw=$work/raw
mkdir -p "$raw"
record() { # record LABEL COMMAND...: run COMMAND against the proxy (port $pport)
    local label=$1
    shift
    python3 "$here/proxy.py" "$pport" "$port" "$raw/$label" &
    proxy_pid=$!
    for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$pport) 2>/dev/null && break; sleep 0.1; done
    "$@" >/dev/null
    sleep 0.3
    kill "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=
}

export PGPASSWORD=secret
psql_conn=(-h 127.0.0.1 -p "$pport" -U app -d app -X -q)
record psql psql "${psql_conn[@]}" -v ON_ERROR_STOP=0 <<'SQL'
SELECT * FROM accounts WHERE tenant_id = 42;
/* tenant_id=7 */ SELECT count(*) FROM accounts;
BEGIN;
SET LOCAL statement_timeout = '5s';
UPDATE accounts SET balance = balance + 1 WHERE tenant_id = 3;
SAVEPOINT a;
SELECT no_such_column FROM accounts;
ROLLBACK TO a;
COMMIT;
SET tenant_id = 'acme';
\copy accounts (tenant_id, name, balance) FROM STDIN
11	copy-psql	1.5
12	copy-psql	2
\.
\copy (SELECT * FROM accounts WHERE tenant_id = 11) TO '/dev/null'
SELECT $$dollar 'quoted' tenant_id = 1$$, E'esc\'aped', "tenant_id" FROM accounts WHERE tenant_id IN (1, 2, 3) LIMIT 2;
PREPARE q(bigint) AS SELECT * FROM accounts WHERE tenant_id = $1;
EXECUTE q(5);
DEALLOCATE q;
SQL
# PGSSLMODE=prefer: psql's first packet is an SSLRequest (answered N here).
record psql-ssl env PGSSLMODE=prefer psql "${psql_conn[@]}" -c 'SELECT 1'

pgb=(-h 127.0.0.1 -p "$pport" -U app)
pgbench -h 127.0.0.1 -p "$port" -U app -i -s 1 -q app >/dev/null 2>&1
for mode in simple extended prepared; do
    record "pgbench-$mode" pgbench "${pgb[@]}" -M "$mode" -c 2 -t 5 -n app
    record "pgbench-$mode-select" pgbench "${pgb[@]}" -M "$mode" -S -c 1 -t 5 -n app
done

(cd "$here/tokio-client" && cargo build --offline --release -q)
record tokio "$here/tokio-client/target/release/capture-tokio-client" "$pport"
record asyncpg python3 "$here/asyncpg_client.py" "$pport"
record jdbc java -cp /usr/share/java/postgresql.jar "$here/Capture.java" "$pport"

rm -rf "$seeds"/{protocol,wire_diff,scanner,session}
python3 "$here/split.py" "$raw" "$seeds"
