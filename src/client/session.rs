//! The transaction loop of one logged-in client.
//!
//! A single event loop moves bytes both ways. Client → server frames are inspected
//! only as far as pooling, prepared statements and routing need; server → client
//! frames are matched against [`Expectations`] and forwarded as zero-copy `Bytes`
//! runs. Writes are queued and sent from the same `select!`, so neither side can
//! deadlock the other and a slow reader applies back-pressure instead of growing
//! buffers without bound.
//!
//! For a sharded database, work is routed in units: a simple Query, or an extended
//! protocol batch up to Sync/Flush. A bare `BEGIN` is answered locally and replayed
//! on the shard of the first statement that names a tenant.

use super::expect::{Entry, Expectations, Mode};
use super::queue::OutQueue;
use super::route::{self, Mention, Target, TenantState};
use super::ClientLogin;
use crate::app::{App, ClientHandle, DbRuntime, RoutingRt};
use crate::config::{PoolMode, TenantSource};
use crate::pool::{Checkout, Pool};
use crate::protocol::{self, sqlstate, Bind, Parse};
use crate::router::{scan, Source, Statement, TenantKey};
use crate::server::params;
use crate::server::prepared::{self, replies, StmtDef};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Stop reading from one side while this much is queued for the other.
const HIGH_WATER: usize = 512 * 1024;
/// Frames bigger than this that may be streamed (DataRow, CopyData) are forwarded
/// piecemeal instead of being buffered whole.
const STREAM_THRESHOLD: usize = 64 * 1024;
/// Most statement names one client may hold (a runaway client cannot grow memory).
const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// A server attached to this client for the current transaction (or session).
struct Attached {
    co: Checkout,
    pool: Arc<Pool>,
    shard: usize,
    since: Instant,
}

/// A unit of routed work.
enum Unit {
    /// A simple Query or FunctionCall (tag, frame).
    Simple(u8, Bytes),
    /// Extended-protocol messages up to and including a Sync or Flush.
    Batch(Vec<(u8, Bytes)>),
}

/// What the event loop saw.
enum Event {
    ClientRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    Timeout(&'static str, &'static str),
    Killed,
    Shutdown,
}

/// Why the session ends (for logs); the client has already been told.
pub type End = String;

/// State of one client after login.
pub struct Session {
    app: Arc<App>,
    db: Arc<DbRuntime>,
    user: String,
    password: Option<String>,
    login: ClientLogin,
    handle: Arc<ClientHandle>,
    max_msg: usize,
    server: Option<Attached>,
    /// Bytes read from the client, not yet processed.
    cbuf: BytesMut,
    to_client: OutQueue,
    to_server: OutQueue,
    scratch: BytesMut,
    /// Responses the attached server owes, in order.
    expect: Expectations,
    /// An ErrorResponse was seen for the entry at the head of `expect`.
    head_failed: bool,
    /// Transaction status as the client sees it.
    tx_status: u8,
    /// Transaction status of the attached server (last ReadyForQuery).
    server_status: u8,
    /// Extended-protocol messages sent since the last Sync.
    ext_open: bool,
    /// After an error we raised with no server: drop client messages until Sync.
    skip_until_sync: bool,
    /// Bytes of a large client frame still to pass through unparsed.
    c_stream_left: usize,
    /// Bytes of a large server frame still to pass through unparsed.
    s_stream_left: usize,
    /// A statement may have changed unreported settings (search_path...).
    touched_unreported: bool,
    last_activity: Instant,
    query_start: Option<Instant>,
    // Per-attachment counters, flushed to the pool's atomics on release.
    bytes_in: u64,
    bytes_out: u64,
    queries: u64,
    query_us: u64,
    /// The client's named prepared statements.
    stmts: HashMap<Bytes, Arc<StmtDef>>,
    /// Routing facts of the unnamed statement (sharded databases).
    unnamed: Option<Arc<StmtDef>>,
    /// Tenant settings of the session.
    tenants: TenantState,
    /// A BEGIN answered locally, to replay on the first routed shard.
    held_begin: Option<Bytes>,
    /// Extended messages held until the batch can be routed.
    batch: Vec<(u8, Bytes)>,
    /// Work that must wait until the attached server is released.
    stalled: Option<Unit>,
    /// Tenant the current transaction is pinned by.
    tx_tenant: Option<(TenantKey, Source)>,
    /// Tenant-free work running outside a held BEGIN: the client must keep seeing 'T'.
    masquerade: bool,
}

impl Session {
    /// Create the session for a logged-in client.
    pub fn new(
        app: Arc<App>,
        db: Arc<DbRuntime>,
        user: String,
        password: Option<String>,
        mut login: ClientLogin,
        handle: Arc<ClientHandle>,
        startup_tenant: Option<TenantKey>,
    ) -> Session {
        let snap = app.snapshot.load();
        let max_msg = snap.config.limits.max_message_size;
        drop(snap);
        if let Some(rt) = &db.routing {
            // The tenant key is ours: it must never reach Postgres as a setting.
            login.take_setting(&rt.key);
        }
        Session {
            app,
            db,
            user,
            password,
            login,
            handle,
            max_msg,
            server: None,
            cbuf: BytesMut::with_capacity(8192),
            to_client: OutQueue::default(),
            to_server: OutQueue::default(),
            scratch: BytesMut::with_capacity(1024),
            expect: Expectations::default(),
            head_failed: false,
            tx_status: b'I',
            server_status: b'I',
            ext_open: false,
            skip_until_sync: false,
            c_stream_left: 0,
            s_stream_left: 0,
            touched_unreported: false,
            last_activity: Instant::now(),
            query_start: None,
            bytes_in: 0,
            bytes_out: 0,
            queries: 0,
            query_us: 0,
            stmts: HashMap::new(),
            unnamed: None,
            tenants: TenantState {
                startup: startup_tenant,
                ..Default::default()
            },
            held_begin: None,
            batch: Vec::new(),
            stalled: None,
            tx_tenant: None,
            masquerade: false,
        }
    }

    fn mode(&self) -> PoolMode {
        self.db.settings.mode
    }

    fn pool_for(&self, shard: usize) -> Arc<Pool> {
        self.app
            .pool(&self.db, &self.user, shard, self.password.as_deref())
    }

    /// Queue a message we built in `scratch` for the client.
    fn emit(&mut self) {
        let b = self.scratch.split().freeze();
        self.to_client.push(b);
    }

    /// Queue a reply built in `scratch` in protocol order: directly when nothing is
    /// owed by a server, else behind what is owed.
    fn reply(&mut self, tag: u8) {
        let b = self.scratch.split().freeze();
        if self.expect.is_empty() {
            self.to_client.push(b);
        } else {
            self.expect.push(Entry::synthetic(tag, b));
        }
    }

    fn emit_error(&mut self, code: &str, msg: &str) {
        protocol::error_response(&mut self.scratch, code, msg);
        self.emit();
    }

    fn emit_fatal(&mut self, code: &str, msg: &str) {
        protocol::fatal_response(&mut self.scratch, code, msg);
        self.emit();
    }

    fn emit_rfq(&mut self) {
        protocol::ready_for_query(&mut self.scratch, self.tx_status);
        self.emit();
    }

