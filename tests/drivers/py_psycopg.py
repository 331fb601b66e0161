"""psycopg 3 at its defaults (autocommit off, prepare_threshold=5) through shardbouncer."""

import sys
import threading

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import *  # noqa: E402,F403

import psycopg  # noqa: E402
from psycopg import errors  # noqa: E402

C = Checks()


def connect(db=DB, **kw):
    return psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=db, **kw)


def worker(w):
    base = 1000 * (w + 1)
    with connect() as conn:  # autocommit off: psycopg sends BEGIN before the first statement
        cur = conn.cursor()
        cur.execute("SELECT current_setting('port')")
        C.eq(f"w{w} port", cur.fetchone()[0], SINGLE_PG_PORT)
        conn.commit()
        # The same INSERT and SELECT many times: psycopg prepares them as _pg3_N
        # after 5 executions, each in its own transaction (so the server changes).
        for i in range(LOOPS):
            cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + i, f"w{w}-{i}", i * 10))
            conn.commit()
        for i in range(LOOPS):
            cur.execute("SELECT name, n FROM items WHERE id = %s", (base + i,))
            C.eq(f"w{w} select {i}", cur.fetchone(), (f"w{w}-{i}", i * 10))
            conn.commit()
        # Several statements in one transaction, then commit.
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 500, "committed", 1))
        cur.execute("SELECT count(*) FROM items WHERE id = %s", (base + 500,))
        C.eq(f"w{w} in-tx count", cur.fetchone()[0], 1)
        conn.commit()
        # Rolled back insert is gone.
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 600, "rolled back", 1))
        cur.execute("SELECT count(*) FROM items WHERE id = %s", (base + 600,))
        C.eq(f"w{w} sees own insert", cur.fetchone()[0], 1)
        conn.rollback()
        cur.execute("SELECT count(*) FROM items WHERE id IN (%s, %s)", (base + 500, base + 600))
        C.eq(f"w{w} committed kept, rolled back gone", cur.fetchone()[0], 1)
        conn.commit()
        # An error inside a transaction, then rollback.
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 700, "doomed", 1))
        try:
            cur.execute("SELECT 1 / %s", (0,))
            fail(f"w{w}: division by zero did not raise")
        except errors.DivisionByZero:
            C.ok("division by zero raised", True)
        try:
            cur.execute("SELECT 1")
            fail(f"w{w}: statement after error in transaction did not raise")
        except errors.InFailedSqlTransaction:
            C.ok("in failed transaction", True)
        conn.rollback()
        cur.execute("SELECT count(*) FROM items WHERE id = %s", (base + 700,))
        C.eq(f"w{w} doomed insert gone", cur.fetchone()[0], 0)
        conn.commit()
        # Explicit transaction blocks, many times (prepared statements inside).
        for i in range(LOOPS):
            with conn.transaction():
                cur.execute("SELECT n FROM items WHERE id = %s", (base + i,))
                C.eq(f"w{w} tx select {i}", cur.fetchone()[0], i * 10)
        conn.commit()
        # Duplicate key error with a prepared INSERT, then carry on.
        try:
            cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base, "dup", 1))
            fail("duplicate insert did not raise")
        except errors.UniqueViolation:
            C.ok("unique violation", True)
        conn.rollback()
    # autocommit connection: statements outside transactions, prepared after 5 runs.
    with connect(autocommit=True) as conn:
        for i in range(LOOPS):
            row = conn.execute("SELECT %s::int + %s::int, %s::text", (i, 1, f"x{i}")).fetchone()
            C.eq(f"w{w} autocommit {i}", row, (i + 1, f"x{i}"))
        with conn.transaction():
            conn.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 800, "ac-tx", 1))
            with conn.transaction():  # savepoint
                conn.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 801, "ac-sp", 1))
                conn.execute("SELECT 1")
        row = conn.execute("SELECT count(*) FROM items WHERE id BETWEEN %s AND %s", (base + 800, base + 801)).fetchone()
        C.eq(f"w{w} autocommit tx", row[0], 2)
        # Enum type: psycopg looks up nothing by default; text result.
        row = conn.execute("SELECT 'happy'::mood").fetchone()
        C.eq(f"w{w} enum", row[0], "happy")


