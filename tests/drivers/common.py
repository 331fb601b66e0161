"""Shared helpers for the Python driver programs (see tests/drivers.rs)."""

import os
import sys
import threading
import traceback

HOST = os.environ.get("SB_HOST", "127.0.0.1")
PORT = int(os.environ["SB_PORT"])
USER = os.environ.get("SB_USER", "app")
PASSWORD = os.environ.get("SB_PASSWORD", "secret")
DB = os.environ.get("SB_DB", "app")
SHARDED_DB = os.environ.get("SB_SHARDED_DB", "sharded")
SINGLE_PG_PORT = os.environ["SB_SINGLE_PG_PORT"]
# tenant -> port of the PostgreSQL shard that owns it
TENANT_PORTS = dict(kv.split("=", 1) for kv in os.environ["SB_TENANT_PORTS"].split(","))

WORKERS = 10  # concurrent client connections (the pool has 2 server connections)
LOOPS = 25  # executions of one statement (prepare thresholds are 5)


class Checks:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def eq(self, what, got, want):
        if got != want:
            fail(f"{what}: got {got!r}, want {want!r}")
        with self.lock:
            self.n += 1

    def ok(self, what, cond):
        if not cond:
            fail(f"{what}: check failed")
        with self.lock:
            self.n += 1

    def done(self):
        print(f"OK {self.n} checks", flush=True)


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    # Exit the whole process from any thread.
    os._exit(1)


def step(msg):
    print(f"-- {msg}", flush=True)


def run_threads(fn, n):
    """Run fn(0..n) on n threads; fail with every worker's traceback if any raised."""
    errs = []

    def wrap(i):
        try:
            fn(i)
        except Exception:
            errs.append(traceback.format_exc())

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        fail("worker raised:\n" + "\n".join(errs))
