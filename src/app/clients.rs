//! The registry of connected clients (SHOW CLIENTS, cancel requests, KILL) and the
//! `max_client_conn` count, with the drop guards that keep both true when a client
//! task ends, however it ends.

use crate::server::CancelKey;
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// What the registry knows about a connected client (console and cancel).
pub struct ClientHandle {
    /// Process-unique id (also the BackendKeyData pid we hand out).
    pub id: i32,
    /// BackendKeyData secret.
    pub secret: i32,
    /// Cancel key of the server it is attached to right now, if any.
    pub server: ArcSwapOption<CancelKey>,
    /// Client user and database, for the console.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Peer address.
    pub addr: Option<SocketAddr>,
    /// Set by KILL / KILL_CLIENT / shutdown: the session ends at the next opportunity.
    pub kill: Notify,
    /// Whether `kill` was fired (checked when the notify raced).
    pub killed: AtomicBool,
    /// When the client connected.
    pub connect_time: SystemTime,
    /// Console view of what the client is doing (waiting, last request, shard).
    pub activity: ClientActivity,
    /// Bytes of a client message not yet complete that the session holds
    /// (counted against `[limits] max_buffered`).
    pub partial: AtomicUsize,
    /// The session is ended for holding the most of the buffer budget.
    pub out_of_memory: AtomicBool,
}

impl ClientHandle {
    /// Ask the client's session to end.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
        self.kill.notify_one();
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
    pub application_name: String,
    /// Local end of the client socket.
    pub local_addr: Option<SocketAddr>,
    /// Microseconds since the epoch when the client started waiting for a server (0 = not waiting).
    wait_start_us: AtomicU64,
    /// Microseconds since the epoch of the client's last server request.
    request_us: AtomicU64,
    /// Index of the shard of the last (or current) server request.
    shard: AtomicUsize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ClientActivity {
    /// Activity record of a client that just logged in.
    pub fn new(application_name: &str, local_addr: Option<SocketAddr>) -> ClientActivity {
        ClientActivity {
            application_name: application_name.to_string(),
            local_addr,
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
    next_id: AtomicU64,
    /// Bytes all sessions hold in client messages not yet complete.
    buffered: AtomicUsize,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            map: Mutex::default(),
            connected: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            buffered: AtomicUsize::new(0),
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
            self.buffered.fetch_sub(before - bytes, Ordering::AcqRel) - (before - bytes)
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

    /// Bytes all clients hold in incomplete messages.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
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
}

/// One `max_client_conn` slot, given back when dropped: also when the client task
/// panics, so a crash cannot leak slots until every login is refused with 53300.
pub struct CountGuard<'a>(&'a Clients);

impl<'a> CountGuard<'a> {
    /// Take a slot; also returns the count including this client.
    pub fn take(clients: &'a Clients) -> (CountGuard<'a>, usize) {
        let count = clients.connected.fetch_add(1, Ordering::AcqRel) + 1;
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
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.map().remove(&self.id);
    }
}
