//! Backend (Postgres) connections: connect, authenticate, track reported parameters,
//! bring session parameters in line with a client, and reset.

pub mod params;
pub mod prepared;

pub use params::{ParamSet, TRACKED_PARAMS};

use crate::protocol::tag::backend as be;
use crate::protocol::{self, md5, scram, sqlstate, ErrorInfo};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// Role to log in as.
    pub user: String,
    /// Password (plaintext or md5 hash), if any.
    pub password: Option<String>,
    /// SCRAM keys proven by a client (pass-through), used when there is no password.
    pub scram_keys: Option<scram::ScramKeys>,
    /// TLS toward this server.
    pub tls: crate::config::ServerTls,
}

/// What it takes to cancel a query running on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    /// Server address.
    pub addr: SocketAddr,
    /// Backend pid.
    pub pid: i32,
    /// Backend secret.
    pub secret: i32,
    /// The connection's local address and when it was made, for the
    /// console's `SHOW SERVERS` of a server a client holds (its state is
    /// lent to the session then: probe SS saw them blank).
    pub local_addr: Option<SocketAddr>,
    /// See `local_addr`.
    pub created: Instant,
}

/// Why a server connection failed.
#[derive(Debug, Clone)]
pub enum ServerError {
    /// TCP-level or protocol failure; retrying may help.
    Io(String),
    /// The server refused us with an ErrorResponse (bad password, unknown db...).
    Refused(ErrorInfo),
    /// The session settings read back after a client's transaction are more
    /// than [`MAX_SESSION_SETTINGS_BYTES`]: they cannot follow the client.
    SettingsTooLarge(usize),
}

/// What [`ServerConn::reset_and_read_back`] read back after a client's
/// transaction.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The session settings the client has now, reported parameters aside
    /// (they travel by ParameterStatus); the default ones are left out.
    pub settings: ParamSet,
    /// The reported parameters the client set in its session (source
    /// `session`): the others are at their reset values, which for a client
    /// are the ones it gave at connect, not the server's.
    pub reported_set: Vec<&'static str>,
}

/// Most bytes of session settings (names and values, as read back) that
/// follow one client from server to server. Each copy is kept by the client,
/// by the server it was read from, and in the statement that sets it on the
/// next server (probe: 30 settings of 1 MiB took the process from 8 MB to
/// 165 MB, never given back). Far above what applications set for the
/// session; `SET LOCAL` values are not read back and not counted.
pub const MAX_SESSION_SETTINGS_BYTES: usize = 1 << 20;

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Io(s) => f.write_str(s),
            ServerError::Refused(e) => write!(f, "{} ({})", e.message, e.code),
            ServerError::SettingsTooLarge(n) => write!(
                f,
                "session settings of {n} bytes, more than the {} KiB that can follow a client",
                MAX_SESSION_SETTINGS_BYTES >> 10
            ),
        }
    }
}

