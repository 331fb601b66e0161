//! The registry of connected clients (SHOW CLIENTS, cancel requests, KILL) and the
//! `max_client_conn` count, with the drop guards that keep both true when a client
//! task ends, however it ends.

use crate::server::CancelKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// A client socket's address as the console shows it: IP and port.
///
/// Why not `SocketAddr`: that is 32 bytes (an IPv6 flow label and scope id,
/// which SHOW CLIENTS does not show), this is 20, and every client keeps two,
/// asleep or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownAddr {
    ip: std::net::IpAddr,
    port: u16,
}

impl ShownAddr {
    /// The IP address.
    pub fn ip(&self) -> std::net::IpAddr {
        self.ip
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for ShownAddr {
    fn from(a: SocketAddr) -> ShownAddr {
        ShownAddr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

/// The cancel key of the server a client is attached to right now.
///
/// A plain lock rather than an `ArcSwapOption`: it is written twice per
/// transaction (attach and release) by the client's own task and read only by a
/// cancel or the console, and arc-swap's store walks every thread's debt list
/// (0.9% of the pooler's CPU in a `pgbench -S` profile). The lock is never
/// held across anything but the swap of one pointer.
#[derive(Default)]
pub struct AttachedServer(Mutex<Option<Arc<CancelKey>>>);

impl AttachedServer {
    /// Publish the server now attached (`None`: detached). The old key is
    /// dropped after the lock is let go.
    pub fn set(&self, key: Option<Arc<CancelKey>>) {
        let old = std::mem::replace(
            &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
            key,
        );
        drop(old);
    }

    /// The server attached right now, if any.
    pub fn get(&self) -> Option<Arc<CancelKey>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Signalled whenever a client's cancel in flight has been sent (or stayed
/// home), and when a session has looked at an [`cancel::UNREAD`] cancel.
/// One for all clients: its waiters (cancel paths only) check their own
/// client's state after each signal, so another client's is a spurious
/// wake, and every client is 32 bytes smaller (the idle bench).
static RETRIES_SETTLED: Notify = Notify::const_new();

/// What the registry knows about a connected client (console and cancel).
pub struct ClientHandle {
    /// Process-unique id (also the BackendKeyData pid we hand out).
    pub id: i32,
    /// BackendKeyData secret.
    pub secret: i32,
    /// Cancel key of the server it is attached to right now, if any.
    pub server: AttachedServer,
    /// Client user and database, for the console (shared copies: [`Clients::name`]).
    pub user: Arc<str>,
    /// Database name.
    pub database: Arc<str>,
    /// Peer address.
    pub addr: Option<ShownAddr>,
    /// Wakes the session's waits: KILL (raises `killed` first) and a cancel
    /// for it (raises `cancel_signals` first). One `Notify` for both: each
    /// waiter checks its own flag after a signal, so the other's is a
    /// spurious wake, and every client is 32 bytes smaller (the idle bench).
    pub wake: Notify,
    /// Set by KILL / KILL_CLIENT / shutdown before [`Self::wake`]: the session ends at the next opportunity.
    pub killed: AtomicBool,
    /// A server ran the client's settings at least once: a later failure to
    /// apply them is that server's state (`temp_buffers` after temporary
    /// tables), not settings no server takes.
    pub settings_taken: AtomicBool,
    /// When the client connected, in microseconds since the epoch (see
    /// [`ClientHandle::connect_time`]; 8 bytes instead of 16 in every client).
    pub connected_us: u64,
    /// Console view of what the client is doing (waiting, last request, shard).
    pub activity: ClientActivity,
    /// Bytes of a client message not yet complete that the session holds
    /// (counted against `[limits] max_buffered`).
    pub partial: AtomicUsize,
    /// The session is ended for holding the most of the buffer budget.
    pub out_of_memory: AtomicBool,
    /// Where a CancelRequest for this client goes: one of [`cancel`]'s states.
    pub cancel: AtomicU8,
    /// How many times [`Self::wake`] was signalled for a cancel (raised before it is): the
    /// session's event loop takes a change as the signal, and polls the
    /// `Notify` only to be woken.
    pub cancel_signals: AtomicU32,
    /// Requests of the client that servers have answered so far: a cancel that
    /// Postgres may have ignored is tried again only while this has not moved.
    pub answered: AtomicU64,
    /// Cancels being sent to the client's server now
    /// ([`ClientHandle::send_counted`]): retries in the low 32 bits
    /// ([`cancel::RETRY`]), first tries in the high 32 ([`cancel::FIRST`]).
    pub cancels_in_flight: AtomicU64,
    /// The dormitory of the client's worker (`None` where there is none): an
    /// idle client may sleep there without a task ([`crate::net::dormant`]).
    pub dorm: Option<Arc<crate::net::dormant::Bell>>,
    /// The client sleeps in `dorm` now: what must reach its session (KILL, a
    /// cancel, shutdown) wakes it first ([`ClientHandle::rouse`]).
    pub dormant: AtomicBool,
}

/// States of [`ClientHandle::cancel`]. A cancel must stop the query the client
/// is waiting for, wherever that query is, and never a later one.
pub mod cancel {
    /// No work waits for a server: a cancel goes to the attached server, if any
    /// (Postgres ignores one that finds its backend idle, as it would directly).
    pub const IDLE: u8 = 0;
    /// The client's work waits for a server: a cancel drops it from the queue.
    pub const QUEUED: u8 = 1;
    /// A server is attached and the work is being written to it: a cancel is
    /// passed on once the server has the work.
    pub const SENDING: u8 = 2;
    /// A cancel arrived in [`QUEUED`] or [`SENDING`]; the session acts on it.
    pub const CANCELED: u8 = 3;
    /// A cancel arrived in [`IDLE`] with no server attached: the query it is for
    /// may not have been read from the client's socket yet; the session looks.
    pub const UNREAD: u8 = 4;

    /// One retry in [`super::ClientHandle::cancels_in_flight`].
    pub const RETRY: u64 = 1;
    /// One first try in [`super::ClientHandle::cancels_in_flight`].
    pub const FIRST: u64 = 1 << 32;
    /// The retries' part of [`super::ClientHandle::cancels_in_flight`].
    pub const RETRIES: u64 = FIRST - 1;
}

impl ClientHandle {
    /// When the client connected.
    pub fn connect_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.connected_us)
    }

    /// A CancelRequest for this client arrived: the server key to pass it to
    /// now, with the count of answered requests read before it (for
    /// [`Self::forward_cancel`]), or `None` when the session takes care of it
    /// (or there is nothing to cancel).
    pub fn request_cancel(&self) -> Option<(CancelKey, u64)> {
        loop {
            match self.cancel.load(Ordering::Acquire) {
                s @ (cancel::QUEUED | cancel::SENDING) => {
                    if self
                        .cancel
                        .compare_exchange(s, cancel::CANCELED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.wake_for_cancel();
                        return None;
                    }
                }
                cancel::CANCELED | cancel::UNREAD => return None,
                _ => {
                    // Read before the server: a request answered after this
                    // read makes the cancel stay home (see `send_counted`).
                    let asked = self.answered.load(Ordering::SeqCst);
                    if let Some(k) = self.server.get() {
                        return Some((*k, asked));
                    }
                    if self
                        .cancel
                        .compare_exchange(
                            cancel::IDLE,
                            cancel::UNREAD,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        self.wake_for_cancel();
                        return None;
                    }
                }
            }
        }
    }

    /// Pass a CancelRequest on to the server the client's request runs on. Postgres
    /// ignores a cancel that finds its backend between commands, which is where it
    /// is when the request was written but not yet read: while that request is
    /// still unanswered on the same server, the cancel is tried again, a few times.
    /// The first try is delivered before this returns (the client learns its
    /// cancel went through when its cancel connection closes); the retries go on
    /// in the background. The first try is guarded as each retry is
    /// ([`Self::send_counted`]): sent only while the request it is for is
    /// unanswered and its server still attached, and the server goes to no
    /// one else while it is on its way.
    pub async fn forward_cancel(self: &Arc<Self>, key: CancelKey, asked: u64) {
        if self.send_counted(key, asked, cancel::FIRST).await {
            let me = self.clone();
            tokio::spawn(async move { me.retry_cancel(key, asked).await });
        }
    }

    /// Send a cancel to `key`'s server if the request unanswered when
    /// `answered` was `asked` still runs there; whether it was sent. `unit`:
    /// [`cancel::FIRST`] or [`cancel::RETRY`].
    ///
    /// A cancel must never reach another client's query, and a retry (the
    /// pooler's own doing) never a later query of this client. Each counts
    /// itself in flight before it looks at `answered` and at the attached
    /// server:
    /// - the session unpublishes the server before it gives it back, then
    ///   looks at the count ([`Self::detach_server`]) and waits for every
    ///   cancel in flight ([`Self::cancels_done`]): either a cancel sees no
    ///   server and stays home, or the server goes to no one else before
    ///   Postgres has taken the cancel (it closes the cancel socket once the
    ///   backend is signalled);
    /// - the session bumps `answered` before it looks at the retries, and
    ///   waits for them ([`Self::retries_done`]) before it sends that server
    ///   anything more: either a retry sees the answer and stays home, or it
    ///   lands while the answered query is still the last one there.
    ///
    /// A first try is not waited for at each answer: one that read the
    /// server just as its request was answered would then keep the session
    /// waiting for as long as cancels keep coming. Like a cancel sent to
    /// Postgres directly, it may stop the client's next query on that server.
    async fn send_counted(&self, key: CancelKey, asked: u64, unit: u64) -> bool {
        self.cancels_in_flight.fetch_add(unit, Ordering::SeqCst);
        // Pairs with the fence in `detach_server` (the server slot is a lock,
        // not a SeqCst atomic).
        std::sync::atomic::fence(Ordering::SeqCst);
        let go = self.answered.load(Ordering::SeqCst) == asked
            && self.server.get().as_deref() == Some(&key);
        if go {
            crate::server::send_cancel(key).await;
        }
        self.cancels_in_flight.fetch_sub(unit, Ordering::SeqCst);
        RETRIES_SETTLED.notify_waiters();
        go
    }

    /// The session lets go of its server: unpublish it for cancels. `true`
    /// when a cancel may be on its way to it: the session then waits
    /// ([`Self::cancels_done`]) before the server goes to anyone else.
    pub fn detach_server(&self) -> bool {
        self.server.set(None);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.cancels_in_flight.load(Ordering::SeqCst) != 0
    }

    /// Cancel retries on their way to the server now.
    pub fn retries_in_flight(&self) -> u64 {
        self.cancels_in_flight.load(Ordering::SeqCst) & cancel::RETRIES
    }

    /// The retries of [`Self::forward_cancel`], for a request unanswered when
    /// `answered` was `asked`, each guarded as the first try
    /// ([`Self::send_counted`]).
    pub async fn retry_cancel(&self, key: CancelKey, asked: u64) {
        for ms in [20, 100, 400] {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if !self.send_counted(key, asked, cancel::RETRY).await {
                return;
            }
        }
    }

    /// Wait until no cancel retry is being sent (see [`Self::send_counted`]);
    /// call after bumping `answered`.
    pub async fn retries_done(&self) {
        self.settled(cancel::RETRIES).await
    }

    /// Wait until no cancel at all is being sent to the server; call when
    /// [`Self::detach_server`] says one may be.
    pub async fn cancels_done(&self) {
        self.settled(u64::MAX).await
    }

    /// Wait until the `part` of [`Self::cancels_in_flight`] is zero.
    async fn settled(&self, part: u64) {
        self.until_settled(|h| h.cancels_in_flight.load(Ordering::SeqCst) & part == 0)
            .await
    }

    /// Wait until `done` holds, checked again at each signal of
    /// [`RETRIES_SETTLED`] (registered before each check, so none is
    /// missed).
    async fn until_settled(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let settled = RETRIES_SETTLED.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if done(self) {
                return;
            }
            settled.await;
        }
    }

    /// Move the cancel state from `from` to `to`; false if a cancel came first
    /// (the state is then [`cancel::CANCELED`], and stays so until [`Self::cancel_done`]).
    pub fn cancel_step(&self, from: u8, to: u8) -> bool {
        self.cancel
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Wake the session: the waiter in its event loop and the one of a checkout.
    fn wake_for_cancel(&self) {
        self.cancel_signals.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_waiters();
        self.wake.notify_one();
        self.rouse();
    }

    /// If the client sleeps in its worker's dormitory, wake it: its session
    /// then sees what the caller set before this call (the kill flag, a
    /// cancel, shutdown). SeqCst pairs with the check a client makes after
    /// it lays down (`client::hibernate`): one of the two sees the other.
    pub fn rouse(&self) {
        if self.dormant.load(Ordering::SeqCst) {
            if let Some(dorm) = &self.dorm {
                dorm.wake(self.id);
            }
        }
    }

    /// Whether something waits for the session (a kill or a cancel): a client
    /// that would sleep is woken at once instead.
    pub fn has_news(&self) -> bool {
        self.killed.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst) != cancel::IDLE
    }

    /// The session acted on a cancel (or gave up on it): back to [`cancel::IDLE`].
    pub fn cancel_done(&self) {
        if self.cancel.swap(cancel::IDLE, Ordering::AcqRel) == cancel::UNREAD {
            RETRIES_SETTLED.notify_waiters();
        }
    }

    /// The session looked for the work an [`cancel::UNREAD`] cancel was for
    /// (and cancelled it, or found none): back to [`cancel::IDLE`].
    pub fn unread_done(&self) {
        if self.cancel_step(cancel::UNREAD, cancel::IDLE) {
            RETRIES_SETTLED.notify_waiters();
        }
    }

    /// Wait (at most `limit`) until the session has looked at an
    /// [`cancel::UNREAD`] cancel. The cancel's connection closes only then:
    /// a client that sends its next query once its cancel went through (as
    /// libpq's `PQcancel` returns when that connection closes) does not have
    /// that query taken for the one the cancel was for. Postgres, too, has
    /// dropped a cancel that found its backend idle by then.
    pub async fn unread_seen(&self, limit: Duration) {
        let seen = self.until_settled(|h| h.cancel.load(Ordering::Acquire) != cancel::UNREAD);
        let _ = tokio::time::timeout(limit, seen).await;
    }

    /// Wait until a cancel arrives for work that waits for a server.
    pub async fn cancelled(&self) {
        loop {
            let n = self.wake.notified();
            if self.cancel.load(Ordering::Acquire) == cancel::CANCELED {
                return;
            }
            n.await;
        }
    }
}

impl ClientHandle {
    /// Ask the client's session to end.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        self.wake.notify_one();
        self.rouse();
    }

    /// End the session because the pooler's buffer budget ran out (53200).
    pub fn kill_for_memory(&self) {
        self.out_of_memory.store(true, Ordering::Release);
        self.kill();
    }
}

/// What the console shows about one client beyond its identity; updated by the
/// session at the two moments that matter (waiting for a server, attached to one), so
/// the hot path pays two relaxed stores per transaction.
#[derive(Debug, Default)]
pub struct ClientActivity {
    /// application_name given at login.
    pub application_name: Arc<str>,
    /// Local end of the client socket.
    pub local_addr: Option<ShownAddr>,
    /// Microseconds since the epoch when the client started waiting for a server (0 = not waiting).
    wait_start_us: AtomicU64,
    /// Microseconds since the epoch of the client's last server request.
    request_us: AtomicU64,
    /// Index of the shard of the last (or current) server request.
    shard: AtomicUsize,
}

/// Microseconds since the epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ClientActivity {
    /// Activity record of a client that just logged in.
    /// `application_name` is best the shared copy ([`Clients::name`]).
    pub fn new(application_name: Arc<str>, local_addr: Option<SocketAddr>) -> ClientActivity {
        ClientActivity {
            application_name,
            local_addr: local_addr.map(ShownAddr::from),
            ..Default::default()
        }
    }

