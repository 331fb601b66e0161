//! The transaction loop of one logged-in client.
//!
//! A single event loop moves bytes both ways. Client → server frames are inspected
//! only as far as pooling, prepared statements and routing need; server → client
//! frames are matched against [`Expectations`] and forwarded as zero-copy `Bytes`
//! runs. Writes are queued and sent from the same `select!`, so neither side can
//! deadlock the other and a slow reader applies back-pressure instead of growing
//! buffers without bound.
//!
//! Work is handled in units: a simple Query or FunctionCall, or an extended
//! protocol batch up to Sync/Flush. Each unit's text is analyzed once
//! ([`crate::router::analyze`]); on a sharded database [`crate::router::decide`]
//! says where it runs and the session only carries that out. A bare `BEGIN` is
//! answered locally and replayed, with the statements held behind it, on the shard
//! of the first statement that names a tenant.

use super::expect::{Entry, Expectations, Mode};
use super::queue::OutQueue;
use super::ClientLogin;
use crate::app::{App, ClientHandle, DbRuntime};
use crate::config::PoolMode;
use crate::pool::{Checkout, Pool};
use crate::protocol::{self, sqlstate, Bind, Parse};
use crate::router::{Effects, Facts, Mention, Source, TenantKey, Tenants};
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
/// Most custom setting names tracked per client.
const MAX_CUSTOM_SETTINGS: usize = 64;

/// A server attached to this client for the current transaction (or session).
struct Attached {
    co: Checkout,
    pool: Arc<Pool>,
    shard: usize,
    since: Instant,
    /// Server-side state the work sent on this server may have created: what to
    /// reset or read back before the server goes to another client.
    effects: Effects,
}

/// A unit of work.
enum Unit {
    /// A simple Query or FunctionCall (tag, frame).
    Simple(u8, Bytes),
    /// Extended-protocol messages up to and including a Sync or Flush.
    Batch(Vec<(u8, Bytes)>),
}

/// A BEGIN answered locally, with the statements that wait for it.
struct Held {
    /// The client's BEGIN (a Query frame), replayed first.
    begin: Bytes,
    /// Transaction-scoped statements (SET LOCAL, SAVEPOINT, ...) answered locally
    /// and replayed inside the transaction, in order.
    stmts: Vec<Bytes>,
    /// What the held statements may leave on the server.
    effects: Effects,
}

/// The client's unnamed statement: its routing facts, and its Parse frame so it can
/// be re-created on a server that lacks it (after a move to another shard, or when
/// shardbouncer had to use the unnamed statement itself).
#[derive(Default)]
struct Unnamed {
    facts: Facts,
    /// Parameter types declared in the Parse (4 bytes each).
    declared: Bytes,
    /// Parameter types the server described (ParameterDescription).
    described: Vec<u32>,
    /// The client's Parse, for re-creating the statement elsewhere.
    parse: Option<Bytes>,
    /// The attached server holds this statement as its unnamed statement.
    on_server: bool,
}