impl ServerError {
    /// Whether trying again (within server_connect_timeout) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ServerError::Io(_) => true,
            // Too many connections or the server starting up/shutting down: transient.
            ServerError::Refused(e) => [
                sqlstate::TOO_MANY_CONNECTIONS,
                sqlstate::CANNOT_CONNECT_NOW,
                sqlstate::ADMIN_SHUTDOWN,
            ]
            .contains(&e.code.as_str()),
            ServerError::SettingsTooLarge(_) => false,
        }
    }

    /// SQLSTATE to report to a client.
    pub fn sqlstate(&self) -> &str {
        match self {
            ServerError::Io(_) => sqlstate::CANNOT_CONNECT,
            ServerError::Refused(e) => &e.code,
            ServerError::SettingsTooLarge(_) => sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Io(e.to_string())
}

/// Monotonic id source for server connections (console `ptr`/`id`).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One authenticated backend connection: its socket and its state. Derefs to the
/// state, so `conn.prepared`, `conn.broken` and so on read naturally; the client
/// session takes the state (not the socket) into its socket-free core while it
/// uses the server.
pub struct ServerConn {
    /// The socket (plain or TLS).
    pub stream: crate::net::Stream,
    /// The worker whose event loop the socket is registered with ([`crate::net::worker`]).
    pub home: u16,
    /// Everything else. Boxed: it is lent to the client's session for each
    /// transaction and given back, and moved by value it was a dozen copies of
    /// 336 bytes per transaction (callgrind).
    pub state: Box<ServerState>,
}

impl ServerConn {
    /// Whether the socket is registered with the calling thread's worker.
    pub fn is_home(&self) -> bool {
        self.home == crate::net::worker()
    }

    /// Register the socket with the calling thread's worker (a server handed to a
    /// client on another worker, when [`is_home`](Self::is_home) said no); see
    /// [`crate::net::Stream::rehome`].
    pub fn rehome(&mut self) -> std::io::Result<()> {
        self.stream.rehome()?;
        self.home = crate::net::worker();
        Ok(())
    }

    /// Lend the state out (to a client's session, for a transaction), leaving
    /// a [`ServerState::placeholder`] in its place until
    /// [`restore_state`](Self::restore_state). The placeholders' boxes are
    /// kept per thread, so the common transaction allocates none.
    pub fn lend_state(&mut self) -> Box<ServerState> {
        let stand_in = ServerState::placeholder(&self.state);
        let stand_in = match PLACEHOLDERS.with_borrow_mut(Vec::pop) {
            Some(mut spare) => {
                *spare = stand_in;
                spare
            }
            None => Box::new(stand_in),
        };
        std::mem::replace(&mut self.state, stand_in)
    }

    /// Put back the state [`lend_state`](Self::lend_state) lent (or what
    /// became of it).
    pub fn restore_state(&mut self, state: Box<ServerState>) {
        let stand_in = std::mem::replace(&mut self.state, state);
        PLACEHOLDERS.with_borrow_mut(|spares| {
            // A placeholder has id 0 (real ones count from 1).
            if stand_in.id == 0 && spares.len() < PLACEHOLDERS_KEPT {
                spares.push(stand_in);
            }
        });
    }
}

/// Placeholders kept per thread for [`ServerConn::lend_state`]: one per
/// server lent at once on the thread, up to a bound.
const PLACEHOLDERS_KEPT: usize = 64;

thread_local! {
    // Boxes, not values: a placeholder is handed out as the box itself.
    #[allow(clippy::vec_box)]
    static PLACEHOLDERS: std::cell::RefCell<Vec<Box<ServerState>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl std::ops::Deref for ServerConn {
    type Target = ServerState;
    fn deref(&self) -> &ServerState {
        &self.state
    }
}

impl std::ops::DerefMut for ServerConn {
    fn deref_mut(&mut self) -> &mut ServerState {
        &mut self.state
    }
}

/// What shardbouncer knows and keeps about one backend connection, apart from its
/// socket. Pure data: the session core works on it without any I/O.
#[derive(Debug)]
pub struct ServerState {
    /// Unread bytes already received from the server.
    pub rbuf: BytesMut,
    /// Process-unique id.
    pub id: u64,
    /// Cancel key, shared with the client that holds this server.
    pub cancel: Arc<CancelKey>,
    /// Parameters as reported at connect time: the server's defaults.
    pub initial: ParamSet,
    /// Parameters as currently set on the server.
    pub current: ParamSet,
    /// Named statements prepared on this server (content-addressed).
    pub prepared: prepared::ServerStatements,
    /// Settings Postgres does not report (search_path, statement_timeout, ...) that we
    /// set on this server; a key that is absent is at the server's default.
    pub unreported: ParamSet,
    /// When the connection was made.
    pub created: Instant,
    /// When it last went back to the pool.
    pub last_used: Instant,
    /// Pool generation it belongs to (RECONNECT bumps the pool's).
    pub generation: u64,
    /// Set when the connection must not be reused.
    pub broken: bool,
    /// Local address of the socket (console).
    pub local_addr: Option<SocketAddr>,
    /// The client whose transaction may have advanced sequences here (an
    /// INSERT's default calls `nextval`): what `currval`/`lastval` would
    /// reveal. Any other client gets `DISCARD SEQUENCES` pipelined ahead of
    /// its work ([`Self::sync_statement`]) instead of a round trip on release.
    pub sequences_of: Option<i32>,
    /// A client used temporary objects here: Postgres then refuses to change
    /// `temp_buffers` for the connection's life, whatever `DISCARD TEMP`
    /// did, and a client's `temp_buffers` refused here says nothing of it.
    pub temps_used: bool,
}

impl ServerState {
    /// State of a connection to `addr` that has not logged in yet.
    pub fn new(addr: SocketAddr, local_addr: Option<SocketAddr>) -> ServerState {
        ServerState {
            rbuf: BytesMut::with_capacity(16 * 1024),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cancel: Arc::new(CancelKey {
                addr,
                pid: 0,
                secret: 0,
                local_addr,
                created: Instant::now(),
            }),
            initial: ParamSet::default(),
            current: ParamSet::default(),
            prepared: Default::default(),
            unreported: ParamSet::default(),
            created: Instant::now(),
            last_used: Instant::now(),
            generation: 0,
            broken: false,
            local_addr,
            sequences_of: None,
            temps_used: false,
        }
    }

    /// A placeholder left in a [`ServerConn`] while its state is lent out (once
    /// per transaction): it allocates nothing and reads no clock, taking the
    /// times it shows from `like`, the state it stands in for.
    pub fn placeholder(like: &ServerState) -> ServerState {
        /// One cancel key for every placeholder: it is never used to cancel.
        static NOBODY: std::sync::LazyLock<Arc<CancelKey>> = std::sync::LazyLock::new(|| {
            Arc::new(CancelKey {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                pid: 0,
                secret: 0,
                local_addr: None,
                created: Instant::now(),
            })
        });
        ServerState {
            rbuf: BytesMut::new(),
            id: 0,
            cancel: NOBODY.clone(),
            initial: ParamSet::default(),
            current: ParamSet::default(),
            prepared: Default::default(),
            unreported: ParamSet::default(),
            created: like.created,
            last_used: like.last_used,
            generation: 0,
            broken: true,
            local_addr: None,
            sequences_of: None,
            temps_used: false,
        }
    }

    /// Record a ParameterStatus body the server sent.
    pub fn track_parameter_status(&mut self, body: &[u8]) {
        if let Some((k, v)) = protocol::parse_parameter_status(body) {
            self.current.set(k, v);
        }
    }

    /// Build the statement that makes this server's session settings match a client's:
    /// `want` holds reported parameters the client set, `told` the values the
    /// client was told at login (what stands in for a parameter it did not
    /// set; the server's own default only when neither has it),
    /// `want_unreported` the other settings it set (including `role` and
    /// `session_authorization`). Returns `None` when nothing differs, which is the
    /// common case.
    ///
    /// Why `told` and not the server's default: the client lexes and quotes
    /// by what it was told (`standard_conforming_strings`,
    /// `client_encoding`), and so does the router. A shard whose default
    /// differs (its own configuration, an `ALTER DATABASE .. SET` a tenant
    /// ran) must not run the client's text under another reading (probe DF
    /// F1: a literal ending in a backslash hid a second tenant's row from the
    /// router on a shard with `standard_conforming_strings = off`, and a
    /// psycopg2 app quoting by `on` was open to injection).
    pub fn sync_statement(
        &self,
        want: &ParamSet,
        told: &ParamSet,
        want_unreported: &ParamSet,
    ) -> Option<SyncStatement> {
        let mut sql = String::new();
        // Identity first: SET SESSION AUTHORIZATION resets the role, and settings
        // applied after a role change are checked against that role.
        for key in ["session_authorization", "role"] {
            let (want, have) = (want_unreported.get(key), self.unreported.get(key));
            if want == have {
                continue;
            }
            match want {
                Some(v) => push_set_config(&mut sql, key, v),
                None => push_reset(&mut sql, key),
            }
        }
        let (want_t, current) = (want.tracked(), self.current.tracked());
        for (i, &key) in TRACKED_PARAMS.iter().enumerate() {
            // What the client was told, then the server's default, stand in
            // for what the client has not set (looked up one by one: most
            // clients set one or two of the six).
            let desired = want_t[i]
                .or_else(|| told.tracked_value(i))
                .or_else(|| self.initial.tracked_value(i));
            let Some(desired) = desired else {
                continue;
            };
            if current[i] != Some(desired) {
                push_set_config(&mut sql, key, desired);
            }
        }
        for (k, v) in want_unreported.iter() {
            if is_identity(k) {
                continue;
            }
            if self.unreported.get(k) != Some(v) {
                push_set_config(&mut sql, k, v);
            }
        }
        for (k, _) in self.unreported.iter() {
            if !is_identity(k) && want_unreported.get(k).is_none() {
                push_reset(&mut sql, k);
            }
        }
        // Under the last client's settings still: see READ_COMMITTED, UNTIMED.
        (!sql.is_empty()).then(|| SyncStatement {
            sql: format!("{READ_COMMITTED}{UNTIMED}{sql}"),
        })
    }

    /// Whether `client`, about to use this server, must first have the
    /// sequence state of another client's transactions discarded (and note
    /// that it will be).
    pub fn take_foreign_sequences(&mut self, client: i32) -> bool {
        let foreign = self.sequences_of.is_some_and(|c| c != client);
        if foreign {
            self.sequences_of = None;
        }
        foreign
    }

    /// Note that a statement from [`sync_statement`](Self::sync_statement) ran.
    pub fn assume_synced(&mut self, want_unreported: &ParamSet) {
        if self.unreported != *want_unreported {
            self.unreported = want_unreported.clone();
        }
    }
}

impl ServerConn {
    /// Connect and log in. One attempt; the pool retries within `server_connect_timeout`.
    pub async fn connect(target: &Target, timeout: Duration) -> Result<ServerConn, ServerError> {
        match tokio::time::timeout(timeout, Self::connect_inner(target)).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::Io(format!(
                "timed out connecting to {}:{}",
                target.host, target.port
            ))),
        }
    }

    async fn connect_inner(t: &Target) -> Result<ServerConn, ServerError> {
        let stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| {
                ServerError::Io(format!("cannot connect to {}:{}: {e}", t.host, t.port))
            })?;
        stream.set_nodelay(true).map_err(io_err)?;
        let addr = stream.peer_addr().map_err(io_err)?;
        let local_addr = stream.local_addr().ok();
        let mut stream = crate::net::Stream::Plain(stream);
        crate::tls::negotiate_server(&mut stream, &t.tls, &t.host)
            .await
            .map_err(|e| match e {
                crate::tls::NegotiateError::Io(m) => ServerError::Io(m),
                // Not retryable: the answer will be the same until the configuration changes.
                crate::tls::NegotiateError::Refused(m) => ServerError::Refused(ErrorInfo {
                    severity: "FATAL".into(),
                    code: sqlstate::CANNOT_CONNECT.into(),
                    message: m,
                }),
            })?;
        let mut conn = ServerConn {
            stream,
            home: crate::net::worker(),
            state: Box::new(ServerState::new(addr, local_addr)),
        };
        let mut out = BytesMut::new();
        protocol::startup_message(&mut out, &[("user", &t.user), ("database", &t.dbname)]);
        conn.stream.write_all(&out).await.map_err(io_err)?;
        let mut scram_client: Option<scram::ScramClient> = None;
        let (mut pid, mut secret) = (0, 0);
        loop {
            let (tag, body) = conn.read_message().await?;
            match tag {
                be::AUTHENTICATION => {
                    let mut b = &body[..];
                    if b.len() < 4 {
                        return Err(io_err("short authentication message"));
                    }
                    let code = b.get_i32();
                    out.clear();
                    match code {
                        0 => {}
                        3 => {
                            let pw = need_password(t)?;
                            let mut d = pw.as_bytes().to_vec();
                            d.push(0);
                            protocol::password_message(&mut out, &d);
                        }
                        5 => {
                            let pw = need_password(t)?;
                            let salt: [u8; 4] = b
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| io_err("short md5 salt"))?;
                            let resp = if pw.starts_with("md5") && pw.len() == 35 {
                                md5::md5_salted_from_hash(pw, salt)
                                    .ok_or_else(|| io_err("invalid md5 hash"))?
                            } else {
                                md5::md5_salted_from_password(&t.user, pw, salt)
                            };
                            let mut d = resp.into_bytes();
                            d.push(0);
                            protocol::password_message(&mut out, &d);
                        }
                        10 => {
                            // Mechanisms list: we speak SCRAM-SHA-256 without channel binding.
                            let offered = b.split(|&c| c == 0).any(|m| m == b"SCRAM-SHA-256");
                            if !offered {
                                return Err(io_err(
                                    "server offered no SASL mechanism we support (need SCRAM-SHA-256)",
                                ));
                            }
                            let c = match (&t.password, &t.scram_keys) {
                                (Some(pw), _) => {
                                    scram::ScramClient::new(pw, scram::generate_nonce())
                                }
                                // Pass-through: keys a client proved with SCRAM.
                                (None, Some(k)) => scram::ScramClient::with_keys(
                                    k.client_key,
                                    k.server_key,
                                    scram::generate_nonce(),
                                ),
                                (None, None) => return Err(no_password(t)),
                            };
                            protocol::sasl_initial_response(
                                &mut out,
                                "SCRAM-SHA-256",
                                &c.client_first(),
                            );
                            scram_client = Some(c);
                        }
                        11 => {
                            let c = scram_client
                                .as_mut()
                                .ok_or_else(|| io_err("unexpected SASLContinue"))?;
                            let fin = c
                                .handle_server_first(b)
                                .map_err(|e| io_err(format!("SCRAM: {e}")))?;
                            protocol::password_message(&mut out, &fin);
                        }
                        12 => {
                            let c = scram_client
                                .as_ref()
                                .ok_or_else(|| io_err("unexpected SASLFinal"))?;
                            c.verify_server_final(b)
                                .map_err(|e| io_err(format!("SCRAM: server signature: {e}")))?;
                        }
                        other => {
                            return Err(io_err(format!(
                                "unsupported authentication request {other} from server"
                            )))
                        }
                    }
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await.map_err(io_err)?;
                    }
                }
                be::PARAMETER_STATUS => {
                    if let Some((k, v)) = protocol::parse_parameter_status(&body) {
                        conn.initial.set(k, v);
                    }
                }
                be::BACKEND_KEY_DATA => {
                    let mut b = &body[..];
                    if b.len() >= 8 {
                        pid = b.get_i32();
                        secret = b.get_i32();
                    }
                }
                be::ERROR_RESPONSE => {
                    return Err(ServerError::Refused(protocol::parse_error(&body)))
                }
                be::READY_FOR_QUERY => break,
                // NoticeResponse, NegotiateProtocolVersion: nothing to do.
                _ => {}
            }
        }
        conn.cancel = Arc::new(CancelKey {
            pid,
            secret,
            ..*conn.cancel
        });
        conn.current = conn.initial.clone();
        Ok(conn)
    }

    /// Read one whole message (login and maintenance paths only; the forwarding path
    /// scans frames in place instead).
    pub async fn read_message(&mut self) -> Result<(u8, Bytes), ServerError> {
        loop {
            if let Some((tag, len)) =
                protocol::frame_header(&self.state.rbuf, 1 << 30).map_err(io_err)?
            {
                if self.state.rbuf.len() >= len {
                    let mut frame = self.state.rbuf.split_to(len);
                    frame.advance(5);
                    return Ok((tag, frame.freeze()));
                }
                self.state.rbuf.reserve(len - self.state.rbuf.len());
            }
            let n = self
                .stream
                .read_buf(&mut self.state.rbuf)
                .await
                .map_err(io_err)?;
            if n == 0 {
                return Err(io_err("server closed the connection"));
            }
        }
    }

    /// Run a simple query whose results are internal; returns the first row's values.
    /// ParameterStatus updates are tracked.
    pub async fn internal_row(&mut self, sql: &str) -> Result<Vec<Option<String>>, ServerError> {
        Ok(self
            .internal_rows(sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Run a simple query (possibly several statements) whose results are internal;
    /// returns every row of every statement. ParameterStatus updates are tracked.
    /// An error, or a server left outside the idle state, fails the call.
    pub async fn internal_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut out = BytesMut::new();
        protocol::query(&mut out, sql);
        self.stream.write_all(&out).await.map_err(io_err)?;
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                be::DATA_ROW => rows.push(protocol::parse_data_row(&body)),
                be::PARAMETER_STATUS => self.track_parameter_status(&body),
                be::ERROR_RESPONSE => err = Some(protocol::parse_error(&body)),
                be::READY_FOR_QUERY => {
                    if protocol::TxStatus::from_byte(body.first().copied().unwrap_or(0))
                        != protocol::TxStatus::Idle
                    {
                        self.broken = true;
                    }
                    break;
                }
                _ => {}
            }
        }
        match err {
            Some(e) => Err(ServerError::Refused(e)),
            None => Ok(rows),
        }
    }

    /// Before this server goes to another client: undo the session state that
    /// `resets` says the last client may have created (cursors, LISTEN, advisory
    /// locks, temp objects, SQL-level prepared statements) and, with `read_back`,
    /// read the session settings it now has (every `SET` setting, role, session
    /// authorization, and the custom `names`). One round trip. Returns the
    /// settings read back (non-default ones only; reported parameters excluded,
    /// they travel by ParameterStatus), which also become this server's
    /// `unreported` bookkeeping.
    pub async fn reset_and_read_back(
        &mut self,
        resets: crate::router::Effects,
        read_back: bool,
        names: &[String],
        login_user: &str,
    ) -> Result<Option<ReadBack>, ServerError> {
        use crate::router::Effects;
        // Read committed: a client's `SERIALIZABLE, READ ONLY, DEFERRABLE`
        // defaults made this wait for a safe snapshot, and the pool with it
        // (probe). Only the transaction's own characteristics change, which
        // are not read back.
        let mut sql = String::from(READ_COMMITTED);
        // The client's timeouts are lifted (`UNTIMED`) for what follows the
        // read back of the two timeouts themselves: read first, by the
        // cheapest statement there is (pg_settings alone took longer than a
        // 1 ms timeout), then their defaults (what `TO DEFAULT` sets, as
        // `current_setting` spells it), to tell whether the client set them.
        let mut untimed = false;
        if read_back {
            const TIMEOUTS: &str = "pg_catalog.current_setting('statement_timeout'), \
                pg_catalog.current_setting('lock_timeout')";
            sql.push_str(&format!(
                "SELECT 'now', {TIMEOUTS};SET LOCAL statement_timeout TO DEFAULT;\
                 SET LOCAL lock_timeout TO DEFAULT;SELECT 'default', {TIMEOUTS};{UNTIMED}"
            ));
            untimed = true;
            // Names and values in hex of their UTF-8 (see `utf8_hex`). The
            // transaction's own characteristics are not session settings:
            // `default_transaction_*` are, and are read. Every function and
            // operator is named with its schema: Postgres looks an unqualified
            // one up through the last client's `search_path`, and a client's
            // own `<>` ahead of pg_catalog's made this read nothing back, so
            // the next client inherited that `search_path` (probe: its
            // INSERT landed in the first client's table).
            sql.push_str(&format!(
                "SELECT {}, {} FROM (SELECT name, pg_catalog.current_setting(name) AS v \
                 FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session' \
                 AND name OPERATOR(pg_catalog.<>) ALL (ARRAY['transaction_isolation', \
                 'transaction_read_only', 'transaction_deferrable', 'statement_timeout', \
                 'lock_timeout']) UNION ALL \
                 SELECT 'role', pg_catalog.current_setting('role') UNION ALL \
                 SELECT 'session_authorization', pg_catalog.current_setting('session_authorization')",
                utf8_hex("name"),
                utf8_hex("v"),
            ));
            for n in names {
                sql.push_str(" UNION ALL SELECT ");
                push_literal(&mut sql, n);
                sql.push_str(", pg_catalog.current_setting(");
                push_literal(&mut sql, n);
                sql.push_str(", true)");
            }
            sql.push_str(") AS s;");
        }
        self.temps_used |= resets.any(Effects::TEMP);
        for (bit, stmt) in [
            (Effects::CURSOR, "CLOSE ALL"),
            (Effects::LISTEN, "UNLISTEN *"),
            (
                Effects::ADVISORY,
                "SELECT pg_catalog.pg_advisory_unlock_all()",
            ),
            (Effects::TEMP, "DISCARD TEMP"),
            (Effects::PREPARED, "DEALLOCATE ALL"),
            (Effects::SEQUENCES, "DISCARD SEQUENCES"),
        ] {
            if resets.any(bit) {
                if !untimed {
                    sql.push_str(UNTIMED);
                    untimed = true;
                }
                sql.push_str(stmt);
                sql.push(';');
            }
        }
        if resets.any(Effects::SEED) {
            // A seed of shardbouncer's choosing: the last client's setseed must
            // not make the next client's random() predictable.
            let seed: f64 = rand::random::<f64>() * 2.0 - 1.0;
            sql.push_str(&format!("SELECT pg_catalog.setseed({seed:.15});"));
        }
        // After the read back: settings nobody can name are cleared (the role
        // and session authorization are not, and were read back).
        let reset_all = resets.any(Effects::UNNAMED_SETTINGS);
        if reset_all {
            sql.push_str("RESET ALL;");
        }
        // Dynamic code may have reached state no statement resets (isn's
        // `isn_weak`, a procedural language's globals) by a name the text
        // does not show (probe AC: `query_to_xml('select i'||'sn_weak(true)',
        // ..)`, a FunctionCall by OID): where such an extension is
        // installed, the server is closed rather than pooled. Asked in the
        // same round trip as the reset.
        let dynamic = resets.any(Effects::DYNAMIC);
        if dynamic {
            sql.push_str(UNRESETTABLE_EXTENSIONS);
        }
        if sql == READ_COMMITTED {
            return Ok(None);
        }
        // Its first statements run under the client's own timeouts (to read
        // them): a `statement_timeout` of a millisecond or so can cancel
        // them now and then (a test saw it on a quiet machine), and the
        // session then ended for nothing. Cancelled there, nothing of it ran
        // (one implicit transaction): it is tried again, twice at most.
        let mut tries = 0;
        let rows = loop {
            match self.internal_rows(&sql).await {
                Err(ServerError::Refused(e))
                    if e.code == crate::sqlstate::QUERY_CANCELED && read_back && tries < 2 =>
                {
                    tries += 1;
                }
                r => break r?,
            }
        };
        if dynamic
            && rows
                .iter()
                .any(|r| r.len() == 1 && r[0].as_deref() == Some(UNRESETTABLE_MARK))
        {
            self.broken = true;
        }
        if resets.any(Effects::PREPARED) {
            self.prepared.clear();
        }
        if resets.any(Effects::SEQUENCES) {
            self.sequences_of = None;
        }
        let mut unreadable = false;
        let mut reported_set = Vec::new();
        let read = read_back.then(|| {
            let mut set = ParamSet::default();
            // The timeouts: the client's when they differ from their defaults.
            let timeouts = |which: &str| {
                rows.iter()
                    .find(|r| r.len() == 3 && r[0].as_deref() == Some(which))
            };
            if let (Some(now), Some(default)) = (timeouts("now"), timeouts("default")) {
                for (i, name) in [(1, "statement_timeout"), (2, "lock_timeout")] {
                    if let (Some(v), true) = (&now[i], now[i] != default[i]) {
                        set.set(name, v);
                    }
                }
            } else {
                unreadable = true;
            }
            // Readback rows are the two-column ones (pg_advisory_unlock_all has one).
            for row in rows.iter().filter(|r| r.len() == 2) {
                let (Some(k), Some(v)) = (&row[0], &row[1]) else {
                    continue;
                };
                let (Some(k), Some(v)) = (from_utf8_hex(k), from_utf8_hex(v)) else {
                    // A setting left on the server and not in the record
                    // would reach the next client: fail instead.
                    unreadable = true;
                    continue;
                };
                let (k, v) = (&k, &v);
                let default = match k.as_str() {
                    "role" => v == "none",
                    "session_authorization" => v == login_user,
                    _ => match params::canonical(k) {
                        Some(c) => {
                            reported_set.push(c);
                            true
                        }
                        None => false,
                    },
                };
                if !default {
                    set.set(k, v);
                }
            }
            set
        });
        if unreadable {
            self.broken = true;
            return Err(io_err("a setting read back was not hex of UTF-8"));
        }
        if let Some(set) = &read {
            let bytes = set.bytes();
            if bytes > MAX_SESSION_SETTINGS_BYTES {
                // Not kept here either: the server holds settings nobody
                // keeps a record of, so it is closed, not pooled.
                self.broken = true;
                return Err(ServerError::SettingsTooLarge(bytes));
            }
            self.unreported = set.clone();
        }
        if reset_all {
            // What RESET ALL left: the identity, read back above.
            self.unreported.retain(is_identity);
        }
        Ok(read.map(|settings| ReadBack {
            settings,
            reported_set,
        }))
    }

    /// Whether the server carries a client's `idle_session_timeout`: Postgres
    /// would end it while it idles in the pool, and the next client's work
    /// or settings would meet a closed server (probe: other clients'
    /// transactions failed now and then once one client set it to 1 ms).
    pub fn has_idle_timeout(&self) -> bool {
        self.unreported.get(IDLE_TIMEOUT).is_some()
    }

    /// Lift [`Self::has_idle_timeout`]'s timeout before the server idles in
    /// the pool. The record no longer has it, so the client's next server is
    /// given it again with its settings.
    pub async fn lift_idle_timeout(&mut self) -> Result<(), ServerError> {
        self.internal_rows(&format!("{READ_COMMITTED}{UNTIMED}RESET {IDLE_TIMEOUT}"))
            .await?;
        self.unreported.remove(IDLE_TIMEOUT);
        Ok(())
    }

    /// Close politely (Terminate), ignoring errors, and wait (briefly) for the
    /// server to close its end: Postgres closes the socket only after the
    /// backend has left its process array, so a connection cap counted by
    /// Postgres (`max_connections`) sees it gone once this returns.
    pub async fn terminate(mut self) {
        self.terminate_within(Duration::from_secs(2)).await;
    }

    /// Send Terminate and wait, up to `wait`, for the server to close its
    /// end: a backend reads the Terminate only once its statement is over.
    /// Whether it closed.
    pub async fn terminate_within(&mut self, wait: Duration) -> bool {
        let mut out = BytesMut::new();
        protocol::terminate(&mut out);
        let stream = &mut self.stream;
        let closed = async {
            stream.write_all(&out).await?;
            Self::until_closed(stream).await
        };
        matches!(tokio::time::timeout(wait, closed).await, Ok(Ok(())))
    }

    /// Wait, up to `wait`, for the server to close its end (after a
    /// Terminate, or once its backend was ended). Whether it closed.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, Self::until_closed(&mut self.stream)).await,
            Ok(Ok(()))
        )
    }

    /// Read and drop what the server sends until it closes its end; a read
    /// error (a reset) is a closed end too.
    async fn until_closed(stream: &mut crate::net::Stream) -> std::io::Result<()> {
        let mut sink = [0u8; 512];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        Ok(())
    }

    /// True if the server has sent something (or closed) while idle: such a connection
    /// is not safe to hand out. Uses tokio's cached readiness, so it costs no syscall
    /// when nothing arrived.
    pub fn has_unexpected_input(&mut self) -> bool {
        if !self.state.rbuf.is_empty() {
            return true;
        }
        // Peek, not read: a TLS record must stay in the socket for rustls.
        self.stream.has_pending_input()
    }
}