    /// The client asks for a server of shard `shard` (it waits until [`Self::attached`]).
    pub fn waiting(&self, shard: usize) {
        let now = now_us();
        self.shard.store(shard, Ordering::Relaxed);
        self.request_us.store(now, Ordering::Relaxed);
        self.wait_start_us.store(now, Ordering::Relaxed);
    }

    /// The wait is over (a server was assigned, or the checkout failed).
    pub fn attached(&self) {
        self.wait_start_us.store(0, Ordering::Relaxed);
    }

    /// How long the client has been waiting, if it is.
    pub fn wait_time(&self) -> Option<Duration> {
        match self.wait_start_us.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_micros(now_us().saturating_sub(t))),
        }
    }

    /// Time of the last server request, if any.
    pub fn request_time(&self) -> Option<SystemTime> {
        match self.request_us.load(Ordering::Relaxed) {
            0 => None,
            t => Some(UNIX_EPOCH + Duration::from_micros(t)),
        }
    }

    /// Shard index of the last server request.
    pub fn shard(&self) -> usize {
        self.shard.load(Ordering::Relaxed)
    }
}

/// Registry of logged-in clients, by id, and the count of connected client sockets.
pub struct Clients {
    map: Mutex<HashMap<i32, Arc<ClientHandle>>>,
    /// Connected client sockets (including those logging in), for max_client_conn.
    connected: AtomicUsize,
    /// Most clients connected at once since [`Clients::take_connected_peak`]
    /// last looked: a burst that comes and goes between two looks of the
    /// maintenance tick still shows.
    connected_peak: AtomicUsize,
    next_id: AtomicU64,
    /// Bytes all sessions hold in client messages not yet complete.
    buffered: AtomicUsize,
    /// Signalled when the bytes held fall: clients that stopped reading over
    /// `[limits] max_buffered` look again.
    budget_freed: tokio::sync::Notify,
    /// Bytes all sessions hold in spool files (`[limits] max_spooled`).
    spooled: AtomicUsize,
    /// Bytes of spooled messages read back whole, until their sessions have
    /// sent them on ([`Clients::hold_whole`], `[limits] max_buffered`).
    whole: AtomicUsize,
    /// Fired when bytes of [`Clients::hold_whole`] are given back.
    whole_freed: tokio::sync::Notify,
    /// The one client (its id; 0: none) let past `max_buffered` because it
    /// held a message already ([`Clients::hold_whole`]).
    whole_over: std::sync::atomic::AtomicI32,
    /// User and database names, one copy each for all their clients ([`Clients::name`]).
    names: Mutex<Names>,
    /// Connections still logging in, oldest first (by a sequence number taken
    /// at accept), each with the signal that evicts it
    /// ([`Clients::evict_stalled_login`]).
    pending: Mutex<std::collections::BTreeMap<u64, (std::time::Instant, Arc<Notify>)>>,
    pending_seq: AtomicU64,
}

