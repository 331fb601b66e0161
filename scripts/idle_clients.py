#!/usr/bin/env python3
"""Idle-client memory and mass-connect test for a PostgreSQL pooler.

Opens N logged-in client connections to a pooler (PgBouncer, shardbouncer, ...)
with nothing but the standard library (asyncio and raw sockets speaking the
PostgreSQL v3 protocol: StartupMessage, then trust, cleartext, md5 or
SCRAM-SHA-256 authentication), and reads the pooler's resident set size from
/proc/<pid>/status at each phase:

  start       the pooler as found
  before      after a warm-up: --warmup clients run a few pg_sleep() transactions
              concurrently (so the pooler has opened its server connections),
              then disconnect
  idle        N clients connected and logged in (ReadyForQuery), and idle
              for --settle seconds (3): a pooler may shed an idle client's
              memory on a timer (shardbouncer puts a client idle for
              [limits] client_hibernate_after, 1 s, to sleep without a task)
  after_txn   every client ran --txns transactions (through the pool) and is
              idle again, and --settle seconds (at least 2.5) passed
  after       all N clients sent Terminate and closed, the pooler closed its
              side (its fd count is back to where it was at 'before'), and
              2.5 s passed (a pooler may give memory back on a timer)

Prints a human summary on stderr and one machine-readable line on stdout:

  RESULT clients=10000 connected=10000 connect_errors=0 connect_s=3.21 ...

Usage:
  idle_clients.py --port 6432 --user app --dbname app --pid PID [--clients 10000]

The process raises its own RLIMIT_NOFILE (to the hard limit, or above it when
run as root); the pooler needs a limit above N as well. Connections are opened
with at most --concurrency handshakes in flight, so a listen backlog of 128 is
never overrun (SYN retries would time the kernel, not the pooler).
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import resource
import secrets
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_parts_kib(pid):
    """RssAnon and RssFile: the heap and stacks, and the binary's and libraries' touched pages."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1])
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_us(pid):
    """utime + stime of the process (all threads), in microseconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // CLK_TCK


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class PgError(Exception):
    pass


def startup_message(user, dbname, options):
    body = struct.pack("!i", 196608)
    params = [("user", user), ("database", dbname), ("application_name", "idle_clients")]
    if options:
        params.append(("options", options))
    for k, v in params:
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def msg(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('C', '?????')}: {fields.get('M', '?')}"


async def read_msg(reader):
    hdr = await reader.readexactly(5)
    tag = hdr[:1]
    (length,) = struct.unpack("!i", hdr[1:])
    body = await reader.readexactly(length - 4) if length > 4 else b""
    return tag, body


class Scram:
    """Client side of SCRAM-SHA-256 (no channel binding)."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def initial(self):
        data = ("n,," + self.first_bare).encode()
        return b"SCRAM-SHA-256\0" + struct.pack("!i", len(data)) + data

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def login(host, port, user, dbname, password, options):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(startup_message(user, dbname, options))
        scram = None
        while True:
            tag, body = await read_msg(reader)
            if tag == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code == 0:
                    continue
                if password is None:
                    raise PgError(f"server asks for a password (auth code {code}); pass --password")
                if code == 3:
                    writer.write(msg(b"p", password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    writer.write(msg(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    scram = Scram(password)
                    writer.write(msg(b"p", scram.initial()))
                elif code == 11:
                    writer.write(msg(b"p", scram.final(body[4:])))
                elif code == 12:
                    continue
                else:
                    raise PgError(f"unsupported authentication request {code}")
            elif tag == b"E":
                raise PgError(error_text(body))
            elif tag == b"Z":
                return reader, writer
            # S (ParameterStatus), K (BackendKeyData), N (Notice): ignore
    except BaseException:
        writer.close()
        raise


async def simple_query(reader, writer, sql):
    """Runs one simple Query; returns the error text or None."""
    writer.write(msg(b"Q", sql.encode() + b"\0"))
    err = None
    while True:
        tag, body = await read_msg(reader)
        if tag == b"E" and err is None:
            err = error_text(body)
        elif tag == b"Z":
            return err


async def terminate(writer):
    try:
        writer.write(msg(b"X", b""))
        writer.close()
        await writer.wait_closed()
    except (OSError, ConnectionError):
        pass


async def wait_fds(pid, target, timeout):
    """Waits until the pooler holds at most `target` fds; returns the count."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n > target and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        n = fd_count(pid)
    return n


def log(*a):
    print(*a, file=sys.stderr, flush=True)


async def main(a):
    pid = a.pid
    res = {"clients": a.clients}
    res["rss_start_kib"] = rss_kib(pid)

    # Warm-up: let the pooler open its server connections, then leave.
    if a.warmup > 0:
        async def warm():
            r, w = await login(a.host, a.port, a.user, a.dbname, a.password, a.options)
            for _ in range(3):
                err = await simple_query(r, w, "SELECT pg_sleep(0.05)")
                if err:
                    raise PgError(err)
            await terminate(w)

        try:
            await asyncio.wait_for(asyncio.gather(*(warm() for _ in range(a.warmup))), a.timeout)
        except (OSError, EOFError, asyncio.IncompleteReadError, PgError, asyncio.TimeoutError) as e:
            log(f"  warm-up failed: {type(e).__name__}: {e}")
            return 2
    fds_before = fd_count(pid)
    await asyncio.sleep(a.settle)
    res["rss_before_kib"] = rss_kib(pid)
    res["rss_anon_before_kib"], res["rss_file_before_kib"] = rss_parts_kib(pid)

    # Connect N clients, at most `concurrency` handshakes in flight.
    conns = []
    errors = []
    sem = asyncio.Semaphore(a.concurrency)

    async def connect_one():
        async with sem:
            try:
                conns.append(await asyncio.wait_for(
                    login(a.host, a.port, a.user, a.dbname, a.password, a.options), a.timeout))
            except (OSError, EOFError, asyncio.IncompleteReadError, PgError, asyncio.TimeoutError) as e:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    c0 = cpu_us(pid)
    await asyncio.gather(*(connect_one() for _ in range(a.clients)))
    res["connect_s"] = round(time.monotonic() - t0, 3)
    res["connect_cpu_us_per_client"] = round((cpu_us(pid) - c0) / max(a.clients, 1), 1)
    res["connected"] = len(conns)
    res["connect_errors"] = len(errors)
    await asyncio.sleep(a.settle)
    res["rss_idle_kib"] = rss_kib(pid)
    res["fds_idle"] = fd_count(pid)
    log(f"  {len(conns)} clients logged in in {res['connect_s']} s ({len(errors)} errors, "
        f"pooler CPU {res['connect_cpu_us_per_client']} us per login); "
        f"RSS {res['rss_before_kib']} -> {res['rss_idle_kib']} KiB")

    # Every client runs --txns transactions, all at once, through the pool.
    txn_errors = []

    async def txn(c):
        r, w = c
        for _ in range(a.txns):
            try:
                err = await asyncio.wait_for(simple_query(r, w, a.query), a.timeout)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                err = f"{type(e).__name__}: {e}"
            if err:
                txn_errors.append(err)
                return

    t0 = time.monotonic()
    c0 = cpu_us(pid)
    if a.txns > 0:
        await asyncio.gather(*(txn(c) for c in conns))
    res["txn_s"] = round(time.monotonic() - t0, 3)
    res["txns"] = len(conns) * a.txns
    res["txn_cpu_us_per_txn"] = round((cpu_us(pid) - c0) / max(res["txns"], 1), 1)
    res["txn_errors"] = len(txn_errors)
    # As after the disconnect below: memory the burst of transactions freed may
    # go back on the pooler's timer, so give it two ticks.
    await asyncio.sleep(max(a.settle, 2.5))
    res["rss_after_txn_kib"] = rss_kib(pid)
    log(f"  {res['txns']} transactions in {res['txn_s']} s ({len(txn_errors)} errors, "
        f"pooler CPU {res['txn_cpu_us_per_txn']} us per transaction); "
        f"RSS {res['rss_after_txn_kib']} KiB")

    # Disconnect everyone and wait for the pooler to let go.
    t0 = time.monotonic()
    await asyncio.gather(*(terminate(w) for _, w in conns))
    conns.clear()
    res["fds_after"] = await wait_fds(pid, fds_before + 5, a.drain_timeout)
    res["disconnect_s"] = round(time.monotonic() - t0, 3)
    # A pooler may hand freed memory back on a timer (shardbouncer trims on its
    # once-a-second maintenance tick, twice after a burst): give it two ticks.
    await asyncio.sleep(max(a.settle, 2.5))
    res["rss_after_kib"] = rss_kib(pid)
    res["rss_anon_after_kib"], res["rss_file_after_kib"] = rss_parts_kib(pid)

    n = max(res["connected"], 1)
    res["kib_per_client_idle"] = round((res["rss_idle_kib"] - res["rss_before_kib"]) / n, 2)
    res["kib_per_client_after_txn"] = round((res["rss_after_txn_kib"] - res["rss_before_kib"]) / n, 2)
    res["after_over_before"] = round(res["rss_after_kib"] / max(res["rss_before_kib"], 1), 3)
    log(f"  after disconnect: RSS {res['rss_after_kib']} KiB "
        f"({res['after_over_before']}x before; anonymous {res['rss_anon_before_kib']} -> "
        f"{res['rss_anon_after_kib']} KiB, file-backed {res['rss_file_before_kib']} -> "
        f"{res['rss_file_after_kib']} KiB), pooler fds {res['fds_after']}")
    for e in sorted(set(errors + txn_errors))[:5]:
        log(f"  error: {e}")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in res.items()), flush=True)
    return 0 if not errors and not txn_errors else 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="app")
    p.add_argument("--dbname", default="app")
    p.add_argument("--password", default=None, help="for cleartext/md5/SCRAM (default: trust only)")
    p.add_argument("--options", default=None, help="startup 'options' parameter, e.g. -ctenant_id=1")
    p.add_argument("--pid", type=int, required=True, help="the pooler's process id (RSS, fds)")
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=128, help="handshakes in flight")
    p.add_argument("--warmup", type=int, default=20, help="warm-up clients (use the pool size)")
    p.add_argument("--txns", type=int, default=1, help="transactions per client after connecting")
    p.add_argument("--query", default="SELECT 1")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds idle before reading RSS (at least 2.5 after the transactions and the disconnect)")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds one login or one transaction may take before it counts as an error")
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    want = args.clients + args.warmup + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(asyncio.run(main(args)))
