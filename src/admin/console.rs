//! The admin console reached through the virtual database `pgbouncer` / `shardbouncer`.
//!
//! The console speaks the simple query protocol only, one command per query, and
//! answers like PgBouncer: SHOW results as text/int4/int8/numeric result sets tagged
//! `SHOW`, control commands tagged with their own name, errors as ERROR with a
//! SQLSTATE (42601 syntax, 42501 privileges, F0000 failed RELOAD).

use super::command::{self, Command, ShutdownMode};
use super::routing;
use super::show::{self, Table};
use super::tenant_ops;
use crate::app::{App, ClientHandle, Registered};
use crate::auth::LoginError;
use crate::config::Config;
use crate::net::Stream as ClientStream;
use crate::protocol::{self, sqlstate};
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest message the console accepts (commands are short).
const MAX_MESSAGE: usize = 64 * 1024;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `[admin] users`: everything.
    Admin,
    /// `[admin] stats_users`: SHOW only.
    Stats,
}

/// What `user` may do on the console under `config`, if anything. Asked at
/// login and again before every command: a reload that takes a user out of
/// `[admin] users` takes its rights from a console session already open.
fn role_of(config: &Config, user: &str) -> Option<Role> {
    if config.admin.users.iter().any(|u| **u == *user) {
        Some(Role::Admin)
    } else if config.admin.stats_users.iter().any(|u| **u == *user) {
        Some(Role::Stats)
    } else {
        None
    }
}

/// A console command's error (ERROR with a SQLSTATE; the console stays usable).
type CmdError = crate::sqlstate::PgError;

fn err(code: &'static str, msg: impl Into<String>) -> CmdError {
    CmdError::new(code, msg)
}

