//! Socket-free tests of the session core: client messages in, a scripted server's
//! answers in, and checks of what each side receives and how the state moves.
//!
//! [`FakeServer`] answers frontend messages the way Postgres does for the cases
//! that matter to a pooler: transaction status, errors that skip to Sync, named
//! and unnamed statements, COPY FROM STDIN. The [`Harness`] plays the driver:
//! it hands the core a server when asked and takes it back on release.

use super::core::{Core, Need};
use super::state::Phase;
use crate::app::Snapshot;
use crate::config::Config;
use crate::protocol::{self, tag, TxStatus};
use crate::server::{ParamSet, ServerState};
use bytes::{BufMut, BytesMut};
use std::collections::HashSet;
use std::net::SocketAddr;

// ---------------------------------------------------------------------------
// A scripted Postgres
// ---------------------------------------------------------------------------

/// Answers frontend messages like Postgres (for what a pooler relies on).
#[derive(Default)]
pub(super) struct FakeServer {
    status: TxStatus,
    /// After an error in an extended message: skip to Sync.
    skipping: bool,
    /// In COPY FROM STDIN.
    copy_in: bool,
    named: HashSet<Vec<u8>>,
    unnamed: Option<Vec<u8>>,
    /// Every frontend message received (tag, body).
    pub(super) log: Vec<(u8, Vec<u8>)>,
}

fn msg(out: &mut BytesMut, t: u8, body: &[u8]) {
    out.put_u8(t);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    let i = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (&b[..i], b.get(i + 1..).unwrap_or_default())
}

impl FakeServer {
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

    /// Run one statement of a simple Query; false on error.
    fn statement(&mut self, out: &mut BytesMut, sql: &str) -> bool {
        let s = sql.trim().to_ascii_uppercase();
        if self.status == TxStatus::Failed
            && !(s.starts_with("ROLLBACK") || s.starts_with("COMMIT"))
        {
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
            msg(out, tag::backend::COMMAND_COMPLETE, t);
        } else if s.starts_with("COPY") {
            msg(out, tag::backend::COPY_IN_RESPONSE, &[0, 0, 0]);
            self.copy_in = true;
        } else if s.is_empty() {
            msg(out, tag::backend::EMPTY_QUERY_RESPONSE, b"");
        } else {
            msg(out, tag::backend::DATA_ROW, &[0, 1, 0, 0, 0, 1, b'1']);
            msg(out, tag::backend::COMMAND_COMPLETE, b"SELECT 1\0");
        }
        true
    }

    /// Feed frontend bytes (whole messages); returns the backend's answer.
    pub(super) fn feed(&mut self, mut input: &[u8]) -> Vec<u8> {
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
                        continue;
                    }
                    tag::frontend::COPY_FAIL => {
                        self.copy_in = false;
                        self.error(&mut out, "57014");
                        self.skipping = true;
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
                    if !self.copy_in {
                        msg(
                            &mut out,
                            tag::backend::READY_FOR_QUERY,
                            &[self.status.as_byte()],
                        );
                    }
                }
                tag::frontend::PARSE => {
                    let (name, rest) = cstr(&body);
                    let (query, _) = cstr(rest);
                    let q = String::from_utf8_lossy(query).to_ascii_uppercase();
                    if q.contains("FAIL") || !name.is_empty() && self.named.contains(name) {
                        self.error(&mut out, if q.contains("FAIL") { "42P01" } else { "42P05" });
                        self.skipping = true;
                        continue;
                    }
                    if name.is_empty() {
                        self.unnamed = Some(query.to_vec());
                    } else {
                        self.named.insert(name.to_vec());
                    }
                    msg(&mut out, tag::backend::PARSE_COMPLETE, b"");
                }
                tag::frontend::BIND => {
                    let (_, rest) = cstr(&body);
                    let (stmt, _) = cstr(rest);
                    let known = if stmt.is_empty() {
                        self.unnamed.is_some()
                    } else {
                        self.named.contains(stmt)
                    };
                    if !known {
                        self.error(&mut out, "26000");
                        self.skipping = true;
                        continue;
                    }
                    msg(&mut out, tag::backend::BIND_COMPLETE, b"");
                }
                tag::frontend::DESCRIBE => {
                    if body.first() == Some(&b'S') {
                        msg(&mut out, tag::backend::PARAMETER_DESCRIPTION, &[0, 0]);
                    }
                    msg(&mut out, tag::backend::NO_DATA, b"");
                }
                tag::frontend::EXECUTE => {
                    let q = self
                        .unnamed
                        .as_deref()
                        .map(|q| String::from_utf8_lossy(q).to_ascii_uppercase())
                        .unwrap_or_default();
                    if q.starts_with("DO ") {
                        let code = Self::raised(&String::from_utf8_lossy(
                            self.unnamed.as_deref().unwrap_or_default(),
                        ));
                        self.error(&mut out, &code);
                        self.skipping = true;
                        continue;
                    }
                    if q.starts_with("COPY") {
                        msg(&mut out, tag::backend::COPY_IN_RESPONSE, &[0, 0, 0]);
                        self.copy_in = true;
                        continue;
                    }
                    if q.starts_with("BEGIN") {
                        self.status = TxStatus::InTransaction;
                    }
                    msg(&mut out, tag::backend::COMMAND_COMPLETE, b"SELECT 0\0");
                }
                tag::frontend::CLOSE => msg(&mut out, tag::backend::CLOSE_COMPLETE, b""),
                tag::frontend::SYNC => {
                    self.skipping = false;
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
pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) servers: Vec<FakeServer>,
    /// The shard whose server is attached.
    attached: Option<usize>,
    /// Servers handed out so far, and releases.
    pub(super) attaches: usize,
    pub(super) releases: usize,
    /// Bytes the client received.
    pub(super) client: Vec<u8>,
    /// The session ended.
    pub(super) closed: Option<String>,
}