    /// Send AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery.
    async fn greet(&mut self, stream: &mut super::ClientStream) -> Result<(), End> {
        let pool = self.pool_for(self.any_shard());
        let mut defaults = pool.server_params.lock().unwrap().clone();
        if defaults.is_none() {
            // First client of this pool: log a server in to learn its parameters.
            if let Ok(co) = pool.checkout().await {
                pool.checkin(co);
            }
            defaults = pool.server_params.lock().unwrap().clone();
        }
        let mut ps = defaults.unwrap_or_else(fallback_params);
        for (k, v) in self.login.reported.iter() {
            ps.set(k, v);
        }
        protocol::auth_ok(&mut self.scratch);
        for (k, v) in ps.iter() {
            protocol::parameter_status(&mut self.scratch, k, v);
        }
        protocol::backend_key_data(&mut self.scratch, self.handle.id, self.handle.secret);
        protocol::ready_for_query(&mut self.scratch, b'I');
        self.emit();
        pool.stats.login_count.fetch_add(1, Ordering::Relaxed);
        self.to_client
            .flush_all(stream)
            .await
            .map_err(|e| e.to_string())
    }

    /// A shard for work that touches no tenant: the session tenant's, else the
    /// default shard, else the first.
    fn any_shard(&self) -> usize {
        let Some(rt) = &self.db.routing else { return 0 };
        self.tenants
            .set
            .or(self.tenants.startup)
            .and_then(|k| rt.map.route(&k).ok().map(|r| r.shard))
            .or(rt.default_shard)
            .unwrap_or(0)
    }