/// Starts the pooler's own statements on a server: read committed, whatever
/// transaction defaults the last client set (`SERIALIZABLE, READ ONLY,
/// DEFERRABLE` made them wait for a safe snapshot, and the pool with them:
/// probe). It changes only the transaction's own characteristics, which are
/// not read back.
/// The row [`UNRESETTABLE_EXTENSIONS`] gives when one is installed.
const UNRESETTABLE_MARK: &str = "sb_unresettable";

/// A query for the extensions whose session state no statement resets:
/// isn (`isn_weak`, a C variable) and the procedural languages that keep
/// globals of their own (PL/Perl's `%_SHARED`, PL/Tcl's, PL/v8's,
/// PL/Python's `GD`). After dynamic code on a server where one is
/// installed, the server is closed.
const UNRESETTABLE_EXTENSIONS: &str = "SELECT 'sb_unresettable' FROM pg_catalog.pg_extension \
     WHERE extname::pg_catalog.text OPERATOR(pg_catalog.=) ANY \
     ('{isn,plperl,plperlu,pltcl,pltclu,plv8,plpython3u}'::pg_catalog.text[]) LIMIT 1;";

const READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;";

/// Lifts the client's `statement_timeout` and `lock_timeout` (5 ms, say) for
/// the rest of the pooler's statement: dropping many temp tables, reading back
/// or applying hundreds of settings takes longer, and a failure closes the
/// server and ends a client's session. `SET LOCAL` lasts until the end of the
/// statement's implicit transaction; a session value the statement sets
/// (`set_config(.., false)`) takes effect after it.
const UNTIMED: &str = "SET LOCAL statement_timeout = 0;SET LOCAL lock_timeout = 0;";

