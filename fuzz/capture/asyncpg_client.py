"""asyncpg session for capture.sh: binary parameters, prepared statements,
transactions, executemany (pipelined Bind/Execute), COPY, a failing statement."""

import asyncio
import os
import sys

import asyncpg


async def main():
    c = await asyncpg.connect(
        host="127.0.0.1", port=int(sys.argv[1]), user="app", password="secret",
        database="app", ssl=False,
    )
    await c.fetch("SELECT * FROM accounts WHERE tenant_id = $1", 42)
    await c.fetchval("SELECT count(*) FROM accounts WHERE tenant_id = ANY($1::bigint[])", [1, 2, 3])
    st = await c.prepare("SELECT name, balance FROM accounts WHERE tenant_id = $1 AND name = $2")
    await st.fetch(7, "acme")
    async with c.transaction():
        await c.execute("INSERT INTO accounts (tenant_id, name, balance) VALUES ($1, $2, $3)", 5, "asyncpg", 1.5)
        await c.executemany(
            "UPDATE accounts SET balance = balance + $2 WHERE tenant_id = $1",
            [(5, 1.0), (6, 2.0), (42, -3.25)],
        )
    await c.copy_records_to_table("accounts", records=[(9, "copied", 0.0), (10, "copied2", 1.0)],
                                  columns=["tenant_id", "name", "balance"])
    try:
        await c.execute("SELECT * FROM no_such_table WHERE tenant_id = 1")
    except asyncpg.PostgresError:
        pass
    await c.execute("/* tenant_id=42 */ SET application_name = 'capture'; SELECT 1")
    await c.close()


asyncio.run(main())
