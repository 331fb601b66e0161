"""asyncpg at its defaults (named prepared statements, statement cache, type
introspection on first use of a non-builtin type) through shardbouncer."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import *  # noqa: E402,F403

import asyncpg  # noqa: E402

C = Checks()


async def connect(db=DB, **kw):
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=db, **kw)


async def worker(w):
    base = 1000 * (w + 1)
    conn = await connect()
    try:
        C.eq(f"w{w} port", await conn.fetchval("SELECT current_setting('port')"), SINGLE_PG_PORT)
        for i in range(LOOPS):
            await conn.execute("INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", base + i, f"w{w}-{i}", i * 10)
        for i in range(LOOPS):
            row = await conn.fetchrow("SELECT name, n FROM items WHERE id = $1", base + i)
            C.eq(f"w{w} select {i}", tuple(row), (f"w{w}-{i}", i * 10))
        # Explicit prepared statement object.
        stmt = await conn.prepare("SELECT n FROM items WHERE id = $1")
        for i in range(LOOPS):
            C.eq(f"w{w} prepared {i}", await stmt.fetchval(base + i), i * 10)
        # Transaction: commit.
        async with conn.transaction():
            await conn.execute("INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", base + 500, "committed", 1)
            C.eq(f"w{w} in-tx", await conn.fetchval("SELECT count(*) FROM items WHERE id = $1", base + 500), 1)
        # Rollback.
        tr = conn.transaction()
        await tr.start()
        await conn.execute("INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", base + 600, "rolled back", 1)
        C.eq(f"w{w} sees own insert", await conn.fetchval("SELECT count(*) FROM items WHERE id = $1", base + 600), 1)
        await tr.rollback()
        C.eq(
            f"w{w} committed kept, rolled back gone",
            await conn.fetchval("SELECT count(*) FROM items WHERE id = ANY($1::int[])", [base + 500, base + 600]),
            1,
        )
        # Error inside a transaction (the context manager rolls back).
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", base + 700, "doomed", 1)
                await conn.fetchval("SELECT 1 / $1::int", 0)
            fail(f"w{w}: division by zero did not raise")
        except asyncpg.exceptions.DivisionByZeroError:
            C.ok("division by zero raised", True)
        C.eq(f"w{w} doomed insert gone", await conn.fetchval("SELECT count(*) FROM items WHERE id = $1", base + 700), 0)
        try:
            await conn.execute("INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", base, "dup", 1)
            fail("duplicate insert did not raise")
        except asyncpg.exceptions.UniqueViolationError:
            C.ok("unique violation", True)
        # Many short transactions.
        for i in range(LOOPS):
            async with conn.transaction():
                C.eq(f"w{w} tx select {i}", await conn.fetchval("SELECT n FROM items WHERE id = $1", base + i), i * 10)
        # executemany (one Sync for the whole batch).
        await conn.executemany(
            "INSERT INTO items (id, name, n) VALUES ($1, $2, $3)", [(base + 900 + k, "many", k) for k in range(10)]
        )
        C.eq(f"w{w} executemany", await conn.fetchval("SELECT count(*) FROM items WHERE name = 'many' AND id BETWEEN $1 AND $1 + 999", base), 10)
        # Non-builtin type: asyncpg introspects the enum's OID with its own query.
        C.eq(f"w{w} enum", await conn.fetchval("SELECT 'happy'::mood"), "happy")
        C.eq(f"w{w} enum array", await conn.fetchval("SELECT ARRAY['sad', 'ok']::mood[]"), ["sad", "ok"])
        # Simple-protocol script.
        await conn.execute("SELECT 1; SELECT 2")
    finally:
        await conn.close()


async def pool_test():
    pool = await asyncpg.create_pool(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, min_size=2, max_size=10)
    try:

        async def job(j):
            for i in range(LOOPS):
                async with pool.acquire() as conn:
                    C.eq(f"pool {j} {i}", await conn.fetchval("SELECT $1::int * 2", j * 100 + i), (j * 100 + i) * 2)

        await asyncio.gather(*(job(j) for j in range(20)))
    finally:
        await pool.close()


async def sharded_startup_tenant():
    port = TENANT_PORTS["42"]
    # asyncpg sends server_settings as startup parameters: tenant_id=42.
    conn = await connect(SHARDED_DB, server_settings={"tenant_id": "42"})
    try:
        C.eq("startup tenant port", await conn.fetchval("SELECT current_setting('port')"), port)
        for i in range(LOOPS):
            rows = await conn.fetch("SELECT name, current_setting('port') FROM accounts WHERE name = $1", "owner of 42")
            C.eq(f"startup tenant rows {i}", [tuple(r) for r in rows], [("owner of 42", port)])
        C.eq("startup tenant enum", await conn.fetchval("SELECT 'ok'::text"), "ok")
        tr = conn.transaction()
        await tr.start()
        await conn.execute("INSERT INTO accounts VALUES ($1, $2)", "42", "temp")
        await tr.rollback()
        C.eq("startup tenant rollback", await conn.fetchval("SELECT count(*) FROM accounts WHERE name = 'temp'"), 0)
    finally:
        await conn.close()
    # The same through options=-c tenant_id=42, as libpq-style drivers send it.
    conn = await connect(SHARDED_DB, server_settings={"options": "-c tenant_id=42"})
    try:
        C.eq("startup options tenant port", await conn.fetchval("SELECT current_setting('port')"), port)
    finally:
        await conn.close()


async def sharded_param_tenant(w):
    conn = await connect(SHARDED_DB)
    try:
        for i in range(LOOPS):
            for t, port in TENANT_PORTS.items():
                rows = await conn.fetch("SELECT name, current_setting('port') FROM accounts WHERE tenant_id = $1", t)
                C.eq(f"w{w} tenant {t} loop {i}", [tuple(r) for r in rows], [(f"owner of {t}", port)])
        for t in TENANT_PORTS:
            tr = conn.transaction()
            await tr.start()
            await conn.execute("INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)", t, f"tmp{w}")
            C.eq(
                f"w{w} tenant {t} sees insert",
                await conn.fetchval("SELECT count(*) FROM accounts WHERE tenant_id = $1 AND name = $2", t, f"tmp{w}"),
                1,
            )
            await tr.rollback()
            C.eq(
                f"w{w} tenant {t} rolled back",
                await conn.fetchval("SELECT count(*) FROM accounts WHERE tenant_id = $1 AND name = $2", t, f"tmp{w}"),
                0,
            )
    finally:
        await conn.close()


async def sharded_pool_param_tenant():
    # The tenant only in each query: the pool's reset on release (advisory
    # unlock, CLOSE ALL, UNLISTEN *, RESET ALL) names none and must pass.
    pool = await asyncpg.create_pool(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=SHARDED_DB, min_size=2, max_size=5
    )
    try:

        async def job(j):
            for i in range(LOOPS):
                t, port = list(TENANT_PORTS.items())[(j + i) % len(TENANT_PORTS)]
                async with pool.acquire() as conn:
                    rows = await conn.fetch("SELECT name, current_setting('port') FROM accounts WHERE tenant_id = $1", t)
                    C.eq(f"sharded pool {j} {i}", [tuple(r) for r in rows], [(f"owner of {t}", port)])

        await asyncio.gather(*(job(j) for j in range(10)))
    finally:
        await pool.close()
    # asyncpg before 0.30 reset with a DO block in place of UNLISTEN *.
    conn = await connect(SHARDED_DB)
    try:
        await conn.execute(
            """SELECT pg_advisory_unlock_all();
            CLOSE ALL;
            DO $$
            BEGIN
                PERFORM * FROM pg_listening_channels() LIMIT 1;
                IF FOUND THEN
                    UNLISTEN *;
                END IF;
            END;
            $$;
            RESET ALL;"""
        )
        C.ok("older asyncpg reset query", True)
    finally:
        await conn.close()


async def listener_test():
    """add_listener sends LISTEN through Parse/Describe/Bind/Execute: relayed by
    shardbouncer like a simple Query's, on every shard of a sharded database."""
    got = asyncio.Queue()

    def heard(conn, pid, channel, payload):
        got.put_nowait((channel, payload))

    for db in (DB, SHARDED_DB):
        lst = await connect(db)
        other = await connect(db)
        try:
            await lst.add_listener("jobs", heard)
            # The listener's connection goes on running statements meanwhile
            # (on the sharded database, a statement with no tenant is refused).
            if db == DB:
                C.eq(f"{db}: listener still runs queries", await lst.fetchval("SELECT 41 + 1"), 42)
            if db == DB:
                await other.execute("NOTIFY jobs, 'one'")
                expect = [("jobs", "one")]
            else:
                for t in TENANT_PORTS:
                    await other.execute(
                        "SELECT pg_notify('jobs', current_setting('port')) FROM accounts WHERE tenant_id = $1",
                        t,
                    )
                expect = [("jobs", p) for p in TENANT_PORTS.values()]
            seen = [await asyncio.wait_for(got.get(), 10) for _ in expect]
            C.eq(f"{db}: add_listener hears the notifications", sorted(seen), sorted(expect))
            # UNLISTEN through the extended protocol too.
            await lst.remove_listener("jobs", heard)
            if db == DB:
                C.eq(f"{db}: runs queries after remove_listener", await lst.fetchval("SELECT 1"), 1)
        finally:
            await lst.close()
            await other.close()