/// What a command produced.
enum Reply {
    /// A result set, tagged SHOW.
    Rows(Table),
    /// A bare CommandComplete with this tag.
    Done(&'static str),
    /// A NOTICE with detail, then CommandComplete.
    Notice(&'static str, String, &'static str),
}

/// Serve a logged-in console client (password already checked by the caller).
pub async fn serve(
    app: &Arc<App>,
    stream: &mut ClientStream,
    handle: &Arc<ClientHandle>,
) -> Result<(), LoginError> {
    if role_of(&app.snapshot.load().config, &handle.user).is_none() {
        return Err(LoginError::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "not allowed to connect to the admin console",
        ));
    }
    let mut out = BytesMut::new();
    protocol::auth_ok(&mut out);
    for (k, v) in [
        ("server_version", "1.24.0/shardbouncer"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("application_name", &*handle.activity.application_name),
    ] {
        protocol::parameter_status(&mut out, k, v);
    }
    protocol::backend_key_data(&mut out, handle.id, handle.secret);
    protocol::ready_for_query(&mut out, protocol::TxStatus::Idle);
    if stream.write_all(&out).await.is_err() {
        return Ok(());
    }
    // Unregistered on drop, even if the session panics (no ghost in SHOW CLIENTS).
    let registered = Registered::new(&app.clients, handle.clone());
    let mut c = Console {
        app: app.clone(),
        handle: handle.clone(),
        out: BytesMut::new(),
    };
    let res = c.run(stream).await;
    drop(registered);
    if let Err(e) = res {
        tracing::debug!(client = handle.id, "console session ended: {e}");
    }
    Ok(())
}

struct Console {
    app: Arc<App>,
    handle: Arc<ClientHandle>,
    out: BytesMut,
}

impl Console {
    async fn run(&mut self, stream: &mut ClientStream) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(4096);
        // After an extended-protocol message: ignore everything up to the next Sync.
        let mut skip_until_sync = false;
        loop {
            if self.handle.killed.load(Ordering::Acquire) {
                protocol::fatal_response(
                    &mut self.out,
                    sqlstate::ADMIN_SHUTDOWN,
                    "client killed by administrator",
                );
                let _ = stream.write_all(&self.out).await;
                return Err("killed".into());
            }
            if self.app.shutting_down.load(Ordering::Acquire) {
                protocol::fatal_response(
                    &mut self.out,
                    sqlstate::ADMIN_SHUTDOWN,
                    "shardbouncer is shutting down",
                );
                let _ = stream.write_all(&self.out).await;
                return Err("shutdown".into());
            }
            // Handle every complete message already read.
            loop {
                let (tag, len) = match protocol::frame_header(&buf, MAX_MESSAGE) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => {
                        protocol::fatal_response(
                            &mut self.out,
                            sqlstate::PROTOCOL_VIOLATION,
                            &format!("invalid frontend message: {e}"),
                        );
                        let _ = stream.write_all(&self.out).await;
                        return Err(e.to_string());
                    }
                };
                if buf.len() < len {
                    buf.reserve(len - buf.len());
                    break;
                }
                let frame = buf.split_to(len);
                let body = &frame[5..];
                if let Err(what) = protocol::validate_frontend(tag, body) {
                    // As an application database (and Postgres): a malformed
                    // message ends the connection (a Query without its NUL
                    // ran, and NULs inside one were dropped: probe).
                    protocol::fatal_response(&mut self.out, sqlstate::PROTOCOL_VIOLATION, what);
                    let _ = stream.write_all(&self.out).await;
                    return Err(what.to_string());
                }
                use protocol::tag::frontend as f;
                match tag {
                    f::TERMINATE => return Ok(()),
                    f::QUERY => {
                        let q = body.strip_suffix(b"\0").unwrap_or(body);
                        let q = String::from_utf8_lossy(q).into_owned();
                        let end = self.query(&q, stream).await?;
                        protocol::ready_for_query(&mut self.out, protocol::TxStatus::Idle);
                        stream
                            .write_all(&self.out)
                            .await
                            .map_err(|e| e.to_string())?;
                        self.out.clear();
                        if end {
                            return Ok(());
                        }
                    }
                    f::SYNC => {
                        skip_until_sync = false;
                        protocol::ready_for_query(&mut self.out, protocol::TxStatus::Idle);
                    }
                    f::PARSE
                    | f::BIND
                    | f::DESCRIBE
                    | f::EXECUTE
                    | f::CLOSE
                    | f::FLUSH
                    | f::FUNCTION_CALL => {
                        if !skip_until_sync {
                            protocol::error_response(
                                &mut self.out,
                                sqlstate::FEATURE_NOT_SUPPORTED,
                                "extended query protocol not supported by admin console",
                            );
                            if tag == f::FUNCTION_CALL {
                                // FunctionCall is answered directly, no Sync follows.
                                protocol::ready_for_query(&mut self.out, protocol::TxStatus::Idle);
                            } else {
                                skip_until_sync = true;
                            }
                        }
                    }
                    f::COPY_DATA | f::COPY_DONE | f::COPY_FAIL => {}
                    other => {
                        protocol::fatal_response(
                            &mut self.out,
                            sqlstate::PROTOCOL_VIOLATION,
                            &format!("invalid frontend message type {other}"),
                        );
                        let _ = stream.write_all(&self.out).await;
                        return Err(format!("invalid message type {other}"));
                    }
                }
            }
            if !self.out.is_empty() {
                stream
                    .write_all(&self.out)
                    .await
                    .map_err(|e| e.to_string())?;
                self.out.clear();
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let shutdown = self.app.shutdown.notified();
            tokio::pin!(shutdown);
            shutdown.as_mut().enable();
            if self.app.shutting_down.load(Ordering::Acquire) {
                continue;
            }
            tokio::select! {
                // A kill (looked at above) or a spurious wake.
                _ = self.handle.wake.notified() => {}
                _ = &mut shutdown => {}
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                },
            }
        }
    }

    /// Run one query and queue its reply (without ReadyForQuery). Returns true when
    /// the console connection should close afterwards (SHUTDOWN).
    async fn query(&mut self, q: &str, stream: &mut ClientStream) -> Result<bool, String> {
        let cmd = match command::parse(q) {
            Ok(c) => c,
            Err(e) => {
                protocol::error_response(&mut self.out, sqlstate::SYNTAX_ERROR, &e.0);
                return Ok(false);
            }
        };
        if cmd == Command::Empty {
            protocol::empty_query(&mut self.out);
            return Ok(false);
        }
        let role = role_of(&self.app.snapshot.load().config, &self.handle.user);
        if role.is_none() {
            // Taken out of both lists by a reload: the session ends, as a
            // new login would be refused.
            protocol::fatal_response(
                &mut self.out,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "no longer allowed to use the admin console",
            );
            let _ = stream.write_all(&self.out).await;
            self.out.clear();
            return Err("console rights withdrawn".into());
        }
        if role == Some(Role::Stats) && !cmd.read_only() {
            protocol::error_response(
                &mut self.out,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "admin access needed",
            );
            return Ok(false);
        }
        let shutdown = matches!(cmd, Command::Shutdown(_));
        if matches!(cmd, Command::Shutdown(ShutdownMode::WaitForClients)) {
            // Logins are refused from the moment the answer can be seen: a
            // login sent right after it must not slip in before the flag.
            self.app.admin.draining.store(true, Ordering::Release);
        }
        if shutdown {
            // Answer first: the process is about to stop accepting and exit.
            protocol::command_complete(&mut self.out, "SHUTDOWN");
            protocol::ready_for_query(&mut self.out, protocol::TxStatus::Idle);
            let _ = stream.write_all(&self.out).await;
            let _ = stream.flush().await;
            self.out.clear();
        }
        let res = match (&cmd, stream.tcp().map(std::os::fd::AsRawFd::as_raw_fd)) {
            (Command::PauseTenant(key, _), Some(fd)) => {
                let key = key.clone();
                self.pause_tenant_watched(cmd, fd, &key).await?
            }
            _ => self.exec(cmd).await,
        };
        match res {
            Ok(Reply::Rows(t)) => self.write_table(&t),
            Ok(Reply::Done(tag)) => protocol::command_complete(&mut self.out, tag),
            Ok(Reply::Notice(msg, detail, tag)) => {
                notice(&mut self.out, msg, &detail);
                protocol::command_complete(&mut self.out, tag);
            }
            Err(e) => protocol::error_response(&mut self.out, e.code, &e.message),
        }
        if shutdown {
            self.out.clear();
            return Err("shutdown requested".into());
        }
        Ok(false)
    }

    /// `PAUSE TENANT`, undone if the console connection that asked for it
    /// closes: while it waits for the tenant's transactions (the wait is
    /// dropped, and with it the pause), or in the instant it was granted (the
    /// answer could not reach anyone, so the pause is resumed). Nobody would be
    /// left to RESUME it, and the tenant's work would wait for
    /// `query_wait_timeout` and fail until someone did.
    async fn pause_tenant_watched(
        &mut self,
        cmd: Command,
        fd: std::os::fd::RawFd,
        key: &str,
    ) -> Result<Result<Reply, CmdError>, String> {
        let gone = crate::net::peer_gone(fd, std::time::Duration::from_millis(200));
        let res = tokio::select! {
            r = self.exec(cmd) => r,
            () = gone => {
                tracing::warn!(tenant = key, "PAUSE TENANT: the console connection closed; resumed");
                return Err("console connection closed during PAUSE TENANT".into());
            }
        };
        if res.is_ok() && crate::net::peer_closed(fd) {
            let _ = tenant_ops::resume(&self.app, key);
            tracing::warn!(
                tenant = key,
                "PAUSE TENANT: the console connection closed; resumed"
            );
            return Err("console connection closed during PAUSE TENANT".into());
        }
        Ok(res)
    }

    fn write_table(&mut self, t: &Table) {
        protocol::row_description(&mut self.out, &t.cols);
        for r in &t.rows {
            protocol::data_row(&mut self.out, r);
        }
        protocol::command_complete(&mut self.out, "SHOW");
    }

    async fn exec(&mut self, cmd: Command) -> Result<Reply, CmdError> {
        let app = self.app.clone();
        match cmd {
            Command::Empty => Ok(Reply::Done("")),
            Command::Show(what, args) => self.show(&what, &args),
            Command::Pause(db) => self.pause(db).await.map(|_| Reply::Done("PAUSE")),
            Command::Resume(db) => resume(&app, db).map(|_| Reply::Done("RESUME")),
            Command::Reconnect(db) => {
                for p in target_pools(&app, db.as_deref())? {
                    p.reconnect();
                }
                Ok(Reply::Done("RECONNECT"))
            }
            Command::Disable(db) => {
                check_db(&app, &db)?;
                app.admin.set_disabled(&db, true);
                tracing::info!("DISABLE {db}: new logins are refused");
                Ok(Reply::Done("DISABLE"))
            }
            Command::Enable(db) => {
                check_db(&app, &db)?;
                app.admin.set_disabled(&db, false);
                tracing::info!("ENABLE {db}");
                Ok(Reply::Done("ENABLE"))
            }
            Command::Kill(db) => {
                let pools = target_pools(&app, db.as_deref())?;
                // As PgBouncer: a killed database stays paused until RESUME,
                // so the clients that reconnect at once (a failover script's
                // KILL, switch, RESUME) wait instead of reaching the old
                // servers. Paused before the kill, so no reconnect slips in.
                match &db {
                    None => app.admin.paused_all.store(true, Ordering::Release),
                    Some(d) => app.admin.set_paused(d, true),
                }
                for p in &pools {
                    p.pause();
                }
                for c in app.clients.all() {
                    let hit = match &db {
                        Some(d) => *c.database == **d,
                        None => !show::is_admin_db(&c.database),
                    };
                    if hit {
                        c.kill();
                    }
                }
                for p in pools {
                    p.reconnect();
                }
                tracing::info!(
                    "KILL {}: paused until RESUME",
                    db.as_deref().unwrap_or("(all)")
                );
                Ok(Reply::Done("KILL"))
            }
            Command::KillClient(id) => {
                let id: i32 = id
                    .parse()
                    .map_err(|_| err(sqlstate::INVALID_PARAMETER_VALUE, "invalid client id"))?;
                let c = app
                    .clients
                    .all()
                    .into_iter()
                    .find(|c| c.id == id)
                    .ok_or_else(|| err(sqlstate::UNDEFINED_OBJECT, "client not found"))?;
                c.kill();
                tracing::info!("KILL_CLIENT {id}");
                Ok(Reply::Done("KILL_CLIENT"))
            }
            // Off the worker thread: reading and checking a large map took
            // a third of a second there, and every client of the worker
            // waited for it (probe H).
            Command::Reload => match off_worker(&app, |app| app.reload()).await.and_then(|r| r) {
                Ok(msg) => {
                    super::metrics::reload(true);
                    tracing::info!("RELOAD: {msg}");
                    Ok(Reply::Done("RELOAD"))
                }
                Err(e) => {
                    super::metrics::reload(false);
                    tracing::error!("RELOAD rejected, keeping the old configuration: {e}");
                    Err(err(
                        sqlstate::CONFIG_FILE_ERROR,
                        format!("RELOAD failed, configuration unchanged: {e}"),
                    ))
                }
            },
            Command::Set(key, value) => {
                apply_set(&app, &key, &value)
                    .map_err(|e| err(sqlstate::INVALID_PARAMETER_VALUE, e))?;
                tracing::info!("SET {key} = {value}");
                Ok(Reply::Done("SET"))
            }
            Command::Shutdown(mode) => {
                shutdown(&app, mode);
                Ok(Reply::Done("SHUTDOWN"))
            }
            Command::PauseTenant(key, timeout) => tenant_ops::pause(&app, &key, timeout)
                .await
                .map(|()| Reply::Done("PAUSE")),
            Command::ResumeTenant(key) => {
                tenant_ops::resume(&app, &key).map(|()| Reply::Done("RESUME"))
            }
            Command::MoveTenant(key, shard, db) => off_worker(&app, move |app| {
                tenant_ops::move_to(app, &key, &shard, db.as_deref())
            })
            .await
            .map_err(|e| err(sqlstate::INTERNAL_ERROR, e))?
            .map(|what| Reply::Notice("MOVE TENANT", what, "MOVE")),
        }
    }

    fn show(&self, what: &str, args: &[String]) -> Result<Reply, CmdError> {
        let app = &self.app;
        let no_args = || -> Result<(), CmdError> {
            if args.is_empty() {
                Ok(())
            } else {
                Err(err(
                    sqlstate::SYNTAX_ERROR,
                    format!("SHOW {} takes no argument", what.to_uppercase()),
                ))
            }
        };
        let table = match what {
            "help" => {
                no_args()?;
                return Ok(Reply::Notice(
                    "Console usage",
                    show::HELP.to_string(),
                    "SHOW",
                ));
            }
            "version" => show::version(),
            "config" => show::config(&app.snapshot.load().config),
            "databases" => show::databases(app),
            "pools" => show::pools(app),
            "clients" => show::clients(app),
            "servers" => show::servers(app),
            "stats" => show::stats(app),
            "stats_totals" => show::stats_totals(app),
            "stats_averages" => show::stats_averages(app),
            "totals" => show::totals(app),
            "lists" => show::lists(app),
            "users" => show::users(app),
            "state" => show::state(app),
            "shards" => show::shards(app),
            "shard_map" => {
                no_args()?;
                let snap = app.snapshot.load_full();
                show::shard_map(&routing::shard_maps(&snap))
            }
            "tenants" => {
                let n = match args {
                    [] => 100,
                    [n] => n.parse().map_err(|_| {
                        err(
                            sqlstate::SYNTAX_ERROR,
                            format!("SHOW TENANTS takes a count, got {n:?}"),
                        )
                    })?,
                    _ => return Err(err(sqlstate::SYNTAX_ERROR, "usage: SHOW TENANTS [n]")),
                };
                show::tenants(app, n)
            }
            "route" => {
                let snap = app.snapshot.load_full();
                let rows = match args {
                    [key] => {
                        let mut dbs: Vec<&String> = snap.dbs.keys().collect();
                        dbs.sort();
                        dbs.into_iter()
                            .map(|d| (d.clone(), key.clone(), routing::route(&snap, d, key)))
                            .collect::<Vec<_>>()
                    }
                    [db, key] => {
                        check_db(app, db)?;
                        vec![(db.clone(), key.clone(), routing::route(&snap, db, key))]
                    }
                    _ => {
                        return Err(err(
                            sqlstate::SYNTAX_ERROR,
                            "usage: SHOW ROUTE [<db>] '<key>'",
                        ))
                    }
                };
                show::route(&rows)
            }
            other => {
                return Err(err(
                    sqlstate::SYNTAX_ERROR,
                    format!(
                        "unknown SHOW subcommand \"{}\" (see SHOW HELP)",
                        other.to_uppercase()
                    ),
                ))
            }
        };
        if !matches!(what, "tenants" | "route") {
            no_args()?;
        }
        Ok(Reply::Rows(table))
    }

    /// PAUSE [db]: hold new transactions, wait for running ones to end, then close
    /// the servers (as PgBouncer does, so the database can be restarted).
    async fn pause(&self, db: Option<String>) -> Result<(), CmdError> {
        let app = &self.app;
        match &db {
            None => {
                if app.admin.paused_all.swap(true, Ordering::AcqRel) {
                    return Err(err(
                        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        "already suspended/paused",
                    ));
                }
            }
            Some(d) => {
                check_db(app, d)?;
                if app.admin.is_paused(d) {
                    return Err(err(
                        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!("database {d} is already paused"),
                    ));
                }
                app.admin.set_paused(d, true);
            }
        }
        tracing::info!(
            "PAUSE {}: waiting for running transactions",
            db.as_deref().unwrap_or("(all)")
        );
        let pools = target_pools(app, db.as_deref())?;
        for p in &pools {
            p.pause();
        }
        let _watch = app.watch_transactions();
        // A RESUME while this waits ends the pause: this PAUSE then fails, as
        // PAUSE TENANT does (probe KK: it answered PAUSE, the database
        // running, to an operator about to restart Postgres).
        let in_force = || match &db {
            None => app.admin.paused_all.load(Ordering::Acquire),
            Some(d) => app.admin.is_paused(d),
        };
        loop {
            let done = app.tx_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !in_force() {
                return Err(err(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "PAUSE {}: resumed while this command waited",
                        db.as_deref().unwrap_or("(all)")
                    ),
                ));
            }
            let active: usize = pools
                .iter()
                .map(|p| p.stats.active.load(Ordering::Acquire))
                .sum();
            if active == 0 {
                break;
            }
            tokio::select! {
                _ = &mut done => {}
                () = crate::app::until_raised(&self.handle.wake, &self.handle.killed) => {
                    return Err(err(sqlstate::ADMIN_SHUTDOWN, "killed"))
                }
            }
        }
        for p in &pools {
            p.reconnect();
        }
        tracing::info!("PAUSE {}: done", db.as_deref().unwrap_or("(all)"));
        Ok(())
    }
}

