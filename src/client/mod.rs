//! One task per client: login, then the transaction loop ([`session`]).

mod expect;
pub mod peers;
mod queue;
pub mod session;
mod spool;
pub mod startup;

use crate::app::{App, ClientActivity, ClientHandle, CountGuard, PendingLogin, Registered, Seat};
use crate::auth::LoginError;
use crate::protocol::{self, sqlstate};
use bytes::BytesMut;
use session::{Parked, Ran, Session};
pub use startup::ClientLogin;
use startup::Startup;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// The client socket type: plain TCP, or TLS after an SSLRequest.
pub type ClientStream = crate::net::Stream;

/// Serve one accepted client connection (handed over from the accepting event
/// loop: it is registered with the calling one here) until it ends.
///
/// Every byte of this future is part of every client's task for the client's
/// whole life, so it keeps as few locals across its await as it can: the socket
/// once (not also as the argument it came in), and no peer address (login and
/// the error path ask the socket).
pub async fn serve(app: Arc<App>, std: std::net::TcpStream) {
    let mut stream = match tokio::net::TcpStream::from_std(std) {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            ClientStream::Plain(tcp)
        }
        Err(e) => {
            tracing::warn!("cannot register a client with its worker: {e}");
            return;
        }
    };
    let (slot, count) = CountGuard::take(&app.clients);
    let pending = app.clients.login_started();
    // Over the limit, a connection takes the slot of a stalled login at once,
    // before it says anything: sockets that never send a byte are evicted
    // as they come, so they cannot pile up past `max_client_conn` and take
    // the process's file descriptors (probe DE F3: silent sockets were
    // counted only once their startup packet came, which they never sent).
    let made_room = count > app.snapshot.load().config.limits.max_client_conn
        && app.clients.evict_stalled_login(&pending);
    let refused = run(&app, &mut stream, slot, count, pending, made_room)
        .await
        .err();
    // Boxed (and made before it is awaited, so no login error is kept beside
    // it): a refusal's write is not part of every client's task.
    if let Some(refusal) = refused.map(|e| Box::pin(refuse(stream, e))) {
        refusal.await;
    }
}

/// What a login that a newcomer evicted is told ([`Clients::evict_stalled_login`]).
///
/// [`Clients::evict_stalled_login`]: crate::app::Clients::evict_stalled_login
fn evicted_login() -> LoginError {
    LoginError::new(
        sqlstate::TOO_MANY_CONNECTIONS,
        "login not completed in time while max_client_conn was reached",
    )
}

/// Tell a client its login was refused, and why (given a second to take it).
async fn refuse(mut stream: ClientStream, e: LoginError) {
    let peer = stream.tcp().and_then(|t| t.peer_addr().ok());
    tracing::debug!(?peer, "login refused: {}", e.message.escape_debug());
    let mut out = BytesMut::new();
    protocol::fatal_response(&mut out, e.code, &e.message);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&out)).await;
}

async fn run(
    app: &Arc<App>,
    stream: &mut ClientStream,
    slot: CountGuard<'_>,
    count: usize,
    pending: PendingLogin<'_>,
    made_room: bool,
) -> Result<(), LoginError> {
    // Boxed, and over before the session starts: what login needs (the startup
    // packet, credentials, the authentication exchange, the eviction signal)
    // is not part of the client's task for its whole life.
    let logged_in = {
        let evicted = pending.evicted();
        let mut pending = Some(pending);
        tokio::select! {
            biased;
            r = Box::pin(login(app, stream, count, &mut pending, made_room)) => r?,
            () = evicted.notified() => return Err(evicted_login()),
        }
    };
    let Some((session, registered)) = logged_in else {
        // A CancelRequest, or a console session, is over. Ended in order: a
        // TLS client gets its close_notify (libpq 17 reported a cancel sent
        // over TLS as failed, "unexpected eof while reading": probe JJ).
        stream.close_after_reading().await;
        return Ok(());
    };
    let handle = session.handle().clone();
    let seat = Seat::new(app.clone(), slot, registered);
    let ran = session.run(stream, may_sleep(stream)).await;
    settle(seat, handle, ran, stream);
    Ok(())
}

/// Whether a parked client may sleep in its worker's dormitory (after
/// `[limits] client_hibernate_after`, read at each park; `0` is never): not a
/// TLS client (its TLS state lives with its task), nor one off a worker.
fn may_sleep(stream: &ClientStream) -> bool {
    matches!(stream, ClientStream::Plain(_)) && crate::net::dormant::here().is_some()
}

