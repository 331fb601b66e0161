// node-postgres (pg) at its defaults through shardbouncer: unnamed statements
// (client.query(text, values)), named prepared statements ({name, text, values}),
// pg.Pool, transactions with commit/rollback/errors, tenant routing.
'use strict';

const { Client, Pool } = require('pg');

const env = process.env;
const HOST = env.SB_HOST || '127.0.0.1';
const PORT = Number(env.SB_PORT);
const USER = env.SB_USER || 'app';
const PASSWORD = env.SB_PASSWORD || 'secret';
const DB = env.SB_DB || 'app';
const SHARDED_DB = env.SB_SHARDED_DB || 'sharded';
const SINGLE_PG_PORT = env.SB_SINGLE_PG_PORT;
const TENANT_PORTS = Object.fromEntries(env.SB_TENANT_PORTS.split(',').map((kv) => kv.split('=')));
const WORKERS = 10;
const LOOPS = 25;

let checks = 0;
function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}
function eq(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) fail(`${what}: got ${g}, want ${w}`);
  checks++;
}
async function expectError(what, code, p) {
  try {
    await p;
  } catch (e) {
    if (e.code !== code) fail(`${what}: got error ${e.code} ${e.message}, want SQLSTATE ${code}`);
    checks++;
    return;
  }
  fail(`${what}: no error, want SQLSTATE ${code}`);
}
function step(msg) {
  console.log(`-- ${msg}`);
}
function cfg(database, extra) {
  return Object.assign({ host: HOST, port: PORT, user: USER, password: PASSWORD, database }, extra || {});
}
async function connect(database, extra) {
  const c = new Client(cfg(database, extra));
  await c.connect();
  return c;
}
const rows = (r) => r.rows.map((row) => Object.values(row));

async function worker(w) {
  const base = 1000 * (w + 1);
  const c = await connect(DB);
  try {
    eq(`w${w} port`, rows(await c.query("SELECT current_setting('port')")), [[SINGLE_PG_PORT]]);
    // Unnamed statements, the same text many times.
    for (let i = 0; i < LOOPS; i++) {
      await c.query('INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', [base + i, `w${w}-${i}`, i * 10]);
    }
    for (let i = 0; i < LOOPS; i++) {
      const r = await c.query('SELECT name, n::int FROM items WHERE id = $1', [base + i]);
      eq(`w${w} select ${i}`, rows(r), [[`w${w}-${i}`, i * 10]]);
    }
    // Named prepared statements: parsed once per connection by pg, then only Bind/Execute.
    for (let i = 0; i < LOOPS; i++) {
      const r = await c.query({ name: 'sel_item', text: 'SELECT name, n::int FROM items WHERE id = $1', values: [base + i] });
      eq(`w${w} named select ${i}`, rows(r), [[`w${w}-${i}`, i * 10]]);
    }
    // Transactions: commit.
    await c.query('BEGIN');
    await c.query({ name: 'ins_item', text: 'INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', values: [base + 500, 'committed', 1] });
    eq(`w${w} in-tx`, rows(await c.query({ name: 'cnt_item', text: 'SELECT count(*)::int FROM items WHERE id = $1', values: [base + 500] })), [[1]]);
    await c.query('COMMIT');
    // Rollback: the insert is gone.
    await c.query('BEGIN');
    await c.query({ name: 'ins_item', text: 'INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', values: [base + 600, 'rolled back', 1] });
    eq(`w${w} sees own insert`, rows(await c.query({ name: 'cnt_item', text: 'SELECT count(*)::int FROM items WHERE id = $1', values: [base + 600] })), [[1]]);
    await c.query('ROLLBACK');
    eq(`w${w} committed kept, rolled back gone`, rows(await c.query('SELECT count(*)::int FROM items WHERE id IN ($1, $2)', [base + 500, base + 600])), [[1]]);
    // Error inside a transaction, then rollback.
    await c.query('BEGIN');
    await c.query({ name: 'ins_item', text: 'INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', values: [base + 700, 'doomed', 1] });
    await expectError(`w${w} division by zero`, '22012', c.query('SELECT 1 / $1::int', [0]));
    await expectError(`w${w} in failed tx`, '25P02', c.query({ name: 'cnt_item', text: 'SELECT count(*)::int FROM items WHERE id = $1', values: [base + 700] }));
    await c.query('ROLLBACK');
    eq(`w${w} doomed insert gone`, rows(await c.query({ name: 'cnt_item', text: 'SELECT count(*)::int FROM items WHERE id = $1', values: [base + 700] })), [[0]]);
    // A named statement that fails outside a transaction, then is used again.
    await expectError(`w${w} duplicate key`, '23505', c.query({ name: 'ins_item', text: 'INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', values: [base, 'dup', 1] }));
    // Many short transactions with named statements inside.
    for (let i = 0; i < LOOPS; i++) {
      await c.query('BEGIN');
      const r = await c.query({ name: 'sel_item', text: 'SELECT name, n::int FROM items WHERE id = $1', values: [base + i] });
      eq(`w${w} tx named select ${i}`, rows(r), [[`w${w}-${i}`, i * 10]]);
      await c.query('COMMIT');
    }
    // Several statements in one simple query.
    const multi = await c.query('SELECT 1 AS a; SELECT 2 AS b');
    eq(`w${w} multi`, multi.map((r) => rows(r)), [[[1]], [[2]]]);
    eq(`w${w} enum`, rows(await c.query("SELECT 'happy'::mood AS m")), [['happy']]);
  } finally {
    await c.end();
  }
}