/// A NOTICE with message and detail (SHOW HELP).
fn notice(out: &mut BytesMut, msg: &str, detail: &str) {
    let e = crate::sqlstate::PgError {
        severity: "NOTICE",
        detail: Some(detail.to_string()),
        ..crate::sqlstate::PgError::new(crate::sqlstate::SUCCESSFUL_COMPLETION, msg)
    };
    protocol::pg_error(out, protocol::tag::backend::NOTICE_RESPONSE, &e);
}

fn check_db(app: &App, db: &str) -> Result<(), CmdError> {
    if show::is_admin_db(db) {
        return Err(err(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("cannot do that to the admin database {db}"),
        ));
    }
    if !app.snapshot.load().dbs.contains_key(db) {
        return Err(err(
            sqlstate::INVALID_CATALOG_NAME,
            format!("no such database: {db}"),
        ));
    }
    Ok(())
}

/// Pools of `db`, or all pools.
fn target_pools(app: &App, db: Option<&str>) -> Result<Vec<Arc<crate::pool::Pool>>, CmdError> {
    if let Some(d) = db {
        check_db(app, d)?;
    }
    Ok(app
        .pools
        .all()
        .into_iter()
        .filter(|p| db.is_none_or(|d| p.key.database == d))
        .collect())
}

/// Whether new checkouts on pools of `db` must stay held by a console PAUSE.
pub fn pause_applies(app: &App, db: &str) -> bool {
    app.admin.paused_all.load(Ordering::Acquire) || app.admin.is_paused(db)
}