/// Interned names: thousands of idle clients of one user and database share
/// two strings instead of holding two each.
#[derive(Default)]
struct Names {
    set: std::collections::HashSet<Arc<str>>,
    /// Size at which the set next drops the names no client holds (names come
    /// from clients, so the set is bounded by the names in use, not by every
    /// name ever seen).
    prune_at: usize,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            map: Mutex::default(),
            connected: AtomicUsize::new(0),
            connected_peak: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            buffered: AtomicUsize::new(0),
            budget_freed: tokio::sync::Notify::new(),
            spooled: AtomicUsize::new(0),
            whole: AtomicUsize::new(0),
            whole_freed: tokio::sync::Notify::new(),
            whole_over: std::sync::atomic::AtomicI32::new(0),
            names: Mutex::default(),
            pending: Mutex::default(),
            pending_seq: AtomicU64::new(0),
        }
    }
}

impl Clients {
    fn map(&self) -> MutexGuard<'_, HashMap<i32, Arc<ClientHandle>>> {
        // The map stays consistent even if a holder panicked (single inserts/removes).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Next client id (positive i32, wraps well before overflow).
    pub fn next_id(&self) -> i32 {
        (self.next_id.fetch_add(1, Ordering::Relaxed) % (i32::MAX as u64 - 1)) as i32 + 1
    }

