//! A scripted Postgres and a socket-free driver, for the session core's tests and
//! its fuzz target (feature `fuzzing`).
//!
//! [`FakeServer`] answers frontend messages the way Postgres does for the cases
//! that matter to a pooler: transaction status, errors that skip to Sync, named
//! and unnamed statements, COPY FROM STDIN. [`Harness`] plays the driver: it
//! hands the core a server when asked and takes it back on release, checking
//! that a server is only ever released idle.
#![allow(missing_docs)]

use super::core::{Core, Need};
use crate::app::gate::TenantGate;
use crate::app::Snapshot;
use crate::config::Config;
use crate::protocol::{self, tag, TxStatus};
use crate::router::TenantKey;
use crate::server::{ParamSet, ServerState};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// A scripted Postgres
// ---------------------------------------------------------------------------

/// Answers frontend messages like Postgres (for what a pooler relies on).
#[derive(Default)]
pub struct FakeServer {
    status: TxStatus,
    /// After an error in an extended message: skip to Sync.
    skipping: bool,
    /// In COPY FROM STDIN.
    copy_in: bool,
    /// That COPY came from a simple Query (ReadyForQuery follows its end).
    copy_simple: bool,
    named: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// The statement each portal runs.
    portals: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    unnamed: Option<Vec<u8>>,
    /// Every frontend message received (tag, body).
    pub log: Vec<(u8, Vec<u8>)>,
}

pub fn msg(out: &mut BytesMut, t: u8, body: &[u8]) {
    out.put_u8(t);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn data_row(out: &mut BytesMut, v: &[u8]) {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
    body.extend_from_slice(v);
    msg(out, tag::backend::DATA_ROW, &body);
}

pub fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    let i = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (&b[..i], b.get(i + 1..).unwrap_or_default())
}

impl FakeServer {
    /// The status its last ReadyForQuery reported.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// In COPY FROM STDIN (waiting for the client's data).
    pub fn in_copy(&self) -> bool {
        self.copy_in
    }

    /// The SQLSTATE a `DO ... RAISE ... ERRCODE = 'xxxxx'` block raises.
    fn raised(sql: &str) -> String {
        sql.split("ERRCODE = '")
            .nth(1)
            .and_then(|r| r.get(..5))
            .unwrap_or("P0001")
            .to_string()
    }

    fn error(&mut self, out: &mut BytesMut, code: &str) {
        let body = format!("SERROR\0C{code}\0Mfake error\0\0");
        msg(out, tag::backend::ERROR_RESPONSE, body.as_bytes());
        if self.status == TxStatus::InTransaction {
            self.status = TxStatus::Failed;
        }
    }

    /// In a failed transaction Postgres refuses every statement but one that
    /// ends it (`IsTransactionExitStmt`), at Parse, Bind, Execute or Query.
    fn refused_when_failed(&self, sql: &[u8]) -> bool {
        let s = String::from_utf8_lossy(sql).trim().to_ascii_uppercase();
        self.status == TxStatus::Failed && !(s.starts_with("ROLLBACK") || s.starts_with("COMMIT"))
    }

    /// Run one statement of a simple Query; false on error.
    fn statement(&mut self, out: &mut BytesMut, sql: &str) -> bool {
        let s = sql.trim().to_ascii_uppercase();
        if self.refused_when_failed(sql.as_bytes()) {
            self.error(out, "25P02");
            return false;
        }
        if s.starts_with("DO ") {
            self.error(out, &Self::raised(sql));
            return false;
        }
        if s.contains("FAIL") {
            self.error(out, "P0001");
            return false;
        }
        if s.starts_with("BEGIN") {
            self.status = TxStatus::InTransaction;
            msg(out, tag::backend::COMMAND_COMPLETE, b"BEGIN\0");
        } else if s.starts_with("COMMIT") || s.starts_with("ROLLBACK") {
            let t: &[u8] = if self.status == TxStatus::Failed || s.starts_with("ROLLBACK") {
                b"ROLLBACK\0"
            } else {
                b"COMMIT\0"
            };
            self.status = TxStatus::Idle;
            self.portals.clear();
            msg(out, tag::backend::COMMAND_COMPLETE, t);
        } else if let Some(n) = s.strip_prefix("REPORT ") {
            // A server that reports `n` parameters of its own.
            let n: usize = n
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            for i in 0..n {
                msg(
                    out,
                    tag::backend::PARAMETER_STATUS,
                    format!("p{i}\0v\0").as_bytes(),
                );
            }
            msg(out, tag::backend::COMMAND_COMPLETE, b"SET\0");
        } else if s.starts_with("COPY") {
            msg(out, tag::backend::COPY_IN_RESPONSE, &[0, 0, 0]);
            self.copy_in = true;
        } else if s.is_empty() {
            msg(out, tag::backend::EMPTY_QUERY_RESPONSE, b"");
        } else {
            // The row names the statement that produced it: whose answer it is.
            data_row(out, sql.trim().as_bytes());
            msg(out, tag::backend::COMMAND_COMPLETE, b"SELECT 1\0");
        }
        true
    }