fn resume(app: &App, db: Option<String>) -> Result<(), CmdError> {
    match &db {
        None => {
            if !app.admin.paused_all.swap(false, Ordering::AcqRel) {
                return Err(err(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "pooler is not paused/suspended",
                ));
            }
        }
        Some(d) => {
            check_db(app, d)?;
            if !app.admin.is_paused(d) {
                return Err(err(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("database {d} is not paused"),
                ));
            }
            app.admin.set_paused(d, false);
        }
    }
    for p in app.pools.all() {
        if !pause_applies(app, &p.key.database) {
            p.resume();
        }
    }
    tracing::info!("RESUME {}", db.as_deref().unwrap_or("(all)"));
    Ok(())
}

fn shutdown(app: &Arc<App>, mode: ShutdownMode) {
    match mode {
        ShutdownMode::Immediate | ShutdownMode::WaitForServers => {
            tracing::info!("SHUTDOWN command issued");
            app.begin_shutdown();
        }
        ShutdownMode::WaitForClients => drain(app, "SHUTDOWN WAIT_FOR_CLIENTS"),
    }
}

/// `SHUTDOWN WAIT_FOR_CLIENTS` (also SIGUSR2, for one process of several on a
/// shared address): take no new clients, and leave once every client has. With
/// `[listen] so_reuseport` the listener closes, so new clients reach the other
/// process on the address (a rolling restart loses no client); without it,
/// their logins are refused.
pub fn drain(app: &Arc<App>, why: &str) {
    if app.snapshot.load().config.listen.so_reuseport {
        tracing::info!("{why}: closing the shared listener, waiting for clients to leave");
    } else {
        tracing::info!("{why}: refusing new logins, waiting for clients to leave");
    }
    app.admin.draining.store(true, Ordering::Release);
    app.admin.drain_started.notify_waiters();
    let app = app.clone();
    tokio::spawn(async move {
        // Clients leave on their own schedule and the registry has no event
        // for it, so look a few times a second. A client still logging in
        // (accepted just before a shared listener closed) counts too.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let all = app.clients.all();
            let logging_in = app.clients.connected().saturating_sub(all.len());
            let left = all
                .iter()
                .filter(|c| !show::is_admin_db(&c.database))
                .count();
            if left + logging_in == 0 {
                break;
            }
        }
        app.begin_shutdown();
    });
}