impl Unnamed {
    fn types(&self) -> crate::router::bind::ParamTypes<'_> {
        crate::router::bind::ParamTypes {
            declared: &self.declared,
            described: &self.described,
        }
    }
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
    /// The open extended batch did tenant work: it is pinned to its shard.
    batch_pinned: bool,
    /// The open extended batch executed something.
    batch_executed: bool,
    /// The server reported an error in the open extended batch and skips every
    /// message up to the next Sync: nothing sent meanwhile gets an answer.
    server_skipping: bool,
    /// After an error we raised with no server: drop client messages until Sync.
    skip_until_sync: bool,
    /// In COPY FROM STDIN started by an extended Execute: the server ignores Sync
    /// and Flush until CopyDone/CopyFail, so they pass through unanswered.
    copy_in_ext: bool,
    /// Bytes of a large client frame still to pass through unparsed.
    c_stream_left: usize,
    /// Bytes of a large server frame still to pass through unparsed.
    s_stream_left: usize,
    /// The client's `standard_conforming_strings`: how its literals are lexed.
    std_strings: bool,
    last_activity: Instant,
    query_start: Option<Instant>,
    // Per-attachment counters, flushed to the pool's atomics on release.
    bytes_in: u64,
    bytes_out: u64,
    queries: u64,
    query_us: u64,
    client_parses: u64,
    server_parses: u64,
    binds: u64,
    /// The client's named prepared statements.
    stmts: HashMap<Bytes, Arc<StmtDef>>,
    /// The client's unnamed statement.
    unnamed: Unnamed,
    /// Pools by shard index, for `db.generation` = `pools_gen`.
    pools: Vec<Option<Arc<Pool>>>,
    pools_gen: u64,
    /// Reused analysis of the text being routed (no allocation per query).
    facts: Facts,
    /// Reused scratch for analyzing a text under the other
    /// `standard_conforming_strings`.
    alt_facts: Facts,
    /// Reused analyses of the Parses in the batch being routed, in order.
    batch_facts: Vec<Facts>,
    /// Reused buffer for the tenant mentions of a unit of work.
    mentions: Vec<Mention>,
    /// Tenant settings of the session.
    tenants: Tenants,
    /// A BEGIN answered locally, to replay on the first routed shard.
    held: Option<Held>,
    /// shardbouncer failed the held transaction itself: 25P02 until it ends.
    held_failed: bool,
    /// Extended messages held until the batch can be routed.
    batch: Vec<(u8, Bytes)>,
    /// Work that must wait until the attached server is released.
    stalled: Option<Unit>,
    /// Tenant the current transaction is pinned by.
    tx_tenant: Option<(TenantKey, Source)>,
    /// Tenant-free work running outside a held BEGIN: the client must keep seeing 'T'.
    masquerade: bool,
    /// Custom (dotted) settings this client has set: read back by name.
    custom_settings: Vec<String>,
}

mod backend;
mod forward;
mod routing;
mod util;