    /// `handle` now holds `bytes` of an incomplete client message. When all
    /// clients together hold more than `cap`, the client holding the most is
    /// closed (it may be `handle` itself); returns that client.
    pub fn hold_partial(
        &self,
        handle: &ClientHandle,
        bytes: usize,
        cap: usize,
    ) -> Option<Arc<ClientHandle>> {
        let before = handle.partial.swap(bytes, Ordering::AcqRel);
        let total = if bytes >= before {
            self.buffered.fetch_add(bytes - before, Ordering::AcqRel) + (bytes - before)
        } else {
            let total =
                self.buffered.fetch_sub(before - bytes, Ordering::AcqRel) - (before - bytes);
            self.budget_freed.notify_waiters();
            total
        };
        if total <= cap {
            return None;
        }
        let largest = self
            .map()
            .values()
            .max_by_key(|h| h.partial.load(Ordering::Acquire))
            .cloned()?;
        largest.kill_for_memory();
        Some(largest)
    }

    /// Count `n` more bytes in spool files, unless the total would pass `cap`
    /// (then nothing is counted and it returns false).
    pub fn spool(&self, n: usize, cap: usize) -> bool {
        self.spooled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                t.checked_add(n).filter(|&after| after <= cap)
            })
            .is_ok()
    }

    /// Count `n` more bytes of a spooled message read back into memory:
    /// when none are counted (one message always passes, however large), or
    /// when the total stays within `cap` (`[limits] max_buffered`). `false`:
    /// nothing counted; wait for [`Clients::whole_freed`] and ask again.
    /// Without it, every client that sent a message of up to
    /// `max_message_size` held all of it at once (probe DH: eight 250 MB
    /// Binds took the pooler to 2 GB).
    /// `own`: what client `client` holds already (its earlier messages of a
    /// batch, still held). One such client at a time passes past the cap:
    /// were it to wait, two clients each holding a message and asking for
    /// their next would wait for each other (probe CT M1); were all let
    /// past, each could take a small message first and then a large one
    /// (probe CU M2). It stays the one until it holds none.
    pub fn hold_whole(&self, n: usize, own: usize, cap: usize, client: i32) -> bool {
        let fits = self
            .whole
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                let after = t.saturating_add(n);
                (t == 0 || after <= cap).then_some(after)
            })
            .is_ok();
        if fits || own == 0 {
            return fits;
        }
        let over = &self.whole_over;
        if over.load(Ordering::Acquire) == client
            || over
                .compare_exchange(0, client, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.whole.fetch_add(n, Ordering::AcqRel);
            return true;
        }
        false
    }

    /// `n` bytes of [`Clients::hold_whole`], all that client `client` held,
    /// are gone from memory.
    pub fn release_whole(&self, n: usize, client: i32) {
        self.whole.fetch_sub(n, Ordering::AcqRel);
        let _ = self
            .whole_over
            .compare_exchange(client, 0, Ordering::AcqRel, Ordering::Acquire);
        self.whole_freed.notify_waiters();
    }

    /// Bytes of spooled messages held whole now.
    pub fn whole_held(&self) -> usize {
        self.whole.load(Ordering::Acquire)
    }

    /// Notified when bytes of [`Clients::hold_whole`] are given back.
    pub fn whole_freed(&self) -> &tokio::sync::Notify {
        &self.whole_freed
    }

    /// `n` bytes left the spool files.
    pub fn unspool(&self, n: usize) {
        self.spooled.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes all clients hold in spool files.
    pub fn spooled(&self) -> usize {
        self.spooled.load(Ordering::Acquire)
    }

    /// Bytes all clients hold in incomplete messages.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Wait for the bytes held to fall (enable it before checking [`Self::buffered`]).
    pub fn budget_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.budget_freed.notified()
    }

    /// Find by BackendKeyData (CancelRequest); the secret must match.
    pub fn find_for_cancel(&self, pid: i32, secret: i32) -> Option<Arc<ClientHandle>> {
        self.map().get(&pid).filter(|h| h.secret == secret).cloned()
    }

    /// All logged-in clients, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(|h| h.id);
        v
    }

    /// Connected client sockets right now (logged in or logging in).
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    /// Most clients connected at once since the last call (at least the
    /// number connected now); the count starts again from now.
    pub fn take_connected_peak(&self) -> usize {
        let now = self.connected();
        self.connected_peak.swap(now, Ordering::Relaxed).max(now)
    }
}