/// Parse a SET value for a duration key: a bare number is seconds (PgBouncer's
/// unit); otherwise the config syntax ("250ms", "5m").
fn parse_duration(v: &str) -> Result<crate::config::Duration, String> {
    if let Ok(n) = v.trim().parse::<f64>() {
        if !(0.0..=1e10).contains(&n) {
            return Err(format!("invalid duration {v:?}: out of range"));
        }
        return crate::config::Duration::parse(&format!("{}us", (n * 1e6).round() as u64));
    }
    crate::config::Duration::parse(v)
}

/// Largest size a SET accepts (PgBouncer's settings are C ints). Without a bound,
/// `SET default_pool_size = 18446744073709551615` would overflow the pool's
/// semaphore and panic the console task.
const MAX_SET_SIZE: usize = i32::MAX as usize;

fn parse_size(v: &str) -> Result<usize, String> {
    let n: usize = v
        .trim()
        .parse()
        .map_err(|_| format!("invalid value {v:?}: expected a non-negative integer"))?;
    if n > MAX_SET_SIZE {
        return Err(format!(
            "invalid value {v:?}: out of range (at most {MAX_SET_SIZE})"
        ));
    }
    Ok(n)
}

/// Change one setting in a copy of the live config and apply it, like a reload of
/// just that key: pools get the new settings now, new clients get them at login.
/// A later RELOAD re-reads the file and so undoes it (as in PgBouncer).
pub fn apply_set(app: &App, key: &str, value: &str) -> Result<(), String> {
    let key = key.to_ascii_lowercase();
    if !show::changeable(&key) {
        return Err(format!(
            "{key} cannot be changed at run time (see SHOW CONFIG)"
        ));
    }
    // A new generation: live sessions pick the change up between transactions.
    let before = app.snapshot.load_full();
    let snap = app
        .snapshot
        .modify_setting(|cfg| set_key(cfg, &key, value), |s| app.record_moves(s))?;
    app.apply_to_pools(&snap);
    app.wake_if_waits_changed(&before);
    Ok(())
}

