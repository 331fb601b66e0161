//! The transaction loop of one logged-in client.
//!
//! Two parts:
//!
//! * [`Core`] ([`core`]) decides everything and does no I/O: it frames the
//!   client's bytes, routes each unit of work ([`crate::router::decide`]), keeps
//!   track of what the attached server owes ([`expect`](crate::client::expect)), and queues
//!   the bytes for each side. When it needs a server, or is done with one, it says
//!   so ([`Need`]).
//! * [`Session`] (this file) is the driver: sockets, the pool, timeouts, KILL and
//!   shutdown. One event loop moves bytes both ways; writes are queued and sent
//!   from the same `select!`, so neither side can deadlock the other and a slow
//!   reader applies back-pressure instead of growing buffers without bound.
//!
//! Work is handled in units: a simple Query or FunctionCall, or an extended
//! protocol batch up to Sync/Flush. A bare `BEGIN` is answered locally and
//! replayed, with the statements held behind it, on the shard of the first
//! statement that names a tenant ([`state`]).

mod attachment;
mod batch;
mod budget;
mod core;
mod counters;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
mod forward;
mod frames;
mod inbound;
mod listen_ext;
mod outbound;
mod routing;
mod server;
mod settings;
pub mod state;
mod statements;
mod tenancy;

#[cfg(test)]
mod tests;
mod wait;
mod wakes;

pub use self::core::{Core, End, Need, ParkedCore, Release};

use crate::app::clients::cancel;
use crate::app::tenants::TenantCell;
use crate::app::{App, ClientHandle, DbRuntime};
use crate::client::spool::{Spool, SpoolError};
use crate::client::startup::ClientLogin;
use crate::pool::listen::{Inbox, ListenCmd};
use crate::pool::{Checkout, Pool, PoolError};
use crate::protocol::{self, sqlstate, TxStatus};
use crate::router::{contains_ci, ListenOp, TenantKey};
use crate::sqlstate::PgError;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use wakes::Wakes;

/// Client input held in part of a message below which a session does not
/// report it to `[limits] max_buffered` (see `Session::account_buffered`).
const REPORT_FROM: usize = 64 * 1024;

/// The most one client read takes while the session holds at least
/// [`REPORT_FROM`] of a message: claimed against `[limits] max_buffered`
/// before the read.
const READ_CLAIM: usize = 64 * 1024;

/// The socket side of the attached server (its state is lent to the core).
struct Server {
    co: Checkout,
    pool: Arc<Pool>,
}

/// The session's server, if it has one. What ends a session gives it back
/// (a release, [`Session::server_lost`], [`Session::finish`]); should the
/// session's task unwind with it instead (a panic), dropping the slot
/// accounts for it with its pool ([`Pool::abandon`]): probe HH saw a pool's
/// count of servers in use stay one too high for good, and `PAUSE` wait for
/// ever. It ends the transaction's count too ([`App::transaction_finished`]),
/// which shutdown would otherwise wait `shutdown_timeout` for.
struct ServerSlot(Option<Server>, Arc<App>);

impl ServerSlot {
    fn empty(app: &Arc<App>) -> ServerSlot {
        ServerSlot(None, app.clone())
    }
}

impl std::ops::Deref for ServerSlot {
    type Target = Option<Server>;
    fn deref(&self) -> &Option<Server> {
        &self.0
    }
}

impl std::ops::DerefMut for ServerSlot {
    fn deref_mut(&mut self) -> &mut Option<Server> {
        &mut self.0
    }
}