def sharded_startup_tenant():
    port = TENANT_PORTS["42"]
    with connect(SHARDED_DB, options="-c tenant_id=42") as conn:
        cur = conn.cursor()
        cur.execute("SELECT current_setting('port')")
        C.eq("startup tenant port", cur.fetchone()[0], port)
        conn.commit()
        for i in range(LOOPS):
            # No tenant in the statement: the startup tenant routes it.
            cur.execute("SELECT name, current_setting('port') FROM accounts WHERE name = %s", ("owner of 42",))
            C.eq(f"startup tenant rows {i}", cur.fetchall(), [("owner of 42", port)])
            conn.commit()
        cur.execute("INSERT INTO accounts VALUES (%s, %s)", ("42", "temp"))
        conn.rollback()
        cur.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s AND name = %s", ("42", "temp"))
        C.eq("startup tenant rollback", cur.fetchone()[0], 0)
        conn.commit()


def sharded_param_tenant(w):
    # No startup tenant: each statement names its tenant with tenant_id = $1.
    with connect(SHARDED_DB) as conn:
        cur = conn.cursor()
        for i in range(LOOPS):
            for t, port in TENANT_PORTS.items():
                cur.execute("SELECT name, current_setting('port') FROM accounts WHERE tenant_id = %s", (t,))
                C.eq(f"w{w} tenant {t} loop {i}", cur.fetchall(), [(f"owner of {t}", port)])
                conn.commit()
        # Transaction pinned by the first statement's tenant, rolled back.
        for t in TENANT_PORTS:
            cur.execute("INSERT INTO accounts (tenant_id, name) VALUES (%s, %s)", (t, f"tmp{w}"))
            cur.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s AND name = %s", (t, f"tmp{w}"))
            C.eq(f"w{w} tenant {t} sees insert", cur.fetchone()[0], 1)
            conn.rollback()
            cur.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s AND name = %s", (t, f"tmp{w}"))
            C.eq(f"w{w} tenant {t} insert rolled back", cur.fetchone()[0], 0)
            conn.commit()
    with connect(SHARDED_DB, autocommit=True) as conn:
        for i in range(LOOPS):
            for t, port in TENANT_PORTS.items():
                row = conn.execute("SELECT current_setting('port') FROM accounts WHERE tenant_id = %s", (t,)).fetchone()
                C.eq(f"w{w} autocommit tenant {t} loop {i}", row, (port,))


def deallocate_all_releases_server():
    # psycopg sends DEALLOCATE ALL (simple query) before the next command after a
    # ROLLBACK once it has prepared statements. Answering it must not keep a
    # server: with default_pool_size = 2, two clients idle after it must leave
    # the pool free for a third.
    idle = [connect(autocommit=True) for _ in range(2)]
    for c in idle:
        c.execute("DEALLOCATE ALL")
    third = connect(autocommit=True)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("v", third.execute("SELECT 1").fetchone()), daemon=True)
    t.start()
    t.join(5)
    C.ok("a third client gets a server while two clients sit idle after DEALLOCATE ALL (waited 5s)", "v" in got)
    for c in idle:
        c.close()
    t.join(10)
    third.close()


