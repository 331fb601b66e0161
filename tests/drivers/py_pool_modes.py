"""Session and statement pool modes through psycopg 3 or asyncpg (see tests/drivers_modes.rs).

Usage: python3 py_pool_modes.py psycopg|asyncpg

Environment: SB_HOST, SB_PORT, SB_USER, SB_PASSWORD; SB_SESSION_DB (pool_mode
session) and SB_STATEMENT_DB (pool_mode statement), both with default_pool_size
2 over the same PostgreSQL database on port SB_PG_PORT, which has a table
mode_items (id int primary key, note text).

Prints "OK <n> checks" and exits 0, or exits 1 naming the failed check.
"""

import asyncio
import os
import sys
import threading
import traceback

HOST = os.environ.get("SB_HOST", "127.0.0.1")
PORT = int(os.environ["SB_PORT"])
USER = os.environ.get("SB_USER", "app")
PASSWORD = os.environ.get("SB_PASSWORD", "secret")
SESSION_DB = os.environ["SB_SESSION_DB"]
STATEMENT_DB = os.environ["SB_STATEMENT_DB"]
PG_PORT = os.environ["SB_PG_PORT"]
WORKERS = 8  # concurrent clients in statement mode (the pool has 2 servers)
LOOPS = 12  # above the drivers' prepare thresholds (psycopg: 5)

# What a client of the session pool leaves on its server, and how to see it.
LEFT_BEHIND = (
    "SELECT pg_backend_pid(), to_regclass('mode_tmp') IS NULL, "
    "current_setting('app.mode_probe', true), "
    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid())::int, "
    "(SELECT count(*) FROM pg_prepared_statements WHERE name = 'mode_stmt')::int"
)

checks = 0
lock = threading.Lock()


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def eq(what, got, want):
    global checks
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")
    with lock:
        checks += 1


def ok(what, cond):
    eq(what, bool(cond), True)


def step(msg):
    print(f"-- {msg}", flush=True)


def check_reset(what, row, pid_a):
    """The third session client got A's server, cleaned by server_reset_query."""
    pid, no_tmp, probe, locks, prepared = row
    eq(f"{what}: the third client reuses the first client's server (pool of 2)", pid, pid_a)
    eq(f"{what}: temp table gone after DISCARD ALL", no_tmp, True)
    ok(f"{what}: session SET gone after DISCARD ALL (got {probe!r})", probe in (None, ""))
    eq(f"{what}: advisory lock released", locks, 0)
    eq(f"{what}: SQL PREPARE deallocated", prepared, 0)


# ------------------------------------------------------------------ psycopg 3