use util::*;

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
        let custom_settings = login
            .unreported
            .iter()
            .filter(|(k, _)| k.contains('.'))
            .map(|(k, _)| k.to_string())
            .take(MAX_CUSTOM_SETTINGS)
            .collect();
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
            batch_pinned: false,
            batch_executed: false,
            server_skipping: false,
            skip_until_sync: false,
            copy_in_ext: false,
            c_stream_left: 0,
            s_stream_left: 0,
            std_strings: true,
            last_activity: Instant::now(),
            query_start: None,
            bytes_in: 0,
            bytes_out: 0,
            queries: 0,
            query_us: 0,
            client_parses: 0,
            server_parses: 0,
            binds: 0,
            stmts: HashMap::new(),
            unnamed: Unnamed::default(),
            facts: Facts::default(),
            alt_facts: Facts::default(),
            batch_facts: Vec::new(),
            mentions: Vec::new(),
            pools: Vec::new(),
            pools_gen: 0,
            tenants: Tenants {
                startup: startup_tenant,
                ..Default::default()
            },
            held: None,
            held_failed: false,
            batch: Vec::new(),
            stalled: None,
            tx_tenant: None,
            masquerade: false,
            custom_settings,
        }
    }

    fn mode(&self) -> PoolMode {
        self.db.settings.mode
    }

    /// The routing key of this database ("" when it is not routed: nothing in a
    /// text is then a tenant).
    fn routing_key(&self) -> &[u8] {
        self.db
            .routing
            .as_ref()
            .map(|r| r.key.as_bytes())
            .unwrap_or_default()
    }

    /// The pool of `shard`, cached per session: looking it up in the process-wide
    /// map costs a lock and a key built from three strings, once per transaction
    /// otherwise. A reload (new generation) empties the cache.
    fn pool_for(&mut self, shard: usize) -> Arc<Pool> {
        if self.pools_gen != self.db.generation {
            self.pools.clear();
            self.pools_gen = self.db.generation;
        }
        if let Some(Some(p)) = self.pools.get(shard) {
            return p.clone();
        }
        let p = self
            .app
            .pool(&self.db, &self.user, shard, self.password.as_deref());
        if self.pools.len() <= shard {
            self.pools.resize(shard + 1, None);
        }
        self.pools[shard] = Some(p.clone());
        p
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
        let pool = self.pool_for(self.home_shard());
        let mut defaults = pool.server_params.lock().unwrap().clone();
        if defaults.is_none() {
            // Any shard's parameters will do (they are the same Postgres settings);
            // this keeps logins fast while the preferred shard is down.
            for shard in 0..self.db.cfg.shards.len() {
                let other = self.pool_for(shard);
                defaults = other.server_params.lock().unwrap().clone();
                if defaults.is_some() {
                    break;
                }
            }
        }
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
        self.std_strings = ps.get("standard_conforming_strings") != Some("off");
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
    fn home_shard(&self) -> usize {
        match &self.db.routing {
            Some(rt) => rt.home_shard(&self.tenants),
            None => 0,
        }
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
        // Wake-ups for KILL and shutdown are registered once for the whole session:
        // re-registering them on every event costs a lock each time.
        let (handle, app) = (self.handle.clone(), self.app.clone());
        let kill = handle.kill.notified();
        let shutdown = app.shutdown.notified();
        tokio::pin!(kill, shutdown);
        kill.as_mut().enable();
        shutdown.as_mut().enable();
        loop {
            self.process_client().await?;
            if self.server.is_none() && self.app.shutting_down.load(Ordering::Acquire) {
                self.emit_fatal(sqlstate::ADMIN_SHUTDOWN, "shardbouncer is shutting down");
                return Err("shutdown".into());
            }
            let ev = self.wait(stream, kill.as_mut(), shutdown.as_mut()).await;
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
                Event::Shutdown => {
                    // Re-arm; the check at the top of the loop ends an idle session.
                    shutdown.set(app.shutdown.notified());
                    shutdown.as_mut().enable();
                }
            }
        }
    }

    /// Wait for the next I/O event or timer.
    async fn wait(
        &mut self,
        stream: &mut super::ClientStream,
        kill: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        shutdown: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Event {
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
            _ = kill => Event::Killed,
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
            _ = shutdown, if idle_for_shutdown => Event::Shutdown,
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
        // Work answered locally while a server was attached produces no server
        // traffic that would trigger the release: check here too.
        self.maybe_release().await
    }

    async fn handle_client_frame(&mut self, tag: u8, frame: Bytes) -> Result<(), End> {
        if let Err(what) = protocol::validate_frontend(tag, &frame[5..]) {
            // As Postgres: a malformed message ends the connection.
            self.emit_fatal(sqlstate::PROTOCOL_VIOLATION, what);
            return Err(what.into());
        }
        if self.copy_in_ext {
            match tag {
                // Ignored by the server during COPY IN: no answer to expect.
                b'S' | b'H' => {
                    self.to_server.push(frame);
                    return Ok(());
                }
                b'c' | b'f' => self.copy_in_ext = false,
                _ => {}
            }
        }
        if self.server.is_none() && self.held.is_none() {
            // Between transactions: pick up reloaded settings and maps.
            self.refresh_db();
        }
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
        match tag {
            b'X' => Err("client terminated".into()),
            b'Q' | b'F' => self.route_unit(Unit::Simple(tag, frame)).await,
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                if self.db.routing.is_none() {
                    self.plain_ext(tag, frame).await;
                    return Ok(());
                }
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

    /// Remember custom setting names the client set, so they are read back by name.
    fn note_custom_settings(&mut self, names: &[String]) {
        for n in names {
            if self.custom_settings.len() < MAX_CUSTOM_SETTINGS && !self.custom_settings.contains(n)
            {
                self.custom_settings.push(n.clone());
            }
        }
    }
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
