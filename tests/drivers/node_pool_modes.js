// Session and statement pool modes through node-postgres (pg) at its defaults; see
// tests/drivers_modes.rs. Environment: SB_HOST, SB_PORT, SB_USER, SB_PASSWORD,
// SB_SESSION_DB (pool_mode session) and SB_STATEMENT_DB (pool_mode statement), both
// with default_pool_size 2 over the database on PostgreSQL port SB_PG_PORT, which
// has a table mode_items (id int primary key, note text).
// Prints "OK <n> checks" and exits 0, or exits 1 naming the failed check.
'use strict';

const { Client } = require('pg');

const env = process.env;
const HOST = env.SB_HOST || '127.0.0.1';
const PORT = Number(env.SB_PORT);
const USER = env.SB_USER || 'app';
const PASSWORD = env.SB_PASSWORD || 'secret';
const SESSION_DB = env.SB_SESSION_DB;
const STATEMENT_DB = env.SB_STATEMENT_DB;
const PG_PORT = env.SB_PG_PORT;
const WORKERS = 8;
const LOOPS = 12;

const LEFT_BEHIND =
  "SELECT pg_backend_pid() AS pid, to_regclass('mode_tmp') IS NULL AS no_tmp, " +
  "current_setting('app.mode_probe', true) AS probe, " +
  "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid())::int AS locks, " +
  "(SELECT count(*) FROM pg_prepared_statements WHERE name = 'mode_stmt')::int AS prepared";

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
function ok(what, cond) {
  if (!cond) fail(`${what}: check failed`);
  checks++;
}
async function expectError(what, code, p) {
  try {
    await p;
  } catch (e) {
    if (e.code !== code) fail(`${what}: got error ${e.code} ${e.message}, want SQLSTATE ${code}`);
    checks++;
    return e;
  }
  fail(`${what}: no error, want SQLSTATE ${code}`);
}
function step(msg) {
  console.log(`-- ${msg}`);
}
async function connect(database) {
  const c = new Client({ host: HOST, port: PORT, user: USER, password: PASSWORD, database });
  // A connection the bouncer closes must not crash the process.
  c.on('error', () => {});
  await c.connect();
  return c;
}
const rows = (r) => r.rows.map((row) => Object.values(row));

async function sessionMode() {
  step('session mode keeps the client\'s server and its state');
  const a = await connect(SESSION_DB);
  const [[pidA, port]] = rows(await a.query("SELECT pg_backend_pid(), current_setting('port')"));
  eq('session port', port, PG_PORT);
  await a.query('CREATE TEMP TABLE mode_tmp (x int)');
  await a.query('INSERT INTO mode_tmp VALUES (0)');
  await a.query("SET app.mode_probe = 'kept'");
  await a.query('PREPARE mode_stmt AS SELECT count(*)::int FROM mode_tmp');
  await a.query('SELECT pg_advisory_lock(4242)');
  for (let i = 1; i <= LOOPS; i++) {
    await a.query('BEGIN');
    await a.query({ name: 'tmp_ins', text: 'INSERT INTO mode_tmp VALUES ($1)', values: [i] });
    const r = await a.query({ name: 'tmp_cnt', text: "SELECT pg_backend_pid(), current_setting('app.mode_probe'), count(*)::int FROM mode_tmp" });
    await a.query('COMMIT');
    eq(`session transaction ${i}: same server, SET and temp table kept`, rows(r), [[pidA, 'kept', i + 1]]);
  }
  eq('session SQL PREPARE outlives its transaction', rows(await a.query('EXECUTE mode_stmt')), [[LOOPS + 1]]);
  await a.query('BEGIN');
  await a.query("SET app.mode_probe = 'rolled back'");
  await a.query('ROLLBACK');
  eq('session SET rolled back', rows(await a.query("SELECT current_setting('app.mode_probe')")), [['kept']]);

  const b = await connect(SESSION_DB);
  const [[pidB]] = rows(await b.query('SELECT pg_backend_pid()'));
  ok('a second session client has its own server', pidB !== pidA);
  eq("B does not see A's temp table", rows(await b.query("SELECT to_regclass('mode_tmp') IS NULL")), [[true]]);
  eq(
    "A's session advisory lock is held across its transactions",
    rows(await b.query("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted AND pid = $1", [pidA])),
    [[1]],
  );
  // The pool (2) is full: a third client is served when A leaves, on A's server, reset.
  const third = (async () => {
    const c = await connect(SESSION_DB);
    try {
      return rows(await c.query(LEFT_BEHIND))[0];
    } finally {
      await c.end();
    }
  })();
  await a.end();
  const [pid, noTmp, probe, locks, prepared] = await third;
  eq('the third client reuses the first client\'s server (pool of 2)', pid, pidA);
  eq('temp table gone after DISCARD ALL', noTmp, true);
  ok(`session SET gone after DISCARD ALL (got ${JSON.stringify(probe)})`, probe === null || probe === '');
  eq('advisory lock released', locks, 0);
  eq('SQL PREPARE deallocated', prepared, 0);
  await b.end();
}

async function statementMode() {
  step('statement mode, single statements');
  await Promise.all(
    [...Array(WORKERS).keys()].map(async (w) => {
      const c = await connect(STATEMENT_DB);
      try {
        for (let i = 0; i < LOOPS; i++) {
          const r = await c.query("SELECT $1::int * 2, current_setting('port')", [w * 100 + i]);
          eq(`statement w${w} select ${i}`, rows(r), [[(w * 100 + i) * 2, PG_PORT]]);
          await c.query({ name: 'ins', text: 'INSERT INTO mode_items (id, note) VALUES ($1, $2)', values: [20000 + w * 100 + i, 'node'] });
        }
        const n = await c.query({ name: 'cnt', text: 'SELECT count(*)::int FROM mode_items WHERE id BETWEEN $1 AND $2', values: [20000 + w * 100, 20000 + w * 100 + 99] });
        eq(`statement w${w} rows`, rows(n), [[LOOPS]]);
      } finally {
        await c.end();
      }
    }),
  );
  let c = await connect(STATEMENT_DB);
  await c.query("SET app.mode_probe = 'follows'");
  eq('statement mode SET follows the client', rows(await c.query("SELECT current_setting('app.mode_probe')")), [['follows']]);
  await c.query('CREATE TEMP TABLE st_tmp (x int)');
  await expectError('statement mode: temp table gone after its statement', '42P01', c.query('SELECT * FROM st_tmp'));

  step('statement mode refuses transaction blocks');
  const e = await expectError('BEGIN', '0A000', c.query('BEGIN'));
  ok(`message names statement pooling (${e.message})`, e.message.includes('statement pooling mode'));
  // The connection is gone: the next query fails without reaching a server.
  try {
    await c.query('SELECT 1');
    fail('the refused client is still connected');
  } catch (err) {
    ok(`the refused client is disconnected (${err.message})`, true);
  }
  c = await connect(STATEMENT_DB);
  await expectError('BEGIN; INSERT', '0A000', c.query("BEGIN; INSERT INTO mode_items (id, note) VALUES (-3, 'never')"));
  c = await connect(STATEMENT_DB);
  try {
    eq('nothing of the refused transactions ran', rows(await c.query('SELECT count(*)::int FROM mode_items WHERE id < 0')), [[0]]);
  } finally {
    await c.end();
  }
}

async function main() {
  await sessionMode();
  await statementMode();
  console.log(`OK ${checks} checks`);
}

main().catch((e) => fail(`${e.code || ''} ${e.stack || e}`));