    /// Feed frontend bytes (whole messages); returns the backend's answer.
    pub fn feed(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        while input.len() >= 5 {
            let t = input[0];
            let len = i32::from_be_bytes([input[1], input[2], input[3], input[4]]) as usize;
            let body = input[5..1 + len].to_vec();
            input = &input[1 + len..];
            self.log.push((t, body.clone()));
            if self.copy_in {
                match t {
                    tag::frontend::COPY_DATA => continue,
                    tag::frontend::COPY_DONE => {
                        self.copy_in = false;
                        msg(&mut out, tag::backend::COMMAND_COMPLETE, b"COPY 1\0");
                        if std::mem::take(&mut self.copy_simple) {
                            msg(
                                &mut out,
                                tag::backend::READY_FOR_QUERY,
                                &[self.status.as_byte()],
                            );
                        }
                        continue;
                    }
                    tag::frontend::COPY_FAIL => {
                        self.copy_in = false;
                        self.error(&mut out, "57014");
                        if std::mem::take(&mut self.copy_simple) {
                            msg(
                                &mut out,
                                tag::backend::READY_FOR_QUERY,
                                &[self.status.as_byte()],
                            );
                        } else {
                            self.skipping = true;
                        }
                        continue;
                    }
                    // Sync and Flush are ignored during COPY IN.
                    _ => continue,
                }
            }
            if self.skipping && t != tag::frontend::SYNC {
                continue;
            }
            match t {
                tag::frontend::QUERY => {
                    let (sql, _) = cstr(&body);
                    let sql = String::from_utf8_lossy(sql).into_owned();
                    self.unnamed = None;
                    let stmts: Vec<&str> = sql.split(';').collect();
                    for st in &stmts {
                        if !self.statement(&mut out, st) || self.copy_in {
                            break;
                        }
                    }
                    self.copy_simple = self.copy_in;
                    if !self.copy_in {
                        msg(
                            &mut out,
                            tag::backend::READY_FOR_QUERY,
                            &[self.status.as_byte()],
                        );
                    }
                    if sql.contains("GOODBYE") {
                        // A backend terminated just as it went idle: its FATAL
                        // error comes in the same read as the ReadyForQuery.
                        let body = "SFATAL\0C57P01\0Mterminating connection due to \
                                    administrator command\0\0";
                        msg(&mut out, tag::backend::ERROR_RESPONSE, body.as_bytes());
                    }
                }
                tag::frontend::PARSE => {
                    let (name, rest) = cstr(&body);
                    let (query, _) = cstr(rest);
                    let q = String::from_utf8_lossy(query).to_ascii_uppercase();
                    if self.refused_when_failed(query) {
                        self.error(&mut out, "25P02");
                        self.skipping = true;
                        continue;
                    }
                    if q.contains("FAIL") || !name.is_empty() && self.named.contains_key(name) {
                        self.error(&mut out, if q.contains("FAIL") { "42P01" } else { "42P05" });
                        self.skipping = true;
                        continue;
                    }
                    if name.is_empty() {
                        self.unnamed = Some(query.to_vec());
                    } else {
                        self.named.insert(name.to_vec(), query.to_vec());
                    }
                    msg(&mut out, tag::backend::PARSE_COMPLETE, b"");
                }
                tag::frontend::BIND => {
                    let (portal, rest) = cstr(&body);
                    let (stmt, _) = cstr(rest);
                    let text = if stmt.is_empty() {
                        self.unnamed.clone()
                    } else {
                        self.named.get(stmt).cloned()
                    };
                    let Some(text) = text else {
                        self.error(&mut out, "26000");
                        self.skipping = true;
                        continue;
                    };
                    if self.refused_when_failed(&text) {
                        self.error(&mut out, "25P02");
                        self.skipping = true;
                        continue;
                    }
                    self.portals.insert(portal.to_vec(), text);
                    msg(&mut out, tag::backend::BIND_COMPLETE, b"");
                }
                tag::frontend::DESCRIBE => {
                    if body.first() == Some(&b'S') {
                        msg(&mut out, tag::backend::PARAMETER_DESCRIPTION, &[0, 0]);
                    }
                    msg(&mut out, tag::backend::NO_DATA, b"");
                }
                tag::frontend::EXECUTE => {
                    let (portal, _) = cstr(&body);
                    let Some(text) = self.portals.get(portal).cloned() else {
                        self.error(&mut out, "34000");
                        self.skipping = true;
                        continue;
                    };
                    let q = String::from_utf8_lossy(&text).to_ascii_uppercase();
                    if q.starts_with("DO ") {
                        let code = Self::raised(&String::from_utf8_lossy(&text));
                        self.error(&mut out, &code);
                        self.skipping = true;
                        continue;
                    }
                    if q.starts_with("COPY") {
                        msg(&mut out, tag::backend::COPY_IN_RESPONSE, &[0, 0, 0]);
                        self.copy_in = true;
                        continue;
                    }
                    if self.refused_when_failed(&text) {
                        self.error(&mut out, "25P02");
                        self.skipping = true;
                        continue;
                    }
                    if q.starts_with("COMMIT") || q.starts_with("ROLLBACK") {
                        let t: &[u8] =
                            if self.status == TxStatus::Failed || q.starts_with("ROLLBACK") {
                                b"ROLLBACK\0"
                            } else {
                                b"COMMIT\0"
                            };
                        self.status = TxStatus::Idle;
                        msg(&mut out, tag::backend::COMMAND_COMPLETE, t);
                        continue;
                    }
                    if q.starts_with("BEGIN") {
                        self.status = TxStatus::InTransaction;
                    } else if !q.starts_with("SET") {
                        data_row(&mut out, &text);
                    }
                    msg(&mut out, tag::backend::COMMAND_COMPLETE, b"SELECT 1\0");
                }
                tag::frontend::CLOSE => {
                    // As Postgres: the statement (or portal) is gone; closing a
                    // name that does not exist is not an error.
                    let (&kind, rest) = body.split_first().unwrap_or((&b'S', &[]));
                    let name = cstr(rest).0;
                    match (kind, name.is_empty()) {
                        (b'S', true) => self.unnamed = None,
                        (b'S', false) => {
                            self.named.remove(name);
                        }
                        _ => {
                            self.portals.remove(name);
                        }
                    }
                    msg(&mut out, tag::backend::CLOSE_COMPLETE, b"");
                }
                tag::frontend::FUNCTION_CALL => {
                    msg(
                        &mut out,
                        tag::backend::FUNCTION_CALL_RESPONSE,
                        &[0xff, 0xff, 0xff, 0xff],
                    );
                    msg(
                        &mut out,
                        tag::backend::READY_FOR_QUERY,
                        &[self.status.as_byte()],
                    );
                }
                tag::frontend::SYNC => {
                    self.skipping = false;
                    // Portals end with their transaction (the implicit one at Sync).
                    if self.status == TxStatus::Idle {
                        self.portals.clear();
                    }
                    msg(
                        &mut out,
                        tag::backend::READY_FOR_QUERY,
                        &[self.status.as_byte()],
                    );
                }
                _ => {}
            }
        }
        out.to_vec()
    }
}