const ROUTED: &str = r#"
[databases.app]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 }, { name = "s1", host = "127.0.0.1", port = 2 } ]
[databases.app.routing]
no_tenant = "reject"
[databases.plain]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 } ]
"#;

impl Harness {
    /// A client of database `db` ("app": routed over two shards; "plain": one).
    pub(super) fn new(db: &str) -> Harness {
        let cfg = Config::parse(ROUTED).expect("test config");
        let snap = Snapshot::build(cfg, 1).expect("test snapshot");
        let db = snap.dbs.get(db).expect("db").clone();
        let n = db.cfg.shards.len();
        let mut core = Core::new(
            db,
            7,
            1 << 20,
            ParamSet::default(),
            ParamSet::default(),
            None,
        );
        core.greeted(&ParamSet::default());
        Harness {
            core,
            servers: (0..n).map(|_| FakeServer::default()).collect(),
            attached: None,
            attaches: 0,
            releases: 0,
            client: Vec::new(),
            closed: None,
        }
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
                    let mut st = ServerState::new(SocketAddr::from(([127, 0, 0, 1], 1)), None);
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
                    self.releases += 1;
                    self.core.released(None)
                }
            };
        }
        self.client.extend(self.core.to_client().take_all());
    }

    /// The client sends these messages.
    pub(super) fn send(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            self.core.cbuf().extend_from_slice(f);
        }
        let need = self.core.client_data();
        self.serve(need);
    }

    /// The attached server answers everything queued for it (repeatedly, until
    /// nothing more is sent).
    pub(super) fn server_turn(&mut self) {
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
    pub(super) fn client_tags(&mut self) -> String {
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
    pub(super) fn client_errors(&self) -> Vec<String> {
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

fn frame(t: u8, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    msg(&mut b, t, body);
    b.to_vec()
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    frame(tag::frontend::QUERY, format!("{sql}\0").as_bytes())
}

pub(super) fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(
        tag::frontend::PARSE,
        format!("{name}\0{sql}\0\0\0").as_bytes(),
    )
}

pub(super) fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
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

pub(super) fn execute() -> Vec<u8> {
    frame(tag::frontend::EXECUTE, b"\0\0\0\0\0")
}

pub(super) fn sync() -> Vec<u8> {
    frame(tag::frontend::SYNC, b"")
}

pub(super) fn flush() -> Vec<u8> {
    frame(tag::frontend::FLUSH, b"")
}

// ---------------------------------------------------------------------------
// The state machine, step by step
// ---------------------------------------------------------------------------

#[test]
fn a_held_begin_is_replayed_with_its_statements_on_the_tenants_shard() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!(h.core.phase(), Phase::Held);
    h.send(&[query("SET LOCAL statement_timeout = '1s'")]);
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!((h.core.phase(), h.attaches), (Phase::Held, 0));
    h.send(&[query("SELECT * FROM t WHERE tenant_id = 42")]);
    assert_eq!(h.attaches, 1);
    h.server_turn();
    // The server saw BEGIN, the held SET LOCAL, then the statement, in order.
    let shard = h.servers.iter().position(|s| !s.log.is_empty()).unwrap();
    let sent: Vec<String> = h.servers[shard]
        .log
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(cstr(b).0).into_owned())
        .collect();
    assert_eq!(
        sent,
        [
            "BEGIN",
            "SET LOCAL statement_timeout = '1s'",
            "SELECT * FROM t WHERE tenant_id = 42"
        ]
    );
    // The client sees only its statement's answer, still in its transaction.
    assert_eq!(h.client_tags(), "DCZT");
    assert_eq!((h.core.phase(), h.releases), (Phase::Attached, 0));
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    // Released only at ReadyForQuery 'I'.
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

#[test]
fn a_transaction_failed_by_shardbouncer_stays_failed_and_never_reaches_a_server() {
    let mut h = Harness::new("app");
    h.send(&[query("BEGIN")]);
    h.send(&[query("SELECT * FROM t")]);
    assert_eq!(h.client_errors(), ["42P17"]);
    assert_eq!(h.client_tags(), "CZTEZE");
    assert_eq!(h.core.phase(), Phase::HeldFailed);
    h.send(&[query("INSERT INTO t VALUES (1) /* tenant_id=1 */")]);
    assert_eq!(h.client_errors(), ["25P02"]);
    h.client_tags();
    h.send(&[query("COMMIT")]);
    // COMMIT of a failed transaction answers ROLLBACK, as Postgres does.
    assert!(h.client.windows(8).any(|w| w == b"ROLLBACK"));
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!((h.core.phase(), h.attaches), (Phase::Idle, 0));
}

#[test]
fn after_an_error_mid_pipeline_nothing_more_is_owed_until_sync() {
    // Parse s1 fails; the client's later Bind of s1 (sent after the error came
    // back) and its Sync must get exactly one ReadyForQuery, and the server must
    // go back to the pool.
    let mut h = Harness::new("plain");
    h.send(&[parse("s1", "SELECT fail"), bind("s1", &[]), flush()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["42P01"]);
    h.client_tags();
    assert_eq!(h.releases, 0, "the batch is still open");
    h.send(&[bind("s1", &[]), execute()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "", "skipped messages get no answer");
    h.send(&[sync()]);
    h.server_turn();
    assert_eq!(h.client_tags(), "ZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
    // The failed Parse created no statement.
    h.send(&[bind("s1", &[]), execute(), sync()]);
    h.server_turn();
    assert_eq!(h.client_errors(), ["26000"]);
}

#[test]
fn an_unnamed_statement_follows_the_client_to_its_next_server() {
    // Parse "" and Describe with Flush run tenant-free on one shard; the Bind that
    // names the tenant goes where the tenant lives, and the statement is
    // re-created there first.
    let mut h = Harness::new("app");
    h.send(&[
        parse("", "SELECT * FROM t WHERE tenant_id = $1"),
        frame(tag::frontend::DESCRIBE, b"S\0"),
        flush(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "1tn");
    h.send(&[bind("", &["42"]), execute(), sync()]);
    h.server_turn();
    h.server_turn();
    assert_eq!(h.client_tags(), "2CZI");
    let logs: Vec<String> = h
        .servers
        .iter()
        .map(|s| s.log.iter().map(|(t, _)| *t as char).collect())
        .collect();
    // One shard parsed and described (the client's Flush, then our Sync); the
    // tenant's shard got the Parse again, then the Bind.
    assert!(logs.iter().any(|l| l == "PDHS"), "{logs:?}");
    assert!(logs.iter().any(|l| l == "PBES"), "{logs:?}");
}

#[test]
fn copy_in_through_the_extended_protocol_keeps_the_server_until_the_clients_sync() {
    let mut h = Harness::new("plain");
    h.send(&[
        parse("", "COPY t FROM STDIN"),
        bind("", &[]),
        execute(),
        sync(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "12G");
    assert_eq!(h.core.phase(), Phase::CopyIn);
    h.send(&[
        frame(tag::frontend::COPY_DATA, b"1\n"),
        frame(tag::frontend::COPY_DONE, b""),
        sync(),
    ]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZI");
    assert_eq!((h.core.phase(), h.releases), (Phase::Idle, 1));
}

#[test]
fn a_transaction_keeps_its_server_until_ready_for_query_idle() {
    let mut h = Harness::new("plain");
    h.send(&[query("BEGIN")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "CZT");
    assert_eq!((h.core.phase(), h.releases), (Phase::Attached, 0));
    h.send(&[query("SELECT 1")]);
    h.server_turn();
    assert_eq!(h.releases, 0);
    h.send(&[query("COMMIT")]);
    h.server_turn();
    assert_eq!(h.client_tags(), "DCZTCZI");
    assert_eq!(h.releases, 1);
}

#[test]
fn a_malformed_message_ends_the_session_with_08p01() {
    let mut h = Harness::new("plain");
    h.send(&[frame(tag::frontend::BIND, b"\xff")]);
    assert!(h.closed.is_some());
    assert_eq!(h.client_errors(), ["08P01"]);
}