    /// Run until the client leaves, is killed, or the process shuts down.
    pub async fn run(mut self, stream: &mut super::ClientStream) -> Result<(), End> {
        self.greet(stream).await?;
        let res = self.event_loop(stream).await;
        // Whatever happened, the server must not go back dirty.
        self.detach_on_exit().await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.to_client.flush_all(stream),
        )
        .await;
        res
    }

    async fn event_loop(&mut self, stream: &mut super::ClientStream) -> Result<(), End> {
        loop {
            self.process_client().await?;
            if self.server.is_none() && self.app.shutting_down.load(Ordering::Acquire) {
                self.emit_fatal(sqlstate::ADMIN_SHUTDOWN, "shardbouncer is shutting down");
                return Err("shutdown".into());
            }
            let ev = self.wait(stream).await;
            match ev {
                Event::ClientRead(Ok(0)) => return Err("client closed the connection".into()),
                Event::ClientRead(Ok(n)) => {
                    self.last_activity = Instant::now();
                    self.bytes_in += n as u64;
                }
                Event::ClientRead(Err(e)) => return Err(format!("client read: {e}")),
                Event::ClientWrote(Ok(0)) => return Err("client closed the connection".into()),
                Event::ClientWrote(Ok(n)) => {
                    self.bytes_out += n as u64;
                    self.to_client.advance(n);
                }
                Event::ClientWrote(Err(e)) => return Err(format!("client write: {e}")),
                Event::ServerRead(Ok(0)) | Event::ServerRead(Err(_)) => {
                    return self.server_lost().await;
                }
                Event::ServerRead(Ok(_)) => self.process_server().await?,
                Event::ServerWrote(Ok(0)) | Event::ServerWrote(Err(_)) => {
                    return self.server_lost().await;
                }
                Event::ServerWrote(Ok(n)) => {
                    self.to_server.advance(n);
                    // The last write of a finished transaction may be what allows release.
                    self.maybe_release().await?;
                }
                Event::Timeout(code, msg) => {
                    self.emit_fatal(code, msg);
                    return Err(msg.into());
                }
                Event::Killed => {
                    self.emit_fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by administrator");
                    return Err("killed".into());
                }
                Event::Shutdown => {}
            }
        }
    }

    /// Wait for the next I/O event or timer.
    async fn wait(&mut self, stream: &mut super::ClientStream) -> Event {
        let settings = &self.db.settings;
        let idle_in_tx = self.expect.is_empty() && self.tx_status != b'I';
        let deadline = if idle_in_tx {
            settings.idle_transaction_timeout.non_zero().map(|t| {
                (
                    self.last_activity + t,
                    sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                    "idle_transaction_timeout",
                )
            })
        } else if self.server.is_none() {
            settings.client_idle_timeout.non_zero().map(|t| {
                (
                    self.last_activity + t,
                    sqlstate::ADMIN_SHUTDOWN,
                    "client_idle_timeout",
                )
            })
        } else {
            None
        };
        let read_client = self.to_server.len() < HIGH_WATER && self.stalled.is_none();
        let read_server = self.to_client.len() < HIGH_WATER;
        let idle_for_shutdown = self.server.is_none();
        let (mut cr, mut cw) = stream.split();
        let cbuf = &mut self.cbuf;
        let to_client = &self.to_client;
        let to_server = &self.to_server;
        let handle = &self.handle;
        let app = &self.app;
        let (srv_read, srv_write) = match self.server.as_mut() {
            Some(a) => {
                let conn = &mut a.co.conn;
                let (r, w) = conn.stream.split();
                (Some((r, &mut conn.rbuf)), Some(w))
            }
            None => (None, None),
        };
        let server_read = async {
            match srv_read {
                Some((mut r, buf)) if read_server => {
                    if buf.capacity() - buf.len() < 4096 {
                        buf.reserve(16 * 1024);
                    }
                    r.read_buf(buf).await
                }
                _ => std::future::pending().await,
            }
        };
        let server_write = async {
            match srv_write {
                Some(mut w) if !to_server.is_empty() => to_server.write_some(&mut w).await,
                _ => std::future::pending().await,
            }
        };
        let timer = async {
            match deadline {
                Some((at, code, msg)) => {
                    tokio::time::sleep_until(at.into()).await;
                    (code, msg)
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = handle.kill.notified() => Event::Killed,
            r = to_client.write_some(&mut cw), if !to_client.is_empty() => Event::ClientWrote(r),
            r = server_write => Event::ServerWrote(r),
            r = server_read => Event::ServerRead(r),
            r = async {
                if cbuf.capacity() - cbuf.len() < 4096 {
                    cbuf.reserve(8192);
                }
                cr.read_buf(cbuf).await
            }, if read_client => Event::ClientRead(r),
            (code, msg) = timer => Event::Timeout(code, msg),
            _ = app.shutdown.notified(), if idle_for_shutdown => Event::Shutdown,
        }
    }

    /// Handle every complete client frame in `cbuf` (and stalled work first).
    async fn process_client(&mut self) -> Result<(), End> {
        if self.handle.killed.load(Ordering::Acquire) {
            self.emit_fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by administrator");
            return Err("killed".into());
        }
        // Stalled work is decided once the server has answered everything in flight.
        if self.stalled.is_some() && self.expect.is_empty() && self.to_server.is_empty() {
            if let Some(unit) = self.stalled.take() {
                self.route_unit(unit).await?;
            }
        }
        while self.to_server.len() < HIGH_WATER && self.stalled.is_none() {
            if self.c_stream_left > 0 {
                let n = self.c_stream_left.min(self.cbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = self.cbuf.split_to(n).freeze();
                self.c_stream_left -= n;
                if self.server.is_some() && !self.skip_until_sync {
                    self.to_server.push(chunk);
                }
                continue;
            }
            let (tag, len) = match protocol::frame_header(&self.cbuf, self.max_msg) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.emit_fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid frontend message: {e}"),
                    );
                    return Err(e.to_string());
                }
            };
            if self.cbuf.len() < len {
                if tag == b'd' && len > STREAM_THRESHOLD && self.server.is_some() {
                    // Stream big COPY data through instead of buffering it whole.
                    let avail = self.cbuf.len();
                    let chunk = self.cbuf.split_to(avail).freeze();
                    self.c_stream_left = len - avail;
                    if !self.skip_until_sync {
                        self.to_server.push(chunk);
                    }
                    continue;
                }
                self.cbuf.reserve(len - self.cbuf.len());
                break;
            }
            let frame = self.cbuf.split_to(len).freeze();
            self.handle_client_frame(tag, frame).await?;
        }
        self.drain_synthetic();
        Ok(())
    }

    async fn handle_client_frame(&mut self, tag: u8, frame: Bytes) -> Result<(), End> {
        if self.skip_until_sync {
            if tag == b'S' {
                self.skip_until_sync = false;
                if self.server.is_some() {
                    self.send_ext(tag, frame);
                } else {
                    self.emit_rfq();
                }
            }
            return Ok(());
        }
        let routed = self.db.routing.is_some();
        match tag {
            b'X' => Err("client terminated".into()),
            b'Q' | b'F' => {
                if routed {
                    self.route_unit(Unit::Simple(tag, frame)).await
                } else {
                    if self.server.is_none() && !self.attach_or_fail(0, tag).await {
                        return Ok(());
                    }
                    self.forward_simple(tag, frame);
                    Ok(())
                }
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                if routed {
                    self.batch.push((tag, frame));
                    if tag == b'S' || tag == b'H' {
                        let b = std::mem::take(&mut self.batch);
                        self.route_unit(Unit::Batch(b)).await?;
                    } else if self.batch.len() > 100_000 {
                        self.emit_fatal(
                            sqlstate::PROTOCOL_VIOLATION,
                            "too many extended-protocol messages without Sync",
                        );
                        return Err("unbounded batch".into());
                    }
                    Ok(())
                } else {
                    self.plain_ext(tag, frame).await;
                    Ok(())
                }
            }
            b'd' | b'c' | b'f' => {
                if self.server.is_some() {
                    self.to_server.push(frame);
                }
                Ok(())
            }
            other => {
                self.emit_fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid frontend message type {other}"),
                );
                Err(format!("invalid frontend message type {other}"))
            }
        }
    }

    /// Extended-protocol message for a single-shard database.
    async fn plain_ext(&mut self, tag: u8, frame: Bytes) {
        if self.server.is_none() {
            // Named Parses followed by Sync are answered without a server (see
            // `parse_locally`); hold them until we see what follows.
            if tag == b'P' && is_named_parse(&frame) && self.batch.iter().all(|(t, _)| *t == b'P') {
                self.batch.push((tag, frame));
                return;
            }
            if tag == b'S' && !self.batch.is_empty() {
                let held = std::mem::take(&mut self.batch);
                return self.parse_locally(held);
            }
            if !self.batch.is_empty() {
                let held = std::mem::take(&mut self.batch);
                if !self.attach_or_fail(0, held[0].0).await {
                    return;
                }
                for (t, f) in held {
                    self.forward_ext(t, f);
                }
                return self.forward_ext(tag, frame);
            }
            match tag {
                // Nothing is in flight: answer without taking a server.
                b'S' => return self.emit_rfq(),
                b'H' => return,
                b'C' if is_named_statement_close(&frame) => {
                    self.close_statement(&frame);
                    return;
                }
                _ => {}
            }
            if !self.attach_or_fail(0, tag).await {
                return;
            }
        }
        self.forward_ext(tag, frame);
    }

    /// Answer named Parses + Sync without a server: register the statements and
    /// reply ParseComplete + ReadyForQuery. The statement is prepared (and so
    /// validated) lazily on the server that first executes or describes it; a syntax
    /// error then surfaces at that Bind/Describe. Without this, a client that blocks
    /// on a Parse while its other connections hold every server in a transaction
    /// (pgbench -M prepared does exactly that) deadlocks on any transaction pooler.
    fn parse_locally(&mut self, msgs: Vec<(u8, Bytes)>) {
        for (_, frame) in &msgs {
            let Some(p) = Parse::parse(&frame[5..]) else {
                return self.fail_unattached(
                    b'S',
                    sqlstate::PROTOCOL_VIOLATION,
                    "malformed Parse message",
                );
            };
            if self.stmts.contains_key(p.name) {
                let msg = format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(p.name)
                );
                return self.fail_unattached(b'S', "42P05", &msg);
            }
            if self.stmts.len() >= MAX_CLIENT_STATEMENTS {
                return self.fail_unattached(
                    b'S',
                    "53400",
                    "too many prepared statements on this connection",
                );
            }
            let routing = self
                .db
                .routing
                .as_ref()
                .map(|rt| route::stmt_routing(rt, p.query))
                .unwrap_or_default();
            let def = Arc::new(StmtDef::new(&p, routing));
            self.stmts.insert(Bytes::copy_from_slice(p.name), def);
            self.scratch.extend_from_slice(replies::PARSE_COMPLETE);
            self.emit();
        }
        self.emit_rfq();
    }

    /// Attach a server for `shard`; on failure tell the client and return false.
    async fn attach_or_fail(&mut self, shard: usize, tag: u8) -> bool {
        match self.attach(shard).await {
            Ok(()) => true,
            Err((code, msg)) => {
                self.fail_unattached(tag, code, &msg);
                false
            }
        }
    }

    /// Report an error for work that has no server: a Query gets ReadyForQuery at
    /// once; an extended batch is skipped up to its Sync.
    fn fail_unattached(&mut self, last_tag: u8, code: &str, msg: &str) {
        self.emit_error(code, msg);
        match last_tag {
            b'Q' | b'F' | b'S' => self.emit_rfq(),
            _ => self.skip_until_sync = true,
        }
    }

    // ----- routing ---------------------------------------------------------------

    /// Pick up a reloaded configuration between transactions: "the next transaction
    /// uses the new map".
    fn refresh_db(&mut self) {
        if self.server.is_some() || self.held_begin.is_some() {
            return;
        }
        let snap = self.app.snapshot.load();
        if snap.generation != self.db.generation {
            if let Some(db) = snap.dbs.get(&self.db.name) {
                self.db = db.clone();
            }
        }
    }

    /// Route one unit of work on a sharded database.
    async fn route_unit(&mut self, unit: Unit) -> Result<(), End> {
        self.refresh_db();
        let Some(rt) = self.db.routing.clone() else {
            // Routing was removed by a reload: behave as a single-shard pooler.
            return self.dispatch(Target::Any, unit).await;
        };
        if let Unit::Batch(msgs) = &unit {
            if self.server.is_none() && is_parse_only_batch(msgs) {
                if let Unit::Batch(msgs) = unit {
                    let held = msgs.into_iter().filter(|(t, _)| *t == b'P').collect();
                    self.parse_locally(held);
                }
                return Ok(());
            }
        }
        let target = match &unit {
            Unit::Simple(b'Q', frame) => {
                let sql = query_text(frame);
                if let Some(done) = self.local_statement(&rt, sql) {
                    return done;
                }
                self.target_for_text(&rt, sql)
            }
            Unit::Simple(_, _) => self.target_without_tenant(&rt, false),
            Unit::Batch(msgs) => self.target_for_batch(&rt, msgs),
        };
        tracing::trace!(client = self.handle.id, ?target, attached = self.server.is_some(), status = ?(self.server_status as char), owed = self.expect.ready_owed(), "route");
        match target {
            Ok(t) => self.dispatch(t, unit).await,
            Err(e) => {
                self.unit_error(unit, e.code, &e.message);
                Ok(())
            }
        }
    }

    /// SET/RESET of the tenant key, and BEGIN/COMMIT while a BEGIN is held: answered
    /// here, never sent to Postgres. Returns `None` for anything else.
    fn local_statement(&mut self, rt: &RoutingRt, sql: &[u8]) -> Option<Result<(), End>> {
        let st = scan(sql, rt.key.as_bytes());
        match st {
            Statement::SetTenant { local, value } if rt.has(TenantSource::Set) => {
                let key = match route::decode(rt, &value) {
                    Ok(k) => k,
                    Err(e) => return Some(self.simple_error_reply(e.code, &e.message)),
                };
                if let Err((code, msg)) = self.set_tenant(rt, local, Some(key)) {
                    return Some(self.simple_error_reply(code, &msg));
                }
                self.simple_reply("SET");
                Some(Ok(()))
            }
            Statement::ResetTenant if rt.has(TenantSource::Set) => {
                if let Err((code, msg)) = self.set_tenant(rt, false, None) {
                    return Some(self.simple_error_reply(code, &msg));
                }
                self.tenants.local = None;
                self.simple_reply("RESET");
                Some(Ok(()))
            }
            Statement::Begin if self.server.is_none() && self.held_begin.is_none() => {
                // Hold it until a statement names the tenant (and so the shard).
                let mut b = BytesMut::new();
                protocol::query(&mut b, std::str::from_utf8(sql).unwrap_or("BEGIN"));
                self.held_begin = Some(b.freeze());
                self.tx_status = b'T';
                self.simple_reply("BEGIN");
                Some(Ok(()))
            }
            _ if self.server.is_none() && self.held_begin.is_some() => {
                let tag = if route::is_bare(sql, &[b"COMMIT", b"END"]) {
                    "COMMIT"
                } else if route::is_bare(sql, &[b"ROLLBACK", b"ABORT"]) {
                    "ROLLBACK"
                } else {
                    return None;
                };
                // Nothing ran: ending the held transaction needs no server.
                self.held_begin = None;
                self.tenants.local = None;
                self.tx_status = b'I';
                self.simple_reply(tag);
                Some(Ok(()))
            }
            _ => None,
        }
    }

    /// Apply `SET [LOCAL] key = v` (`None`: RESET).
    fn set_tenant(
        &mut self,
        rt: &RoutingRt,
        local: bool,
        key: Option<TenantKey>,
    ) -> Result<(), (&'static str, String)> {
        if local {
            if self.tx_status == b'I' {
                // As Postgres: SET LOCAL outside a transaction has no effect.
                protocol::error_fields(
                    &mut self.scratch,
                    b'N',
                    "WARNING",
                    "25P01",
                    "SET LOCAL can only be used in transaction blocks",
                );
                self.reply(b'N');
                return Ok(());
            }
            if let (Some(k), Some(att)) = (key, &self.server) {
                let shard = route::route_key(rt, &k).map_err(|e| (e.code, e.message))?;
                if shard != att.shard {
                    return Err(self.cross_shard_message(rt, &k, shard));
                }
            }
            self.tenants.local = key;
            return Ok(());
        }
        if rt.lock_startup_tenant {
            if let Some(st) = self.tenants.startup {
                if key != Some(st) {
                    return Err((
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        format!(
                            "{} was fixed at connect ('{st}') and lock_startup_tenant is on",
                            rt.key
                        ),
                    ));
                }
            }
        }
        self.tenants.set = key;
        Ok(())
    }

    fn cross_shard_message(
        &self,
        rt: &RoutingRt,
        key: &TenantKey,
        shard: usize,
    ) -> (&'static str, String) {
        let names = rt.map.shard_names();
        let pinned = self.server.as_ref().map(|a| a.shard).unwrap_or(0);
        let by = match &self.tx_tenant {
            Some((t, src)) => format!(" by {} '{t}' ({src})", rt.key),
            None => String::new(),
        };
        (
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "cross-shard transaction refused: {k} '{key}' lives on shard {s} but this transaction is pinned to shard {p}{by}",
                k = rt.key,
                s = names.get(shard).map(String::as_str).unwrap_or("?"),
                p = names.get(pinned).map(String::as_str).unwrap_or("?"),
            ),
        )
    }

    /// Routing refusals feed the metrics.
    fn count_refusal(&self, code: &str) {
        if self.db.routing.is_none() {
            return;
        }
        match code {
            sqlstate::NO_TENANT => crate::admin::metrics::routing_rejected(&self.db.name),
            sqlstate::FEATURE_NOT_SUPPORTED => {
                crate::admin::metrics::cross_shard_refused(&self.db.name)
            }
            _ => {}
        }
    }

    /// CommandComplete + ReadyForQuery for a locally answered simple Query.
    fn simple_reply(&mut self, tag: &str) {
        protocol::command_complete(&mut self.scratch, tag);
        protocol::ready_for_query(&mut self.scratch, self.tx_status);
        self.reply(b'Q');
    }

    /// An error for a simple Query we answer ourselves.
    fn simple_error_reply(&mut self, code: &str, msg: &str) -> Result<(), End> {
        self.count_refusal(code);
        if self.server.is_some() {
            // Fail the server's transaction too, exactly as Postgres would.
            self.inject_error_simple(code, msg);
        } else {
            if self.tx_status == b'T' {
                self.tx_status = b'E';
            }
            protocol::error_response(&mut self.scratch, code, msg);
            protocol::ready_for_query(&mut self.scratch, self.tx_status);
            self.reply(b'Q');
        }
        Ok(())
    }

    fn target_for_text(&mut self, rt: &RoutingRt, sql: &[u8]) -> Result<Target, route::RouteError> {
        let mut mentions = Vec::new();
        route::text_mentions(rt, sql, &mut mentions)?;
        match route::resolve(rt, &self.tenants, &mentions)? {
            Some((tenant, source, shard)) => Ok(Target::Shard {
                shard,
                tenant: Some(tenant),
                source,
            }),
            None => self.target_without_tenant(rt, route::is_tenant_free(sql)),
        }
    }

    /// No tenant named: stay on the pinned shard, run anywhere if harmless, else
    /// apply `no_tenant`.
    fn target_without_tenant(
        &self,
        rt: &RoutingRt,
        harmless: bool,
    ) -> Result<Target, route::RouteError> {
        if let Some(att) = &self.server {
            // An extended batch in progress continues on its server.
            if !self.ext_open && !self.expect.is_empty() {
                return Ok(Target::Pending);
            }
            if self.ext_open || self.server_status != b'I' {
                return Ok(Target::Shard {
                    shard: att.shard,
                    tenant: None,
                    source: Source::Default,
                });
            }
        }
        if harmless {
            return Ok(Target::Any);
        }
        route::no_tenant(rt)
    }

    /// Route an extended-protocol batch by the tenants its Binds name.
    fn target_for_batch(
        &mut self,
        rt: &RoutingRt,
        msgs: &[(u8, Bytes)],
    ) -> Result<Target, route::RouteError> {
        let mut mentions: Vec<Mention> = Vec::new();
        let mut local: Vec<(&[u8], Arc<StmtDef>)> = Vec::new();
        let mut unnamed = self.unnamed.clone();
        let mut executes = false;
        let mut all_harmless = true;
        for (tag, frame) in msgs {
            let body = &frame[5..];
            match tag {
                b'P' => {
                    let Some(p) = Parse::parse(body) else {
                        continue;
                    };
                    let def = Arc::new(StmtDef::new(&p, route::stmt_routing(rt, p.query)));
                    if !route::is_tenant_free(p.query) {
                        all_harmless = false;
                    }
                    if p.name.is_empty() {
                        unnamed = Some(def);
                    } else {
                        local.push((p.name, def));
                    }
                }
                b'B' => {
                    let Some(b) = Bind::parse(body) else { continue };
                    let def = if b.statement.is_empty() {
                        unnamed.clone()
                    } else {
                        local
                            .iter()
                            .rev()
                            .find(|(n, _)| *n == b.statement)
                            .map(|(_, d)| d.clone())
                            .or_else(|| self.stmts.get(b.statement).cloned())
                    };
                    if let Some(def) = def {
                        if !route::is_tenant_free(&def.query) {
                            all_harmless = false;
                        }
                        route::bind_mentions(rt, &def, &b, &mut mentions)?;
                    }
                }
                b'E' => executes = true,
                _ => {}
            }
        }
        match route::resolve(rt, &self.tenants, &mentions)? {
            Some((tenant, source, shard)) => Ok(Target::Shard {
                shard,
                tenant: Some(tenant),
                source,
            }),
            // Parse/Describe alone read only the schema, the same on every shard.
            None => self.target_without_tenant(rt, !executes || all_harmless),
        }
    }

    /// Send routed work where it belongs.
    async fn dispatch(&mut self, target: Target, unit: Unit) -> Result<(), End> {
        if target == Target::Pending {
            self.stalled = Some(unit);
            return Ok(());
        }
        if let Some(att) = &self.server {
            let cur = att.shard;
            let want = match target {
                Target::Shard { shard, .. } => shard,
                Target::Any | Target::Pending => cur,
            };
            if want == cur {
                self.forward_unit(unit);
                return Ok(());
            }
            if !self.ext_open && (!self.expect.is_empty() || !self.to_server.is_empty()) {
                // The server is still busy: wait for it to finish before deciding.
                self.stalled = Some(unit);
                return Ok(());
            }
            if self.ext_open || self.server_status != b'I' || self.mode() == PoolMode::Session {
                let rt = self.db.routing.clone();
                if let (
                    Some(rt),
                    Target::Shard {
                        tenant: Some(k), ..
                    },
                ) = (rt, target)
                {
                    let (code, msg) = self.cross_shard_message(&rt, &k, want);
                    self.unit_error(unit, code, &msg);
                    return Ok(());
                }
                self.forward_unit(unit);
                return Ok(());
            }
            self.release().await;
        }
        let (shard, tenant) = match target {
            Target::Shard {
                shard,
                tenant,
                source,
            } => (shard, tenant.map(|t| (t, source))),
            Target::Any | Target::Pending => (self.any_shard(), None),
        };
        if let Err((code, msg)) = self.attach(shard).await {
            self.unit_error(unit, code, &msg);
            return Ok(());
        }
        if matches!(target, Target::Any) {
            // Work that needs no tenant runs outside a held BEGIN, which stays held.
            self.masquerade = self.held_begin.is_some();
        } else if let Some(begin) = self.held_begin.take() {
            self.expect.push(Entry::swallow(b'Q'));
            self.to_server.push(begin);
        }
        if let Target::Shard { source, .. } = target {
            crate::admin::metrics::routing_decision(&self.db.name, source_name(source));
        }
        if tenant.is_some() {
            self.tx_tenant = tenant;
        }
        self.forward_unit(unit);
        Ok(())
    }

    fn forward_unit(&mut self, unit: Unit) {
        match unit {
            Unit::Simple(tag, frame) => self.forward_simple(tag, frame),
            Unit::Batch(msgs) => {
                for (tag, frame) in msgs {
                    self.forward_ext(tag, frame);
                }
            }
        }
        self.drain_synthetic();
    }

    /// Refuse a unit of work with an error, keeping protocol and transaction state
    /// exactly as Postgres would.
    fn unit_error(&mut self, unit: Unit, code: &str, msg: &str) {
        self.count_refusal(code);
        let last = match &unit {
            Unit::Simple(tag, _) => *tag,
            Unit::Batch(m) => m.last().map(|(t, _)| *t).unwrap_or(b'S'),
        };
        if self.server.is_some() {
            match last {
                b'H' => {
                    self.inject_error_ext(code, msg);
                    self.ext_open = true;
                    self.skip_until_sync = true;
                }
                // An error then ReadyForQuery is also the right answer to a batch.
                _ => self.inject_error_simple(code, msg),
            }
        } else {
            if self.tx_status == b'T' {
                self.tx_status = b'E';
            }
            self.fail_unattached(last, code, msg);
        }
    }

    // ----- forwarding --------------------------------------------------------------

    /// Forward a simple Query / FunctionCall to the attached server.
    fn forward_simple(&mut self, tag: u8, frame: Bytes) {
        let mut clear_prepared = false;
        if tag == b'Q' {
            let sql = query_text(&frame);
            let mut kwbuf = [0u8; 16];
            match route::first_keyword(sql, &mut kwbuf) {
                b"DEALLOCATE" => return self.deallocate(sql),
                b"DISCARD" if contains_ci(sql, b"all") => {
                    self.stmts.clear();
                    clear_prepared = true;
                }
                _ => {}
            }
            self.note_statement(sql);
        }
        if self.expect.ready_owed() == 0 {
            self.query_start = Some(Instant::now());
        }
        let mut e = Entry::forward(tag);
        e.clear_prepared = clear_prepared;
        self.expect.push(e);
        self.to_server.push(frame);
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` act on the client's own names.
    fn deallocate(&mut self, sql: &[u8]) {
        let text = String::from_utf8_lossy(sql);
        let mut words = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .skip(1)
            .peekable();
        if words
            .peek()
            .is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
        {
            words.next();
        }
        let name = words.next().unwrap_or("");
        if name.eq_ignore_ascii_case("all") {
            self.stmts.clear();
            self.simple_reply("DEALLOCATE ALL");
            return;
        }
        let name = if name.len() >= 2 && name.starts_with('"') && name.ends_with('"') {
            name[1..name.len() - 1].replace("\"\"", "\"")
        } else {
            name.to_ascii_lowercase()
        };
        if self.stmts.remove(name.as_bytes()).is_some() {
            self.simple_reply("DEALLOCATE");
        } else {
            let msg = format!("prepared statement \"{name}\" does not exist");
            let _ = self.simple_error_reply("26000", &msg);
        }
    }

    /// Forward one extended-protocol message, translating statement names.
    fn forward_ext(&mut self, tag: u8, frame: Bytes) {
        let body = &frame[5..];
        match tag {
            b'P' => {
                let Some(p) = Parse::parse(body) else {
                    return self
                        .inject_error_ext(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message");
                };
                self.note_statement(p.query);
                if p.name.is_empty() {
                    if let Some(rt) = &self.db.routing {
                        self.unnamed =
                            Some(Arc::new(StmtDef::new(&p, route::stmt_routing(rt, p.query))));
                    }
                    self.send_ext(tag, frame);
                    return;
                }
                if self.stmts.contains_key(p.name) {
                    let msg = format!(
                        "prepared statement \"{}\" already exists",
                        String::from_utf8_lossy(p.name)
                    );
                    return self.inject_error_ext("42P05", &msg);
                }
                if self.stmts.len() >= MAX_CLIENT_STATEMENTS {
                    return self.inject_error_ext(
                        "53400",
                        "too many prepared statements on this connection",
                    );
                }
                let routing = self
                    .db
                    .routing
                    .as_ref()
                    .map(|rt| route::stmt_routing(rt, p.query))
                    .unwrap_or_default();
                let def = Arc::new(StmtDef::new(&p, routing));
                self.stmts
                    .insert(Bytes::copy_from_slice(p.name), def.clone());
                let conn = &mut self.server.as_mut().expect("attached").co.conn;
                if conn.prepared.touch(&def) {
                    self.expect.push(Entry::synthetic(
                        b'P',
                        Bytes::from_static(replies::PARSE_COMPLETE),
                    ));
                } else {
                    conn.prepared.insert(def.clone());
                    let msg = def.parse_message(&mut self.scratch);
                    self.expect.push(Entry::forward(b'P').with_stmt(def));
                    self.to_server.push(msg);
                    self.ext_open = true;
                }
            }
            b'B' | b'D' => {
                let named = match tag {
                    b'B' => Bind::parse(body).map(|b| b.statement),
                    _ => describe_statement_name(body),
                };
                let Some(name) = named else {
                    if tag == b'B' {
                        return self.inject_error_ext(
                            sqlstate::PROTOCOL_VIOLATION,
                            "malformed Bind message",
                        );
                    }
                    // Describe of a portal, or malformed: the server judges it.
                    return self.send_ext(tag, frame);
                };
                if name.is_empty() {
                    let e = match (tag, &self.unnamed) {
                        (b'D', Some(u)) => Entry::forward(tag).with_stmt(u.clone()),
                        _ => Entry::forward(tag),
                    };
                    self.expect.push(e);
                    self.to_server.push(frame);
                    self.ext_open = true;
                    return;
                }
                let Some(def) = self.stmts.get(name).cloned() else {
                    let msg = format!(
                        "prepared statement \"{}\" does not exist",
                        String::from_utf8_lossy(name)
                    );
                    return self.inject_error_ext("26000", &msg);
                };
                self.ensure_prepared(&def);
                let Some(msg) = prepared::rewrite_name(&mut self.scratch, &frame, &def.server_name)
                else {
                    return self
                        .inject_error_ext(sqlstate::PROTOCOL_VIOLATION, "malformed message");
                };
                let e = if tag == b'D' {
                    Entry::forward(tag).with_stmt(def)
                } else {
                    Entry::forward(tag)
                };
                self.expect.push(e);
                self.to_server.push(msg);
                self.ext_open = true;
            }
            b'C' if is_named_statement_close(&frame) => self.close_statement(&frame),
            _ => self.send_ext(tag, frame),
        }
    }

    /// Queue an extended message unchanged, with its expectation.
    fn send_ext(&mut self, tag: u8, frame: Bytes) {
        match tag {
            b'H' => {}
            b'S' => {
                if self.expect.ready_owed() == 0 {
                    self.query_start = Some(Instant::now());
                }
                self.expect.push(Entry::forward(tag));
                self.ext_open = false;
            }
            _ => {
                self.expect.push(Entry::forward(tag));
                self.ext_open = true;
            }
        }
        self.to_server.push(frame);
    }

    /// Close of a named statement: the client's name goes, the server keeps the
    /// statement for others; answered locally, in order.
    fn close_statement(&mut self, frame: &[u8]) {
        if let Some(name) = describe_statement_name(&frame[5..]) {
            self.stmts.remove(name);
        }
        self.scratch.extend_from_slice(replies::CLOSE_COMPLETE);
        self.reply(b'C');
    }

    /// Prepare `def` on the attached server if it lacks it (the ParseComplete is
    /// swallowed; an error stands for the client's Bind/Describe).
    fn ensure_prepared(&mut self, def: &Arc<StmtDef>) {
        let conn = &mut self.server.as_mut().expect("attached").co.conn;
        if conn.prepared.touch(def) {
            return;
        }
        conn.prepared.insert(def.clone());
        let msg = def.parse_message(&mut self.scratch);
        let mut e = Entry::forward(b'P').with_stmt(def.clone());
        e.mode = Mode::SwallowOk;
        self.expect.push(e);
        self.to_server.push(msg);
    }

    /// Make the server raise `code`/`msg` in an extended batch: the client sees the
    /// error where its message stood, and Postgres skips to Sync and fails the
    /// transaction exactly as for its own errors.
    fn inject_error_ext(&mut self, code: &str, msg: &str) {
        let Some(sql) = raise_sql(code, msg) else {
            return;
        };
        let p = Parse {
            name: b"",
            query: sql.as_bytes(),
            param_types: &[],
        };
        let def = StmtDef::new(&p, Default::default());
        let mut parse = BytesMut::new();
        {
            use bytes::BufMut;
            parse.put_u8(b'P');
            parse.put_i32((4 + 1 + sql.len() + 1 + 2) as i32);
            parse.put_u8(0);
            parse.put_slice(sql.as_bytes());
            parse.put_u8(0);
            parse.put_i16(0);
            // Bind "" "" with no params and no result formats.
            parse.put_slice(b"B\0\0\0\x0c\0\0\0\0\0\0\0\0");
            parse.put_slice(b"E\0\0\0\x09\0\0\0\0\0");
        }
        drop(def);
        self.expect.push(Entry::swallow(b'P'));
        self.expect.push(Entry::swallow(b'B'));
        let mut e = Entry::forward(b'E');
        e.mode = Mode::SwallowOk;
        self.expect.push(e);
        self.to_server.push(parse.freeze());
        self.ext_open = true;
    }

    /// Same for a simple Query: the server raises the error, then ReadyForQuery.
    fn inject_error_simple(&mut self, code: &str, msg: &str) {
        let Some(sql) = raise_sql(code, msg) else {
            return;
        };
        let mut b = BytesMut::new();
        protocol::query(&mut b, &sql);
        if self.expect.ready_owed() == 0 {
            self.query_start = Some(Instant::now());
        }
        self.expect.push(Entry::forward(b'Q'));
        self.to_server.push(b.freeze());
    }

    /// Emit synthetic replies that have reached the head of the queue.
    fn drain_synthetic(&mut self) {
        while let Some(e) = self.expect.front() {
            if e.synthetic.is_none() {
                break;
            }
            if let Some(b) = self.expect.pop().and_then(|e| e.synthetic) {
                self.to_client.push(b);
            }
        }
    }

    /// Remember whether a statement may change settings Postgres does not report.
    fn note_statement(&mut self, body: &[u8]) {
        if !self.touched_unreported {
            self.touched_unreported = contains_ci(body, b"search_path")
                || contains_ci(body, b"discard")
                || contains_ci(body, b"reset")
                || (!self.login.unreported.is_empty() && contains_ci(body, b"set"));
        }
    }

    /// Check a server out of the pool for `shard` and bring its session settings in
    /// line with this client's, pipelined ahead of the client's first message.
    async fn attach(&mut self, shard: usize) -> Result<(), (&'static str, String)> {
        let pool = self.pool_for(shard);
        self.handle.activity.waiting(shard);
        let res = pool.checkout().await;
        self.handle.activity.attached();
        let co = res.map_err(|e| {
            let code = match &e {
                crate::pool::PoolError::WaitTimeout => sqlstate::QUERY_CANCELED,
                crate::pool::PoolError::Connect(_) => sqlstate::CANNOT_CONNECT,
                crate::pool::PoolError::Closed => sqlstate::CANNOT_CONNECT,
            };
            let shard_name = &self.db.cfg.shards[shard].name;
            (
                code,
                format!("shard {shard_name} of database {}: {e}", self.db.name),
            )
        })?;
        tracing::trace!(client = self.handle.id, server = co.conn.id, "attach");
        self.handle.server.store(Some(co.conn.cancel.clone()));
        self.app.active_transactions.fetch_add(1, Ordering::AcqRel);
        let mut att = Attached {
            co,
            pool,
            shard,
            since: Instant::now(),
        };
        self.server_status = b'I';
        let conn = &mut att.co.conn;
        // Keep the server's statement cache bounded: close the least used first.
        let cap = self.db.settings.max_prepared_statements;
        let evicted = conn.prepared.evict_over(cap);
        if !evicted.is_empty() {
            for d in evicted {
                let c = prepared::close_message(&mut self.scratch, &d.server_name);
                self.to_server.push(c);
                self.expect.push(Entry::swallow(b'C'));
            }
            let mut b = BytesMut::new();
            protocol::sync(&mut b);
            self.to_server.push(b.freeze());
            self.expect.push(Entry::swallow(b'S'));
        }
        let want_unreported = &self.login.unreported;
        if let Some(sql) = conn.sync_statement(&self.login.reported, want_unreported) {
            let mut b = BytesMut::new();
            protocol::query(&mut b, &sql);
            self.to_server.push(b.freeze());
            self.expect.push(Entry::swallow(b'Q'));
            conn.assume_synced(want_unreported);
        }
        self.server = Some(att);
        Ok(())
    }

    /// Scan what the server sent: match responses to expectations, drop the answers
    /// to injected statements, forward the rest as zero-copy runs.
    async fn process_server(&mut self) -> Result<(), End> {
        let pool_mode = self.db.settings.mode;
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let crate::server::ServerConn {
            rbuf,
            prepared: server_stmts,
            current: server_params,
            broken,
            ..
        } = &mut att.co.conn;
        // `pos` = end of the run of complete frames to forward as one chunk.
        let mut pos = 0;
        loop {
            if self.s_stream_left > 0 {
                let n = self.s_stream_left.min(rbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = rbuf.split_to(n).freeze();
                self.s_stream_left -= n;
                self.to_client.push(chunk);
                continue;
            }
            // Synthetic replies whose turn has come go out before this frame.
            if self.expect.front().is_some_and(|e| e.synthetic.is_some()) {
                if pos > 0 {
                    self.to_client.push(rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                while let Some(e) = self.expect.front() {
                    if e.synthetic.is_none() {
                        break;
                    }
                    if let Some(b) = self.expect.pop().and_then(|e| e.synthetic) {
                        self.to_client.push(b);
                    }
                }
            }
            let rest = &rbuf[pos..];
            let (tag, len) = match protocol::frame_header(rest, usize::MAX >> 1) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    *broken = true;
                    self.emit_fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid message from server: {e}"),
                    );
                    return Err(format!("server protocol error: {e}"));
                }
            };
            let mode = match tag {
                // Asynchronous messages belong to no entry.
                b'N' | b'A' => Mode::Forward,
                _ => self.expect.front().map(|e| e.mode).unwrap_or(Mode::Forward),
            };
            if rest.len() < len {
                if (tag == b'D' || tag == b'd') && len > STREAM_THRESHOLD && mode == Mode::Forward {
                    // Forward what we have of a big row/copy chunk; stream the rest.
                    let total = rbuf.len();
                    self.to_client.push(rbuf.split_to(total).freeze());
                    self.s_stream_left = len - (total - pos);
                    pos = 0;
                    continue;
                }
                break;
            }
            let mut forward = match mode {
                Mode::Forward => true,
                Mode::Swallow => false,
                Mode::SwallowOk => tag == b'E',
            };
            let mut replace: Option<Bytes> = None;
            match tag {
                b'S' => {
                    if let Some((k, v)) = params::parse_parameter_status(&rest[5..len]) {
                        server_params.set(k, v);
                        if let Some(c) = params::canonical(k) {
                            // The client's own view follows what its server reports.
                            self.login.reported.set(c, v);
                        }
                    }
                }
                b't' => {
                    if let Some(e) = self.expect.front() {
                        if let Some(def) = &e.stmt {
                            let _ = def.described.set(parse_param_description(&rest[5..len]));
                        }
                    }
                }
                b'N' | b'A' => {}
                _ => {
                    if tag == b'E' {
                        self.head_failed = true;
                        if mode == Mode::Swallow {
                            // A failed settings sync: tell the client as a warning.
                            let info = protocol::parse_error(&rest[5..len]);
                            tracing::warn!(
                                client = self.handle.id,
                                "internal statement failed on server: {}",
                                info.message
                            );
                            let mut w = BytesMut::from(&rest[..len]);
                            w[0] = b'N';
                            replace = Some(w.freeze());
                            forward = false;
                        }
                    }
                    let completes = self.expect.front().is_some_and(|e| e.completed_by(tag));
                    if completes {
                        let e = self.expect.pop().expect("front exists");
                        let failed = std::mem::take(&mut self.head_failed);
                        if e.tag == b'P' && failed {
                            if let Some(def) = &e.stmt {
                                server_stmts.remove(def);
                                if e.mode == Mode::Forward {
                                    // A failed Parse creates no statement, as in Postgres.
                                    self.stmts.retain(|_, d| !Arc::ptr_eq(d, def));
                                }
                            }
                        }
                        if tag == b'E' && e.is_extended() {
                            // Postgres now skips to Sync; so do we, undoing
                            // prepares that will not happen.
                            for d in self.expect.skip_to_sync() {
                                if let (b'P', Some(def)) = (d.tag, &d.stmt) {
                                    server_stmts.remove(def);
                                    if d.mode == Mode::Forward {
                                        self.stmts.retain(|_, x| !Arc::ptr_eq(x, def));
                                    }
                                }
                            }
                        }
                        if e.clear_prepared && !failed {
                            server_stmts.clear();
                        }
                        if tag == b'Z' {
                            let status = rest.get(5).copied().unwrap_or(b'I');
                            self.server_status = status;
                            if e.mode == Mode::Forward {
                                self.queries += 1;
                                if let Some(t) = self.query_start.take() {
                                    self.query_us += t.elapsed().as_micros() as u64;
                                }
                                if self.expect.ready_owed() > 0 {
                                    self.query_start = Some(Instant::now());
                                }
                                if pool_mode == PoolMode::Statement && status != b'I' {
                                    // Refuse before the client sees ReadyForQuery: the
                                    // server is inside a transaction block.
                                    if pos > 0 {
                                        self.to_client.push(rbuf.split_to(pos).freeze());
                                    }
                                    *broken = true;
                                    self.emit_fatal(
                                        sqlstate::FEATURE_NOT_SUPPORTED,
                                        "transaction blocks not allowed in statement pooling mode",
                                    );
                                    return Err("transaction in statement mode".into());
                                }
                                if self.masquerade {
                                    // Work done outside a held BEGIN: the client is
                                    // still in its (virtual) transaction.
                                    let mut z = BytesMut::from(&rest[..len]);
                                    z[5] = self.tx_status;
                                    replace = Some(z.freeze());
                                    forward = false;
                                } else {
                                    self.tx_status = status;
                                    if status == b'I' {
                                        self.tenants.local = None;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if forward {
                pos += len;
            } else {
                if pos > 0 {
                    self.to_client.push(rbuf.split_to(pos).freeze());
                    pos = 0;
                }
                let _ = rbuf.split_to(len);
                if let Some(r) = replace {
                    self.to_client.push(r);
                }
            }
        }
        if pos > 0 {
            self.to_client.push(rbuf.split_to(pos).freeze());
        }
        self.drain_synthetic();
        self.maybe_release().await
    }

    /// Release the server if the transaction is over and nothing is in flight.
    async fn maybe_release(&mut self) -> Result<(), End> {
        let Some(att) = self.server.as_ref() else {
            return Ok(());
        };
        if !self.expect.is_empty()
            || self.ext_open
            || !self.to_server.is_empty()
            || self.s_stream_left > 0
            || !att.co.conn.rbuf.is_empty()
            || self.server_status != b'I'
            || self.mode() == PoolMode::Session
        {
            return Ok(());
        }
        self.release().await;
        Ok(())
    }

    /// Return the server to its pool after a finished transaction.
    async fn release(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        tracing::trace!(client = self.handle.id, server = att.co.conn.id, "release");
        if self.touched_unreported {
            self.touched_unreported = false;
            sync_unreported_back(&mut att, &mut self.login).await;
        }
        self.handle.server.store(None);
        let xact_us = att.since.elapsed().as_micros() as u64;
        let stats = &att.pool.stats;
        stats.xact_count.fetch_add(1, Ordering::Relaxed);
        stats.xact_time_us.fetch_add(xact_us, Ordering::Relaxed);
        crate::admin::metrics::record_transaction(&att.pool, xact_us, self.query_us, self.queries);
        let stats_queries = self.queries;
        stats.query_count.fetch_add(self.queries, Ordering::Relaxed);
        stats
            .query_time_us
            .fetch_add(self.query_us, Ordering::Relaxed);
        stats
            .bytes_received
            .fetch_add(self.bytes_in, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(self.bytes_out, Ordering::Relaxed);
        self.queries = 0;
        self.query_us = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.masquerade = false;
        if let Some((tenant, _)) = self.tx_tenant.take() {
            let shard = &att.pool.key.shard;
            let queries = stats_queries;
            self.app.tenants.record_transaction(
                &self.db.name,
                tenant.as_str(),
                shard,
                xact_us,
                queries,
            );
        }
        att.pool.checkin(att.co);
        self.app.transaction_finished();
    }

    /// The server connection died under us: tell the client and end the session.
    async fn server_lost(&mut self) -> Result<(), End> {
        if let Some(mut att) = self.server.take() {
            // Forward whatever the server said last (e.g. FATAL 57P01 from pg_terminate_backend).
            att.co.conn.broken = true;
            let rest = att.co.conn.rbuf.split().freeze();
            self.to_client.push(rest);
            self.handle.server.store(None);
            att.pool.discard(att.co);
            self.app.transaction_finished();
        }
        self.expect.clear();
        self.emit_fatal(
            sqlstate::CONNECTION_FAILURE,
            "server connection lost; the transaction was aborted",
        );
        Err("server connection lost".into())
    }

    /// The client is gone: return the server only if it is clean, else close it.
    async fn detach_on_exit(&mut self) {
        let clean = self.server.as_ref().is_some_and(|a| !a.co.conn.broken)
            && self.expect.is_empty()
            && !self.ext_open
            && self.server_status == b'I'
            && self.s_stream_left == 0
            && self.c_stream_left == 0;
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.handle.server.store(None);
        if clean && self.mode() == PoolMode::Session {
            let q = att.pool.settings.load().server_reset_query.clone();
            if !q.is_empty() {
                let ok = att.co.conn.internal_row(&q).await.is_ok();
                att.co.conn.unreported = Default::default();
                if contains_ci(q.as_bytes(), b"discard all")
                    || contains_ci(q.as_bytes(), b"deallocate")
                {
                    att.co.conn.prepared.clear();
                }
                if !ok {
                    att.co.conn.broken = true;
                }
            }
        }
        if clean {
            att.pool.checkin(att.co);
        } else {
            att.pool.discard(att.co);
        }
        self.app.transaction_finished();
    }
}

/// After a transaction that may have changed unreported settings, read their values
/// back so the client keeps them and the server's bookkeeping stays true.
async fn sync_unreported_back(att: &mut Attached, login: &mut ClientLogin) {
    let mut keys: Vec<String> = vec!["search_path".to_string()];
    for (k, _) in login.unreported.iter().chain(att.co.conn.unreported.iter()) {
        if !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    }
    let mut sql = String::from("SELECT ");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("pg_catalog.current_setting(");
        crate::server::push_literal(&mut sql, k);
        sql.push_str(",true)");
    }
    match att.co.conn.internal_row(&sql).await {
        Ok(row) => {
            for (k, v) in keys.iter().zip(row) {
                if let Some(v) = v {
                    login.unreported.set(k, &v);
                    att.co.conn.unreported.set(k, &v);
                }
            }
        }
        Err(e) => {
            tracing::warn!("reading back session settings failed: {e}");
            att.co.conn.broken = true;
        }
    }
}

/// Metric label of a tenant source.
fn source_name(s: Source) -> &'static str {
    match s {
        Source::Startup => "startup",
        Source::Comment => "comment",
        Source::Set => "set",
        Source::Scan => "scan",
        Source::Default => "default",
    }
}

/// SQL that makes the server raise an error with our SQLSTATE and message.
fn raise_sql(code: &str, msg: &str) -> Option<String> {
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // The message goes inside a dollar-quoted body as a standard string literal.
    let mut lit = String::new();
    crate::server::push_literal(&mut lit, &msg.replace('$', "＄"));
    Some(format!(
        "DO $shardbouncer$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {lit}; END$shardbouncer$"
    ))
}

/// The statement name of a Describe/Close body aimed at a statement ('S').
fn describe_statement_name(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    if kind != b'S' {
        return None;
    }
    protocol::cstr(rest).map(|(n, _)| n)
}

fn is_named_parse(frame: &[u8]) -> bool {
    frame.first() == Some(&b'P') && frame.get(5).is_some_and(|&b| b != 0)
}

/// Named Parses then one Sync, nothing else.
fn is_parse_only_batch(msgs: &[(u8, Bytes)]) -> bool {
    msgs.len() >= 2
        && msgs.last().is_some_and(|(t, _)| *t == b'S')
        && msgs[..msgs.len() - 1]
            .iter()
            .all(|(t, f)| *t == b'P' && is_named_parse(f))
}

fn is_named_statement_close(frame: &[u8]) -> bool {
    frame.first() == Some(&b'C')
        && describe_statement_name(&frame[5..]).is_some_and(|n| !n.is_empty())
}

/// Query text of a 'Q' frame (without the trailing NUL).
fn query_text(frame: &[u8]) -> &[u8] {
    let b = frame.get(5..).unwrap_or_default();
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// Parameter type OIDs from a ParameterDescription body.
fn parse_param_description(body: &[u8]) -> Vec<u32> {
    let Some((n, mut rest)) = protocol::get_i16(body) else {
        return Vec::new();
    };
    let mut v = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let Some((oid, r)) = protocol::get_u32(rest) else {
            break;
        };
        v.push(oid);
        rest = r;
    }
    v
}

/// Parameters reported at login when no server could be reached yet.
fn fallback_params() -> crate::server::ParamSet {
    let mut p = crate::server::ParamSet::default();
    for (k, v) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("application_name", ""),
    ] {
        p.set(k, v);
    }
    p
}

/// ASCII case-insensitive substring search (needle given in lowercase).
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || hay.len() < needle.len() {
        return needle.is_empty();
    }
    let first = needle[0];
    let upper = first.to_ascii_uppercase();
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match memchr::memchr2(first, upper, &hay[i..=hay.len() - needle.len()]) {
            None => return false,
            Some(off) => {
                let at = i + off;
                if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_ci_finds_mixed_case() {
        assert!(contains_ci(b"SET Search_Path TO x", b"search_path"));
        assert!(!contains_ci(b"SELECT 1", b"search_path"));
        assert!(contains_ci(b"reset", b"reset"));
        assert!(!contains_ci(b"rese", b"reset"));
    }

    #[test]
    fn raise_sql_is_safe() {
        let s = raise_sql("0A000", "it's $x$ here").unwrap();
        assert!(s.contains("'it''s ＄x＄ here'"));
        assert!(raise_sql("0A0'0", "x").is_none());
    }
}