// ---------------------------------------------------------------------------
// A driver without sockets
// ---------------------------------------------------------------------------

/// Plays the driver around a [`Core`]: one fake server per shard, handed out
/// when the core asks and taken back when it releases.
pub struct Harness {
    pub core: Core,
    pub servers: Vec<FakeServer>,
    /// Each shard's server state while it is in the pool (what it has
    /// prepared follows it from one attachment to the next, as in a pool).
    pub states: Vec<Option<Box<ServerState>>>,
    /// The shard whose server is attached.
    attached: Option<usize>,
    /// Servers handed out so far, and releases.
    pub attaches: usize,
    pub releases: usize,
    /// Bytes the client received.
    pub client: Vec<u8>,
    /// The session ended.
    pub closed: Option<String>,
    /// Tenant pauses (the test pauses and resumes tenants here).
    pub gate: Arc<TenantGate>,
    /// The work waits for this tenant's pause to end ([`Harness::resume`]).
    pub held: Option<TenantKey>,
    /// What the core spilled of the message arriving (the driver's spool file).
    pub spool: Vec<u8>,
    /// Spilled messages read back whole.
    pub unspilled: usize,
    /// Park the core whenever it can be, after each step, as the driver does
    /// between transactions ([`Core::park`]), and wake it at once.
    pub park: bool,
    /// Times the core was parked.
    pub parks: usize,
    /// A release that reads settings back fails to (the server ended).
    pub read_back_fails: bool,
}