/// How long a login must have been going on before a newcomer that finds
/// `max_client_conn` reached may take its slot: a login takes milliseconds
/// (a few round trips and one SCRAM computation), so one this old is most
/// likely stalled on purpose.
pub const STALLED_LOGIN: Duration = Duration::from_secs(2);

impl Clients {
    fn pending(
        &self,
    ) -> MutexGuard<'_, std::collections::BTreeMap<u64, (std::time::Instant, Arc<Notify>)>> {
        // Single inserts and removes: consistent even if a holder panicked.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count a connection that has just been accepted as logging in, until
    /// the returned guard is dropped (at the end of its login).
    pub fn login_started(&self) -> PendingLogin<'_> {
        let seq = self.pending_seq.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        self.pending()
            .insert(seq, (std::time::Instant::now(), evicted.clone()));
        PendingLogin {
            clients: self,
            seq,
            evicted,
        }
    }

    /// Evict the oldest login in progress other than `own`, if it has been
    /// going on for [`STALLED_LOGIN`] or more; whether one was. A client that
    /// opens connections and never finishes logging in (sends nothing, stops
    /// half way through the startup packet or the password exchange) would
    /// otherwise hold `max_client_conn` slots for the whole
    /// `client_login_timeout` and keep everyone else out (probe DB F1): to do
    /// so now, it has to open that many connections every two seconds.
    pub fn evict_stalled_login(&self, own: &PendingLogin<'_>) -> bool {
        let mut pending = self.pending();
        let oldest = pending
            .iter()
            .find(|(seq, _)| **seq != own.seq)
            .filter(|(_, (since, _))| since.elapsed() >= STALLED_LOGIN)
            .map(|(seq, _)| *seq);
        match oldest.and_then(|seq| pending.remove(&seq)) {
            Some((_, evicted)) => {
                // A permit: taken even if its login is not waiting right now.
                evicted.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection counted as logging in ([`Clients::login_started`]); counted
/// out when dropped.
pub struct PendingLogin<'a> {
    clients: &'a Clients,
    seq: u64,
    evicted: Arc<Notify>,
}

impl PendingLogin<'_> {
    /// The signal a newcomer gives when it evicts this login
    /// ([`Clients::evict_stalled_login`]).
    pub fn evicted(&self) -> Arc<Notify> {
        self.evicted.clone()
    }

    /// The login is done: counted out. `false` if a newcomer evicted it
    /// first (it took this slot, so this login must not go on).
    pub fn finish(self) -> bool {
        // Dropped after: its Drop finds nothing left to remove. (Not
        // forgotten: that leaked the signal, one allocation per login.)
        self.clients.pending().remove(&self.seq).is_some()
    }
}

impl Drop for PendingLogin<'_> {
    fn drop(&mut self) {
        self.clients.pending().remove(&self.seq);
    }
}

