"""Tenant routing through shardbouncer with Python drivers at their defaults
(run by tests/isolation.rs): one connection, no tenant at connect, the tenant
only as a bound parameter, alternating between a tenant on each shard.

Usage: py_routing.py asyncpg|psycopg

Environment: SB_HOST, SB_PORT, SB_USER, SB_PASSWORD, SB_DB (a routed database),
SB_TENANTS = "tenant=shard_name=pg_port,..." (each tenant's shard and the port of
the PostgreSQL server that owns it). Every shard holds `shard_marker(name)` with
its own shard name and `accounts(tenant_id, name)` with 'owner of <tenant>'.
Prints `OK <n> checks` and exits 0, or exits 1 naming the failed check.
"""

import asyncio
import os
import sys

HOST = os.environ.get("SB_HOST", "127.0.0.1")
PORT = int(os.environ["SB_PORT"])
USER = os.environ.get("SB_USER", "app")
PASSWORD = os.environ.get("SB_PASSWORD", "secret")
DB = os.environ["SB_DB"]
TENANTS = [tuple(kv.split("=")) for kv in os.environ["SB_TENANTS"].split(",")]
ROUNDS = 5
# Rows of the long executemany batches (two messages each).
BULK_ROWS = 60_000

n_checks = 0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def eq(what, got, want):
    global n_checks
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")
    n_checks += 1


async def run_asyncpg():
    import asyncpg

    conn = await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB)
    try:
        for i in range(ROUNDS):
            for tenant, shard, _port in TENANTS:
                try:
                    rows = await conn.fetch("SELECT name FROM accounts WHERE tenant_id = $1", tenant)
                except Exception as e:  # noqa: BLE001 - report any refusal as a failed check
                    fail(f"asyncpg round {i} tenant {tenant}: {type(e).__name__}: {e}")
                eq(f"asyncpg round {i} tenant {tenant} rows", [tuple(r) for r in rows], [(f"owner of {tenant}",)])
                marker = await conn.fetchval(
                    "SELECT m.name FROM shard_marker m, accounts a WHERE a.tenant_id = $1", tenant
                )
                eq(f"asyncpg round {i} tenant {tenant} shard", marker, shard)
        # executemany sends a Bind and an Execute per row and one Sync: 60,000
        # rows are 120,000 messages, more than one batch may hold (it was
        # refused with 08P01). The rows must land on the tenant's own shard,
        # all or none.
        for tenant, shard, _port in TENANTS[:2]:
            rows = [(tenant, f"bulk {k}") for k in range(BULK_ROWS)]
            try:
                await conn.executemany("INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)", rows)
            except Exception as e:  # noqa: BLE001
                fail(f"asyncpg executemany tenant {tenant}: {type(e).__name__}: {e}")
            got = await conn.fetchrow(
                "SELECT count(*), min(m.name) FROM accounts a, shard_marker m "
                "WHERE a.tenant_id = $1 AND a.name LIKE 'bulk %'",
                tenant,
            )
            eq(f"asyncpg executemany tenant {tenant} rows on its shard", tuple(got), (BULK_ROWS, shard))
        # One row of another shard's tenant among them: refused whole, nothing
        # written anywhere.
        (t0, _s0, _p0), (t1, _s1, _p1) = TENANTS[0], TENANTS[1]
        rows = [(t0, f"mixed {k}") for k in range(BULK_ROWS)] + [(t1, "mixed last")]
        try:
            await conn.executemany("INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)", rows)
            fail("asyncpg executemany across two shards was not refused")
        except asyncpg.PostgresError as e:
            eq("asyncpg executemany across two shards: SQLSTATE", e.sqlstate, "0A000")
        for tenant, _shard, _port in TENANTS[:2]:
            n = await conn.fetchval(
                "SELECT count(*) FROM accounts WHERE tenant_id = $1 AND name LIKE 'mixed %'", tenant
            )
            eq(f"asyncpg refused executemany left no row of {tenant}", n, 0)
        for tenant, _shard, _port in TENANTS[:2]:
            await conn.execute("DELETE FROM accounts WHERE tenant_id = $1 AND name LIKE 'bulk %'", tenant)
        # asyncpg's bulk idiom: arrays unnested into rows, each a binary
        # array parameter. The rows go to their tenant's shard (it was
        # refused 42P17: no tenant read); rows of two shards are refused.
        unnest = (
            "INSERT INTO accounts (tenant_id, name) SELECT * FROM unnest($1::text[], $2::text[]) "
            "RETURNING (SELECT name FROM shard_marker)"
        )
        for tenant, shard, _port in TENANTS:
            try:
                got = await conn.fetch(unnest, [tenant, tenant], ["unnest a", "unnest b"])
            except Exception as e:  # noqa: BLE001
                fail(f"asyncpg unnest tenant {tenant}: {type(e).__name__}: {e}")
            eq(f"asyncpg unnest tenant {tenant} shard", [r[0] for r in got], [shard, shard])
        try:
            await conn.fetch(unnest, [t0, t1], ["unnest mixed", "unnest mixed"])
            fail("asyncpg unnest across two shards was not refused")
        except asyncpg.PostgresError as e:
            eq("asyncpg unnest across two shards: SQLSTATE", e.sqlstate, "0A000")
        for tenant, _shard, _port in TENANTS:
            n = await conn.fetchval(
                "WITH d AS (DELETE FROM accounts WHERE tenant_id = $1 AND name LIKE 'unnest %' RETURNING 1) "
                "SELECT count(*) FROM d",
                tenant,
            )
            eq(f"asyncpg unnest rows of {tenant}", n, 2)
    finally:
        await conn.close()
    # Without its statement cache (PgBouncer's advice for asyncpg), asyncpg
    # parses and describes each text, then parses it again with its Bind
    # (binary values in the described types): refused 22023 as binary of an
    # unspecified type while the second Parse did not keep the described types.
    conn = await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, statement_cache_size=0
    )
    try:
        for i in range(2):
            for tenant, shard, _port in TENANTS:
                try:
                    got = await conn.fetchrow(
                        "SELECT a.name, m.name FROM accounts a, shard_marker m WHERE a.tenant_id = $1", tenant
                    )
                except Exception as e:  # noqa: BLE001
                    fail(f"asyncpg statement_cache_size=0 round {i} tenant {tenant}: {type(e).__name__}: {e}")
                eq(f"asyncpg statement_cache_size=0 round {i} tenant {tenant}", tuple(got), (f"owner of {tenant}", shard))
    finally:
        await conn.close()