fn set_key(cfg: &mut Config, key: &str, v: &str) -> Result<(), String> {
    if let Some(prefix) = key.strip_suffix(show::TENANT_CAP_KEY) {
        let n = parse_size(v)?;
        if prefix.is_empty() {
            for db in cfg.databases.values_mut() {
                db.tenant_limits.max_active = n;
            }
            return Ok(());
        }
        let db = prefix
            .strip_suffix('.')
            .ok_or_else(|| format!("{key} cannot be changed at run time"))?;
        let d = cfg
            .databases
            .get_mut(db)
            .ok_or_else(|| format!("no database {db:?} (SET {db}.{})", show::TENANT_CAP_KEY))?;
        d.tenant_limits.max_active = n;
        return Ok(());
    }
    let p = &mut cfg.pool;
    match key {
        "max_client_conn" => cfg.limits.max_client_conn = parse_size(v)?,
        "max_buffered" => cfg.limits.max_buffered = parse_size(v)?,
        "spool_threshold" => cfg.limits.spool_threshold = parse_size(v)?,
        "max_spooled" => cfg.limits.max_spooled = parse_size(v)?,
        "client_hibernate_after" => cfg.limits.client_hibernate_after = parse_duration(v)?,
        "default_pool_size" => p.default_pool_size = Some(parse_size(v)?),
        "min_pool_size" => p.min_pool_size = Some(parse_size(v)?),
        "reserve_pool_size" => p.reserve_pool_size = Some(parse_size(v)?),
        "reserve_pool_timeout" => p.reserve_pool_timeout = Some(parse_duration(v)?),
        "server_connect_timeout" => p.server_connect_timeout = Some(parse_duration(v)?),
        "query_wait_timeout" => p.query_wait_timeout = Some(parse_duration(v)?),
        "idle_transaction_timeout" => p.idle_transaction_timeout = Some(parse_duration(v)?),
        "client_idle_timeout" => p.client_idle_timeout = Some(parse_duration(v)?),
        "client_login_timeout" => p.client_login_timeout = Some(parse_duration(v)?),
        "server_idle_timeout" => p.server_idle_timeout = Some(parse_duration(v)?),
        "server_lifetime" => p.server_lifetime = Some(parse_duration(v)?),
        "server_reset_query" => p.server_reset_query = Some(v.to_string()),
        "max_prepared_statements" => p.max_prepared_statements = Some(parse_size(v)?),
        "max_db_connections" => p.max_db_connections = Some(parse_size(v)?),
        "max_user_connections" => p.max_user_connections = Some(parse_size(v)?),
        other => return Err(format!("{other} cannot be changed at run time")),
    }
    Ok(())
}