async def migration_test():
    """A column changes type under a cached statement, and the statement next
    runs on a server with no copy of it: Postgres's 0A000, and asyncpg's own
    re-prepare gives the new type (not the old type's reading of its bits)."""
    c = await connect()
    direct = await asyncpg.connect(
        host=HOST, port=int(SINGLE_PG_PORT), user=USER, password=PASSWORD, database=DB
    )
    try:
        await c.execute("DROP TABLE IF EXISTS mig; CREATE TABLE mig (n int4); INSERT INTO mig VALUES (42)")
        C.eq("before the migration", await c.fetchval("SELECT n FROM mig"), 42)
        await direct.execute("ALTER TABLE mig ALTER n TYPE real USING n::real")
        # Every pooled server goes: the next one prepares the statement afresh.
        await direct.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE usename = current_user AND pid <> pg_backend_pid() AND datname = current_database()"
        )
        C.eq("after the migration, on a new server", await c.fetchval("SELECT n FROM mig"), 42.0)
    finally:
        await c.close()
        await direct.close()


async def sharded_catalog_reads():
    """No tenant at connect, the tenant in each query: asyncpg looks up the
    enum `grade` (and `grade[]`) with its own catalog query first, which
    names no tenant; shardbouncer runs it on any shard. The query it was
    for goes to the tenant's shard (its row holds that shard's number)."""
    conn = await connect(SHARDED_DB)
    try:
        for t, port in TENANT_PORTS.items():
            rows = await conn.fetch(
                "SELECT g, tags[2], current_setting('port') FROM grades WHERE tenant_id = $1 AND g = ANY($2::grade[])",
                t,
                ["high", "low"],
            )
            C.eq(f"catalog: tenant {t} row", [tuple(r) for r in rows], [("high", 7, port)])
        C.eq(
            "catalog: a type lookup of the application's own",
            await conn.fetchval(
                "SELECT t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n "
                "ON n.oid = t.typnamespace WHERE t.typname = $1 AND n.nspname = 'public'",
                "grade",
            ),
            "grade",
        )
        C.eq("catalog: a health check", await conn.fetchval("SELECT 1"), 1)
        try:
            await conn.fetch("SELECT c.relname FROM pg_catalog.pg_class c JOIN grades g ON true")
            fail("a catalog read joined with a table of the application's ran without a tenant")
        except asyncpg.PostgresError as e:
            C.eq("catalog: joined with a table, refused", e.sqlstate, "42P17")
    finally:
        await conn.close()


async def main():
    step("asyncpg: a migration under a cached statement")
    await migration_test()
    step("asyncpg add_listener / remove_listener")
    await listener_test()
    step("single database, %d concurrent connections" % WORKERS)
    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    step("single database, asyncpg pool")
    await pool_test()
    step("sharded: tenant as a startup parameter")
    await sharded_startup_tenant()
    step("sharded: asyncpg pool, tenant only in each query")
    await sharded_pool_param_tenant()
    step("sharded: tenant as a parameter, %d concurrent connections" % WORKERS)
    await asyncio.gather(*(sharded_param_tenant(w) for w in range(WORKERS)))
    step("sharded: type introspection with no tenant")
    await sharded_catalog_reads()
    C.done()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        raise
    except BaseException:
        import traceback

        fail(traceback.format_exc())