const ROUTED: &str = r#"
[databases.app]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 }, { name = "s1", host = "127.0.0.1", port = 2 } ]
[databases.app.routing]
no_tenant = "reject"
[databases.appd]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 }, { name = "s1", host = "127.0.0.1", port = 2 } ]
[databases.appd.routing]
no_tenant = "default"
default_shard = "s0"
[databases.plain]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 } ]
[databases.sess]
mode = "session"
shards = [ { name = "s0", host = "127.0.0.1", port = 1 } ]
"#;

impl Harness {
    /// A client of database `db` ("app": routed over two shards; "plain": one).
    pub fn new(db: &str) -> Harness {
        Self::with_id(db, 7)
    }

    /// The same, with a client id (statement identity depends on it).
    pub fn with_id(db: &str, id: i32) -> Harness {
        let cfg = Config::parse(ROUTED).expect("test config");
        let snap = Snapshot::build(cfg, 1).expect("test snapshot");
        let db = snap.dbs.get(db).expect("db").clone();
        let n = db.cfg.shards.len();
        let gate = Arc::new(TenantGate::default());
        let mut core = Core::new(
            db,
            id,
            1 << 20,
            ParamSet::default(),
            ParamSet::default(),
            None,
            gate.clone(),
        );
        core.greeted(&ParamSet::default(), Default::default());
        Harness {
            core,
            servers: (0..n).map(|_| FakeServer::default()).collect(),
            states: (0..n).map(|_| None).collect(),
            attached: None,
            attaches: 0,
            releases: 0,
            client: Vec::new(),
            closed: None,
            gate,
            held: None,
            spool: Vec::new(),
            unspilled: 0,
            park: false,
            parks: 0,
            read_back_fails: false,
        }
    }

    /// With [`Harness::park`] on: give back what an idle core does not need,
    /// and park and wake it when it can be parked.
    fn maybe_park(&mut self) {
        if !self.park {
            return;
        }
        self.core.trim_idle();
        let stand_in = Core::new(
            self.core.db().clone(),
            0,
            0,
            ParamSet::default(),
            ParamSet::default(),
            None,
            self.gate.clone(),
        );
        let core = std::mem::replace(&mut self.core, stand_in);
        self.core = match core.park() {
            Ok(parked) => {
                self.parks += 1;
                Core::unpark(parked, BytesMut::new(), self.gate.clone())
            }
            Err(core) => core,
        };
    }