def listen_notify():
    # Transaction pooling: shardbouncer answers LISTEN itself and relays
    # notifications from one listening connection per shard. Two listeners sit
    # idle (the pool has 2 servers): other clients must still get servers.
    listener = connect()  # psycopg's default: LISTEN runs inside a BEGIN
    listener.execute("LISTEN jobs")
    listener.execute('LISTEN "Mixed Case"')
    listener.commit()
    other = connect(autocommit=True)
    other.execute("LISTEN jobs")
    got = {}

    def work(w):
        with connect(autocommit=True) as c:
            for i in range(LOOPS):
                got[(w, i)] = c.execute("SELECT %s::int", (i,)).fetchone()[0]

    run_threads(work, 4)
    C.eq("clients run while two clients listen on a pool of 2", len(got), 4 * LOOPS)
    with connect(autocommit=True) as n:
        n.execute("NOTIFY jobs, 'one'")
        n.execute("SELECT pg_notify('jobs', 'two')")
        n.execute("NOTIFY \"Mixed Case\", 'three'")
    seen = [(m.channel, m.payload) for m in listener.notifies(timeout=10, stop_after=3)]
    C.eq("listener gets every notification, in order", seen, [("jobs", "one"), ("jobs", "two"), ("Mixed Case", "three")])
    seen = [(m.channel, m.payload) for m in other.notifies(timeout=10, stop_after=2)]
    C.eq("second listener gets its channel's", seen, [("jobs", "one"), ("jobs", "two")])
    # UNLISTEN stops one channel; the other still arrives.
    listener.execute("UNLISTEN jobs")
    listener.commit()
    with connect(autocommit=True) as n:
        n.execute("NOTIFY jobs, 'after unlisten'")
        n.execute("NOTIFY \"Mixed Case\", 'marker'")
    seen = [(m.channel, m.payload) for m in listener.notifies(timeout=10, stop_after=1)]
    C.eq("after UNLISTEN only the other channel", seen, [("Mixed Case", "marker")])
    listener.close()
    other.close()
    # Sharded: one LISTEN covers every shard; each NOTIFY runs on its tenant's.
    with connect(SHARDED_DB, autocommit=True) as lst:
        lst.execute("LISTEN tenants")
        with connect(SHARDED_DB, autocommit=True) as n:
            for t, port in TENANT_PORTS.items():
                n.execute(
                    "SELECT pg_notify('tenants', current_setting('port')) FROM accounts WHERE tenant_id = %s",
                    (t,),
                )
        seen = sorted(m.payload for m in lst.notifies(timeout=10, stop_after=len(TENANT_PORTS)))
        C.eq("a sharded listener hears every shard", seen, sorted(TENANT_PORTS.values()))
    # LISTEN mixed with another statement is refused, never run on a server.
    with connect(autocommit=True) as c:
        try:
            c.execute("LISTEN a; SELECT 1")
            fail("LISTEN mixed with a statement was accepted")
        except errors.FeatureNotSupported:
            C.ok("LISTEN mixed with a statement: 0A000", True)


def sharded_catalog_reads():
    """No tenant at connect: psycopg's TypeInfo/EnumInfo lookups (catalog
    reads naming no tenant) run on any shard; the loaded enum adapter then
    reads each tenant's row on its shard."""
    from psycopg.types.enum import EnumInfo, register_enum

    with connect(SHARDED_DB, autocommit=True) as conn:
        info = EnumInfo.fetch(conn, "grade")
        C.ok("catalog: EnumInfo.fetch found grade", info is not None)
        C.eq("catalog: grade labels", list(info.labels), ["low", "high"])
        register_enum(info, conn)
        for t, port in TENANT_PORTS.items():
            row = conn.execute(
                "SELECT g, current_setting('port') FROM grades WHERE tenant_id = %s", (t,)
            ).fetchone()
            C.eq(f"catalog: tenant {t} enum row", (row[0].name, row[1]), ("high", port))


def main():
    step("single database, %d concurrent connections" % WORKERS)
    run_threads(worker, WORKERS)
    step("single database: idle after DEALLOCATE ALL holds no server")
    deallocate_all_releases_server()
    step("LISTEN/NOTIFY relayed in transaction pooling")
    listen_notify()
    step("sharded: tenant in startup options")
    sharded_startup_tenant()
    step("sharded: tenant as a parameter, %d concurrent connections" % WORKERS)
    run_threads(sharded_param_tenant, WORKERS)
    step("sharded: type introspection with no tenant")
    sharded_catalog_reads()
    C.done()


if __name__ == "__main__":
    main()
