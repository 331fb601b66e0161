//! The transaction loop of one logged-in client.
//!
//! A single event loop moves bytes both ways: client → server frames are inspected
//! only as far as pooling and routing need, server → client frames are scanned for
//! ReadyForQuery / ParameterStatus and forwarded as zero-copy `Bytes` chunks. Writes
//! are queued and sent from the same `select!`, so neither side can deadlock the other
//! and a slow reader applies back-pressure instead of growing buffers without bound.

use super::queue::OutQueue;
use super::ClientLogin;
use crate::app::{App, ClientHandle, DbRuntime};
use crate::config::PoolMode;
use crate::pool::{Checkout, Pool};
use crate::protocol::{self, sqlstate};
use crate::server::params;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Stop reading from one side while this much is queued for the other.
const HIGH_WATER: usize = 512 * 1024;
/// Frames bigger than this that may be streamed (DataRow, CopyData) are forwarded
/// piecemeal instead of being buffered whole.
const STREAM_THRESHOLD: usize = 64 * 1024;

/// A server attached to this client for the current transaction (or session).
struct Attached {
    co: Checkout,
    pool: Arc<Pool>,
    since: Instant,
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
    mode: PoolMode,
    max_msg: usize,
    server: Option<Attached>,
    /// Bytes read from the client, not yet processed.
    cbuf: BytesMut,
    to_client: OutQueue,
    to_server: OutQueue,
    scratch: BytesMut,
    /// ReadyForQuery messages still owed by the server.
    pending_rfq: u32,
    /// Of those, how many belong to statements we injected (answers are dropped).
    swallow_rfq: u32,
    /// Transaction status from the last ReadyForQuery the client saw.
    tx_status: u8,
    /// Extended-protocol messages sent since the last Sync.
    ext_open: bool,
    /// After an error we raised mid-batch: drop client messages until Sync.
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
}