    /// The texts (first C string of each message) the first server that got
    /// anything received, in order.
    pub fn texts_sent(&self) -> Vec<String> {
        let Some(s) = self.servers.iter().find(|s| !s.log.is_empty()) else {
            return Vec::new();
        };
        s.log
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(cstr(b).0).into_owned())
            .collect()
    }

    /// The pause the work waits for ended: route it again (same configuration).
    pub fn resume(&mut self) {
        self.held = None;
        let need = self.core.resumed(None);
        self.serve(need);
    }

    fn serve(&mut self, mut need: Need) {
        loop {
            need = match need {
                Need::Io => break,
                Need::Close(e) => {
                    self.closed = Some(e);
                    break;
                }
                Need::Attach(shard) => {
                    assert!(self.attached.is_none(), "attach while attached");
                    self.attached = Some(shard);
                    self.attaches += 1;
                    let mut st = self.states[shard].take().unwrap_or_else(|| {
                        Box::new(ServerState::new(
                            SocketAddr::from(([127, 0, 0, 1], 1)),
                            None,
                        ))
                    });
                    assert!(self.core.prepare_attach(&mut st).is_none());
                    self.core.attached(shard, st)
                }
                Need::Release(r) => {
                    let shard = self.attached.take().expect("release of no server");
                    assert_eq!(
                        self.servers[shard].status,
                        TxStatus::Idle,
                        "released inside a transaction"
                    );
                    assert!(r.state.rbuf.is_empty(), "released with unread bytes");
                    let read = if r.read_back && self.read_back_fails {
                        Err(crate::sqlstate::PgError::fatal(
                            crate::sqlstate::CONNECTION_FAILURE,
                            "settings cannot follow",
                        ))
                    } else {
                        Ok(None)
                    };
                    self.states[shard] = Some(r.state);
                    self.releases += 1;
                    self.core.released(read)
                }
                Need::Spill(chunk) => {
                    assert!(!chunk.is_empty(), "an empty spill");
                    self.spool.extend_from_slice(&chunk);
                    self.core.client_data()
                }
                Need::Unspill(n) => {
                    let spool = std::mem::take(&mut self.spool);
                    assert_eq!(spool.len(), n, "unspill of what was not spilled");
                    self.unspilled += 1;
                    self.core.unspilled(bytes::BytesMut::from(&spool[..]))
                }
                Need::ServerGone => {
                    let shard = self.attached.take().expect("server gone of no server");
                    let (state, end) = self.core.server_lost();
                    assert!(state.is_some_and(|s| s.broken), "a gone server kept");
                    self.states[shard] = None;
                    self.closed = Some(end);
                    break;
                }
                Need::Paused(key) => {
                    assert!(self.attached.is_none(), "held while attached");
                    self.held = Some(key);
                    break;
                }
            };
        }
        self.client.extend(self.core.to_client().take_all());
        self.maybe_park();
    }

    /// The client sends these bytes (any part of a message), as one read.
    pub fn send_bytes(&mut self, b: &[u8]) {
        self.core.cbuf().extend_from_slice(b);
        let need = self.core.client_data();
        self.serve(need);
    }

    /// The client sends these messages.
    pub fn send(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.core.cbuf().extend_from_slice(f);
        }
        let need = self.core.client_data();
        self.serve(need);
    }

    /// The attached server answers everything queued for it (repeatedly, until
    /// nothing more is sent).
    pub fn server_turn(&mut self) {
        while let Some(shard) = self.attached {
            let input = self.core.take_to_server();
            if input.is_empty() {
                break;
            }
            let answer = self.servers[shard].feed(&input);
            self.core.server_bytes(&answer);
            let need = self.core.server_data();
            self.serve(need);
        }
    }

    /// Messages the client received since the last call (tags only).
    pub fn client_tags(&mut self) -> String {
        let mut tags = String::new();
        let mut b = &self.client[..];
        while b.len() >= 5 {
            let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            tags.push(b[0] as char);
            if b[0] == tag::backend::READY_FOR_QUERY {
                tags.push(b[5] as char);
            }
            b = &b[1 + len..];
        }
        self.client.clear();
        tags
    }

    /// Error codes the client received since the last `client_tags`.
    pub fn client_errors(&self) -> Vec<String> {
        let mut codes = Vec::new();
        let mut b = &self.client[..];
        while b.len() >= 5 {
            let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            if b[0] == tag::backend::ERROR_RESPONSE {
                codes.push(protocol::parse_error(&b[5..1 + len]).code);
            }
            b = &b[1 + len..];
        }
        codes
    }
}

pub fn frame(t: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    msg(&mut b, t, body);
    b.to_vec()
}

pub fn query(sql: &str) -> Vec<u8> {
    frame(tag::frontend::QUERY, format!("{sql}\0").as_bytes())
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(
        tag::frontend::PARSE,
        format!("{name}\0{sql}\0\0\0").as_bytes(),
    )
}

pub fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(tag::frontend::BIND, &b)
}

pub fn execute() -> Vec<u8> {
    frame(tag::frontend::EXECUTE, b"\0\0\0\0\0")
}

pub fn sync() -> Vec<u8> {
    frame(tag::frontend::SYNC, b"")
}

/// `sql` as libpq's `PQsendQueryParams` (psycopg 3, pgbench `-M extended`)
/// and PgJDBC send it with no parameters: Parse, Bind, Describe of the
/// portal, Execute, Sync, all unnamed.
pub fn described(sql: &str) -> Vec<Vec<u8>> {
    vec![
        parse("", sql),
        bind("", &[]),
        frame(tag::frontend::DESCRIBE, b"P\0"),
        execute(),
        sync(),
    ]
}

pub fn flush() -> Vec<u8> {
    frame(tag::frontend::FLUSH, b"")
}