async function poolTest() {
  const pool = new Pool(cfg(DB, { max: 10 }));
  const jobs = [];
  for (let j = 0; j < 40; j++) {
    jobs.push((async () => {
      for (let i = 0; i < LOOPS; i++) {
        const r = await pool.query({ name: 'pool_sel', text: 'SELECT $1::int * 2 AS d, current_setting(\'port\') AS p', values: [j * 100 + i] });
        eq(`pool job ${j} ${i}`, rows(r), [[(j * 100 + i) * 2, SINGLE_PG_PORT]]);
      }
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('INSERT INTO items (id, name, n) VALUES ($1, $2, $3)', [90000 + j, 'pool', j]);
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
    })());
  }
  await Promise.all(jobs);
  eq('pool rolled back', rows(await pool.query('SELECT count(*)::int FROM items WHERE id >= 90000')), [[0]]);
  await pool.end();
}

async function shardedStartupTenant() {
  const port = TENANT_PORTS['42'];
  const c = await connect(SHARDED_DB, { options: '-c tenant_id=42' });
  try {
    eq('startup tenant port', rows(await c.query("SELECT current_setting('port')")), [[port]]);
    for (let i = 0; i < LOOPS; i++) {
      const r = await c.query({ name: 'by_name', text: "SELECT name, current_setting('port') FROM accounts WHERE name = $1", values: ['owner of 42'] });
      eq(`startup tenant named ${i}`, rows(r), [['owner of 42', port]]);
      const u = await c.query("SELECT name, current_setting('port') FROM accounts WHERE name = $1", ['owner of 42']);
      eq(`startup tenant unnamed ${i}`, rows(u), [['owner of 42', port]]);
    }
    await c.query('BEGIN');
    await c.query('INSERT INTO accounts VALUES ($1, $2)', ['42', 'temp']);
    await c.query('ROLLBACK');
    eq('startup tenant rollback', rows(await c.query("SELECT count(*)::int FROM accounts WHERE name = 'temp'")), [[0]]);
  } finally {
    await c.end();
  }
}