/// The setting that ends a server idle in the pool (see
/// [`ServerConn::has_idle_timeout`]).
const IDLE_TIMEOUT: &str = "idle_session_timeout";

/// The statement that brings a server's settings in line with a client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatement {
    /// The SQL (several statements, one implicit transaction: if any fails,
    /// none took effect, which is why it is awaited, never pipelined).
    pub sql: String,
}

fn is_identity(k: &str) -> bool {
    k == "role" || k == "session_authorization"
}

/// `RESET name`, each dotted part quoted as an identifier.
fn push_reset(sql: &mut String, key: &str) {
    if !key.is_ascii() {
        // As ASCII text (see `push_literal`): set_config with no value resets.
        if !sql.is_empty() {
            sql.push(';');
        }
        sql.push_str("SELECT pg_catalog.set_config(");
        push_literal(sql, key);
        sql.push_str(",NULL,false)");
        return;
    }
    if !sql.is_empty() {
        sql.push(';');
    }
    sql.push_str("RESET ");
    for (i, part) in key.split('.').enumerate() {
        if i > 0 {
            sql.push('.');
        }
        sql.push('"');
        sql.push_str(&part.replace('"', "\"\""));
        sql.push('"');
    }
}

fn push_set_config(sql: &mut String, key: &str, value: &str) {
    if sql.is_empty() {
        sql.push_str("SELECT ");
    } else if sql.ends_with(')') {
        sql.push(',');
    } else {
        sql.push_str(";SELECT ");
    }
    sql.push_str("pg_catalog.set_config(");
    push_literal(sql, key);
    sql.push(',');
    push_literal(sql, value);
    sql.push_str(",false)");
}

