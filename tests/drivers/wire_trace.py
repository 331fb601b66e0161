"""Debugging aid (not run by the tests): a TCP proxy that prints every
PostgreSQL protocol message passing between a driver and shardbouncer.

    python3 tests/drivers/wire_trace.py LISTEN_PORT TARGET_PORT [> trace.txt]

then point the driver at LISTEN_PORT (e.g. SB_PORT=LISTEN_PORT python3
tests/drivers/py_psycopg.py). Lines are `C>` (client to server) or `S<`,
prefixed with a connection number, e.g. `3 C> P name='_pg3_0' sql='SELECT ...'`.
"""

import asyncio
import struct
import sys

SHOW = 160


def cstr(b, i):
    j = b.index(0, i)
    return b[i:j].decode("utf-8", "replace"), j + 1


def describe(direction, t, body):
    try:
        if direction == "C>":
            if t == "P":
                name, i = cstr(body, 0)
                sql, i = cstr(body, i)
                (n,) = struct.unpack_from("!h", body, i)
                oids = struct.unpack_from("!%di" % n, body, i + 2)
                return f"Parse name={name!r} sql={sql[:SHOW]!r} types={list(oids)}"
            if t == "B":
                portal, i = cstr(body, 0)
                stmt, i = cstr(body, i)
                (nf,) = struct.unpack_from("!h", body, i)
                i += 2 + 2 * nf
                (np,) = struct.unpack_from("!h", body, i)
                i += 2
                vals = []
                for _ in range(np):
                    (ln,) = struct.unpack_from("!i", body, i)
                    i += 4
                    if ln < 0:
                        vals.append(None)
                    else:
                        vals.append(body[i : i + ln])
                        i += ln
                return f"Bind portal={portal!r} stmt={stmt!r} params={vals}"
            if t == "D":
                return f"Describe {chr(body[0])} {body[1:-1].decode()!r}"
            if t == "E":
                return f"Execute portal={body[:-5].decode()!r}"
            if t == "C":
                return f"Close {chr(body[0])} {body[1:-1].decode()!r}"
            if t == "Q":
                return f"Query {body[:-1].decode()[:SHOW]!r}"
            if t == "S":
                return "Sync"
            if t == "H":
                return "Flush"
            if t == "X":
                return "Terminate"
            if t == "p":
                return "Password/SASL"
        else:
            if t == "Z":
                return f"ReadyForQuery {chr(body[0])}"
            if t == "E" or t == "N":
                fields = {}
                i = 0
                while body[i] != 0:
                    k = chr(body[i])
                    v, i = cstr(body, i + 1)
                    fields[k] = v
                kind = "ErrorResponse" if t == "E" else "Notice"
                return f"{kind} {fields.get('C')} {fields.get('M')!r}"
            if t == "C":
                return f"CommandComplete {body[:-1].decode()!r}"
            if t == "1":
                return "ParseComplete"
            if t == "2":
                return "BindComplete"
            if t == "3":
                return "CloseComplete"
            if t == "n":
                return "NoData"
            if t == "t":
                return "ParameterDescription"
            if t == "T":
                return "RowDescription"
            if t == "D":
                return "DataRow"
            if t == "I":
                return "EmptyQueryResponse"
            if t == "s":
                return "PortalSuspended"
            if t == "S":
                k, i = cstr(body, 0)
                v, _ = cstr(body, i)
                return f"ParameterStatus {k}={v}"
            if t == "R":
                return "Authentication"
            if t == "K":
                return "BackendKeyData"
    except Exception as e:  # noqa: BLE001
        return f"{t} <undecoded: {e}> {body[:40]!r}"
    return f"{t} len={len(body)}"


async def pump(cid, direction, reader, writer, untyped_first):
    untyped = untyped_first
    try:
        while True:
            if untyped:
                hdr = await reader.readexactly(4)
                (ln,) = struct.unpack("!i", hdr)
                body = await reader.readexactly(ln - 4)
                writer.write(hdr + body)
                code = struct.unpack_from("!i", body)[0] if len(body) >= 4 else 0
                if code in (80877103, 80877104):  # SSL / GSS request: one-byte answer follows
                    print(f"{cid} {direction} SSLRequest/GSSRequest", flush=True)
                    continue
                params = body[4:].split(b"\0")
                print(f"{cid} {direction} Startup {[p.decode() for p in params if p]}", flush=True)
                untyped = False
                continue
            t = await reader.readexactly(1)
            hdr = await reader.readexactly(4)
            (ln,) = struct.unpack("!i", hdr)
            body = await reader.readexactly(ln - 4)
            writer.write(t + hdr + body)
            if direction == "S<" and t == b"N" and len(body) == 0:
                pass
            print(f"{cid} {direction} {describe(direction, t.decode(), body)}", flush=True)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


N = 0


async def main(listen, target):
    async def handle(cr, cw):
        global N
        N += 1
        cid = N
        sr, sw = await asyncio.open_connection("127.0.0.1", target)
        # SSLRequest answers are a single byte 'N': the proxy only supports plaintext.
        await asyncio.gather(pump(cid, "C>", cr, sw, True), ssl_aware_server(cid, sr, cw))

    async def ssl_aware_server(cid, sr, cw):
        first = await sr.readexactly(1)
        if first in (b"N", b"S"):
            cw.write(first)
            print(f"{cid} S< SSL answer {first.decode()}", flush=True)
            await cw.drain()
            await pump(cid, "S<", sr, cw, False)
        else:
            hdr = await sr.readexactly(4)
            (ln,) = struct.unpack("!i", hdr)
            body = await sr.readexactly(ln - 4)
            cw.write(first + hdr + body)
            print(f"{cid} S< {describe('S<', first.decode(), body)}", flush=True)
            await pump(cid, "S<", sr, cw, False)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