async function shardedParamTenant(w) {
  const c = await connect(SHARDED_DB);
  try {
    for (let i = 0; i < LOOPS; i++) {
      for (const [t, port] of Object.entries(TENANT_PORTS)) {
        const q = "SELECT name, current_setting('port') FROM accounts WHERE tenant_id = $1";
        eq(`w${w} tenant ${t} unnamed ${i}`, rows(await c.query(q, [t])), [[`owner of ${t}`, port]]);
        eq(`w${w} tenant ${t} named ${i}`, rows(await c.query({ name: 'acct', text: q, values: [t] })), [[`owner of ${t}`, port]]);
      }
    }
    for (const t of Object.keys(TENANT_PORTS)) {
      await c.query('BEGIN');
      await c.query({ name: 'acct_ins', text: 'INSERT INTO accounts (tenant_id, name) VALUES ($1, $2)', values: [t, `tmp${w}`] });
      eq(`w${w} tenant ${t} sees insert`, rows(await c.query({ name: 'acct_cnt', text: 'SELECT count(*)::int FROM accounts WHERE tenant_id = $1 AND name = $2', values: [t, `tmp${w}`] })), [[1]]);
      await c.query('ROLLBACK');
      eq(`w${w} tenant ${t} rolled back`, rows(await c.query({ name: 'acct_cnt', text: 'SELECT count(*)::int FROM accounts WHERE tenant_id = $1 AND name = $2', values: [t, `tmp${w}`] })), [[0]]);
    }
  } finally {
    await c.end();
  }
}

// Wait for `n` notifications on client `c` (10 s at most).
function notifications(c, n) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const timer = setTimeout(() => reject(new Error(`got ${JSON.stringify(seen)}, want ${n} notifications`)), 10000);
    const on = (m) => {
      seen.push([m.channel, m.payload]);
      if (seen.length === n) {
        clearTimeout(timer);
        c.removeListener('notification', on);
        resolve(seen);
      }
    };
    c.on('notification', on);
  });
}

// Transaction pooling: LISTEN is answered by shardbouncer, which relays the
// notifications; two idle listeners hold none of the pool's 2 servers.
async function listenNotify() {
  const a = await connect(DB);
  const b = await connect(DB);
  await a.query('LISTEN jobs');
  await b.query('LISTEN jobs');
  await b.query('LISTEN other');
  const pool = new Pool(cfg(DB, { max: 4 }));
  const results = await Promise.all([...Array(40).keys()].map((i) => pool.query('SELECT $1::int AS v', [i])));
  eq('pool clients run while two clients listen', results.length, 40);
  await pool.end();
  const gotA = notifications(a, 2);
  const gotB = notifications(b, 3);
  const n = await connect(DB);
  await n.query("NOTIFY jobs, 'one'");
  await n.query("SELECT pg_notify('other', 'for b')");
  await n.query("NOTIFY jobs, 'two'");
  eq('listener a', await gotA, [['jobs', 'one'], ['jobs', 'two']]);
  eq('listener b', await gotB, [['jobs', 'one'], ['other', 'for b'], ['jobs', 'two']]);
  // UNLISTEN *: nothing more for b; a still hears jobs.
  await b.query('UNLISTEN *');
  let late = 0;
  b.on('notification', () => late++);
  const again = notifications(a, 1);
  await n.query("NOTIFY other, 'late'");
  await n.query("NOTIFY jobs, 'three'");
  eq('listener a after b left', await again, [['jobs', 'three']]);
  // b shares a's relay: a's delivery shows the relay has passed these on.
  await b.query('SELECT 1');
  eq('nothing for b after UNLISTEN *', late, 0);
  await expectError('LISTEN in a multi-statement query', '0A000', n.query('LISTEN x; SELECT 1'));
  await Promise.all([a.end(), b.end(), n.end()]);
}

async function main() {
  step(`single database, ${WORKERS} concurrent connections`);
  await Promise.all([...Array(WORKERS).keys()].map(worker));
  step('single database, pg.Pool');
  await poolTest();
  step('LISTEN/NOTIFY relayed in transaction pooling');
  await listenNotify();
  step('sharded: tenant in startup options');
  await shardedStartupTenant();
  step(`sharded: tenant as a parameter, ${WORKERS} concurrent connections`);
  await Promise.all([...Array(WORKERS).keys()].map(shardedParamTenant));
  console.log(`OK ${checks} checks`);
}

main().catch((e) => fail(`${e.code || ''} ${e.stack || e}`));