/// One `max_client_conn` slot, given back when dropped: also when the client task
/// panics, so a crash cannot leak slots until every login is refused with 53300.
pub struct CountGuard<'a>(&'a Clients);

impl<'a> CountGuard<'a> {
    /// Take a slot; also returns the count including this client.
    pub fn take(clients: &'a Clients) -> (CountGuard<'a>, usize) {
        let count = clients.connected.fetch_add(1, Ordering::AcqRel) + 1;
        // A plain load first: the peak is written only while it grows.
        if count > clients.connected_peak.load(Ordering::Relaxed) {
            clients.connected_peak.fetch_max(count, Ordering::Relaxed);
        }
        (CountGuard(clients), count)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's entry in the registry (SHOW CLIENTS, cancel lookup, KILL), removed
/// when dropped: also when the task panics, so it leaves no ghost behind.
pub struct Registered<'a> {
    clients: &'a Clients,
    id: i32,
}

impl<'a> Registered<'a> {
    /// Insert `handle` into the registry for as long as the guard lives.
    pub fn new(clients: &'a Clients, handle: Arc<ClientHandle>) -> Registered<'a> {
        let id = handle.id;
        clients.map().insert(id, handle);
        Registered { clients, id }
    }

    /// The registered client's id.
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.unregister(self.id);
    }
}

/// A logged-in client's `max_client_conn` slot and registry entry, owned: a
/// client asleep in a dormitory has no task for a [`CountGuard`] and a
/// [`Registered`] to borrow from. Given back when dropped, as they are.
pub struct Seat {
    app: Arc<super::App>,
    id: i32,
}

impl Seat {
    /// Take over `slot` and `registered` (both of `app.clients`).
    pub fn new(app: Arc<super::App>, slot: CountGuard<'_>, registered: Registered<'_>) -> Seat {
        debug_assert!(
            std::ptr::eq(slot.0, &app.clients) && std::ptr::eq(registered.clients, &app.clients)
        );
        let id = registered.id;
        // Their drops are this one's.
        std::mem::forget(slot);
        std::mem::forget(registered);
        Seat { app, id }
    }