/// Append a SQL string literal that means the same whatever the server's
/// `standard_conforming_strings` (an `E''` literal with `\\` and `''` escaped; a
/// plain literal would let a backslash end it early when the setting is off)
/// and whatever its `client_encoding`: characters past ASCII are written as
/// `\u` escapes, so the text is ASCII. Postgres converts a Query from the
/// encoding the server has when it arrives, which is the last client's: a
/// client's `search_path` of `"schéma"` re-applied after a LATIN1 client's
/// transaction came out `"schÃ©ma"`, and its queries read another schema
/// (probe).
pub fn push_literal(sql: &mut String, v: &str) {
    use std::fmt::Write;
    sql.push_str("E'");
    for c in v.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            '\0' => {}
            c if c.is_ascii() => sql.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(sql, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(sql, "\\U{:08X}", c as u32);
            }
        }
    }
    sql.push('\'');
}

/// SQL for the text of `expr` as hex digits of its UTF-8 bytes: read back in
/// ASCII whatever the server's `client_encoding` (a LATIN1 client's `'été'`
/// came back in LATIN1 bytes and was taken for UTF-8, lossily).
fn utf8_hex(expr: &str) -> String {
    format!("pg_catalog.encode(pg_catalog.convert_to({expr}, 'UTF8'), 'hex')")
}

