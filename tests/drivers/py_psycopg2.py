"""psycopg2 at its defaults (libpq, client-side parameters, simple protocol,
autocommit off) through shardbouncer."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import *  # noqa: E402,F403

import psycopg2  # noqa: E402
from psycopg2 import errors  # noqa: E402

C = Checks()


def connect(db=DB, **kw):
    return psycopg2.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=db, **kw)


def worker(w):
    base = 1000 * (w + 1)
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_setting('port')")
        C.eq(f"w{w} port", cur.fetchone()[0], SINGLE_PG_PORT)
        conn.commit()
        for i in range(LOOPS):
            cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + i, f"w{w}-{i}", i * 10))
            conn.commit()
        for i in range(LOOPS):
            cur.execute("SELECT name, n FROM items WHERE id = %s", (base + i,))
            C.eq(f"w{w} select {i}", cur.fetchone(), (f"w{w}-{i}", i * 10))
            conn.commit()
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 500, "committed", 1))
        conn.commit()
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 600, "rolled back", 1))
        conn.rollback()
        cur.execute("SELECT count(*) FROM items WHERE id IN (%s, %s)", (base + 500, base + 600))
        C.eq(f"w{w} committed kept, rolled back gone", cur.fetchone()[0], 1)
        conn.commit()
        cur.execute("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", (base + 700, "doomed", 1))
        try:
            cur.execute("SELECT 1 / %s", (0,))
            fail("division by zero did not raise")
        except errors.DivisionByZero:
            C.ok("division by zero", True)
        conn.rollback()
        cur.execute("SELECT count(*) FROM items WHERE id = %s", (base + 700,))
        C.eq(f"w{w} doomed insert gone", cur.fetchone()[0], 0)
        conn.commit()
        cur.executemany("INSERT INTO items (id, name, n) VALUES (%s, %s, %s)", [(base + 900 + k, "many", k) for k in range(10)])
        conn.commit()
        cur.execute("SELECT count(*) FROM items WHERE name = 'many' AND id BETWEEN %s AND %s", (base, base + 999))
        C.eq(f"w{w} executemany", cur.fetchone()[0], 10)
        conn.commit()
    finally:
        conn.close()


def sharded(w):
    conn = connect(SHARDED_DB, options="-c tenant_id=42")
    try:
        cur = conn.cursor()
        cur.execute("SELECT name, current_setting('port') FROM accounts WHERE name = %s", ("owner of 42",))
        C.eq(f"w{w} startup tenant", cur.fetchall(), [("owner of 42", TENANT_PORTS["42"])])
        conn.rollback()
    finally:
        conn.close()
    conn = connect(SHARDED_DB)
    try:
        cur = conn.cursor()
        for i in range(5):
            for t, port in TENANT_PORTS.items():
                cur.execute("SELECT name, current_setting('port') FROM accounts WHERE tenant_id = %s", (t,))
                C.eq(f"w{w} tenant {t} loop {i}", cur.fetchall(), [(f"owner of {t}", port)])
                conn.commit()
        for t in TENANT_PORTS:
            cur.execute("INSERT INTO accounts (tenant_id, name) VALUES (%s, %s)", (t, f"tmp{w}"))
            conn.rollback()
            cur.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s AND name = %s", (t, f"tmp{w}"))
            C.eq(f"w{w} tenant {t} rolled back", cur.fetchone()[0], 0)
            conn.commit()
    finally:
        conn.close()


def main():
    step("single database, %d concurrent connections" % WORKERS)
    run_threads(worker, WORKERS)
    step("sharded, %d concurrent connections" % WORKERS)
    run_threads(sharded, WORKERS)
    C.done()


if __name__ == "__main__":
    main()