/// A session's run on its task is over: the client is gone, or it goes to
/// sleep in its worker's dormitory with its seat.
fn settle(seat: Seat, handle: Arc<ClientHandle>, ran: Ran, stream: &mut ClientStream) {
    match ran {
        Ran::Ended(res) => {
            drop(seat);
            if let Err(e) = res {
                tracing::debug!(client = handle.id, "session ended: {e}");
            }
        }
        Ran::Dormant(parked) => {
            let tcp = match std::mem::replace(stream, ClientStream::Closed) {
                ClientStream::Plain(tcp) => tcp,
                // Not reached: only a plain client is given a hibernation time.
                _ => {
                    tracing::error!(client = handle.id, "a TLS client cannot sleep; closed");
                    return;
                }
            };
            hibernate(seat, handle, parked, tcp);
        }
    }
}

/// Put an idle client to sleep in its worker's dormitory: its task ends, and
/// its socket, seat and parked session wait there for the next event
/// ([`crate::net::dormant`]), which [`resume`]s it on a new task.
fn hibernate(
    seat: Seat,
    handle: Arc<ClientHandle>,
    mut parked: Parked,
    tcp: tokio::net::TcpStream,
) {
    let Some(dorm) = handle.dorm.clone() else {
        tracing::error!(client = handle.id, "no dormitory to sleep in; closed");
        return;
    };
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            // The socket could not leave this worker's event loop: the client
            // is closed (its transaction state is clean: it was parked).
            tracing::warn!(
                client = handle.id,
                "cannot put a client to sleep: {e}; closed"
            );
            return;
        }
    };
    parked.compact();
    let id = handle.id;
    let app = seat.app().clone();
    handle.dormant.store(true, Ordering::SeqCst);
    // Read after `dormant` is set: a reload from then on rouses it (or, if
    // it comes before the sleeper is in the dormitory, moves the epoch
    // looked at below); one before is in the configuration read here (a
    // full test run under load caught a client that slept through a reload
    // that turned client_idle_timeout on).
    let epoch = app.wake_epoch.load(Ordering::SeqCst);
    let until = parked.idle_deadline_in(&app.snapshot.load());
    let sleeper = handle.clone();
    dorm.sleep(crate::net::dormant::Sleeper {
        tcp,
        id,
        until,
        resume: Box::new(move |tcp| {
            sleeper.dormant.store(false, Ordering::SeqCst);
            tokio::spawn(crate::net::clock::Clocked(resume(
                seat, sleeper, parked, tcp,
            )));
        }),
    });
    // What came before `dormant` was set found no sleeper to wake (see
    // `ClientHandle::rouse`): wake it now. A wake that comes twice finds it
    // gone the second time.
    if handle.has_news()
        || app.shutting_down.load(Ordering::SeqCst)
        || app.wake_epoch.load(Ordering::SeqCst) != epoch
    {
        dorm.wake(id);
    }
}

/// Go on with a client woken in its worker's dormitory, on a task of its own
/// again, until it ends or sleeps again.
async fn resume(seat: Seat, handle: Arc<ClientHandle>, parked: Parked, tcp: std::net::TcpStream) {
    let mut stream = match tokio::net::TcpStream::from_std(tcp) {
        Ok(tcp) => ClientStream::Plain(tcp),
        Err(e) => {
            tracing::warn!(client = handle.id, "cannot wake a client: {e}; closed");
            return;
        }
    };
    let may_sleep = may_sleep(&stream);
    let ran = Box::pin(Session::resume(
        parked,
        handle.clone(),
        &mut stream,
        may_sleep,
    ))
    .await;
    settle(seat, handle, ran, &mut stream);
}

/// A CancelRequest for a client of this process: passed to the server its
/// request runs on. `false`: no client here has that key.
pub async fn cancel_here(app: &App, pid: i32, secret: i32) -> bool {
    let Some(h) = app.clients.find_for_cancel(pid, secret) else {
        return false;
    };
    match h.request_cancel() {
        Some((key, asked)) => h.forward_cancel(key, asked).await,
        // Held open until the session has looked (bounded: a session that is
        // ending may never look).
        None => h.unread_seen(std::time::Duration::from_secs(2)).await,
    }
    true
}