impl Session {
    /// Create the session for a logged-in client.
    pub fn new(
        app: Arc<App>,
        db: Arc<DbRuntime>,
        user: String,
        password: Option<String>,
        login: ClientLogin,
        handle: Arc<ClientHandle>,
    ) -> Session {
        let snap = app.snapshot.load();
        let max_msg = snap.config.limits.max_message_size;
        let mode = db.settings.mode;
        drop(snap);
        Session {
            app,
            db,
            user,
            password,
            login,
            handle,
            mode,
            max_msg,
            server: None,
            cbuf: BytesMut::with_capacity(8192),
            to_client: OutQueue::default(),
            to_server: OutQueue::default(),
            scratch: BytesMut::with_capacity(1024),
            pending_rfq: 0,
            swallow_rfq: 0,
            tx_status: b'I',
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
        }
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
        let pool = self.pool_for(self.login_shard());
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

    /// Shard whose parameters the client sees at login.
    fn login_shard(&self) -> usize {
        0
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
        let deadline = match &self.server {
            None => settings.client_idle_timeout.non_zero().map(|t| {
                (
                    self.last_activity + t,
                    sqlstate::ADMIN_SHUTDOWN,
                    "client_idle_timeout",
                )
            }),
            Some(_) if self.pending_rfq == 0 && self.tx_status != b'I' => {
                settings.idle_transaction_timeout.non_zero().map(|t| {
                    (
                        self.last_activity + t,
                        sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                        "idle_transaction_timeout",
                    )
                })
            }
            Some(_) => None,
        };
        let read_client = self.to_server.len() < HIGH_WATER && !self.skip_blocked();
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

    fn skip_blocked(&self) -> bool {
        false
    }

    /// Handle every complete client frame in `cbuf`.
    async fn process_client(&mut self) -> Result<(), End> {
        if self.handle.killed.load(Ordering::Acquire) {
            self.emit_fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by administrator");
            return Err("killed".into());
        }
        while self.to_server.len() < HIGH_WATER {
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
        Ok(())
    }

    async fn handle_client_frame(&mut self, tag: u8, frame: Bytes) -> Result<(), End> {
        if self.skip_until_sync {
            if tag == b'S' {
                self.skip_until_sync = false;
                if self.server.is_some() {
                    self.send_to_server(tag, frame);
                } else {
                    self.emit_rfq();
                }
            }
            return Ok(());
        }
        match tag {
            b'X' => Err("client terminated".into()),
            b'Q' | b'F' | b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                if self.server.is_none() {
                    // Nothing to do on a server: answer locally instead of checking one out.
                    if tag == b'S' {
                        self.emit_rfq();
                        return Ok(());
                    }
                    if tag == b'H' {
                        return Ok(());
                    }
                    if let Err((code, msg)) = self.attach(0).await {
                        self.emit_error(code, &msg);
                        if tag == b'Q' || tag == b'F' {
                            self.emit_rfq();
                        } else {
                            self.skip_until_sync = true;
                        }
                        return Ok(());
                    }
                }
                if tag == b'Q' || tag == b'P' {
                    self.note_statement(&frame[5..]);
                }
                self.send_to_server(tag, frame);
                Ok(())
            }
            b'd' | b'c' | b'f' => {
                if self.server.is_some() {
                    self.send_to_server(tag, frame);
                }
                Ok(())
            }
            other => {
                self.emit_fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid frontend message type {}", other),
                );
                Err(format!("invalid frontend message type {other}"))
            }
        }
    }

    /// Queue a client frame for the attached server, keeping the protocol counters.
    fn send_to_server(&mut self, tag: u8, frame: Bytes) {
        match tag {
            b'Q' | b'F' | b'S' => {
                if self.pending_rfq == 0 {
                    self.query_start = Some(Instant::now());
                }
                self.pending_rfq += 1;
                if tag == b'S' {
                    self.ext_open = false;
                }
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => self.ext_open = true,
            _ => {}
        }
        self.to_server.push(frame);
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
        self.handle.server.store(Some(co.conn.cancel.clone()));
        self.app.active_transactions.fetch_add(1, Ordering::AcqRel);
        let mut att = Attached {
            co,
            pool,
            since: Instant::now(),
        };
        let want_unreported = &self.login.unreported;
        if let Some(sql) = att
            .co
            .conn
            .sync_statement(&self.login.reported, want_unreported)
        {
            let mut b = BytesMut::new();
            protocol::query(&mut b, &sql);
            self.to_server.push(b.freeze());
            self.pending_rfq += 1;
            self.swallow_rfq += 1;
            att.co.conn.assume_synced(want_unreported);
        }
        self.server = Some(att);
        Ok(())
    }

    /// Scan what the server sent: track ReadyForQuery and ParameterStatus, drop the
    /// answers to injected statements, forward the rest as zero-copy chunks.
    async fn process_server(&mut self) -> Result<(), End> {
        let Some(att) = self.server.as_mut() else {
            return Ok(());
        };
        let rbuf = &mut att.co.conn.rbuf;
        // `pos` = end of the run of complete frames to forward as one chunk.
        let mut pos = 0;
        loop {
            if self.s_stream_left > 0 {
                debug_assert_eq!(pos, 0);
                let n = self.s_stream_left.min(rbuf.len());
                if n == 0 {
                    break;
                }
                let chunk = rbuf.split_to(n).freeze();
                self.s_stream_left -= n;
                self.bytes_out += 0;
                self.to_client.push(chunk);
                continue;
            }
            let rest = &rbuf[pos..];
            let (tag, len) = match protocol::frame_header(rest, usize::MAX >> 1) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    att.co.conn.broken = true;
                    self.emit_fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("invalid message from server: {e}"),
                    );
                    return Err(format!("server protocol error: {e}"));
                }
            };
            if rest.len() < len {
                if (tag == b'D' || tag == b'd') && len > STREAM_THRESHOLD && self.swallow_rfq == 0 {
                    // Forward what we have of a big row/copy chunk; stream the remainder.
                    let total = rbuf.len();
                    let chunk = rbuf.split_to(total).freeze();
                    self.to_client.push(chunk);
                    self.s_stream_left = len - (total - pos);
                    pos = 0;
                    continue;
                }
                break;
            }
            let swallowing = self.swallow_rfq > 0;
            match tag {
                b'Z' => {
                    let status = rest.get(5).copied().unwrap_or(b'I');
                    self.pending_rfq = self.pending_rfq.saturating_sub(1);
                    if swallowing {
                        self.swallow_rfq -= 1;
                    } else {
                        self.tx_status = status;
                        self.queries += 1;
                        if let Some(t) = self.query_start.take() {
                            self.query_us += t.elapsed().as_micros() as u64;
                        }
                        if self.pending_rfq > 0 {
                            self.query_start = Some(Instant::now());
                        }
                    }
                }
                b'S' => {
                    if let Some((k, v)) = params::parse_parameter_status(&rest[5..len]) {
                        att.co.conn.current.set(k, v);
                        if let Some(c) = params::canonical(k) {
                            // The client's own view follows what its server reports.
                            self.login.reported.set(c, v);
                        }
                    }
                }
                _ => {}
            }
            if swallowing {
                // Flush the forwardable run before this frame, then drop or convert it.
                if pos > 0 {
                    let chunk = rbuf.split_to(pos).freeze();
                    self.to_client.push(chunk);
                    pos = 0;
                }
                let mut frame = rbuf.split_to(len);
                if tag == b'E' {
                    // A failed settings sync: tell the client as a warning, not an error.
                    frame[0] = b'N';
                    let info = protocol::parse_error(&frame[5..]);
                    tracing::warn!(
                        client = self.handle.id,
                        "session setting failed on server: {}",
                        info.message
                    );
                    self.to_client.push(frame.freeze());
                }
            } else {
                pos += len;
            }
        }
        if pos > 0 {
            let chunk = rbuf.split_to(pos).freeze();
            self.to_client.push(chunk);
        }
        self.maybe_release().await
    }

    /// Release the server if the transaction is over and nothing is in flight.
    async fn maybe_release(&mut self) -> Result<(), End> {
        let Some(att) = self.server.as_ref() else {
            return Ok(());
        };
        if self.pending_rfq > 0
            || self.ext_open
            || !self.to_server.is_empty()
            || self.s_stream_left > 0
        {
            return Ok(());
        }
        if !att.co.conn.rbuf.is_empty() {
            return Ok(());
        }
        match self.mode {
            PoolMode::Session => Ok(()),
            PoolMode::Statement if self.tx_status != b'I' => {
                self.emit_fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "transaction blocks not allowed in statement pooling mode",
                );
                Err("transaction in statement mode".into())
            }
            _ if self.tx_status != b'I' => Ok(()),
            _ => {
                self.release().await;
                Ok(())
            }
        }
    }

    /// Return the server to its pool after a finished transaction.
    async fn release(&mut self) {
        let Some(mut att) = self.server.take() else {
            return;
        };
        if self.touched_unreported {
            self.touched_unreported = false;
            sync_unreported_back(&mut att, &mut self.login).await;
        }
        self.handle.server.store(None);
        let stats = &att.pool.stats;
        stats.xact_count.fetch_add(1, Ordering::Relaxed);
        let xact_us = att.since.elapsed().as_micros() as u64;
        stats.xact_time_us.fetch_add(xact_us, Ordering::Relaxed);
        crate::admin::metrics::record_transaction(&att.pool, xact_us, self.query_us, self.queries);
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
        self.emit_fatal(
            sqlstate::CONNECTION_FAILURE,
            "server connection lost; the transaction was aborted",
        );
        Err("server connection lost".into())
    }

    /// The client is gone: return the server only if it is clean, else close it.
    async fn detach_on_exit(&mut self) {
        let clean = self.pending_rfq == 0
            && !self.ext_open
            && self.tx_status == b'I'
            && self.s_stream_left == 0
            && self.c_stream_left == 0;
        let Some(mut att) = self.server.take() else {
            return;
        };
        self.handle.server.store(None);
        if clean && self.mode == PoolMode::Session {
            let q = att.pool.settings.load().server_reset_query.clone();
            if !q.is_empty() {
                // Flush anything still queued first (the server is idle, so it is nothing).
                let ok = att.co.conn.internal_row(&q).await.is_ok();
                att.co.conn.unreported = Default::default();
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
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
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
    use super::contains_ci;

    #[test]
    fn contains_ci_finds_mixed_case() {
        assert!(contains_ci(b"SET Search_Path TO x", b"search_path"));
        assert!(!contains_ci(b"SELECT 1", b"search_path"));
        assert!(contains_ci(b"reset", b"reset"));
        assert!(!contains_ci(b"rese", b"reset"));
    }
}