impl Drop for ServerSlot {
    fn drop(&mut self) {
        if let Some(Server { co, pool }) = self.0.take() {
            tracing::warn!(
                server = co.conn.id,
                "a session ended holding its server: the server is closed"
            );
            pool.abandon(co);
            self.1.transaction_finished();
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
    /// A CancelRequest for this client came (see [`cancel`]).
    Cancel,
    /// All clients' incomplete messages fell below `[limits] max_buffered`.
    BudgetFreed,
    /// A notification for a channel the client listens on (an empty frame: too
    /// many were waiting, see [`crate::pool::listen::MAX_UNREAD`]).
    Notification(Bytes),
}

/// A client that LISTENs (transaction and statement modes): its channels and
/// its mailbox, registered with the relay of each of its database's shards.
struct Listening {
    inbox: Arc<Inbox>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    channels: BTreeSet<String>,
    /// The pools registered with, to leave them when the client goes.
    pools: Vec<Arc<Pool>>,
    /// The database generation those pools belong to (a reload may replace
    /// them: see [`Session::follow_reloaded_pools`]).
    generation: u64,
}

/// A session between transactions, kept in the form that lasts: who the
/// client is, its settings, prepared statements and tenant settings
/// ([`ParkedCore`]). Everything else (buffers, queues, routing scratch, room
/// for a server and for each step of a transaction) is dropped and made again
/// when the client sends its next bytes ([`Parked::wake`]). Its
/// [`ClientHandle`] is the one [`Session::run`] keeps.
pub struct Parked {
    app: Arc<App>,
    password: Option<Arc<str>>,
    core: ParkedCore,
    pools: PoolCache,
    last_activity: Instant,
}

impl Parked {
    /// The session again, with the client bytes read while it was parked and
    /// the event that woke it.
    fn wake(self, handle: Arc<ClientHandle>, client_bytes: BytesMut, event: Event) -> Session {
        let Parked {
            app,
            password,
            core,
            pools,
            last_activity,
        } = self;
        let core = Core::unpark(core, client_bytes, app.gate.clone());
        let server = ServerSlot::empty(&app);
        Session {
            app,
            password,
            handle,
            core,
            server,
            pools,
            last_activity,
            buffered: 0,
            sending: false,
            listening: None,
            spool: None,
            whole: None,
            woken_by: Some(event),
            client_fd: None,
            tenant_cell: None,
            settings_retries: 0,
            taken_up: TakenUp::default(),
        }
    }

    /// Wait for what can wake a parked session: the client's bytes (read into
    /// `read`), KILL, a cancel, shutdown, or `client_idle_timeout`. The
    /// session itself handles each, once woken. `None`: nothing came for
    /// `[limits] client_hibernate_after` (read now, so a console `SET` reaches
    /// clients already connected), the client `may_sleep`, and it may sleep
    /// without its task ([`Ran::Dormant`]).
    async fn wait(
        &self,
        stream: &mut super::ClientStream,
        read: &mut BytesMut,
        wakes: &mut Wakes<'_, '_>,
        may_sleep: bool,
    ) -> Option<Event> {
        // The configuration in force: a reload that changed the timeouts
        // wakes parked and sleeping sessions to take them up (see
        // `App::wake_sessions`), and a parked one has not reloaded.
        let snap = self.app.snapshot.load();
        let db = snap.dbs.get(&self.core.db().name);
        let deadline = idle_deadline(db.map_or(self.core.db(), |d| d), self.last_activity);
        let hibernate = may_sleep
            .then(|| snap.config.limits.client_hibernate_after.as_std())
            .filter(|d| !d.is_zero());
        drop(snap);
        let hibernate_at = hibernate.map(|d| Instant::now() + d);
        // One timer for the sooner of the two (none when neither is set).
        let at = match (deadline.map(|d| d.0), hibernate_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (mut cr, _) = stream.split();
        let (kill, shutdown, cancel_wake) = wakes.futures();
        tokio::select! {
            biased;
            _ = kill => Some(Event::Killed),
            r = cr.read_idle(read) => Some(Event::ClientRead(r)),
            // Whichever was sooner fired (decided by the deadlines, not the
            // clock: only a client given a hibernation time may go dormant).
            () = crate::net::until(at) => match deadline {
                Some((at, code, msg)) if hibernate_at.is_none_or(|h| at <= h) => {
                    Some(Event::Timeout(code, msg))
                }
                _ => None,
            },
            _ = cancel_wake => Some(Event::Cancel),
            _ = shutdown => Some(Event::Shutdown),
        }
    }

    /// Give back unused capacity before a long sleep (a parked record in a
    /// task is woken again soon; one in a dormitory may stay for hours).
    pub fn compact(&mut self) {
        self.core.compact();
        // Looked up again (a lock) at the first transaction after the sleep.
        self.pools = PoolCache::default();
    }

    /// When `client_idle_timeout` ends this client if it stays parked, under
    /// the configuration `snap` (the one in force: a parked session has not
    /// taken up a reload).
    pub fn idle_deadline_in(&self, snap: &crate::config::Snapshot) -> Option<Instant> {
        let db = snap.dbs.get(&self.core.db().name);
        idle_deadline(db.map_or(self.core.db(), |d| d), self.last_activity).map(|d| d.0)
    }
}

/// How a session's run on its task ended.
// Unboxed: returned once per task, and the parked record moves on as it is.
#[allow(clippy::large_enum_variant)]
pub enum Ran {
    /// The session is over (`Err`: why).
    Ended(Result<(), End>),
    /// The client stayed parked for the hibernation time: its task may end, and
    /// the record go on without one ([`crate::net::dormant`]).
    Dormant(Parked),
}

thread_local! {
    /// Allocations of sessions this worker parked, for its next wakes. A
    /// session (about 2.3 KiB) is past the size glibc keeps in its per-thread
    /// cache, so a fresh box per transaction took malloc's slow path, and its
    /// free merged chunks (`malloc_consolidate`, `unlink_chunk` in profiles).
    // The boxes are the point: each is a session's allocation, kept to be reused.
    #[allow(clippy::vec_box)]
    static SPARE_SESSIONS: std::cell::RefCell<Vec<Box<std::mem::MaybeUninit<Session>>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Servers found closed in a row while applying a client's settings before its
/// work gets an error (08006): a few, for a pool whose idle servers all ended
/// at once.
const MAX_SETTINGS_RETRIES: u8 = 3;

/// Steps of 5 ms that work sent back by a move waits for the configuration
/// that routes it anew to be published (see `wait_for_resume`).
const PUBLISH_WAIT_STEPS: u32 = 200;

/// How long an idle session stays whole before it parks ([`Session::linger`]).
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// How many spare session allocations a worker keeps (about 150 KiB at
/// most, freed at each trim). Parks and wakes alternate, but in bursts: with
/// 100 clients on 20 servers, 4 spares caught half of the wakes, 64 nearly
/// all.
const SPARE_SESSIONS_KEPT: usize = 64;

/// Bytes of prepared-statement text all clients hold now (the maintenance
/// task's memory trim counts them with buffered input).
pub fn statement_bytes() -> usize {
    statements::Statements::held_bytes()
}

/// Free this worker's spare session and attachment allocations (the
/// maintenance task's trim after a burst: what a burst left there would
/// otherwise stay resident).
pub fn drop_spare_sessions() {
    SPARE_SESSIONS.with_borrow_mut(|spares| *spares = Vec::new());
    attachment::drop_spares();
}

/// Box a session, in a spare allocation of this worker's when there is one.
fn boxed(session: Session) -> Box<Session> {
    match SPARE_SESSIONS.with_borrow_mut(Vec::pop) {
        Some(spare) => put_in(spare, session),
        None => Box::new(session),
    }
}

/// Take a session out of its box, and keep the box for [`boxed`].
fn unbox(session: Box<Session>) -> Session {
    let (session, spare) = take_out(session);
    SPARE_SESSIONS.with_borrow_mut(|spares| {
        if spares.len() < SPARE_SESSIONS_KEPT {
            spares.push(spare);
        }
    });
    session
}

/// Move a value out of its box and keep the allocation, empty.
fn take_out<T>(boxed: Box<T>) -> (T, Box<std::mem::MaybeUninit<T>>) {
    let raw = Box::into_raw(boxed);
    // SAFETY: `raw` comes from a live `Box<T>` that is not used again. The
    // value is read out of it once, and the allocation is then owned as a
    // `Box<MaybeUninit<T>>` (same layout), which frees the memory without
    // dropping a `T`.
    unsafe {
        (
            raw.read(),
            Box::from_raw(raw.cast::<std::mem::MaybeUninit<T>>()),
        )
    }
}

/// Move a value into an allocation [`take_out`] emptied.
fn put_in<T>(mut spare: Box<std::mem::MaybeUninit<T>>, value: T) -> Box<T> {
    spare.write(value);
    // SAFETY: the value was written into it just above.
    unsafe { spare.assume_init() }
}

/// How far [`Session::attach_now`] got without an await.
// Unboxed: made and matched at once, once per transaction.
#[allow(clippy::large_enum_variant)]
enum Attaching {
    /// Done: the server is seated, or the work failed.
    Done(Need),
    /// The checkout must wait (or a cancel of earlier work be settled first):
    /// [`Session::attach`] from the start; nothing was taken.
    Wait,
    /// The server is taken, and the client's settings (role first) must be
    /// applied and confirmed on it first.
    ApplySettings(Arc<Pool>, Checkout, String),
}

/// Where [`drive`] starts.
// Unboxed: a parked record is held across the wait either way.
#[allow(clippy::large_enum_variant)]
enum Resting {
    Active(Box<Session>),
    Parked(Parked),
}

/// The session's life on one task: its event loop while there is work, parked
/// between transactions, until it ends or goes dormant.
async fn drive(
    start: Resting,
    handle: Arc<ClientHandle>,
    stream: &mut super::ClientStream,
    may_sleep: bool,
) -> Ran {
    let app = match &start {
        Resting::Active(s) => s.app.clone(),
        Resting::Parked(p) => p.app.clone(),
    };
    // Wake-ups for KILL, shutdown and cancels are registered once for the
    // whole task: re-registering them on every event costs a lock each time.
    let kill = handle.wake.notified();
    let shutdown = app.shutdown.notified();
    let cancel_wake = handle.wake.notified();
    tokio::pin!(kill, shutdown, cancel_wake);
    let mut wakes = Wakes::new(&app, &handle, kill, shutdown, cancel_wake);
    wakes.register().await;
    let mut state = start;
    let mut may_park = true;
    let (mut active, res) = loop {
        let mut active = match state {
            Resting::Active(active) => active,
            Resting::Parked(parked) => {
                let mut read = BytesMut::new();
                // A shutdown that began before this task registered its waiter
                // (a client woken from a dormitory) is seen here.
                let event = if wakes.shutting_down() {
                    Some(Event::Shutdown)
                } else {
                    parked.wait(stream, &mut read, &mut wakes, may_sleep).await
                };
                match event {
                    // The event goes into the woken session (not kept in the task).
                    Some(event) => boxed(parked.wake(handle.clone(), read, event)),
                    None => {
                        debug_assert!(read.is_empty(), "a read completes the wait");
                        return Ran::Dormant(parked);
                    }
                }
            }
        };
        let ran =
            Box::pin(active.event_loop(stream, &mut wakes, std::mem::replace(&mut may_park, true)))
                .await;
        if let Err(e) = ran {
            break (active, Err(e));
        }
        state = match active.park() {
            Ok(parked) => Resting::Parked(parked),
            // Not reached: the event loop returns only when the session
            // can be parked (`parkable` asks the core what its `park`
            // needs). Should it happen, the session goes on as it is,
            // waiting unparked for one event.
            Err(same) => {
                tracing::error!(client = handle.id, "session could not be parked");
                may_park = false;
                Resting::Active(same)
            }
        };
    };
    Ran::Ended(Box::pin(active.finish(stream, res)).await)
}

/// The session's pools by shard index, for one generation of its database:
/// looked up in the process-wide map (a lock and a key built from three
/// strings) once per shard and reload. Boxed and built at first use: every
/// parked and sleeping client keeps 8 bytes here instead of 32 (the idle
/// bench), and a sleeping one drops the cache ([`Parked::compact`]).
#[derive(Default)]
struct PoolCache(Option<Box<PoolsOf>>);

/// [`PoolCache`]'s contents.
#[derive(Default)]
struct PoolsOf {
    /// The database's generation the pools are of (a reload makes a new one).
    generation: u64,
    pools: Vec<Option<Arc<Pool>>>,
}

/// One logged-in client: the driver around its [`Core`].
pub struct Session {
    app: Arc<App>,
    password: Option<Arc<str>>,
    /// The client's registry entry; its `user` is the session's user.
    handle: Arc<ClientHandle>,
    core: Core,
    server: ServerSlot,
    pools: PoolCache,
    last_activity: Instant,
    /// Bytes of unprocessed client input last reported to `[limits] max_buffered`.
    buffered: usize,
    /// A server was just attached and the work that asked for it is still being
    /// written to it (see [`crate::app::clients::cancel::SENDING`]).
    sending: bool,
    /// Set once the client LISTENs (boxed: most clients never do).
    listening: Option<Box<Listening>>,
    /// The start of a large message, on disk while the rest arrives (boxed:
    /// most clients never send one).
    spool: Option<Box<Spool>>,
    /// The bytes of a spooled message read back, counted against `[limits]
    /// max_buffered` with every client's ([`crate::app::Clients::hold_whole`]) until the
    /// session holds none of the client's work ([`Core::holds_no_client_work`]).
    whole: Option<WholeClaim>,
    /// What woke the session from [`Parked`], until the event loop handles it.
    woken_by: Option<Event>,
    /// The client's socket, to notice it closing while the work waits for a
    /// server (set by the event loop, which owns the stream).
    client_fd: Option<std::os::fd::RawFd>,
    /// The statistics cell of the tenant this session's work last ran for
    /// (or waited for a server for): its next transaction, or wait, of the
    /// same tenant is counted into it without a lookup.
    tenant_cell: Option<Arc<TenantCell>>,
    /// Servers in a row found closed when the client's settings were applied
    /// (see [`Session::apply_settings`]).
    settings_retries: u8,
    /// What the session took from the configuration last published.
    taken_up: TakenUp,
}

/// What a session took from the configuration generation it last looked at
/// ([`Session::prepare_wait`]), so that it does not look again until another
/// is published.
#[derive(Debug, Clone, Copy)]
struct TakenUp {
    /// That generation (0: none yet; a configuration's generations start at 1).
    generation: u64,
    /// How long an idle session lingers whole before it parks: [`LINGER`], or
    /// `[limits] client_hibernate_after` if shorter.
    linger: std::time::Duration,
}

impl Default for TakenUp {
    fn default() -> TakenUp {
        TakenUp {
            generation: 0,
            linger: LINGER,
        }
    }
}

impl Session {
    /// Create the session for a logged-in client.
    pub fn new(
        app: Arc<App>,
        db: Arc<DbRuntime>,
        password: Option<Arc<str>>,
        mut login: ClientLogin,
        handle: Arc<ClientHandle>,
        startup_tenant: Option<TenantKey>,
    ) -> Session {
        let max_msg = app.snapshot.load().config.limits.max_message_size;
        let server = ServerSlot::empty(&app);
        if let Some(rt) = &db.routing {
            // The tenant key is ours: it must never reach Postgres as a setting.
            login.take_setting(&rt.key);
        }
        let core = Core::new(
            db,
            handle.id,
            max_msg,
            login.reported,
            login.unreported,
            startup_tenant,
            app.gate.clone(),
        );
        Session {
            app,
            // The shared copy ([`crate::app::Clients::name`]): 16 bytes in
            // every parked client, and no allocation of its own.
            password,
            handle,
            core,
            server,
            pools: PoolCache::default(),
            last_activity: Instant::now(),
            buffered: 0,
            sending: false,
            listening: None,
            spool: None,
            whole: None,
            woken_by: None,
            client_fd: None,
            tenant_cell: None,
            settings_retries: 0,
            taken_up: TakenUp::default(),
        }
    }

    /// The client's handle in the registry.
    pub fn handle(&self) -> &Arc<ClientHandle> {
        &self.handle
    }

    /// The pool of `shard`, cached per session: looking it up in the process-wide
    /// map costs a lock and a key built from three strings, once per transaction
    /// otherwise. A reload (new generation) empties the cache.
    fn pool_for(&mut self, shard: usize) -> Arc<Pool> {
        let db = self.core.db().clone();
        let cache = self.pools.0.get_or_insert_with(Default::default);
        if cache.generation != db.generation {
            cache.pools.clear();
            cache.generation = db.generation;
        }
        if let Some(Some(p)) = cache.pools.get(shard) {
            return p.clone();
        }
        let p = self
            .app
            .pool(&db, &self.handle.user, shard, self.password.as_deref());
        if cache.pools.len() <= shard {
            cache.pools.resize(shard + 1, None);
        }
        cache.pools[shard] = Some(p.clone());
        p
    }

    /// Send AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery.
    async fn greet(&mut self, stream: &mut super::ClientStream) -> Result<(), End> {
        let pool = self.pool_for(self.core.home_shard());
        let mut defaults = pool
            .server_params
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if defaults.is_none() {
            // Any shard's parameters will do (they are the same Postgres settings);
            // this keeps logins fast while the preferred shard is down.
            for shard in 0..self.core.db().cfg.shards.len() {
                let other = self.pool_for(shard);
                defaults = other
                    .server_params
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if defaults.is_some() {
                    break;
                }
            }
        }
        if defaults.is_none() {
            // First client of this pool: log a server in to learn its
            // parameters. KILL and shutdown end the wait, as they end a
            // client queued for a server (probe Q: it waited out
            // server_connect_timeout, then logged in).
            let (app, handle) = (self.app.clone(), self.handle.clone());
            let ended = tokio::select! {
                biased;
                () = crate::app::until_raised(&handle.wake, &handle.killed) => Some(self.killed()),
                () = crate::app::until_raised(&app.shutdown, &app.shutting_down) => {
                    Some(self.core.fatal(
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection: shardbouncer is shutting down",
                    ))
                }
                r = pool.checkout(None) => {
                    if let Ok(co) = r {
                        pool.checkin(co);
                    }
                    None
                }
            };
            if let Some(end) = ended {
                // Told before the connection closes.
                let _ = self.core.to_client().flush_all(stream).await;
                return Err(end);
            }
            defaults = pool
                .server_params
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
        }
        let told = defaults.unwrap_or_else(|| Arc::new(fallback_params()));
        let mut ps = (*told).clone();
        for (k, v) in self.core.reported().iter() {
            // A DateStyle given in part takes the rest from the server's own value.
            let v = crate::server::params::canonical_value(k, v, ps.get(k).unwrap_or("ISO, MDY"))
                .unwrap_or_else(|| v.to_string());
            ps.set(k, &v);
        }
        self.core.announce_untracked(&mut ps);
        self.core.greeted(&ps, told);
        let mut out = bytes::BytesMut::new();
        protocol::auth_ok(&mut out);
        for (k, v) in ps.iter() {
            protocol::parameter_status(&mut out, k, v);
        }
        protocol::backend_key_data(&mut out, self.handle.id, self.handle.secret);
        protocol::ready_for_query(&mut out, TxStatus::Idle);
        self.core.to_client().push(out.freeze());
        pool.stats.login_count.fetch_add(1, Ordering::Relaxed);
        self.core
            .to_client()
            .flush_all(stream)
            .await
            .map_err(|e| e.to_string())
    }

    /// Run until the client leaves, is killed, or the process shuts down
    /// ([`Ran::Ended`]), or until it has been parked for `[limits]
    /// client_hibernate_after` ([`Ran::Dormant`]; only a client that
    /// `may_sleep`: see `client::may_sleep`).
    ///
    /// Between transactions the session is [`Parked`]: the client's task then
    /// holds a few hundred bytes, not the whole session (most of a pooler's
    /// clients are idle most of the time). The session is boxed, and so is the
    /// future of each run of its event loop, so neither is part of the task.
    pub async fn run(self: Box<Self>, stream: &mut super::ClientStream, may_sleep: bool) -> Ran {
        let mut active = self;
        if let Err(e) = Box::pin(active.greet(stream)).await {
            return Ran::Ended(Err(e));
        }
        let handle = active.handle.clone();
        drive(Resting::Active(active), handle, stream, may_sleep).await
    }

    /// Go on with a client that was [`Ran::Dormant`], on a new task.
    pub async fn resume(
        parked: Parked,
        handle: Arc<ClientHandle>,
        stream: &mut super::ClientStream,
        may_sleep: bool,
    ) -> Ran {
        drive(Resting::Parked(parked), handle, stream, may_sleep).await
    }

    /// The session ended: leave LISTEN relays, drop the client's share of the
    /// input budget, give the server back clean or close it, and send the
    /// client whatever is left for it.
    async fn finish(
        &mut self,
        stream: &mut super::ClientStream,
        res: Result<(), End>,
    ) -> Result<(), End> {
        if let Some(l) = self.listening.take() {
            for pool in &l.pools {
                pool.listen(ListenCmd::Leave {
                    client: self.handle.id,
                });
            }
        }
        // Whatever it held no longer counts against the budget, and goes now:
        // kept until the drain below ends (up to a second or two), it was
        // memory no budget counted, and the budget let others read in its
        // place (probe OO: 1,000 clients each sending 1 MB took the pooler to
        // 700 MB against the 128 MiB default, most of it held by the clients
        // the budget had closed).
        self.core.discard_client_input();
        self.spool = None;
        if self.buffered > 0 {
            self.app.clients.hold_partial(&self.handle, 0, usize::MAX);
        }
        // Whatever happened, the server must not go back dirty.
        self.detach_on_exit().await;
        let flushed = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.core.to_client().flush_all(stream),
        )
        .await;
        if matches!(flushed, Ok(Ok(()))) {
            // The client's next request may already be on its way: closed
            // unread, it would reset the connection and could cost the
            // client the error just sent.
            stream.close_after_reading().await;
        }
        res
    }

    /// Move bytes and serve the core's needs until the session ends (`Err`),
    /// or, when `may_park`, until it is idle and can be [`Session::park`]ed
    /// (`Ok`). An event the parked session saw ([`Session::woken_by`]) is
    /// handled first.
    async fn event_loop(
        &mut self,
        stream: &mut super::ClientStream,
        wakes: &mut Wakes<'_, '_>,
        mut may_park: bool,
    ) -> Result<(), End> {
        self.client_fd = stream.tcp().map(std::os::fd::AsRawFd::as_raw_fd);
        // Only a client that sent something since it logged in or woke
        // lingers: one that logged in and sent nothing (a driver's pool
        // opening connections) parks at once, so a burst of logins does not
        // hold whole sessions (and leave the heap fragmented around the
        // records that stay).
        let mut may_linger = false;
        loop {
            let event = match self.woken_by.take() {
                Some(event) => event,
                None => {
                    self.prepare_wait().await?;
                    if may_park && self.parkable() {
                        if !may_linger {
                            return Ok(());
                        }
                        match self.linger(stream, wakes).await {
                            Some(event) => event,
                            None => return Ok(()),
                        }
                    } else if let Some(wrote) = self.write_now(stream) {
                        wrote
                    } else {
                        self.next_event(stream, wakes).await
                    }
                }
            };
            // Kept from parking (a park that failed) for this one wait only.
            may_park = true;
            let need = match event {
                Event::ClientRead(Ok(0)) => return Err("client closed the connection".into()),
                Event::ClientRead(Ok(n)) => {
                    may_linger = true;
                    self.last_activity = crate::net::clock::now();
                    self.core.client_read(n);
                    Need::Io
                }
                Event::ClientRead(Err(e)) => return Err(format!("client read: {e}")),
                Event::ClientWrote(Ok(0)) => return Err("client closed the connection".into()),
                Event::ClientWrote(Ok(n)) => {
                    self.core.client_wrote(n);
                    Need::Io
                }
                Event::ClientWrote(Err(e)) => return Err(format!("client write: {e}")),
                Event::ServerRead(Ok(0)) | Event::ServerRead(Err(_)) => {
                    return Err(self.server_lost());
                }
                Event::ServerRead(Ok(_)) => {
                    // The client's work being answered is activity too: the
                    // idle timeouts count from its answer, not from when it
                    // was sent (probe AC: `BEGIN; SELECT pg_sleep(5)` under a
                    // 3 s `idle_transaction_timeout` was ended as its answer
                    // came, and so was an autocommit one under
                    // `client_idle_timeout`).
                    self.last_activity = crate::net::clock::now();
                    let need = self.core.server_data();
                    // Published before the answer can reach the client: a cancel
                    // retry must see the request it was for is over.
                    self.handle
                        .answered
                        .store(self.core.requests_answered(), Ordering::SeqCst);
                    // A retry already on its way to this server lands before
                    // the server gets anything more or goes back to the pool
                    // (see `ClientHandle::retry_cancel`).
                    if self.handle.retries_in_flight() > 0 {
                        self.handle.retries_done().await;
                    }
                    need
                }
                Event::ServerWrote(Ok(0)) | Event::ServerWrote(Err(_)) => {
                    return Err(self.server_lost());
                }
                Event::ServerWrote(Ok(n)) => self.core.server_wrote(n),
                Event::Timeout(code, msg) => return Err(self.core.fatal(code, msg)),
                Event::Killed => return Err(self.killed()),
                Event::Shutdown => {
                    // Re-arm; the check at the top of the loop ends an idle session.
                    wakes.rearm_shutdown().await;
                    // Or a reload changed the timeouts (`App::wake_sessions`).
                    let snap = self.app.snapshot.load();
                    if let Some(db) = snap.dbs.get(&self.core.db().name) {
                        self.core.take_up_timeouts(db);
                    }
                    Need::Io
                }
                Event::Cancel => {
                    wakes.rearm_cancel().await;
                    if self.handle.cancel.load(Ordering::Acquire) == cancel::UNREAD {
                        self.cancel_unread(stream).await?;
                    }
                    Need::Io
                }
                Event::BudgetFreed => {
                    // Still over? The client holding the most is closed next
                    // (this one stopped reading, so nothing else would).
                    let cap = self.app.snapshot.load().config.limits.max_buffered;
                    self.app
                        .clients
                        .hold_partial(&self.handle, self.buffered, cap);
                    Need::Io
                }
                Event::Notification(frame) => {
                    self.deliver(frame)?;
                    Need::Io
                }
            };
            self.serve(need).await?;
            // Looked at after every event, so the rare work is boxed and
            // built only when the core answered a LISTEN or UNLISTEN: built
            // and polled inline it was 1.2% of the pooler's instructions per
            // `pgbench -S` transaction (callgrind), and an async wrapper
            // around the check still 0.7%.
            if self.core.has_listen_ops() {
                Box::pin(self.apply_listen_ops()).await;
            }
        }
    }

    /// Pick up reloaded settings and maps (between transactions, or for a
    /// unit that waits to be routed again), unless nothing was published
    /// since the session last did (or could not).
    #[inline]
    fn take_up_reload(&mut self) -> Result<(), End> {
        // (One atomic load per wait when nothing was published: the rest is
        // out of line, rare.)
        let published = self.app.snapshot.published();
        if published != self.taken_up.generation || published != self.core.db().generation {
            return self.take_up_published();
        }
        Ok(())
    }

    /// [`Self::take_up_reload`] when a configuration was published since.
    #[cold]
    #[inline(never)]
    fn take_up_published(&mut self) -> Result<(), End> {
        {
            let snap = self.app.snapshot.load();
            let mut removed = None;
            self.core.maybe_reload(snap.generation, |cur| {
                let new = (snap.generation != cur.generation)
                    .then(|| snap.dbs.get(&cur.name).cloned())
                    .flatten();
                if snap.generation != cur.generation && new.is_none() {
                    removed = Some(cur.name.clone());
                }
                new
            })?;
            let between = self.server.is_none()
                || self.core.owns_server()
                    && self.core.nothing_owed()
                    && self.core.client_status() == TxStatus::Idle;
            if let Some(db) = removed.filter(|_| between) {
                // Every statement would fail ("disabled"), and never say why or
                // that a new connection is refused (probe O): told once, as
                // Postgres ends the sessions of a database it drops.
                return Err(self.core.fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    &format!("database \"{db}\" was removed from shardbouncer's configuration"),
                ));
            }
            let limits = &snap.config.limits;
            self.core.spill_above(limits.spool_threshold);
            self.taken_up = TakenUp {
                generation: snap.generation,
                linger: match limits.client_hibernate_after.as_std() {
                    h if h.is_zero() => LINGER,
                    h => LINGER.min(h),
                },
            };
        }
        Ok(())
    }

    /// Before waiting: end a killed session, pick up reloaded settings and
    /// maps, serve whatever the client's bytes ask for, and give back what an
    /// idle session does not need.
    async fn prepare_wait(&mut self) -> Result<(), End> {
        if self.handle.killed.load(Ordering::Acquire) {
            return Err(self.killed());
        }
        self.take_up_reload()?;
        self.follow_reloaded_pools();
        let need = self.core.client_data();
        self.serve(need).await?;
        if self.core.has_listen_ops() {
            Box::pin(self.apply_listen_ops()).await;
        }
        self.account_buffered();
        self.core.trim_idle();
        if self.server.is_none() && self.app.shutting_down.load(Ordering::Acquire) {
            return Err(self
                .core
                .fatal(sqlstate::ADMIN_SHUTDOWN, "shardbouncer is shutting down"));
        }
        if self.sending && !self.core.sending_to_server() {
            // Before blocking: a cancel must not outlive the work it was for.
            self.work_sent().await;
        }
        Ok(())
    }

    /// Write what a socket takes at once, client first (as [`Self::wait`]
    /// prefers it), without a wait: a reply or a query usually fits in the
    /// socket's buffer, and each write through the wait costs a boxed future
    /// and a pass through its `select!`. `None`: nothing to write, or nothing
    /// written now (the wait writes it when the socket is ready).
    fn write_now(&mut self, stream: &super::ClientStream) -> Option<Event> {
        let (_, to_client, server_bufs) = self.core.io();
        if !to_client.is_empty() {
            if let Some(r) = to_client.try_write_some(stream) {
                return Some(Event::ClientWrote(r));
            }
        }
        match (self.server.as_ref(), server_bufs) {
            (Some(s), Some((to_server, _))) if !to_server.is_empty() => to_server
                .try_write_some(&s.co.conn.stream)
                .map(Event::ServerWrote),
            _ => None,
        }
    }

    /// Wait a little for the next event before a [`Self::parkable`] session
    /// parks (`None`: nothing came; park now). A busy client's next
    /// transaction comes within milliseconds, and a park and a wake for each
    /// (moving the session out of its box and back, dropping and rebuilding
    /// its scratch) were a sixth of the pooler's user-space instructions per
    /// `pgbench -S` transaction (callgrind). Only clients active in the last
    /// [`LINGER`] (or `client_hibernate_after`, if shorter) keep their whole
    /// session; an idle one parks, and sleeps as before.
    async fn linger(
        &mut self,
        stream: &mut super::ClientStream,
        wakes: &mut Wakes<'_, '_>,
    ) -> Option<Event> {
        let linger = self.taken_up.linger;
        crate::net::coarse::timeout(linger, self.wait_idle(stream, wakes)).await
    }

    /// Wait for the next event. An idle session that could not be parked (it
    /// LISTENs, for one) waits in the compact form; the full wait, every
    /// branch of a transaction in flight, is boxed.
    async fn next_event(
        &mut self,
        stream: &mut super::ClientStream,
        wakes: &mut Wakes<'_, '_>,
    ) -> Event {
        if self.is_idle() {
            self.wait_idle(stream, wakes).await
        } else {
            Box::pin(self.wait(stream, wakes)).await
        }
    }

    /// Carry out the LISTEN/UNLISTEN the core answered: register the client's
    /// channels with the relay of every shard of its database (a NOTIFY runs on
    /// one shard, whichever the sender's work routed to). Returns once every
    /// relay listens, before the answer is written: a NOTIFY committed after
    /// the client saw its LISTEN answered must reach it.
    async fn apply_listen_ops(&mut self) {
        let ops = self.core.take_listen_ops();
        if ops.is_empty() {
            return;
        }
        let shards = self.core.db().cfg.shards.len();
        if self.listening.is_none() {
            let (inbox, rx) = Inbox::new();
            let pools = (0..shards).map(|s| self.pool_for(s)).collect();
            self.listening = Some(Box::new(Listening {
                inbox,
                rx,
                channels: BTreeSet::new(),
                pools,
                generation: self.core.db().generation,
            }));
        }
        let client = self.handle.id;
        let l = self.listening.as_mut().expect("just set");
        let mut acks = Vec::new();
        for op in ops {
            match op {
                ListenOp::Listen(channel) => {
                    if l.channels.insert(channel.clone()) {
                        for pool in &l.pools {
                            let (ack, acked) = tokio::sync::oneshot::channel();
                            acks.push(acked);
                            pool.listen(ListenCmd::Listen {
                                channel: channel.clone(),
                                client,
                                inbox: l.inbox.clone(),
                                ack,
                            });
                        }
                    }
                }
                ListenOp::Unlisten(channel) => {
                    if l.channels.remove(&channel) {
                        for pool in &l.pools {
                            pool.listen(ListenCmd::Unlisten {
                                channel: channel.clone(),
                                client,
                            });
                        }
                    }
                }
                ListenOp::UnlistenAll => {
                    for channel in std::mem::take(&mut l.channels) {
                        for pool in &l.pools {
                            pool.listen(ListenCmd::Unlisten {
                                channel: channel.clone(),
                                client,
                            });
                        }
                    }
                }
            }
        }
        if acks.is_empty() {
            return;
        }
        // A relay that cannot reach its server answers at once (and keeps
        // trying); this bound is for one that is slow to.
        let wait = self.core.db().settings.server_connect_timeout.as_std()
            + std::time::Duration::from_secs(1);
        let all = async {
            for a in acks {
                let _ = a.await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!(
                client = client,
                "LISTEN answered before every shard's relay confirmed it"
            );
        }
    }

    /// After a reload that replaced a pool (its shard moved, a shard was added),
    /// move the client's channels to the relays of the pools it now uses.
    #[inline]
    fn follow_reloaded_pools(&mut self) {
        let generation = self.core.db().generation;
        if self
            .listening
            .as_ref()
            .is_some_and(|l| l.generation != generation)
        {
            self.rejoin_reloaded_pools(generation);
        }
    }

    /// [`Self::follow_reloaded_pools`] when the pools changed.
    #[cold]
    #[inline(never)]
    fn rejoin_reloaded_pools(&mut self, generation: u64) {
        let shards = self.core.db().cfg.shards.len();
        let now: Vec<Arc<Pool>> = (0..shards).map(|s| self.pool_for(s)).collect();
        let client = self.handle.id;
        let l = self.listening.as_mut().expect("checked");
        for old in &l.pools {
            if !now.iter().any(|p| Arc::ptr_eq(p, old)) {
                old.listen(ListenCmd::Leave { client });
            }
        }
        for pool in &now {
            if !l.pools.iter().any(|p| Arc::ptr_eq(p, pool)) {
                for channel in &l.channels {
                    pool.listen(ListenCmd::Listen {
                        channel: channel.clone(),
                        client,
                        inbox: l.inbox.clone(),
                        // Nobody waits: the client's LISTEN was answered long ago.
                        ack: tokio::sync::oneshot::channel().0,
                    });
                }
            }
        }
        l.pools = now;
        l.generation = generation;
    }

    /// Pass a relayed notification to the client (the event loop asks for one
    /// only between transactions), with any others already waiting.
    fn deliver(&mut self, frame: Bytes) -> Result<(), End> {
        let Some(l) = self.listening.as_mut() else {
            return Ok(());
        };
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if frame.is_empty() || l.inbox.overflowed() {
                return Err(self.core.fatal(
                    sqlstate::OUT_OF_MEMORY,
                    &format!(
                        "closing this connection: more than {} bytes of notifications \
                         were waiting for it",
                        crate::pool::listen::MAX_UNREAD
                    ),
                ));
            }
            l.inbox.taken(frame.len());
            // Queued before an UNLISTEN: Postgres would not deliver it after.
            let listening = crate::pool::listen::channel_of(&frame)
                .and_then(|c| std::str::from_utf8(c).ok())
                .is_some_and(|c| l.channels.contains(c));
            if listening {
                self.core.to_client().push(frame);
            }
            next = l.rx.try_recv().ok();
        }
        Ok(())
    }

    /// The client's socket, to watch for a client that leaves while its work
    /// waits (for a server, or a paused tenant): such work is dropped, as a
    /// client that gave up and retried would otherwise see its write twice.
    /// None once the client said goodbye behind that work
    /// ([`Core::said_goodbye`]): its close is then the end it announced, and
    /// the work runs (a query and its Terminate in one write, the socket
    /// closed behind them, lost its insert whenever the pool's server was
    /// busy at that moment).
    fn left_without_goodbye(&self) -> Option<std::os::fd::RawFd> {
        self.client_fd.filter(|_| !self.core.said_goodbye())
    }

    /// The FATAL for a session ended from outside: by an operator's KILL, or for
    /// holding the most of `[limits] max_buffered` when it ran out.
    fn killed(&mut self) -> End {
        if self.handle.out_of_memory.load(Ordering::Acquire) {
            let cap = self.app.snapshot.load().config.limits.max_buffered;
            return self.core.fatal(
                sqlstate::OUT_OF_MEMORY,
                &format!(
                    "closing this connection: it held the most of the {cap} bytes \
                     ([limits] max_buffered) that all clients' incomplete messages may use"
                ),
            );
        }
        self.core
            .fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by administrator")
    }

    /// Report the client input this session holds to the process-wide budget.
    /// Small amounts are not reported: every client holds a few KiB between
    /// reads, and an atomic per message would tax the common case for nothing.
    /// A session that holds more reports what it may hold after its next read
    /// too ([`Self::read_room`] bounds that read): the room is claimed before
    /// the read, so a thousand clients reading large messages at once stop at
    /// the cap instead of each reading its whole message first (probe OO:
    /// 1,000 clients each sending 1 MB took the pooler past 1 GB of RSS
    /// against the 128 MiB default).
    fn account_buffered(&mut self) {
        let held = self.core.client_buffered();
        // The buffer's size, not only what it holds: it is memory all the same.
        let held = if held < REPORT_FROM {
            0
        } else {
            self.core.client_buffer_size().max(held) + READ_CLAIM
        };
        if held == self.buffered {
            return;
        }
        self.buffered = held;
        let cap = self.app.snapshot.load().config.limits.max_buffered;
        if let Some(victim) = self.app.clients.hold_partial(&self.handle, held, cap) {
            tracing::warn!(
                client = victim.id,
                held = victim.partial.load(Ordering::Acquire),
                cap,
                "max_buffered reached: closing the client holding the most"
            );
        }
    }

    /// The most the next client read may take: unbounded (the buffer's room)
    /// for a client with no part of a message held; else what keeps the
    /// unreported part under [`REPORT_FROM`], or the room claimed for it
    /// (see [`Self::account_buffered`]).
    fn read_room(&self) -> usize {
        match self.core.client_buffered() {
            0 => usize::MAX,
            held if held < REPORT_FROM => REPORT_FROM - held,
            _ => READ_CLAIM,
        }
    }

    /// Give the core what it needs until it needs nothing but I/O.
    async fn serve(&mut self, mut need: Need) -> Result<(), End> {
        loop {
            need = match need {
                Need::Io => {
                    // A spooled message read back is counted until it is
                    // sent on (one Option looked at per event otherwise).
                    if self.whole.is_some() && self.core.holds_no_client_work() {
                        self.whole = None;
                    }
                    return Ok(());
                }
                Need::Close(e) => return Err(e),
                Need::ServerGone => return Err(self.server_lost()),
                // Boxed: checkout and reset futures are large, and inline they
                // would be part of every client's task while it sits idle (one
                // allocation per transaction is cheaper than ~1.6 KiB per client).
                // A unit that waited for the work in flight, with no client
                // byte read meanwhile: a client that left then (no Terminate,
                // nothing more sent) is seen only now, and its work must not
                // go on to another server (probe DE F1: an INSERT pipelined
                // behind a running statement of another shard ran 0.8 s after
                // its client had closed the connection).
                Need::Attach(_)
                    if self.core.unit_waited()
                        && self.client_fd.is_some_and(crate::net::closed_and_drained) =>
                {
                    return Err("client closed the connection".into());
                }
                Need::Attach(shard) => match self.attach_now(shard) {
                    Attaching::Done(need) => need,
                    Attaching::Wait => Box::pin(self.attach(shard)).await,
                    Attaching::ApplySettings(pool, co, sql) => {
                        Box::pin(self.apply_settings(shard, pool, co, sql)).await
                    }
                },
                Need::Release(r) => {
                    // Unpublished for cancels first. One already on its way
                    // to the server lands before the server is reset or goes
                    // back to the pool (see `ClientHandle::send_counted`).
                    let cancel_in_flight = self.handle.detach_server();
                    if cancel_in_flight || r.needs_reset() {
                        Box::pin(self.release(*r)).await
                    } else {
                        self.release_clean(*r)
                    }
                }
                // Boxed: a rare path whose future is large, and inline it would
                // make every client's task, idle ones included, that much bigger.
                Need::Paused(key) => Box::pin(self.wait_for_resume(key)).await?,
                // Boxed for the same reason: file I/O futures are large.
                Need::Spill(chunk) => Box::pin(self.spill(chunk)).await,
                Need::Unspill(n) => Box::pin(self.unspill(n)).await,
            };
        }
    }

    /// Append part of a large client message to the session's spool file
    /// (created on the first part), within `[limits] max_spooled`.
    async fn spill(&mut self, chunk: Bytes) -> Need {
        if self.spool.is_none() {
            match Spool::create(&self.app, self.handle.id).await {
                Ok(s) => self.spool = Some(Box::new(s)),
                Err(e) => return self.spool_failed(&format!("cannot create a spool file: {e}")),
            }
        }
        let spool = self.spool.as_mut().expect("just created");
        match spool.append(&chunk).await {
            Ok(()) => {
                drop(chunk);
                self.core.client_data()
            }
            Err(SpoolError::Full(cap)) => {
                tracing::warn!(
                    client = self.handle.id,
                    "closing a client: its message would take the spool past [limits] max_spooled"
                );
                Need::Close(self.core.fatal(
                    sqlstate::DISK_FULL,
                    &format!(
                        "closing this connection: its message would take the spool for large \
                         messages past [limits] max_spooled ({cap} bytes)"
                    ),
                ))
            }
            Err(SpoolError::Io(e)) => self.spool_failed(&format!("cannot write a spool file: {e}")),
        }
    }

    /// Add `len` bytes, counted already, to the session's claim.
    fn add_whole(&mut self, len: usize) {
        match self.whole.as_mut() {
            Some(w) => w.len += len,
            None => {
                self.whole = Some(WholeClaim {
                    len,
                    client: self.handle.id,
                    app: self.app.clone(),
                })
            }
        }
    }

    /// The rest of a spooled message has come: read the spool back into memory,
    /// where the message is routed and sent as any other. Its bytes are
    /// counted against `[limits] max_buffered` with every client's spooled
    /// messages held whole: past it, the session waits for others to send
    /// theirs on (one always passes), bounded by `query_wait_timeout`.
    async fn unspill(&mut self, n: usize) -> Need {
        let Some(mut spool) = self.spool.take() else {
            return Need::Close(self.core.fatal(
                sqlstate::INTERNAL_ERROR,
                "internal error: a spooled message has no spool",
            ));
        };
        debug_assert_eq!(spool.len(), n);
        let len = self.core.spilled_len().unwrap_or(n);
        if let Err(end) = self.claim_whole(len).await {
            return Need::Close(end);
        }
        let read = spool.read_all(len).await;
        drop(spool);
        match read {
            Ok(head) => {
                crate::admin::metrics::message_spooled();
                self.core.unspilled(head)
            }
            Err(e) => self.spool_failed(&format!("cannot read a spool file back: {e}")),
        }
    }

    /// Count `len` bytes of a message read back whole against `[limits]
    /// max_buffered` ([`crate::app::Clients::hold_whole`]), waiting while other clients'
    /// hold it; the session keeps the claim until it has sent the message
    /// on. KILL, shutdown, the client leaving or `query_wait_timeout` end the
    /// wait, and the session.
    async fn claim_whole(&mut self, len: usize) -> Result<(), End> {
        // A claim still held is for messages not sent on yet (probe CS G3:
        // replaced, it let one client hold a 100 MB Bind uncounted while
        // its next message was read back): this message adds to it.
        if self.whole.is_some() && self.core.holds_no_client_work() {
            self.whole = None;
        }
        let own = self.whole.as_ref().map_or(0, |w| w.len);
        let app = self.app.clone();
        let cap = |app: &App| app.snapshot.load().config.limits.max_buffered;
        let id = self.handle.id;
        if app.clients.hold_whole(len, own, cap(&app), id) {
            self.add_whole(len);
            return Ok(());
        }
        tracing::info!(
            client = self.handle.id,
            bytes = len,
            held = app.clients.whole_held(),
            cap = cap(&app),
            "a large message waits for memory: other clients' large messages hold max_buffered"
        );
        let handle = self.handle.clone();
        let started = tokio::time::Instant::now();
        let wait = self.core.db().settings.query_wait_timeout;
        let until = wait.non_zero().map(|t| started + t);
        let kill = handle.wake.notified();
        let shutdown = app.shutdown.notified();
        let gone = client_gone(self.client_fd);
        tokio::pin!(kill, shutdown, gone);
        kill.as_mut().enable();
        shutdown.as_mut().enable();
        loop {
            let freed = app.clients.whole_freed().notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if handle.killed.load(Ordering::Acquire) {
                return Err(self.killed());
            }
            if app.shutting_down.load(Ordering::Acquire) {
                return Err(self.core.fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection: shardbouncer is shutting down",
                ));
            }
            if app.clients.hold_whole(len, own, cap(&app), id) {
                self.add_whole(len);
                return Ok(());
            }
            tokio::select! {
                biased;
                () = &mut kill => {
                    kill.set(handle.wake.notified());
                    kill.as_mut().enable();
                }
                () = &mut shutdown => {
                    shutdown.set(app.shutdown.notified());
                    shutdown.as_mut().enable();
                }
                () = &mut freed => {}
                () = deadline(until) => {
                    return Err(self.core.fatal(
                        sqlstate::OUT_OF_MEMORY,
                        &format!(
                            "closing this connection: its message of {len} bytes waited longer \
                             than query_wait_timeout ({} s) for other clients' large messages \
                             to leave memory ([limits] max_buffered, {} bytes)",
                            wait.non_zero().map_or(0, |t| t.as_secs()),
                            cap(&app)
                        ),
                    ));
                }
                () = &mut gone => {
                    return Err("client closed the connection while its large message waited for memory".into());
                }
            }
        }
    }

    /// The spool failed (disk full, permissions): log why, and close the client.
    fn spool_failed(&mut self, why: &str) -> Need {
        tracing::error!(
            client = self.handle.id,
            "{why} (in {})",
            self.app.snapshot.load().config.spool_dir().display()
        );
        Need::Close(self.core.fatal(
            sqlstate::IO_ERROR,
            "closing this connection: its message could not be spooled",
        ))
    }

    /// A cancel came while no work of the client's was known: the query it is for
    /// may be in the socket still, sent just before the cancel. Take what the
    /// socket holds now and route it; the first work that asks for a server is
    /// cancelled (see [`Self::attach`]). If none does, there was nothing to
    /// cancel, and Postgres would have ignored it too.
    async fn cancel_unread(&mut self, stream: &mut super::ClientStream) -> Result<(), End> {
        if self.core.wants_client_bytes() {
            let (cbuf, _, _) = self.core.io();
            if cbuf.capacity() - cbuf.len() < 4096 {
                cbuf.reserve(8192);
            }
            let (mut cr, _) = stream.split();
            // Polled once: only bytes already here (a zero timeout polls first).
            match tokio::time::timeout(std::time::Duration::ZERO, cr.read_buf(cbuf)).await {
                Ok(Ok(0)) => return Err("client closed the connection".into()),
                Ok(Ok(n)) => {
                    self.last_activity = Instant::now();
                    self.core.client_read(n);
                }
                Ok(Err(e)) => return Err(format!("client read: {e}")),
                Err(_) => {}
            }
        }
        let need = self.core.client_data();
        self.serve(need).await?;
        self.handle.unread_done();
        Ok(())
    }

    /// The work that asked for the attached server is all written to it: a cancel
    /// that came meanwhile is passed on now that Postgres has something to cancel.
    async fn work_sent(&mut self) {
        self.sending = false;
        if !self.handle.cancel_step(cancel::SENDING, cancel::IDLE) {
            // Boxed: rare, and its future would otherwise be part of every
            // client's task.
            Box::pin(self.pass_cancel_on()).await;
        }
    }

    /// A cancel came while the work was being written: pass it to the server.
    async fn pass_cancel_on(&mut self) {
        if let Some(key) = self.handle.server.get() {
            // Delivered before anything else of the client's can reach the
            // server; the retries go on beside the session.
            let asked = self.core.requests_answered();
            crate::server::send_cancel(*key).await;
            let handle = self.handle.clone();
            tokio::spawn(async move { handle.retry_cancel(*key, asked).await });
        }
        self.handle.cancel_done();
    }

    /// Check a server out of the pool for `shard` and lend its state to the core.
    /// A cancel that arrives while the client's work waits drops the work: it
    /// never runs, and the client gets 57014 as if Postgres had cancelled it.
    async fn attach(&mut self, shard: usize) -> Need {
        let pool = self.pool_for(shard);
        let who = self.core.awaited_for();
        // Counted under the tenant's canonical spelling, as the gate and the
        // console know it (probe DE F7: `42` and `042` were two rows).
        let tenant = who.map(|(key, _)| key);
        if self.sending {
            // The last server's work is all written (it was given back): settle a
            // cancel meant for it before this work's own.
            self.work_sent().await;
        }
        self.handle.activity.waiting(shard);
        let res = if self.handle.cancel_step(cancel::IDLE, cancel::QUEUED) {
            let checkout = pool.checkout(who);
            tokio::pin!(checkout);
            // Most checkouts find an idle server at once: only a client that
            // has to wait is counted as its tenant's waiting client (two locked
            // registry updates fewer per transaction).
            match std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(checkout.as_mut(), cx))
            })
            .await
            {
                std::task::Poll::Ready(r) => Some(r),
                std::task::Poll::Pending => {
                    // Counted out however the wait ends, this future dropped
                    // mid-wait (KILL, shutdown) included.
                    let waiting = tenant.map(|t| {
                        TenantWaiting::start(&self.app, self.core.db(), t, &self.tenant_cell)
                    });
                    // Shutdown ends a queued client at once, with the reason
                    // (probe O: it waited for a server, and was dropped without
                    // a word when the process exited).
                    // So does KILL_CLIENT or KILL of its database (probe O: the
                    // client stayed queued until a server freed up). Read as
                    // flags: the task's wake-ups for both are registered once
                    // (`Wakes`), so a signal wakes this wait too, and no
                    // `Notify` lock is taken per wait (two `Notified`s here
                    // cost 4% of a `pgbench -S` transaction at 100 clients).
                    let (app, handle) = (&self.app, &self.handle);
                    // A reload or console SET wakes the task (`App::wake_sessions`)
                    // and spends the task's registered shutdown wake-up: from
                    // then on this wait keeps one of its own, so a shutdown
                    // still wakes it at once (probe S: a client queued at
                    // SIGTERM after a timeout change was ended a second late).
                    // The pool's `query_wait_timeout` is read again then: a
                    // lowered one reaches the clients already waiting, as in
                    // PgBouncer, whose janitor reads it on every pass (probe O).
                    let started = tokio::time::Instant::now();
                    let mut epoch = app.wake_epoch.load(Ordering::SeqCst);
                    let mut cut: Option<tokio::time::Instant> = None;
                    let mut own_wake = false;
                    let mut rerouted = false;
                    let r = loop {
                        let rewake = own_wake.then(|| app.shutdown.notified());
                        tokio::pin!(rewake);
                        if let Some(n) = rewake.as_mut().as_pin_mut() {
                            n.enable();
                        }
                        tokio::select! {
                            biased;
                            () = raised(&app.shutting_down) => break Err(false),
                            () = raised(&handle.killed) => break Err(true),
                            r = &mut checkout => break Ok(Some(Some(r))),
                            () = handle.cancelled() => break Ok(Some(None)),
                            () = client_gone(self.left_without_goodbye()) => break Ok(None),
                            () = deadline(cut) => {
                                break Ok(Some(Some(Err(PoolError::WaitTimeout))))
                            }
                            () = moved(&app.wake_epoch, epoch) => {}
                            () = async {
                                match rewake.as_mut().as_pin_mut() {
                                    Some(n) => n.await,
                                    None => std::future::pending().await,
                                }
                            } => {}
                        }
                        epoch = app.wake_epoch.load(Ordering::SeqCst);
                        own_wake = true;
                        if self.routing_changed() {
                            rerouted = true;
                            break Ok(None);
                        }
                        cut = pool
                            .settings
                            .load()
                            .query_wait_timeout
                            .non_zero()
                            .map(|w| started + w);
                    };
                    if let Some(w) = waiting {
                        self.tenant_cell = Some(w.end());
                    }
                    let r = match r {
                        Ok(r) => r,
                        Err(killed) => {
                            self.handle.cancel_done();
                            return Need::Close(if killed {
                                self.killed()
                            } else {
                                self.core.fatal(
                                    sqlstate::ADMIN_SHUTDOWN,
                                    "terminating connection: shardbouncer is shutting down",
                                )
                            });
                        }
                    };
                    // Its work must not run once it is gone: a client that
                    // timed out and retried would see its write twice. The
                    // watch looks once a second, so a server that comes in
                    // the meantime is looked at once more (probe DA F6): it
                    // goes back untouched.
                    let r = match r {
                        Some(Some(Ok(co)))
                            if self
                                .left_without_goodbye()
                                .is_some_and(crate::net::peer_closed) =>
                        {
                            pool.checkin(co);
                            None
                        }
                        // A reload changed where the database's work goes
                        // while this work waited (the wake-up it sends may
                        // come after the server): the server goes back
                        // untouched, and the work is routed again.
                        Some(Some(Ok(co))) if self.routing_changed() => {
                            pool.checkin(co);
                            return self.route_again();
                        }
                        None if rerouted => return self.route_again(),
                        r => r,
                    };
                    let Some(r) = r else {
                        self.handle.cancel_done();
                        return Need::Close(
                            "client closed the connection while waiting for a server".into(),
                        );
                    };
                    r
                }
            }
        } else {
            // A cancel came before this work was read (UNREAD): it was for this.
            None
        };
        let mut co = match self.took_server(shard, &pool, res) {
            Ok(co) => co,
            Err(need) => return need,
        };
        match self.core.prepare_attach(&mut co.conn.state) {
            Some(sql) => self.apply_settings(shard, pool, co, sql).await,
            None => self.seat(shard, pool, co),
        }
    }

    /// Whether the configuration in force places the waiting unit otherwise
    /// than the one the session routes by: one of its tenants moved since
    /// (the gate records every move a reload makes, [`App::record_moves`]),
    /// or the database has other shards (or is gone). Not for a reload that
    /// changed nothing of that: a waiting client is routed again, and waits
    /// again, only when it may have to (probe DO F2: every RELOAD did, and
    /// restarted its `query_wait_timeout`; DP F2: so did a move of another
    /// tenant).
    fn routing_changed(&self) -> bool {
        let snap = self.app.snapshot.load();
        let cur = self.core.db();
        if snap.generation == cur.generation {
            return false;
        }
        let Some(new) = snap.dbs.get(&cur.name) else {
            return true;
        };
        new.cfg.shards != cur.cfg.shards
            || self.app.gate.any_moved_since(cur.generation)
                && self.core.waiting_tenants_moved(cur.generation)
    }

    /// The work waiting for a server is routed again, with the configuration
    /// in force: a reload moved where its database's tenants go while it
    /// waited, and none of it reached a server (probe DN-3: an INSERT queued
    /// for a full pool when a reload moved its tenant ran on the old shard
    /// once a server freed up there, after the tenant's other clients had
    /// written on the new one).
    fn route_again(&mut self) -> Need {
        self.handle.activity.attached();
        if !self.handle.cancel_step(cancel::QUEUED, cancel::IDLE) {
            // A cancel came meanwhile: it was for this work.
            self.handle.cancel_done();
            return self.core.attach_failed(PgError::new(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to user request",
            ));
        }
        self.core.route_again();
        if let Err(e) = self.take_up_reload() {
            return Need::Close(e);
        }
        self.follow_reloaded_pools();
        self.core.client_data()
    }

    /// [`Self::attach`] without an await, when it needs none (the common case):
    /// no cancel of earlier work to settle, and an idle server at once.
    fn attach_now(&mut self, shard: usize) -> Attaching {
        if self.sending {
            return Attaching::Wait;
        }
        let pool = self.pool_for(shard);
        let Some(co) = pool.try_checkout(self.core.awaited_for()) else {
            return Attaching::Wait;
        };
        self.handle.activity.waiting(shard);
        // As in `attach`, with the server already in hand: a cancel that came
        // before this work was read (UNREAD) was for it, and the server goes
        // back untouched.
        let res = if self.handle.cancel_step(cancel::IDLE, cancel::QUEUED) {
            Some(Ok(co))
        } else {
            pool.checkin(co);
            None
        };
        let mut co = match self.took_server(shard, &pool, res) {
            Ok(co) => co,
            Err(need) => return Attaching::Done(need),
        };
        match self.core.prepare_attach(&mut co.conn.state) {
            Some(sql) => Attaching::ApplySettings(pool, co, sql),
            None => Attaching::Done(self.seat(shard, pool, co)),
        }
    }

    /// The checkout is over (`None`: cancelled while queued): publish the
    /// server for cancels and count the transaction, or fail the work.
    fn took_server(
        &mut self,
        shard: usize,
        pool: &Arc<Pool>,
        res: Option<Result<Checkout, PoolError>>,
    ) -> Result<Checkout, Need> {
        self.handle.activity.attached();
        let res = match res {
            Some(Ok(co)) => {
                // Published before leaving QUEUED: a cancel from now on either
                // finds the server or is seen by `work_sent`.
                self.handle.server.set(Some(co.conn.cancel.clone()));
                if self.handle.cancel_step(cancel::QUEUED, cancel::SENDING) {
                    Ok(co)
                } else {
                    // Cancelled as the server came: it goes back untouched.
                    self.handle.server.set(None);
                    pool.checkin(co);
                    Err(None)
                }
            }
            Some(Err(e)) => Err(Some(e)),
            None => Err(None),
        };
        let co = match res {
            Ok(co) => co,
            Err(None) => {
                self.handle.cancel_done();
                return Err(self.core.attach_failed(PgError::new(
                    sqlstate::QUERY_CANCELED,
                    "canceling statement due to user request",
                )));
            }
            Err(Some(e)) => {
                self.handle.cancel_done();
                let code = match &e {
                    PoolError::WaitTimeout => sqlstate::QUERY_CANCELED,
                    PoolError::Connect(_) | PoolError::Closed => sqlstate::CANNOT_CONNECT,
                };
                let db = self.core.db();
                let msg = format!(
                    "shard {} of database {}: {e}",
                    db.cfg.shards[shard].name, db.name
                );
                return Err(self.core.attach_failed(PgError::new(code, msg)));
            }
        };
        // Counted before the shutdown flag is looked at, as shutdown raises
        // the flag before it counts (both SeqCst): either shutdown waits for
        // this transaction, or it never starts. A client queued for a server
        // at SIGTERM is ended as Postgres ends its sessions (probe O: it was
        // handed a server as the last transaction ended, its INSERT committed,
        // and it was dropped a second later without a word).
        self.app.active_transactions.fetch_add(1, Ordering::SeqCst);
        if self.app.shutting_down.load(Ordering::SeqCst) {
            self.handle.server.set(None);
            self.handle.cancel_done();
            pool.checkin(co);
            self.app.transaction_finished();
            return Err(Need::Close(self.core.fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection: shardbouncer is shutting down",
            )));
        }
        tracing::trace!(client = self.handle.id, server = co.conn.id, "attach");
        self.sending = true;
        Ok(co)
    }

    /// The client's settings (its role first) must be in place before any of
    /// its work runs, or the work must not run at all: apply them, then seat
    /// the server.
    async fn apply_settings(
        &mut self,
        shard: usize,
        pool: Arc<Pool>,
        mut co: Checkout,
        sql: String,
    ) -> Need {
        // Boxed: rare, and inline its future would make `attach`'s larger.
        if let Err(e) = Box::pin(co.conn.internal_row(&sql)).await {
            tracing::warn!(
                client = self.handle.id,
                "applying the client's settings on a server failed: {e}"
            );
            self.handle.server.set(None);
            self.sending = false;
            // A server that closed (ended while idle in the pool: an
            // `idle_session_timeout` set for the role or database, a
            // terminated backend) ran none of the work: another is tried, as
            // one found closed in the pool is. Not after a cancel, which the
            // work gets (57014).
            let closed = matches!(e, crate::server::ServerError::Io(_));
            // `temp_buffers` cannot change on a server where any client has
            // used a temporary table (`DISCARD TEMP` does not undo that): the
            // server's history, not the client's setting (probe Y: such a
            // login was ended). Another server is tried; this one is closed.
            let server_history = co.conn.temps_used
                && matches!(
                    &e,
                    crate::server::ServerError::Refused(info) if info.message.contains("temp_buffers")
                );
            // A `statement_timeout` the last client left fired before the
            // settings Query lifted it: a server that was applying a long
            // setting (probe SS: the next client's work got 57014). Closed,
            // another is tried.
            let timed_out = matches!(
                &e,
                crate::server::ServerError::Refused(info) if info.code == sqlstate::QUERY_CANCELED
            );
            let cancelled = self.handle.cancel.load(Ordering::Acquire) == cancel::CANCELED;
            // Every pooled server may carry such a timeout (probe UU: four
            // clients left 1 ms on all four, and three retries were not
            // enough): each try closes one, and past the pool's size a new
            // connection, free of it, is made.
            let retries = if timed_out {
                let p = pool.settings.load();
                u8::try_from(p.default_pool_size + p.reserve_pool_size + 1).unwrap_or(u8::MAX)
            } else {
                MAX_SETTINGS_RETRIES
            };
            pool.discard(co);
            self.app.transaction_finished();
            if (closed || server_history || timed_out)
                && !cancelled
                && self.settings_retries < retries
            {
                self.settings_retries += 1;
                self.handle.cancel_step(cancel::SENDING, cancel::IDLE);
                return Need::Attach(shard);
            }
            self.settings_retries = 0;
            self.handle.cancel_done();
            // The server's words may name what the previous client had set:
            // the client gets the code only.
            // Postgres's code (safe to pass on, unlike its words).
            let (code, no_server_takes) = match &e {
                crate::server::ServerError::Refused(info) => (
                    sqlstate::known(&info.code).unwrap_or(sqlstate::INVALID_PARAMETER_VALUE),
                    refused_everywhere(&info.code, &info.message),
                ),
                _ => (sqlstate::CONNECTION_FAILURE, false),
            };
            let never_taken = !self.handle.settings_taken.load(Ordering::Relaxed);
            if never_taken && !server_history && no_server_takes {
                // Settings no server ever took (an unknown name, a value
                // its type refuses: `-c work_mem=banana`, a startup
                // parameter Postgres does not know) fail the same way on
                // every server: the session ends, as Postgres refuses such a
                // login (probe V: every later statement got 22023, for ever).
                // A setting Postgres takes only at connection start (55P02,
                // `-c ignore_system_indexes=on`) cannot be given to a
                // pooled server: said so (probe Y). Refusals that depend
                // on the server (42501 of a setting a loaded library made
                // superuser-only, a tablespace Postgres skips at connection
                // start but not in a SET: probe AA) are errors as before.
                return Need::Close(self.core.fatal(
                    code,
                    "this session's settings (startup parameters, options, SET) are refused \
                     by the server: an unknown setting, an invalid value, one that can only \
                     be set when a connection starts, or one this role may not set",
                ));
            }
            return self.core.attach_failed(PgError::new(
                code,
                "could not apply this session's settings (role included) on a server; \
                 the work did not run",
            ));
        }
        self.seat(shard, pool, co)
    }

    /// Hand the server's state to the core, which runs the work on it.
    fn seat(&mut self, shard: usize, pool: Arc<Pool>, mut co: Checkout) -> Need {
        self.settings_retries = 0;
        // The client's settings are in force on this server (applied, or
        // nothing to apply).
        if !self.handle.settings_taken.load(Ordering::Relaxed) {
            self.handle.settings_taken.store(true, Ordering::Relaxed);
        }
        let state = co.conn.lend_state();
        *self.server = Some(Server { co, pool });
        self.core.attached(shard, state)
    }

    /// The work's tenant is paused (console `PAUSE TENANT`, see
    /// [`crate::app::gate`]): wait for RESUME TENANT, bounded by
    /// `query_wait_timeout` as a wait for a server is. A cancel drops the work
    /// (57014), as it does in the pool's queue; KILL and shutdown end the
    /// session. On resume the work is routed again with the configuration then
    /// in force, which a MOVE TENANT has changed.
    async fn wait_for_resume(&mut self, key: TenantKey) -> Result<Need, End> {
        enum Outcome {
            Resumed,
            Cancelled,
            TimedOut,
            Killed,
            Shutdown,
            Gone,
        }
        let gate = self.app.gate.clone();
        let db_name = self.core.db().name.clone();
        let timeout = self.core.db().settings.query_wait_timeout;
        if !gate.is_paused(&key) {
            // Not paused: the tenant moved after this session's configuration
            // was built. Route the work again with the current one, if there is
            // a newer one (else fail closed rather than go round). A reload
            // records a move just before it publishes its configuration: work
            // that met the move in between waits for the publication (a
            // moment; bounded), rather than fail (a test under load did).
            let own = self.core.db().generation;
            let mut current = self.app.snapshot.load().generation;
            for _ in 0..PUBLISH_WAIT_STEPS {
                if current != own {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                current = self.app.snapshot.load().generation;
            }
            if current == own {
                return Ok(self.core.attach_failed(PgError::new(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "tenant {} moved, and the configuration in force does not route \
                         it to its new shard yet; retry",
                        key.as_str()
                    ),
                )));
            }
            return Ok(self.resume_with_current_config(&db_name));
        }
        if self.sending {
            self.work_sent().await;
        }
        gate.hold(key);
        crate::admin::metrics::tenant_held(&db_name);
        tracing::debug!(
            client = self.handle.id,
            tenant = key.as_str(),
            "held: tenant paused"
        );
        // Read again when a reload wakes the session: a lowered
        // `query_wait_timeout` reaches it, counted from the start of its wait
        // (probe X). None: no limit (0), as for a wait for a server.
        let started = tokio::time::Instant::now();
        let mut until = timeout.non_zero().map(|t| started + t);
        let outcome = if !self.handle.cancel_step(cancel::IDLE, cancel::QUEUED) {
            // A cancel came before this work was read (UNREAD): it was for this.
            Outcome::Cancelled
        } else {
            let handle = self.handle.clone();
            let app = self.app.clone();
            let kill = handle.wake.notified();
            let shutdown = app.shutdown.notified();
            let gone = client_gone(self.left_without_goodbye());
            tokio::pin!(kill, shutdown, gone);
            kill.as_mut().enable();
            shutdown.as_mut().enable();
            loop {
                let changed = gate.changed().notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if handle.killed.load(Ordering::Acquire) {
                    break Outcome::Killed;
                }
                if app.shutting_down.load(Ordering::Acquire) {
                    break Outcome::Shutdown;
                }
                if !gate.is_paused(&key) {
                    // A client that left in the last second (the watch below
                    // looks once a second) must not have its work run either
                    // (probe DA F6: 50 pipelined INSERTs of a client gone
                    // half a second before RESUME were written).
                    if self
                        .left_without_goodbye()
                        .is_some_and(crate::net::peer_closed)
                    {
                        break Outcome::Gone;
                    }
                    break Outcome::Resumed;
                }
                tokio::select! {
                    biased;
                    () = handle.cancelled() => break Outcome::Cancelled,
                    // A kill (looked at above) or a cancel's wake.
                    () = &mut kill => {
                        kill.set(handle.wake.notified());
                        kill.as_mut().enable();
                    }
                    () = &mut shutdown => {
                        // Also notified when a reload changed the timeouts
                        // (`App::wake_sessions`): the flag, looked at above,
                        // says which (probe S: a held client was ended as if
                        // the process stopped).
                        shutdown.set(app.shutdown.notified());
                        shutdown.as_mut().enable();
                        if let Some(db) = app.snapshot.load().dbs.get(&db_name) {
                            until = db.settings.query_wait_timeout.non_zero().map(|t| started + t);
                        }
                    }
                    () = &mut changed => {}
                    () = deadline(until) => break Outcome::TimedOut,
                    // Its work must not run once it is gone.
                    () = &mut gone => break Outcome::Gone,
                }
            }
        };
        gate.unhold(&key);
        let outcome = match outcome {
            // Cancelled just as the pause ended: the cancel wins.
            Outcome::Resumed if !self.handle.cancel_step(cancel::QUEUED, cancel::IDLE) => {
                Outcome::Cancelled
            }
            Outcome::Resumed => Outcome::Resumed,
            other => {
                if !matches!(other, Outcome::Cancelled) {
                    self.handle.cancel_step(cancel::QUEUED, cancel::IDLE);
                }
                other
            }
        };
        Ok(match outcome {
            Outcome::Resumed => self.resume_with_current_config(&db_name),
            Outcome::Cancelled => {
                self.handle.cancel_done();
                self.core.attach_failed(PgError::new(
                    sqlstate::QUERY_CANCELED,
                    "canceling statement due to user request",
                ))
            }
            Outcome::TimedOut => self.core.attach_failed(PgError::new(
                sqlstate::QUERY_CANCELED,
                format!(
                    "tenant {} stayed paused (PAUSE TENANT) longer than query_wait_timeout ({} s)",
                    key.as_str(),
                    // The one in force when it ran out (probe Z: a lowered
                    // one was applied, the first one named).
                    until.map_or(0, |u| u.saturating_duration_since(started).as_secs())
                ),
            )),
            Outcome::Killed => return Err(self.killed()),
            Outcome::Gone => {
                self.handle.cancel_done();
                return Err("client closed the connection while its tenant was paused".into());
            }
            Outcome::Shutdown => {
                return Err(self
                    .core
                    .fatal(sqlstate::ADMIN_SHUTDOWN, "shardbouncer is shutting down"))
            }
        })
    }

    /// Go on with held work, routed with the configuration in force now.
    fn resume_with_current_config(&mut self, db_name: &str) -> Need {
        match self.app.snapshot.load().dbs.get(db_name).cloned() {
            Some(db) => self.core.resumed(Some(db)),
            None => self.core.attach_failed(PgError::new(
                sqlstate::INVALID_CATALOG_NAME,
                format!("database {db_name} was removed by a configuration reload"),
            )),
        }
    }

    /// Give the server back after a transaction that left nothing on it to
    /// reset (the common case): no await, so no future to allocate.
    fn release_clean(&mut self, r: Release) -> Need {
        debug_assert!(!r.needs_reset());
        let Some(Server { mut co, pool }) = self.server.take() else {
            return self.core.released(Ok(None));
        };
        co.conn.restore_state(r.state);
        self.give_back(co, pool, r.since, r.counters, r.tenant, Ok(None))
    }

    /// Reset what the transaction left on the server (and read back the
    /// settings that follow the client), then give the server back; first,
    /// let a cancel on its way to it land.
    async fn release(&mut self, r: Release) -> Need {
        self.handle.cancels_done().await;
        let Some(Server { mut co, pool }) = self.server.take() else {
            return self.core.released(Ok(None));
        };
        let reset = r.needs_reset();
        co.conn.restore_state(r.state);
        let mut settings = Ok(None);
        if reset {
            let login_user = pool.target.load().user.clone();
            match co
                .conn
                .reset_and_read_back(
                    r.effects,
                    r.read_back,
                    self.core.custom_settings(),
                    &login_user,
                )
                .await
            {
                Ok(s) => settings = Ok(s),
                Err(e) => {
                    tracing::warn!(
                        client = self.handle.id,
                        "resetting server state failed, closing the server: {e}"
                    );
                    co.conn.broken = true;
                    if r.read_back {
                        // What the transaction set (a SET ROLE to fewer
                        // rights, a search_path) is unknown: going on with
                        // the settings from before it would run the client's
                        // next work as it did not ask.
                        let code = match e {
                            crate::server::ServerError::SettingsTooLarge(_) => {
                                sqlstate::CONFIGURATION_LIMIT_EXCEEDED
                            }
                            _ => sqlstate::CONNECTION_FAILURE,
                        };
                        settings = Err(PgError::fatal(
                            code,
                            format!(
                                "this session's settings cannot follow it to another server: {e}"
                            ),
                        ));
                    }
                }
            }
        }
        // After the read back, which may have just recorded it.
        if !co.conn.broken && co.conn.has_idle_timeout() {
            if let Err(e) = co.conn.lift_idle_timeout().await {
                tracing::debug!(client = self.handle.id, "lifting idle_session_timeout: {e}");
                co.conn.broken = true;
            }
        }
        self.give_back(co, pool, r.since, r.counters, r.tenant, settings)
    }

    /// The end of a release, reset or not: count the transaction and check
    /// the server in (already unpublished for cancels: see `serve`).
    fn give_back(
        &mut self,
        co: Checkout,
        pool: Arc<Pool>,
        since: Instant,
        mut counters: counters::Counters,
        tenant: Option<TenantKey>,
        settings: Result<Option<crate::server::ReadBack>, PgError>,
    ) -> Need {
        tracing::trace!(client = self.handle.id, server = co.conn.id, "release");
        let xact_us = crate::net::clock::since(since).as_micros() as u64;
        let stats = &pool.stats;
        stats.xact_count.fetch_add(1, Ordering::Relaxed);
        stats.xact_time_us.fetch_add(xact_us, Ordering::Relaxed);
        let done = counters.flush(stats);
        crate::admin::metrics::record_transaction(&pool, xact_us, done.query_us, done.queries);
        // The tenant's cell is kept from one transaction to the next (no
        // lookup while the session keeps routing to the same tenant).
        if let Some(tenant) = tenant {
            self.tenant_cell = Some(self.app.tenants.record_transaction(
                self.tenant_cell.as_ref(),
                &self.core.db().name,
                tenant.as_str(),
                &pool.key.shard,
                xact_us,
                done.queries,
            ));
        }
        pool.checkin(co);
        self.app.transaction_finished();
        self.core.released(settings)
    }

    /// The server connection died under us: tell the client and end the session.
    fn server_lost(&mut self) -> End {
        let (state, end) = self.core.server_lost();
        if let Some(Server { mut co, pool }) = self.server.take() {
            if let Some(st) = state {
                co.conn.restore_state(st);
            }
            co.conn.broken = true;
            self.handle.server.set(None);
            pool.discard(co);
            self.app.transaction_finished();
        }
        end
    }

    /// The client is gone: return the server only if it is clean (and reset),
    /// else close it.
    async fn detach_on_exit(&mut self) {
        let Some(Server { mut co, pool }) = self.server.take() else {
            return;
        };
        // A cancel on its way to the server lands before it is reset or goes
        // back to the pool.
        if self.handle.detach_server() {
            self.handle.cancels_done().await;
        }
        let left = self.core.left_work();
        let (clean, effects) = match self.core.detach() {
            Some((st, clean, effects)) => {
                co.conn.restore_state(st);
                (clean, effects)
            }
            // The state never came back: the server cannot be trusted.
            None => (false, crate::router::Effects::none()),
        };
        let mut reset = false;
        if clean && self.core.owns_server() {
            let q = pool.settings.load().server_reset_query.clone();
            if !q.is_empty() {
                let ok = co.conn.internal_row(&q).await.is_ok();
                co.conn.unreported = Default::default();
                if contains_ci(q.as_bytes(), b"discard all")
                    || contains_ci(q.as_bytes(), b"deallocate")
                {
                    co.conn.prepared.clear();
                }
                if !ok {
                    co.conn.broken = true;
                }
                reset = contains_ci(q.as_bytes(), b"discard all");
            }
        }
        use crate::router::Effects;
        // DISCARD ALL resets everything but the random seed, which a seed
        // among the client's settings (one given at connect) set as well
        // (re-probe: in session mode, the next client got its sequence).
        let mut resets = match (reset, effects.resets()) {
            (true, r) if r.any(Effects::SEED) => Effects::SEED,
            (true, _) => Effects::none(),
            (false, r) => r,
        };
        if self.core.seeded() {
            resets.add(Effects::SEED);
        }
        if clean && !resets.is_empty() {
            let login_user = pool.target.load().user.clone();
            // The client is gone, but the server's own record of what is set
            // on it (what the next client's sync resets) comes from this.
            let read_back = !reset && effects.may_change_settings();
            if co
                .conn
                .reset_and_read_back(resets, read_back, self.core.custom_settings(), &login_user)
                .await
                .is_err()
            {
                co.conn.broken = true;
            }
        }
        if clean && !co.conn.broken && co.conn.has_idle_timeout() {
            // Not in the pool with the client's idle_session_timeout.
            if co.conn.lift_idle_timeout().await.is_err() {
                co.conn.broken = true;
            }
        }
        if clean && !co.conn.broken {
            pool.checkin(co);
        } else if clean {
            pool.discard(co);
        } else {
            // Its tenants stay held until the backend is done.
            pool.discard_busy(co, Box::new(self.core.take_tickets()), left);
        }
        self.app.transaction_finished();
    }

    /// Idle ([`Self::is_idle`]) with nothing that needs the whole session
    /// while it waits: no LISTEN mailbox, no spool, and a core that parks
    /// ([`Core::parkable`]; a held BEGIN does not).
    fn parkable(&mut self) -> bool {
        self.is_idle()
            && self.listening.is_none()
            && self.spool.is_none()
            && self.woken_by.is_none()
            && self.core.parkable()
    }

    /// Keep only what lasts between transactions ([`Parked`]). `Err` gives
    /// the session back unchanged when it is not [`Self::parkable`].
    #[allow(clippy::result_large_err)]
    fn park(mut self: Box<Self>) -> Result<Parked, Box<Self>> {
        if !self.parkable() {
            return Err(self);
        }
        let Session {
            app,
            password,
            handle,
            core,
            server,
            pools,
            last_activity,
            buffered,
            sending,
            listening,
            spool,
            whole,
            woken_by,
            client_fd: _,
            tenant_cell: _,
            settings_retries: _,
            taken_up: _,
        } = unbox(self);
        debug_assert!(server.is_none() && buffered == 0 && !sending);
        debug_assert!(listening.is_none() && spool.is_none() && woken_by.is_none());
        // (A parkable session holds no client work: a claim left goes with
        // the session when it parks.)
        match core.park() {
            // The handle is dropped here: `run` keeps its own, and gives it
            // back at the wake.
            Ok(core) => Ok(Parked {
                app,
                password,
                core,
                pools,
                last_activity,
            }),
            Err(core) => Err(boxed(Session {
                app,
                password,
                handle,
                core,
                server,
                pools,
                last_activity,
                buffered,
                sending,
                listening,
                spool,
                whole,
                woken_by,
                client_fd: None,
                tenant_cell: None,
                settings_retries: 0,
                taken_up: TakenUp::default(),
            })),
        }
    }

    /// Nothing in flight: no server, nothing to write, no buffer, no work
    /// waiting. Only the client (or KILL, shutdown, a cancel, a notification,
    /// a timeout) can wake the session.
    fn is_idle(&mut self) -> bool {
        self.server.is_none()
            && !self.sending
            && self.buffered == 0
            && self.core.wants_client_bytes()
            && self.core.cbuf().capacity() == 0
            && self.core.to_client().is_empty()
    }

    /// [`Self::wait`] for an idle session ([`Self::is_idle`]): the same events,
    /// with a future a fraction of the size.
    async fn wait_idle(
        &mut self,
        stream: &mut super::ClientStream,
        wakes: &mut Wakes<'_, '_>,
    ) -> Event {
        // Boxed when there is one: most deployments set no idle timeouts.
        let mut timer = self
            .deadline()
            .map(|(at, code, msg)| (Box::pin(tokio::time::sleep_until(at.into())), code, msg));
        let notify = match self.listening.as_mut() {
            Some(l) if self.core.between_transactions() => Some(&mut l.rx),
            _ => None,
        };
        let (mut cr, _) = stream.split();
        let cbuf = self.core.cbuf();
        let (kill, shutdown, cancel_wake) = wakes.futures();
        tokio::select! {
            biased;
            _ = kill => Event::Killed,
            r = cr.read_idle(cbuf) => Event::ClientRead(r),
            (code, msg) = async {
                match timer.as_mut() {
                    Some((sleep, code, msg)) => {
                        sleep.as_mut().await;
                        (*code, *msg)
                    }
                    None => std::future::pending().await,
                }
            } => Event::Timeout(code, msg),
            _ = cancel_wake => Event::Cancel,
            _ = shutdown => Event::Shutdown,
            Some(frame) = async {
                match notify {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => Event::Notification(frame),
        }
    }

    /// The timeout in force now, if any: idle in a transaction, or idle.
    fn deadline(&self) -> Option<(Instant, &'static str, &'static str)> {
        let settings = &self.core.db().settings;
        let idle_in_tx = self.core.nothing_owed() && self.core.client_status() != TxStatus::Idle
            || self.core.server_waits_for_client();
        if idle_in_tx {
            settings.idle_transaction_timeout.non_zero().map(|t| {
                (
                    self.last_activity + t,
                    sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                    "idle_transaction_timeout",
                )
            })
        } else if self.server.is_none() || self.core.owns_server() && self.core.nothing_owed() {
            // (A session-mode client idle between transactions too, as in
            // PgBouncer: probe S, it kept its server for ever.)
            idle_deadline(self.core.db(), self.last_activity)
        } else {
            None
        }
    }

    /// Wait for the next I/O event or timer.
    async fn wait(&mut self, stream: &mut super::ClientStream, wakes: &mut Wakes<'_, '_>) -> Event {
        let deadline = self.deadline();
        // A client in the middle of a large message stops reading while all
        // clients together hold more than `[limits] max_buffered` (the one
        // holding the most is being closed): memory stays near the cap rather
        // than growing until that client is gone.
        let app = &self.app;
        let freed = app.clients.budget_freed();
        tokio::pin!(freed);
        let over_budget = self.buffered > 0 && {
            freed.as_mut().enable();
            app.clients.buffered() > app.snapshot.load().config.limits.max_buffered
        };
        let read_client = self.core.wants_client_bytes() && !over_budget;
        let read_room = self.read_room();
        let read_server = self.core.wants_server_bytes();
        let notify = match self.listening.as_mut() {
            Some(l) if self.core.between_transactions() => Some(&mut l.rx),
            _ => None,
        };
        // A session at work is not ended by shutdown; but it takes up
        // timeouts a reload changed (the same wake-up, `App::wake_sessions`):
        // until shutdown begins, the wake-up can only mean that.
        let idle_for_shutdown =
            self.server.is_none() || !self.app.shutting_down.load(Ordering::Acquire);
        let (mut cr, mut cw) = stream.split();
        let (cbuf, to_client, server_bufs) = self.core.io();
        let (kill, shutdown, cancel_wake) = wakes.futures();
        let (srv_read, srv_write) = match (self.server.as_mut(), server_bufs) {
            (Some(s), Some((to_server, rbuf))) => {
                let (r, w) = s.co.conn.stream.split();
                (Some((r, rbuf)), Some((w, to_server)))
            }
            _ => (None, None),
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
                Some((mut w, q)) if !q.is_empty() => q.write_some(&mut w).await,
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
                if cbuf.capacity() == 0 {
                    // Idle (see Core::trim_idle): no buffer until there is data.
                    return cr.read_idle(cbuf).await;
                }
                if cbuf.capacity() - cbuf.len() < 4096 {
                    cbuf.reserve(8192);
                }
                if read_room < cbuf.capacity() - cbuf.len() {
                    use bytes::BufMut;
                    return cr.read_buf(&mut cbuf.limit(read_room)).await;
                }
                cr.read_buf(cbuf).await
            }, if read_client => Event::ClientRead(r),
            (code, msg) = timer => Event::Timeout(code, msg),
            _ = cancel_wake => Event::Cancel,
            _ = shutdown, if idle_for_shutdown => Event::Shutdown,
            _ = freed, if over_budget => Event::BudgetFreed,
            Some(frame) = async {
                match notify {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => Event::Notification(frame),
        }
    }
}

/// Ready once `flag` is up. It holds no waker of its own: for a flag whose
/// raiser also notifies a `Notify` the task is registered with (KILL and
/// shutdown, see `wakes`), the task is woken and this is polled again.
fn raised(flag: &std::sync::atomic::AtomicBool) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if flag.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// Whether Postgres's refusal (`code`, `message`) of a client's settings is
/// one every server gives: an unknown setting, a value its type refuses, a
/// setting only a connection's start takes, an isolation level a SET cannot
/// change. Others may be the server's (what a loaded library or the role's
/// rights make of a setting).
fn refused_everywhere(code: &str, message: &str) -> bool {
    match code {
        sqlstate::UNDEFINED_OBJECT => message.starts_with("unrecognized configuration parameter"),
        sqlstate::INVALID_PARAMETER_VALUE
        | sqlstate::CANT_CHANGE_RUNTIME_PARAM
        | sqlstate::ACTIVE_SQL_TRANSACTION => true,
        _ => false,
    }
}

/// Ready once `epoch` (`App::wake_epoch`) has moved past `seen`; polled when
/// the task is woken (see `raised`).
fn moved(
    epoch: &std::sync::atomic::AtomicU64,
    seen: u64,
) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if epoch.load(Ordering::Acquire) != seen {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// Ready at `at`, never without one.
async fn deadline(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a client with no server and no transaction, last active at `last`,
/// is closed (`client_idle_timeout`), if ever.
fn idle_deadline(db: &DbRuntime, last: Instant) -> Option<(Instant, &'static str, &'static str)> {
    db.settings
        .client_idle_timeout
        .non_zero()
        .map(|t| (last + t, sqlstate::ADMIN_SHUTDOWN, "client_idle_timeout"))
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

/// Resolves once the client's socket (`fd`) reports that the peer closed it
/// (or an error), looked at once a second without reading anything: data it
/// pipelined stays for the session. Never, when there is no socket to look at.
async fn client_gone(fd: Option<std::os::fd::RawFd>) {
    match fd {
        Some(fd) => crate::net::peer_gone(fd, std::time::Duration::from_secs(1)).await,
        None => std::future::pending().await,
    }
}

/// Bytes of a spooled message read back whole, counted against `[limits]
/// max_buffered` ([`crate::app::Clients::hold_whole`]) until dropped.
struct WholeClaim {
    len: usize,
    client: i32,
    app: Arc<App>,
}

impl Drop for WholeClaim {
    fn drop(&mut self) {
        self.app.clients.release_whole(self.len, self.client);
    }
}

/// A client counted as waiting for a server in its tenant's statistics
/// (`SHOW TENANTS`, `shardbouncer_tenant_waiting`) until dropped or ended.
struct TenantWaiting {
    cell: Option<Arc<TenantCell>>,
    since: Instant,
}

impl TenantWaiting {
    fn start(
        app: &Arc<App>,
        db: &Arc<DbRuntime>,
        tenant: TenantKey,
        known: &Option<Arc<TenantCell>>,
    ) -> TenantWaiting {
        TenantWaiting {
            cell: Some(
                app.tenants
                    .waiting_inc(known.as_ref(), &db.name, tenant.as_str()),
            ),
            since: crate::net::clock::now(),
        }
    }

    /// The wait is over: counted out, and the tenant's cell kept for the
    /// transaction's count.
    fn end(mut self) -> Arc<TenantCell> {
        let cell = self.cell.take().expect("a wait ends once");
        cell.waiting_dec(crate::net::clock::since(self.since).as_micros() as u64);
        cell
    }
}

impl Drop for TenantWaiting {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            cell.waiting_dec(crate::net::clock::since(self.since).as_micros() as u64);
        }
    }
}

#[cfg(test)]
mod slot_tests {
    use super::{Server, ServerSlot};
    use crate::pool::Pool;
    use std::sync::atomic::Ordering;

    /// A session's task that unwinds with its server (a panic) gives the
    /// server back to its pool's count, and ends its transaction's count: a
    /// panic used to leave the pool one server short for good, and shutdown
    /// waiting `shutdown_timeout` for a transaction no one would end.
    #[test]
    fn a_session_dropped_with_its_server_gives_it_back() {
        let cfg = crate::config::Config::parse(
            "[databases.app]\nshards = [ { name = \"s0\", host = \"127.0.0.1\" } ]\n",
        )
        .unwrap();
        let app = crate::app::App::new(cfg, None).unwrap();
        let pool = Pool::unconnected(1);
        let co = pool.unconnected_checkout();
        // As `Session::took_server` counts it.
        app.active_transactions.fetch_add(1, Ordering::SeqCst);
        let slot = ServerSlot(
            Some(Server {
                co,
                pool: pool.clone(),
            }),
            app.clone(),
        );
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _slot = slot;
            panic!("a bug in the session");
        }));
        assert!(unwound.is_err());
        assert_eq!(pool.stats.active.load(Ordering::Relaxed), 0);
        assert!(pool.unconnected_checkout().conn.id > 0, "its slot is free");
        assert_eq!(app.active_transactions.load(Ordering::SeqCst), 0);
    }
}