    /// The process state the client belongs to.
    pub fn app(&self) -> &Arc<super::App> {
        &self.app
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.app.clients.unregister(self.id);
        self.app.clients.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Clients {
    /// The shared copy of a user, database or application name (or of the
    /// secret a user's sessions log in to servers with).
    pub fn name(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = names.set.get(name) {
            return n.clone();
        }
        if names.set.len() >= names.prune_at {
            names.set.retain(|n| Arc::strong_count(n) > 1);
            names.set.shrink_to_fit();
            names.prune_at = (names.set.len() * 2).max(64);
        }
        let n: Arc<str> = Arc::from(name);
        names.set.insert(n.clone());
        n
    }

    /// Wake every client asleep in a dormitory ([`ClientHandle::rouse`]).
    pub fn rouse_all(&self) {
        let asleep: Vec<Arc<ClientHandle>> = self
            .map()
            .values()
            .filter(|h| h.dormant.load(Ordering::SeqCst))
            .cloned()
            .collect();
        asleep.iter().for_each(|h| h.rouse());
    }

    /// Remove client `id` from the registry.
    fn unregister(&self, id: i32) {
        let mut map = self.map();
        map.remove(&id);
        // After a burst has left, give the table back (about 280 KiB at 10,000
        // clients): a table kept at its peak pins memory the allocator could
        // otherwise return. Shrinking at a quarter keeps it amortized.
        if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
            let keep = map.len() * 2;
            map.shrink_to(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_and_forgotten_once_no_client_holds_them() {
        let clients = Clients::default();
        let a = clients.name("app");
        let b = clients.name("app");
        assert!(Arc::ptr_eq(&a, &b), "one copy for both");
        // Names come from clients: a flood of one-off names does not stay.
        for i in 0..1000 {
            drop(clients.name(&format!("one-off {i}")));
        }
        let held = clients.names.lock().unwrap().set.len();
        assert!(held < 200, "{held} names kept");
        assert!(Arc::ptr_eq(&a, &clients.name("app")), "a name in use stays");
    }
}