def run_psycopg():
    import psycopg
    from psycopg import errors

    def connect(db, **kw):
        return psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=db, **kw)

    step("psycopg: session mode keeps the client's server and its state")
    a = connect(SESSION_DB)  # autocommit off: every statement is in a transaction
    cur = a.cursor()
    cur.execute("SELECT pg_backend_pid(), current_setting('port')")
    pid_a, port = cur.fetchone()
    eq("session port", port, PG_PORT)
    cur.execute("CREATE TEMP TABLE mode_tmp (x int)")
    cur.execute("INSERT INTO mode_tmp VALUES (0)")
    cur.execute("SET app.mode_probe = 'kept'")
    cur.execute("PREPARE mode_stmt AS SELECT count(*)::int FROM mode_tmp")
    cur.execute("SELECT pg_advisory_lock(4242)")
    a.commit()
    for i in range(1, LOOPS + 1):
        cur.execute("INSERT INTO mode_tmp VALUES (%s)", (i,))
        cur.execute("SELECT pg_backend_pid(), current_setting('app.mode_probe'), count(*)::int FROM mode_tmp")
        eq(f"session transaction {i}: same server, SET and temp table kept", cur.fetchone(), (pid_a, "kept", i + 1))
        a.commit()
    cur.execute("EXECUTE mode_stmt")
    eq("session SQL PREPARE outlives its transaction", cur.fetchone()[0], LOOPS + 1)
    a.rollback()
    # A rolled-back SET is rolled back, a committed one stays.
    cur.execute("SET app.mode_probe = 'rolled back'")
    a.rollback()
    cur.execute("SELECT current_setting('app.mode_probe')")
    eq("session SET rolled back", cur.fetchone()[0], "kept")
    a.commit()

    b = connect(SESSION_DB, autocommit=True)
    pid_b = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    ok("a second session client has its own server", pid_b != pid_a)
    eq("B does not see A's temp table", b.execute("SELECT to_regclass('mode_tmp') IS NULL").fetchone()[0], True)
    eq(
        "A's session advisory lock is held across its transactions",
        b.execute("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted AND pid = %s", (pid_a,)).fetchone()[0],
        1,
    )
    # The pool (2) is full: a third client is served when A leaves, with A's server reset.
    got = {}

    def third():
        try:
            with connect(SESSION_DB, autocommit=True) as c:
                got["row"] = c.execute(LEFT_BEHIND).fetchone()
        except Exception:
            got["err"] = traceback.format_exc()

    t = threading.Thread(target=third)
    t.start()
    a.close()
    t.join(60)
    if "err" in got or "row" not in got:
        fail(f"third session client: {got.get('err', 'no answer within 60s')}")
    check_reset("psycopg", got["row"], pid_a)
    b.close()

    step("psycopg: statement mode, single statements")
    errs = []

    def worker(w):
        try:
            with connect(STATEMENT_DB, autocommit=True) as c:
                for i in range(LOOPS):
                    row = c.execute("SELECT %s::int * 2, current_setting('port')", (w * 100 + i,)).fetchone()
                    eq(f"statement w{w} select {i}", row, ((w * 100 + i) * 2, PG_PORT))
                    c.execute("INSERT INTO mode_items (id, note) VALUES (%s, %s)", (w * 100 + i, "psycopg"))
                n = c.execute("SELECT count(*) FROM mode_items WHERE id BETWEEN %s AND %s", (w * 100, w * 100 + 99)).fetchone()[0]
                eq(f"statement w{w} rows", n, LOOPS)
        except Exception:
            errs.append(traceback.format_exc())

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        fail("statement worker raised:\n" + "\n".join(errs))

    with connect(STATEMENT_DB, autocommit=True) as c:
        # Settings follow the client from statement to statement...
        c.execute("SET app.mode_probe = 'follows'")
        eq("statement mode SET follows the client", c.execute("SELECT current_setting('app.mode_probe')").fetchone()[0], "follows")
        # ...but a temp table lasts one statement (the server is reset on release).
        c.execute("CREATE TEMP TABLE st_tmp (x int)")
        try:
            c.execute("SELECT * FROM st_tmp")
            fail("statement mode: a temp table outlived its statement")
        except errors.UndefinedTable:
            ok("statement mode: temp table gone after its statement", True)

    step("psycopg: statement mode refuses transaction blocks")
    # Explicit BEGIN as a statement of its own (autocommit on): the refusal is the
    # statement's result.
    c = connect(STATEMENT_DB, autocommit=True)
    try:
        c.execute("BEGIN")
        fail("statement mode: an explicit BEGIN was accepted")
    except errors.FeatureNotSupported as e:
        eq("explicit BEGIN SQLSTATE", e.sqlstate, "0A000")
        ok(f"message names statement pooling ({e})", "statement pooling mode" in str(e))
    ok("the refused client is disconnected", c.closed or c.broken)
    c.close()
    c = connect(STATEMENT_DB, autocommit=True)
    try:
        c.execute("BEGIN; INSERT INTO mode_items (id, note) VALUES (-1, 'never')")
        fail("statement mode: BEGIN in a multi-statement query was accepted")
    except errors.FeatureNotSupported as e:
        eq("BEGIN; INSERT SQLSTATE", e.sqlstate, "0A000")
    c.close()
    # psycopg's defaults: autocommit off, so psycopg itself sends BEGIN before the
    # first statement (and conn.transaction() sends one too). Whatever the driver
    # makes of the refusal, it must be refused; the SQLSTATE is checked last.
    refusals = []
    c = connect(STATEMENT_DB)
    try:
        c.execute("INSERT INTO mode_items (id, note) VALUES (-2, 'never')")
        fail("statement mode: psycopg's implicit BEGIN was accepted")
    except psycopg.Error as e:
        refusals.append(("implicit BEGIN (autocommit off)", e))
    c.close()
    c = connect(STATEMENT_DB, autocommit=True)
    try:
        with c.transaction():
            c.execute("INSERT INTO mode_items (id, note) VALUES (-3, 'never')")
        fail("statement mode: conn.transaction() was accepted")
    except psycopg.Error as e:
        refusals.append(("conn.transaction()", e))
    c.close()
    with connect(STATEMENT_DB, autocommit=True) as c:
        eq("nothing of the refused transactions ran", c.execute("SELECT count(*) FROM mode_items WHERE id < 0").fetchone()[0], 0)
        eq("the pool still serves after the refusals", c.execute("SELECT 'served'").fetchone()[0], "served")
    for what, e in refusals:
        eq(
            f"{what}: SQLSTATE reaching the application (got {type(e).__name__}: {e})",
            getattr(e, "sqlstate", None),
            "0A000",
        )


# -------------------------------------------------------------------- asyncpg