/// Log the client in: the session to run, registered with the client list
/// (`None` when there is none to run: a CancelRequest, or a console session
/// that already ended).
async fn login<'a>(
    app: &'a Arc<App>,
    stream: &mut ClientStream,
    count: usize,
    pending: &mut Option<PendingLogin<'_>>,
    made_room: bool,
) -> Result<Option<(Box<session::Session>, Registered<'a>)>, LoginError> {
    let peer = stream.tcp().and_then(|t| t.peer_addr().ok());
    let snap = app.snapshot.load_full();
    // One deadline for the whole login: startup packet, user lookup and
    // password exchange together.
    let deadline =
        tokio::time::Instant::now() + snap.config.pool_defaults().client_login_timeout.as_std();
    let acceptor = snap.tls.acceptor.as_ref();
    let startup =
        tokio::time::timeout_at(deadline, Box::pin(startup::read_startup(stream, acceptor)))
            .await
            .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))??;
    let (params, repeated) = match startup {
        None => return Ok(None),
        Some(Startup::Cancel { pid, secret }) => {
            if !cancel_here(app, pid, secret).await {
                if let Some(dir) = snap.config.peer_dir() {
                    peers::pass(&dir, pid, secret).await;
                }
            }
            return Ok(None);
        }
        Some(Startup::Login { params, repeated }) => (params, repeated),
    };
    // Checked for logins only: a CancelRequest (handled above) carries no credentials
    // and libpq sends it unencrypted.
    if snap.tls.client_mode == crate::config::ClientTlsMode::Require && !stream.is_tls() {
        return Err(LoginError::new(
            sqlstate::INVALID_AUTHORIZATION,
            "SSL required",
        ));
    }
    if app.shutting_down.load(Ordering::Acquire) {
        return Err(LoginError::new(
            sqlstate::ADMIN_SHUTDOWN,
            "shardbouncer is shutting down",
        ));
    }
    // A login that has stalled for a while gives its slot to this one (one
    // did already when it connected, if `made_room`).
    let room = || {
        made_room
            || pending
                .as_ref()
                .is_some_and(|own| app.clients.evict_stalled_login(own))
    };
    if count > snap.config.limits.max_client_conn && !room() {
        return Err(LoginError::new(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!(
                "no more connections allowed (max_client_conn = {})",
                snap.config.limits.max_client_conn
            ),
        ));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // An empty name is no name, as for Postgres (28000, not a failed login).
    let Some(user) = get("user").filter(|u| !u.is_empty()).map(str::to_owned) else {
        return Err(LoginError::new(
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        ));
    };
    if get("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
        return Err(LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            "replication connections are not supported",
        ));
    }
    let database = get("database").unwrap_or(&user).to_string();
    let mut login = ClientLogin::from_params(&params)?;
    login.note_repeated(&repeated)?;
    let db = snap.dbs.get(&database).cloned();
    let is_admin = crate::config::ADMIN_DBS.contains(&database.as_str());
    // Told only after the password, as Postgres tells it: refused at once,
    // it told anyone which database names exist (probe).
    let unknown_db = db.is_none() && !is_admin;
    // So are refusals that only a known database gets (or one that routes by
    // a user suffix): before the password they told it exists (probe K).
    let mut refusal = None;
    if !unknown_db && !is_admin && app.admin.is_disabled(&database) {
        refusal = Some(LoginError::new(
            crate::admin::DATABASE_DISABLED,
            format!("database \"{database}\" is disabled (console DISABLE)"),
        ));
    }
    // A shared listener is closed when the drain starts: a client accepted
    // before that is served, as the other process would have served it.
    if !unknown_db
        && !is_admin
        && app.admin.draining.load(Ordering::Acquire)
        && !snap.config.listen.so_reuseport
    {
        refusal = Some(LoginError::new(
            sqlstate::ADMIN_SHUTDOWN,
            "shardbouncer is shutting down",
        ));
    }
    // Opt-in `user_suffix`: "app.42" logs in as "app" with tenant 42 (split at the
    // last separator, so user names may contain it too).
    let mut tenant_from_user = None;
    let mut user = user;
    if let Some(sfx) = db
        .as_ref()
        .and_then(|d| d.routing.as_ref())
        .and_then(|r| r.user_suffix.clone())
    {
        // `user` given twice with different values: the tenant it carries
        // is ambiguous (Postgres keeps the last; a front end may have
        // checked the first: re-probe), so it is refused as two tenants are.
        if login
            .overwritten
            .iter()
            .any(|(k, v)| k == "user" && *v != user)
        {
            refusal = Some(LoginError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                "user given more than once at connect, with different values",
            ));
        }
        if snap.config.user(&user).is_none() {
            if let Some(i) = user.rfind(sfx.as_str()) {
                tenant_from_user = Some(user[i + sfx.len()..].to_string());
                user.truncate(i);
            }
        }
    }
    // Boxed: the authentication exchange's future is large and lives only during
    // login; inline it would be part of every client's task for its whole life.
    let authenticated = Box::pin(crate::auth::login::check_and_authenticate(
        &app.auth,
        &snap,
        stream,
        db.as_deref(),
        &user,
        peer,
        deadline,
    ))
    .await?;
    // Logged in: no newcomer may evict it any more (one that did just now
    // has its slot).
    if pending.take().is_some_and(|p| !p.finish()) {
        return Err(evicted_login());
    }
    if unknown_db {
        return Err(LoginError::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        ));
    }
    if let Some(e) = refusal {
        return Err(e);
    }
    if let (Some(keys), Some(db)) = (authenticated.scram_keys, &db) {
        app.remember_scram_keys(&db.name, &user, keys);
    }
    // One shared copy for the clients of a user (each kept its own: a
    // 32-byte allocation in every idle client).
    let stored = authenticated.secret.map(|s| app.clients.name(&s));

    let id = app.clients.next_id();
    let handle = Arc::new(ClientHandle {
        id,
        secret: rand::random(),
        server: Default::default(),
        user: app.clients.name(&user),
        database: app.clients.name(&database),
        addr: peer.map(Into::into),
        wake: Notify::new(),
        killed: AtomicBool::new(false),
        settings_taken: AtomicBool::new(false),
        connected_us: crate::app::clients::now_us(),
        activity: ClientActivity::new(
            app.clients.name(get("application_name").unwrap_or("")),
            stream.tcp().and_then(|t| t.local_addr().ok()),
        ),
        partial: std::sync::atomic::AtomicUsize::new(0),
        out_of_memory: AtomicBool::new(false),
        cancel: std::sync::atomic::AtomicU8::new(crate::app::clients::cancel::IDLE),
        cancel_signals: Default::default(),
        answered: std::sync::atomic::AtomicU64::new(0),
        cancels_in_flight: std::sync::atomic::AtomicU64::new(0),
        dorm: crate::net::dormant::here(),
        dormant: AtomicBool::new(false),
    });
    if is_admin {
        return crate::admin::console::serve(app, stream, &handle)
            .await
            .map(|()| None);
    }
    let db = db.expect("checked above");
    let startup_tenant = match &db.routing {
        Some(rt) => startup_tenant(rt, &login, tenant_from_user.as_deref())?,
        None => None,
    };
    let registered = Registered::new(&app.clients, handle.clone());
    // Nothing of the startup packet is needed past here (the session keeps what
    // it uses): do not hold it for the session's whole life.
    drop(params);
    let session = Box::new(session::Session::new(
        app.clone(),
        db,
        stored,
        login,
        handle,
        startup_tenant,
    ));
    Ok(Some((session, registered)))
}