def run_psycopg():
    import psycopg

    conninfo = f"host={HOST} port={PORT} user={USER} password={PASSWORD} dbname={DB}"
    # Autocommit: each execute is its own unit; past prepare_threshold (5) psycopg
    # switches to named prepared statements.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for i in range(2 * ROUNDS):
            for tenant, shard, _port in TENANTS:
                try:
                    rows = conn.execute("SELECT name FROM accounts WHERE tenant_id = %s", (tenant,)).fetchall()
                except Exception as e:  # noqa: BLE001
                    fail(f"psycopg autocommit round {i} tenant {tenant}: {type(e).__name__}: {e}")
                eq(f"psycopg autocommit round {i} tenant {tenant}", rows, [(f"owner of {tenant}",)])
    # The default: psycopg opens a transaction (BEGIN) before the first statement.
    with psycopg.connect(conninfo) as conn:
        for i in range(ROUNDS):
            for tenant, shard, _port in TENANTS:
                try:
                    rows = conn.execute(
                        "SELECT a.name, m.name FROM accounts a, shard_marker m WHERE a.tenant_id = %s", (tenant,)
                    ).fetchall()
                    conn.commit()
                except Exception as e:  # noqa: BLE001
                    fail(f"psycopg transaction round {i} tenant {tenant}: {type(e).__name__}: {e}")
                eq(f"psycopg transaction round {i} tenant {tenant}", rows, [(f"owner of {tenant}", shard)])
        # executemany in the default transaction: psycopg sends its BEGIN in
        # pipeline mode (Parse, Bind, Describe, Execute, Sync), which pinned the
        # transaction to the default shard (0A000 for the other shard's tenants).
        for tenant, shard, _port in TENANTS:
            try:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO accounts (tenant_id, name) VALUES (%s, %s)",
                        [(tenant, f"many {k}") for k in range(5)],
                    )
                    cur.execute(
                        "SELECT count(*), min(m.name) FROM accounts a, shard_marker m "
                        "WHERE a.tenant_id = %s AND a.name LIKE 'many %%'",
                        (tenant,),
                    )
                    got = cur.fetchone()
                conn.rollback()
            except Exception as e:  # noqa: BLE001
                fail(f"psycopg executemany in a transaction, tenant {tenant}: {type(e).__name__}: {e}")
            eq(f"psycopg executemany in a transaction, tenant {tenant}", got, (5, shard))
        # Pipeline mode in a transaction: BEGIN, a SET LOCAL that names no
        # tenant, then the tenant's statement, all through Parse/Bind/Execute
        # in one round trip: the SET LOCAL takes effect inside the transaction,
        # on the tenant's shard.
        for tenant, shard, _port in TENANTS:
            try:
                with conn.pipeline():
                    with conn.cursor() as cur:
                        cur.execute("SET LOCAL statement_timeout = '7s'")
                        cur.execute(
                            "SELECT m.name, current_setting('statement_timeout') FROM accounts a, shard_marker m "
                            "WHERE a.tenant_id = %s",
                            (tenant,),
                        )
                        got = cur.fetchall()
                conn.rollback()
            except Exception as e:  # noqa: BLE001
                fail(f"psycopg pipeline SET LOCAL, tenant {tenant}: {type(e).__name__}: {e}")
            eq(f"psycopg pipeline SET LOCAL, tenant {tenant}", got, [(shard, "7s")])
    # Connection setup with no tenant (Django's time zone, SQLAlchemy's
    # version and schema queries): settings and server facts only, run on
    # any shard (they were 42P17), the setting following the client to
    # every tenant's shard.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            conn.execute("SELECT set_config('TimeZone', %s, false)", ("Asia/Tokyo",))
            version = conn.execute("select pg_catalog.version()").fetchone()[0]
            schema = conn.execute("select current_schema()").fetchone()[0]
        except Exception as e:  # noqa: BLE001
            fail(f"psycopg connection setup with no tenant: {type(e).__name__}: {e}")
        eq("psycopg select version()", version.startswith("PostgreSQL"), True)
        eq("psycopg select current_schema()", schema, "public")
        for tenant, shard, _port in TENANTS:
            got = conn.execute(
                "SELECT current_setting('TimeZone'), m.name FROM accounts a, shard_marker m WHERE a.tenant_id = %s",
                (tenant,),
            ).fetchall()
            eq(f"psycopg set_config followed the client to {tenant}'s shard", got, [("Asia/Tokyo", shard)])
    # SQLAlchemy 2's ORM add_all with a text key (its insertmanyvalues form,
    # bound by the server): every value cast to VARCHAR (was 22023, two
    # parameters in one column of constant rows).
    orm = (
        "INSERT INTO accounts (tenant_id, name) SELECT p0::VARCHAR, p1::VARCHAR FROM "
        "(VALUES (%s::VARCHAR, %s::VARCHAR, 0), (%s::VARCHAR, %s::VARCHAR, 1)) "
        "AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter RETURNING (SELECT name FROM shard_marker)"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for tenant, shard, _port in TENANTS:
            try:
                got = conn.execute(orm, (tenant, "orm a", tenant, "orm b")).fetchall()
                conn.execute("DELETE FROM accounts WHERE tenant_id = %s AND name LIKE 'orm %%'", (tenant,))
            except Exception as e:  # noqa: BLE001
                fail(f"psycopg SQLAlchemy-ORM rows, tenant {tenant}: {type(e).__name__}: {e}")
            eq(f"psycopg SQLAlchemy-ORM rows, tenant {tenant}", got, [(shard,), (shard,)])
        (t0, _s0, _p0), (t1, _s1, _p1) = TENANTS[0], TENANTS[1]
        try:
            conn.execute(orm, (t0, "orm mixed", t1, "orm mixed"))
            fail("psycopg SQLAlchemy-ORM rows of two shards were not refused")
        except psycopg.Error as e:
            eq("psycopg SQLAlchemy-ORM rows of two shards: SQLSTATE", e.sqlstate, "0A000")
    # Django 5.2's bulk_create on PostgreSQL: `SELECT * FROM UNNEST((%s)::type[],
    # ..)`, a list per column; bound by the server (psycopg's default cursor)
    # and spelled in the text (ClientCursor, Django's default with psycopg 3).
    bulk = (
        "INSERT INTO accounts (tenant_id, name) SELECT * FROM UNNEST((%s)::text[], (%s)::text[]) "
        "RETURNING (SELECT name FROM shard_marker)"
    )
    (t0, _s0, _p0), (t1, _s1, _p1) = TENANTS[0], TENANTS[1]
    for cursor in (psycopg.Cursor, psycopg.ClientCursor):
        label = f"psycopg {cursor.__name__} UNNEST"
        with psycopg.connect(conninfo, autocommit=True, cursor_factory=cursor) as conn:
            for tenant, shard, _port in TENANTS:
                try:
                    got = conn.execute(bulk, ([tenant, tenant], ["bulk_create a", "bulk_create b"])).fetchall()
                except Exception as e:  # noqa: BLE001
                    fail(f"{label} tenant {tenant}: {type(e).__name__}: {e}")
                eq(f"{label} tenant {tenant} shard", got, [(shard,), (shard,)])
            try:
                conn.execute(bulk, ([t0, t1], ["bulk_create mixed", "bulk_create mixed"]))
                fail(f"{label} across two shards was not refused")
            except psycopg.Error as e:
                eq(f"{label} across two shards: SQLSTATE", e.sqlstate, "0A000")
            for tenant, _shard, _port in TENANTS:
                n = conn.execute(
                    "SELECT count(*) FROM accounts WHERE tenant_id = %s AND name LIKE 'bulk_create %%'", (tenant,)
                ).fetchone()[0]
                eq(f"{label} rows of {tenant}", n, 2)
                conn.execute("DELETE FROM accounts WHERE tenant_id = %s AND name LIKE 'bulk_create %%'", (tenant,))


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "asyncpg":
        asyncio.run(run_asyncpg())
    elif which == "psycopg":
        run_psycopg()
    else:
        fail(f"usage: py_routing.py asyncpg|psycopg (got {which!r})")
    print(f"OK {n_checks} checks", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        import traceback

        fail(traceback.format_exc())