/// The text [`utf8_hex`] encoded.
fn from_utf8_hex(hex: &str) -> Option<String> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = hex.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let bytes = b
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn need_password(t: &Target) -> Result<&str, ServerError> {
    t.password.as_deref().ok_or_else(|| no_password(t))
}

fn no_password(t: &Target) -> ServerError {
    ServerError::Refused(ErrorInfo {
        severity: "FATAL".into(),
        code: sqlstate::INVALID_PASSWORD.into(),
        message: format!(
            "server asked for a password for user {:?} but none is configured (set server_password)",
            t.user
        ),
    })
}

/// Send a CancelRequest for `key` on a fresh connection.
pub async fn send_cancel(key: CancelKey) {
    let mut out = BytesMut::new();
    protocol::cancel_request(&mut out, key.pid, key.secret);
    let fut = async {
        let mut s = TcpStream::connect(key.addr).await?;
        s.write_all(&out).await?;
        // Postgres closes the socket once processed; wait for that so the cancel is delivered.
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), fut).await {
        tracing::warn!("cancel request to {} timed out: {e}", key.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kv: &[(&str, &str)]) -> ParamSet {
        let mut p = ParamSet::default();
        for (k, v) in kv {
            p.set(k, v);
        }
        p
    }

    /// A reported parameter the client did not set is given the value the
    /// client was told at login, not left at this server's own default
    /// (probe DF F1: a shard whose `standard_conforming_strings` default was
    /// `off` ran text the client and the router had read by `on`); what the
    /// client set wins over both, and the server's default stands in only
    /// for what it was told nothing of.
    #[test]
    fn what_the_client_was_told_stands_in_for_what_it_did_not_set() {
        let mut s = ServerState::new("127.0.0.1:5432".parse().unwrap(), None);
        s.initial = set(&[
            ("standard_conforming_strings", "off"),
            ("client_encoding", "SJIS"),
            ("TimeZone", "UTC"),
        ]);
        s.current = s.initial.clone();
        let told = set(&[
            ("standard_conforming_strings", "on"),
            ("client_encoding", "UTF8"),
        ]);
        let none = ParamSet::default();
        let sql = s.sync_statement(&none, &told, &none).unwrap().sql;
        assert!(
            sql.contains("E'standard_conforming_strings',E'on'"),
            "{sql}"
        );
        assert!(sql.contains("E'client_encoding',E'UTF8'"), "{sql}");
        assert!(!sql.contains("TimeZone"), "{sql}");
        // The client's own value wins.
        let want = set(&[("standard_conforming_strings", "off")]);
        let sql = s.sync_statement(&want, &told, &none).unwrap().sql;
        assert!(!sql.contains("standard_conforming_strings"), "{sql}");
        // Once the server is as the client was told, nothing is sent.
        s.current = set(&[
            ("standard_conforming_strings", "on"),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
        ]);
        assert!(s.sync_statement(&none, &told, &none).is_none());
        // Told nothing of it: the server's default is put back.
        s.current.set("TimeZone", "Asia/Tokyo");
        let sql = s.sync_statement(&none, &told, &none).unwrap().sql;
        assert!(sql.contains("E'TimeZone',E'UTC'"), "{sql}");
    }
}