/// The tenant a client gave at connect: a startup parameter named like the key,
/// `options=-c key=v`, or the user-name suffix.
fn startup_tenant(
    rt: &crate::config::RoutingRt,
    login: &ClientLogin,
    from_user: Option<&str>,
) -> Result<Option<crate::router::TenantKey>, LoginError> {
    if !rt.has(crate::router::Source::Startup) {
        return Ok(None);
    }
    // Every value given for the key, from the parameters, `options` and the
    // user name: they must agree. Postgres applies `options` before the other
    // parameters whatever their order, so "the last one" would not be the
    // one Postgres saw; a conflict is refused rather than resolved.
    let mut given: Option<crate::router::TenantKey> = None;
    // Values a repeated parameter overwrote count too (probe: `tenant_id`
    // given twice, or two `options`, logged in as the last one).
    let values = login
        .settings
        .iter()
        .chain(&login.overwritten)
        .filter(|(k, _)| k.eq_ignore_ascii_case(&rt.key))
        .map(|(_, v)| v.as_str())
        .chain(from_user);
    for v in values {
        let key = crate::router::TenantKey::new(v.as_bytes()).ok_or_else(|| {
            LoginError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "invalid {} at connect: tenant keys are 1 to 63 bytes of UTF-8",
                    rt.key
                ),
            )
        })?;
        // A value the key type cannot read (`042`, `+42`, ` 42` for an
        // integer key) would fail every statement of the session, the
        // tenant-free ones too: refused here, where a driver's pool sees it
        // (probe DB F3: such clients logged in and got 22023 at each
        // statement).
        let key = rt.map.canonical_tenant(&key).map_err(|e| {
            LoginError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid {} '{v}' at connect: {e}", rt.key),
            )
        })?;
        // Compared as the tenants they name, not as spelled (probe DE F6:
        // user `app.42` with `-c tenant_id=042` on a bigint map was refused).
        if given.is_some_and(|g| g != key) {
            return Err(LoginError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "{} given more than once at connect, with different values",
                    rt.key
                ),
            ));
        }
        given = Some(key);
    }
    Ok(given)
}