async def run_asyncpg():
    import asyncpg

    async def connect(db):
        return await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=db)

    step("asyncpg: session mode keeps the client's server and its state")
    a = await connect(SESSION_DB)
    pid_a = await a.fetchval("SELECT pg_backend_pid()")
    eq("session port", await a.fetchval("SELECT current_setting('port')"), PG_PORT)
    await a.execute("CREATE TEMP TABLE mode_tmp (x int); INSERT INTO mode_tmp VALUES (0)")
    await a.execute("SET app.mode_probe = 'kept'")
    await a.execute("PREPARE mode_stmt AS SELECT count(*)::int FROM mode_tmp")
    await a.execute("SELECT pg_advisory_lock(4242)")
    for i in range(1, LOOPS + 1):
        async with a.transaction():
            await a.execute("INSERT INTO mode_tmp VALUES ($1)", i)
            row = await a.fetchrow("SELECT pg_backend_pid(), current_setting('app.mode_probe'), count(*)::int FROM mode_tmp")
        eq(f"session transaction {i}: same server, SET and temp table kept", tuple(row), (pid_a, "kept", i + 1))
    eq("session SQL PREPARE outlives its transaction", await a.fetchval("EXECUTE mode_stmt"), LOOPS + 1)
    tr = a.transaction()
    await tr.start()
    await a.execute("SET app.mode_probe = 'rolled back'")
    await tr.rollback()
    eq("session SET rolled back", await a.fetchval("SELECT current_setting('app.mode_probe')"), "kept")

    b = await connect(SESSION_DB)
    pid_b = await b.fetchval("SELECT pg_backend_pid()")
    ok("a second session client has its own server", pid_b != pid_a)
    eq("B does not see A's temp table", await b.fetchval("SELECT to_regclass('mode_tmp') IS NULL"), True)
    eq(
        "A's session advisory lock is held across its transactions",
        await b.fetchval("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted AND pid = $1", pid_a),
        1,
    )

    async def third():
        c = await connect(SESSION_DB)
        try:
            return tuple(await c.fetchrow(LEFT_BEHIND))
        finally:
            await c.close()

    task = asyncio.ensure_future(third())
    await a.close()
    row = await asyncio.wait_for(task, 60)
    check_reset("asyncpg", row, pid_a)
    await b.close()

    step("asyncpg: statement mode, single statements")

    async def worker(w):
        c = await connect(STATEMENT_DB)
        try:
            for i in range(LOOPS):
                row = await c.fetchrow("SELECT $1::int * 2, current_setting('port')", w * 100 + i)
                eq(f"statement w{w} select {i}", tuple(row), ((w * 100 + i) * 2, PG_PORT))
                await c.execute("INSERT INTO mode_items (id, note) VALUES ($1, $2)", 10000 + w * 100 + i, "asyncpg")
            stmt = await c.prepare("SELECT count(*) FROM mode_items WHERE id BETWEEN $1 AND $2")
            for _ in range(3):
                eq(f"statement w{w} rows", await stmt.fetchval(10000 + w * 100, 10000 + w * 100 + 99), LOOPS)
        finally:
            await c.close()

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))

    c = await connect(STATEMENT_DB)
    await c.execute("SET app.mode_probe = 'follows'")
    eq("statement mode SET follows the client", await c.fetchval("SELECT current_setting('app.mode_probe')"), "follows")
    await c.execute("CREATE TEMP TABLE st_tmp (x int)")
    try:
        await c.fetch("SELECT * FROM st_tmp")
        fail("statement mode: a temp table outlived its statement")
    except asyncpg.exceptions.UndefinedTableError:
        ok("statement mode: temp table gone after its statement", True)

    step("asyncpg: statement mode refuses transaction blocks")

    def refusal(what, e):
        # The refusal is FATAL: asyncpg raises it as ConnectionDoesNotExistError
        # caused by the server's error, as for any FATAL error mid-query.
        err = e if isinstance(e, asyncpg.exceptions.FeatureNotSupportedError) else e.__cause__
        ok(f"{what}: {type(e).__name__} carries FeatureNotSupportedError (cause {err!r})", isinstance(err, asyncpg.exceptions.FeatureNotSupportedError))
        eq(f"{what}: SQLSTATE", err.sqlstate, "0A000")
        ok(f"{what}: message names statement pooling ({err})", "statement pooling mode" in str(err))

    try:
        async with c.transaction():
            await c.execute("INSERT INTO mode_items (id, note) VALUES (-1, 'never')")
        fail("statement mode: a transaction was accepted")
    except (asyncpg.exceptions.FeatureNotSupportedError, asyncpg.exceptions.ConnectionDoesNotExistError) as e:
        refusal("conn.transaction()", e)
    ok("the refused client is disconnected", c.is_closed())
    c = await connect(STATEMENT_DB)
    try:
        await c.execute("BEGIN; INSERT INTO mode_items (id, note) VALUES (-2, 'never')")
        fail("statement mode: BEGIN in a multi-statement query was accepted")
    except (asyncpg.exceptions.FeatureNotSupportedError, asyncpg.exceptions.ConnectionDoesNotExistError) as e:
        refusal("BEGIN; INSERT", e)
    ok("the refused client is disconnected", c.is_closed())
    c = await connect(STATEMENT_DB)
    try:
        eq("nothing of the refused transactions ran", await c.fetchval("SELECT count(*) FROM mode_items WHERE id < 0"), 0)
        eq("the pool still serves after the refusals", await c.fetchval("SELECT 'served'"), "served")
    finally:
        await c.close()


def main():
    driver = sys.argv[1] if len(sys.argv) > 1 else ""
    if driver == "psycopg":
        run_psycopg()
    elif driver == "asyncpg":
        asyncio.run(run_asyncpg())
    else:
        fail(f"usage: py_pool_modes.py psycopg|asyncpg (got {driver!r})")
    print(f"OK {checks} checks", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        fail(traceback.format_exc())