/// Run `f` on the blocking pool rather than the worker thread that serves
/// this console connection (and many clients).
async fn off_worker<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> T + Send + 'static,
) -> Result<T, String> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| format!("the command did not finish: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("30").unwrap().as_std().as_secs(), 30);
        assert_eq!(parse_duration("0.5").unwrap().as_std().as_millis(), 500);
        assert_eq!(parse_duration("250ms").unwrap().as_std().as_millis(), 250);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn set_validates_like_the_config_file() {
        let mut cfg =
            Config::parse("[databases.app]\nshards = [ { name = \"s0\", host = \"h\" } ]\n")
                .unwrap();
        set_key(&mut cfg, "default_pool_size", "3").unwrap();
        assert!(cfg.validate().is_ok());
        set_key(&mut cfg, "tenant_limits.max_active", "4").unwrap();
        assert_eq!(cfg.databases["app"].tenant_limits.max_active, 4);
        set_key(&mut cfg, "app.tenant_limits.max_active", "2").unwrap();
        assert_eq!(cfg.databases["app"].tenant_limits.max_active, 2);
        assert!(set_key(&mut cfg, "nope.tenant_limits.max_active", "2").is_err());
        assert!(set_key(&mut cfg, "apptenant_limits.max_active", "2").is_err());
        assert!(set_key(&mut cfg, "tenant_limits.max_active", "x").is_err());
        set_key(&mut cfg, "min_pool_size", "4").unwrap();
        assert!(cfg.validate().unwrap_err().contains("min_pool_size"));
        assert!(set_key(&mut cfg, "default_pool_size", "x").is_err());
        // Bounded, so a huge size cannot overflow a pool's semaphore (a panic).
        assert!(
            set_key(&mut cfg, "default_pool_size", "18446744073709551615")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(set_key(&mut cfg, "reserve_pool_size", "2147483648").is_err());
        set_key(&mut cfg, "max_client_conn", "2147483647").unwrap();
        set_key(&mut cfg, "max_buffered", "1048576").unwrap();
        assert_eq!(cfg.limits.max_buffered, 1 << 20);
        set_key(&mut cfg, "spool_threshold", "65536").unwrap();
        assert_eq!(cfg.limits.spool_threshold, 65536);
        set_key(&mut cfg, "max_spooled", "1073741824").unwrap();
        assert_eq!(cfg.limits.max_spooled, 1 << 30);
        set_key(&mut cfg, "max_db_connections", "4").unwrap();
        set_key(&mut cfg, "max_user_connections", "3").unwrap();
        assert_eq!(cfg.pool_defaults().max_db_connections, 4);
        assert_eq!(cfg.user_connection_cap("anyone"), 3);
    }

    /// A client task that ends by panicking still gives back its max_client_conn
    /// slot and leaves no ghost in SHOW CLIENTS (the guards console and session use).
    #[tokio::test]
    async fn a_panicking_client_task_releases_its_slot_and_registry_entry() {
        use crate::app::{ClientActivity, CountGuard};
        use std::sync::atomic::AtomicBool;
        let cfg = Config::parse("[databases.app]\nshards = [ { name = \"s0\", host = \"h\" } ]\n")
            .unwrap();
        let app = App::new(cfg, None).unwrap();
        let handle = Arc::new(ClientHandle {
            id: 7,
            secret: 1,
            server: Default::default(),
            user: "stats".into(),
            database: "pgbouncer".into(),
            addr: None,
            wake: tokio::sync::Notify::new(),
            killed: AtomicBool::new(false),
            settings_taken: AtomicBool::new(false),
            connected_us: crate::app::clients::now_us(),
            activity: ClientActivity::new("".into(), None),
            partial: std::sync::atomic::AtomicUsize::new(0),
            out_of_memory: AtomicBool::new(false),
            cancel: std::sync::atomic::AtomicU8::new(0),
            cancel_signals: Default::default(),
            answered: std::sync::atomic::AtomicU64::new(0),
            cancels_in_flight: std::sync::atomic::AtomicU64::new(0),
            dorm: None,
            dormant: AtomicBool::new(false),
        });
        for _ in 0..3 {
            let (a, h) = (app.clone(), handle.clone());
            let task = tokio::spawn(async move {
                let (_slot, n) = CountGuard::take(&a.clients);
                assert_eq!(n, 1);
                let _registered = Registered::new(&a.clients, h);
                assert_eq!(a.clients.all().len(), 1);
                tokio::task::yield_now().await;
                panic!("client task panics (expected by this test)");
            });
            assert!(task.await.unwrap_err().is_panic());
            assert_eq!(app.clients.connected(), 0);
            assert!(app.clients.all().is_empty());
        }
        // And on a normal end, of course.
        {
            let (_slot, n) = CountGuard::take(&app.clients);
            let _registered = Registered::new(&app.clients, handle.clone());
            assert_eq!((n, app.clients.all().len()), (1, 1));
        }
        assert_eq!(app.clients.connected(), 0);
        assert!(app.clients.all().is_empty());
    }
}
