"""A TCP proxy that records what PostgreSQL clients send (client to server only).

    python3 proxy.py LISTEN_PORT TARGET_PORT OUT_PREFIX

Each accepted connection's client bytes go to OUT_PREFIX-<n>.bin, unmodified
(startup packet first, then the messages). Used by capture.sh; the server's
answers pass through untouched and are not recorded.
"""

import asyncio
import sys


async def main(listen, target, prefix):
    counter = 0

    async def handle(cr, cw):
        nonlocal counter
        counter += 1
        out = open(f"{prefix}-{counter}.bin", "wb")
        sr, sw = await asyncio.open_connection("127.0.0.1", target)

        async def pipe(r, w, log):
            try:
                while True:
                    b = await r.read(65536)
                    if not b:
                        break
                    if log is not None:
                        log.write(b)
                        log.flush()
                    w.write(b)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                try:
                    w.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(cr, sw, out), pipe(sr, cw, None))
        out.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
