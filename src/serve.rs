//! The process main loop: accept clients, run pool maintenance, handle signals.

use crate::app::App;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Run until SIGINT/SIGTERM (or a console SHUTDOWN) and the graceful drain finish.
pub async fn run(app: Arc<App>) -> Result<(), String> {
    let snap = app.snapshot.load_full();
    let addr = snap.config.listen.addr.clone();
    let shared = snap.config.listen.so_reuseport;
    // Everything that can fail comes before the client listener: beside a
    // running process on a shared address, a new one that failed after it
    // bound would reset the connections the kernel had dealt it (probe Q).
    let workers = Workers::start(snap.config.workers())
        .map_err(|e| format!("cannot start the worker threads: {e}"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(|e| e.to_string())?;
    let peer_dir = snap.config.peer_dir();
    let peer_socket = match &peer_dir {
        Some(dir) => Some(
            crate::client::peers::listen(&app, dir)
                .map_err(|e| format!("cannot listen for peers in {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    crate::admin::start(&app)?;
    let listener = bind(&addr, shared).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let mut listener = Some(listener);
    tracing::info!("listening on {addr} with {} workers", workers.handles.len());
    tokio::spawn(maintenance(app.clone(), workers.handles.clone()));
    if app.snapshot.path().is_some() {
        let (a1, a2) = (app.clone(), app.clone());
        tokio::spawn(crate::config::watch::run(
            move || watched_files(&a1),
            move |changed: &[std::path::PathBuf]| {
                // Files are read on the blocking pool, never on this thread,
                // which takes the logins (probe AB: a map file that blocked
                // its reader stopped every login).
                let (app, changed) = (a2.clone(), changed.to_vec());
                drop(tokio::task::spawn_blocking(move || {
                    match reload_for(&app, &changed) {
                        Ok(msg) => {
                            crate::admin::metrics::reload(true);
                            tracing::info!("file change: {msg}");
                        }
                        Err(e) => {
                            crate::admin::metrics::reload(false);
                            tracing::error!(
                                "file change: reload rejected, keeping the old configuration: {e}"
                            );
                        }
                    }
                }));
            },
        ));
    }
    // Long-lived so a console SHUTDOWN (flag + notify_waiters) cannot slip between
    // two polls.
    let console_shutdown = crate::app::until_raised(&app.shutdown, &app.shutting_down);
    tokio::pin!(console_shutdown);
    let drained = app.admin.drained();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            r = async { listener.as_ref().expect("checked").accept().await }, if listener.is_some() => match r {
                Ok((stream, _)) => workers.serve(&app, stream),
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // On the blocking pool, as the watcher's (see above).
            _ = hup.recv() => {
                let app = app.clone();
                drop(tokio::task::spawn_blocking(move || match app.reload() {
                    Ok(msg) => {
                        crate::admin::metrics::reload(true);
                        tracing::info!("SIGHUP: {msg}")
                    }
                    Err(e) => {
                        crate::admin::metrics::reload(false);
                        tracing::error!("SIGHUP: reload rejected, keeping the old configuration: {e}")
                    }
                }));
            }
            _ = &mut drained, if listener.is_some() && shared => {
                // The other process on the address takes new clients from
                // now on. Those the kernel already queued here are served.
                if let Some(l) = listener.take() {
                    close_shared(&app, &workers, l);
                }
            }
            _ = usr2.recv() => crate::admin::console::drain(&app, "SIGUSR2"),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut console_shutdown => break,
        }
        if app.shutting_down.load(Ordering::Acquire) {
            break;
        }
    }
    // The listener stays while running transactions finish: CancelRequests
    // for them are served, logins refused with 57P01 (probe O: a query could
    // not be cancelled during the wait). On a shared address too: whether a
    // peer would go on serving them cannot be known here (probes Q and S:
    // processes stopped together each left it to the other). A drain closes
    // a shared listener earlier, handing new clients to the peer.
    let accepting = async {
        match &listener {
            Some(l) => loop {
                match l.accept().await {
                    Ok((stream, _)) => workers.serve(&app, stream),
                    // Out of descriptors, say: not a spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown(&app) => {}
        () = accepting => {}
    }
    drop(listener);
    workers.stop().await;
    if let Some(p) = peer_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Close a shared listener (`[listen] so_reuseport`) at a drain: the
/// connections the kernel already queued on it are accepted and served first,
/// since closing it would reset them. (One that lands between the last accept
/// and the close is reset too; Linux's `net.ipv4.tcp_migrate_req = 1` hands
/// such connections to the other listener instead.)
fn close_shared(app: &Arc<App>, workers: &Workers, l: TcpListener) {
    let l = match l.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("closing the listener: {e}");
            return;
        }
    };
    // Still non-blocking: `accept` says WouldBlock once the queue is empty.
    while let Ok((s, _)) = l.accept() {
        workers.serve_std(app, s);
    }
    drop(l);
    tracing::info!("listener closed: new clients go to the other process on the address");
}

/// The threads that run client sessions: each has a single-threaded tokio runtime
/// of its own, and the accept loop deals new clients out to them in turn.
///
/// Why not one multi-threaded runtime: its work-stealing scheduler wakes other
/// threads to look for work, and on the select benchmarks that cost about a
/// quarter of the pooler's CPU per transaction (docs/benchmarks.md). Here a client,
/// and the server it holds for a transaction, are driven by one thread's event
/// loop; the pool moves a server to the taking client's worker when it has to
/// ([`crate::net::Stream::rehome`]) and prefers one that is already there.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Closed at the end: every worker's `block_on` returns.
    stop: Arc<tokio::sync::Semaphore>,
    next: std::cell::Cell<usize>,
}

impl Workers {
    fn start(n: usize) -> std::io::Result<Workers> {
        let stop = Arc::new(tokio::sync::Semaphore::new(0));
        let (mut handles, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for id in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            let id = u16::try_from(id).expect("[limits] workers is validated");
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sb-worker-{id}"))
                    .spawn(move || {
                        crate::net::set_worker(id);
                        rt.block_on(async move {
                            crate::net::coarse::start();
                            if let Err(e) = crate::net::dormant::Bell::start() {
                                // Clients on this worker then stay in their tasks.
                                tracing::warn!("worker {id}: no dormitory for idle clients: {e}");
                            }
                            let _ = stop.acquire().await;
                        });
                        // Dropping the runtime here drops the sessions still on it.
                    })?,
            );
        }
        Ok(Workers {
            handles,
            threads,
            stop,
            next: std::cell::Cell::new(0),
        })
    }

    /// Hand an accepted client to the next worker. The socket leaves this event
    /// loop and joins the worker's.
    fn serve(&self, app: &Arc<App>, stream: tokio::net::TcpStream) {
        match stream.into_std() {
            Ok(s) => self.serve_std(app, s),
            Err(e) => tracing::warn!("cannot hand a client to a worker: {e}"),
        }
    }

    /// [`Self::serve`] for a socket not registered with this event loop.
    fn serve_std(&self, app: &Arc<App>, std: std::net::TcpStream) {
        let i = self.next.get();
        self.next.set((i + 1) % self.handles.len());
        // Clocked: the session's polls each read the clock once (see
        // `net::clock`).
        self.handles[i].spawn(crate::net::clock::Clocked(crate::client::serve(
            app.clone(),
            std,
        )));
    }

    /// End every worker (after the drain) and wait for their threads.
    async fn stop(self) {
        self.stop.close();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// A reload for files that changed: only shard maps changed (a MOVE TENANT
/// of this process or another, a map deployed), those maps are read again
/// into the configuration in force, console `SET`s kept (probe X: a MOVE
/// rewrote its map file, and the watcher's full reload undid an online
/// per-tenant cap); anything else, the config file and everything it names.
fn reload_for(app: &App, changed: &[std::path::PathBuf]) -> Result<String, String> {
    use crate::config::watch::file_identity;
    let snap = app.snapshot.load();
    let maps: Vec<(std::path::PathBuf, std::path::PathBuf)> = snap
        .dbs
        .values()
        .filter_map(|db| db.routing.as_ref()?.map_source.clone())
        .map(|p| (file_identity(&p), p))
        .collect();
    let config = app.snapshot.path().map(file_identity);
    let mut reread = Vec::new();
    for c in changed {
        let c = &file_identity(c);
        // Every database that reads the file, however its path is spelled
        // (probe Z: the second spelling kept the old map).
        let named: Vec<&std::path::PathBuf> = maps
            .iter()
            .filter(|(n, _)| n == c)
            .map(|(_, p)| p)
            .collect();
        if named.is_empty() || config.as_ref() == Some(c) {
            return app.reload();
        }
        reread.extend(named.into_iter().cloned());
    }
    drop(snap);
    app.reload_maps(&reread)
}

/// The config file and every shard map it names.
fn watched_files(app: &App) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = app
        .snapshot
        .path()
        .map(|p| p.to_path_buf())
        .into_iter()
        .collect();
    for db in app.snapshot.load().dbs.values() {
        if let Some(p) = db.routing.as_ref().and_then(|r| r.map_source.clone()) {
            v.push(p);
        }
    }
    v
}

fn bind(addr: &str, shared: bool) -> std::io::Result<TcpListener> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if shared {
        set_reuse_port(&sock)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Stop accepting, let running transactions finish (bounded), then return.
pub async fn shutdown(app: &Arc<App>) {
    tracing::info!("shutting down: waiting for running transactions");
    app.begin_shutdown();
    let limit = app.snapshot.load().config.limits.shutdown_timeout.as_std();
    let _watch = app.watch_transactions();
    let wait = async {
        loop {
            let done = app.tx_done.notified();
            if app.active_transactions.load(Ordering::Acquire) == 0 {
                break;
            }
            done.await;
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        tracing::warn!(
            "shutdown_timeout reached with {} transactions still running: ending their clients",
            app.active_transactions.load(Ordering::Acquire)
        );
        // As KILL_CLIENT ends them: the query running is cancelled and the
        // client told, before its server closes (probe O: dropped with the
        // process, a statement ran on and committed after the exit).
        for c in app.clients.all() {
            c.kill();
        }
    }
    // Idle clients were told at the shutdown notification (those asleep in a
    // dormitory were woken to be told): let them say goodbye before the
    // workers stop, for at most a second.
    let told = async {
        while app.clients.connected() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), told).await;
    for p in app.pools.all() {
        p.close_all();
    }
    crate::pool::Pool::end_closing_now();
    // The servers closing now (a query on them cancelled first, for the
    // clients just ended) are closed by tasks on the worker threads: stopping
    // those first would drop the cancels (probe S: a statement running at
    // shutdown_timeout committed after the exit, 1 run in 3). Bounded: a
    // cancel's own connect has a timeout.
    let closed = async {
        while crate::pool::Pool::closing() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .is_err()
    {
        tracing::warn!(
            "{} server connections were still closing at exit",
            crate::pool::Pool::closing()
        );
    }
    tracing::info!("shutdown complete");
}

/// Once a second: expire idle servers and keep min_pool_size warm in every pool that
/// exists (pools are created by the first client of a (database, user, shard), as in
/// PgBouncer).
async fn maintenance(app: Arc<App>, workers: Vec<tokio::runtime::Handle>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = Trim::default();
    loop {
        tick.tick().await;
        if app.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let (mut waiting, mut waited) = (0, 0);
        for p in app.pools.all() {
            let now = p.stats.waiting.load(Ordering::Relaxed);
            waiting += now;
            waited += p.stats.waiting_peak.swap(now, Ordering::Relaxed).max(now);
            let p = p.clone();
            tokio::spawn(async move { p.maintain().await });
        }
        let load = Load {
            clients: app.clients.connected(),
            clients_peak: app.clients.take_connected_peak(),
            asleep: crate::net::dormant::asleep(),
            buffered: app.clients.buffered() + crate::client::session::statement_bytes(),
            waiting,
            waited,
        };
        if trim.due(load) {
            for w in &workers {
                w.spawn(async {
                    crate::client::session::drop_spare_sessions();
                    trim_thread_arena();
                    let cached = ThreadCache::take();
                    tokio::task::spawn_blocking(move || cached.release());
                });
            }
            // Accepts and the console free on this thread: its cache too.
            let cached = ThreadCache::take();
            tokio::task::spawn_blocking(move || cached.release());
        }
    }
}

/// What the maintenance task sees of the process's load at a tick.
#[derive(Default, Clone, Copy)]
struct Load {
    /// Clients connected.
    clients: usize,
    /// Most clients connected at once since the last tick (a burst shorter
    /// than a tick shows here and not in `clients`).
    clients_peak: usize,
    /// Clients asleep in a dormitory (each freed its task and session, as a
    /// client that left did).
    asleep: usize,
    /// Bytes buffered for incomplete messages, and of the text of clients'
    /// prepared statements (freed when they are deallocated or their client
    /// leaves: a burst of either is memory to give back).
    buffered: usize,
    /// Clients waiting for a server now.
    waiting: usize,
    /// Most clients waiting at once since the last tick.
    waited: usize,
}

/// When to give freed memory back to the OS: after a burst of clients, of
/// buffered input, or of transactions (clients waiting for servers: each is a
/// whole session while it waits, and [`crate::client::session::Parked`] again
/// after) has gone. The allocator keeps what a burst freed in its per-thread
/// arenas, so without this RSS would stay at the burst's peak.
#[derive(Default)]
struct Trim {
    /// Most clients connected since the last trim.
    clients: usize,
    /// Most clients awake (connected, not asleep in a dormitory) since the
    /// last trim.
    awake: usize,
    /// Most bytes buffered for incomplete messages since the last trim.
    buffered: usize,
    /// Most clients waiting for a server since the last trim.
    waiting: usize,
    /// The last tick trimmed because memory was freed: trim once more.
    again: bool,
}

impl Trim {
    /// Clients that must have left (or bytes that must have been freed) since
    /// the peak before a trim is worth its cost (it walks the whole heap).
    const CLIENTS_GONE: usize = 256;
    const BYTES_FREED: usize = 16 << 20;

    fn due(&mut self, load: Load) -> bool {
        let Load {
            clients,
            clients_peak,
            asleep,
            buffered,
            waiting,
            waited,
        } = load;
        let awake = clients.saturating_sub(asleep);
        self.clients = self.clients.max(clients).max(clients_peak);
        self.awake = self.awake.max(awake);
        self.buffered = self.buffered.max(buffered);
        self.waiting = self.waiting.max(waited).max(waiting);
        let due = self.clients >= clients + Self::CLIENTS_GONE
            || self.awake >= awake + Self::CLIENTS_GONE
            || self.buffered >= buffered + Self::BYTES_FREED
            || self.waiting >= waiting + Self::CLIENTS_GONE;
        // A client is counted out before its task's memory is freed, so a trim
        // in the middle of an exodus misses the last of it: one more follows on
        // the next tick.
        let again = std::mem::replace(&mut self.again, due);
        if due {
            (self.clients, self.awake, self.buffered, self.waiting) =
                (clients, awake, buffered, waiting);
        }
        due || again
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    fn malloc(size: usize) -> *mut std::ffi::c_void;
    fn free(ptr: *mut std::ffi::c_void);
}

/// Return free heap pages to the OS (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own arenas under
    // their locks and only releases pages no allocation uses.
    unsafe {
        malloc_trim(0);
    }
}

/// The chunks a thread's allocator cache held, taken out of it so that they
/// can go back to their arena.
///
/// Why: glibc keeps up to 7 freed chunks of each small size (up to 1,032
/// bytes) in a cache per thread (the tcache) and counts them as in use, so
/// `malloc_trim` cannot give their pages back. After a burst of clients they
/// are the last chunks the leaving clients freed, mostly one per page all over
/// the heap: measured with gdb after 10,000 clients left, 343 chunks on 280
/// pages in the worker's cache, and RSS 1.18 times the start (1.04 with the
/// cache cut to one chunk per size). glibc has no call to empty a thread's
/// cache, and a chunk freed on the same thread goes straight back into it;
/// but a thread that exits hands its own cache back to the arenas. So the
/// chunks are taken out here (the cache serves a malloc of their size first)
/// and freed on a short-lived thread, before `malloc_trim`: RSS after the
/// 10,000 clients left went to 1.07 times the start (three runs, 1.067-1.075).
/// It runs only after a burst (see [`Trim`]), so the thread costs nothing in
/// steady work.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
struct ThreadCache(Vec<*mut std::ffi::c_void>);

// SAFETY: the pointers are plain malloc'd chunks nothing else refers to;
// glibc's free may be called for them from any thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe impl Send for ThreadCache {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl ThreadCache {
    /// glibc's tcache: 64 chunk sizes (32 to 1,040 bytes), 7 chunks each.
    const SIZES: usize = 64;
    const PER_SIZE: usize = 7;

    /// Take the calling thread's cached chunks out of its cache. A size that
    /// had fewer than 7 gives new chunks for the rest, freed with them.
    fn take() -> ThreadCache {
        let mut chunks = Vec::with_capacity(Self::SIZES * Self::PER_SIZE);
        for i in 0..Self::SIZES {
            // The largest request whose chunk is the i-th cached size.
            let request = 24 + 16 * i;
            for _ in 0..Self::PER_SIZE {
                // SAFETY: a plain malloc; the chunk is freed in `release`.
                let p = unsafe { malloc(request) };
                if !p.is_null() {
                    chunks.push(p);
                }
            }
        }
        ThreadCache(chunks)
    }

    /// Free the chunks on a thread that then exits (its cache goes back to
    /// the arenas with it), and give the free pages back. Blocks: call it
    /// where blocking is allowed.
    fn release(self) {
        // Should no thread start, `self` is dropped with the closure and the
        // chunks are freed here: back into a cache, but not lost.
        let freeing = std::thread::Builder::new()
            .name("sb-trim".into())
            .spawn(move || drop(self));
        if let Ok(thread) = freeing {
            let _ = thread.join();
        }
        release_free_memory();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Drop for ThreadCache {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            // SAFETY: each pointer came from malloc in `take` and is freed
            // once (drained).
            unsafe { free(p) };
        }
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Other allocators keep no cache this can empty.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
struct ThreadCache;

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
impl ThreadCache {
    fn take() -> ThreadCache {
        ThreadCache
    }
    fn release(self) {
        release_free_memory();
    }
}

/// Give back the free top of the calling thread's own allocator arena.
///
/// Why: a worker thread allocates from an arena of its own, and `malloc_trim`
/// shrinks only the main arena's top; what a burst freed at the top of a
/// worker's arena stayed resident (an RSS of 3.5 times the starting value after
/// 10,000 clients left, in about one run of three). Freeing a chunk of 64 KiB or
/// more in an arena makes glibc trim that arena's top (`heap_trim`), so each
/// worker allocates and frees one (below the 128 KiB at which glibc would
/// `mmap` it instead).
fn trim_thread_arena() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(96 * 1024)));
}

/// `SO_REUSEPORT` (socket2 has it only with its "all" feature).
fn set_reuse_port(sock: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::{Load, Trim};

    /// What a thread freed last sits in its cache; `take` must get exactly
    /// those chunks out, or their pages stay resident after a burst.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn takes_the_chunks_this_thread_cached() {
        use super::{free, malloc, ThreadCache};
        // One round, on a thread of its own: true when `take` got back every
        // chunk the thread had just freed.
        fn round() -> bool {
            let before = ThreadCache::take();
            // 200 bytes is a cached size (a 208-byte chunk), and glibc caches 7.
            // SAFETY: plain malloc and free; the pointers are only compared
            // after they were freed.
            let freed: Vec<_> = (0..7).map(|_| unsafe { malloc(200) }).collect();
            assert!(freed.iter().all(|p| !p.is_null()));
            for &p in &freed {
                unsafe { free(p) };
            }
            let cached = ThreadCache::take();
            let all = freed.iter().all(|p| cached.0.contains(p));
            cached.release();
            before.release();
            all
        }
        // With other tests running on the same arenas, a thread's cache does
        // not always take what it frees (glibc moves other free chunks into
        // it when it serves a malloc from a shared bin; and about one run of
        // the whole suite in twenty, a test thread's cache took none): only a
        // round where it did says anything about `take`, so a few rounds, each
        // on a fresh thread, are tried.
        let ok = (0..20).any(|_| std::thread::spawn(round).join().unwrap());
        assert!(
            ok,
            "in 20 rounds, take never got back every chunk a thread had just freed"
        );
    }

    fn load(clients: usize, buffered: usize) -> Load {
        Load {
            clients,
            buffered,
            ..Load::default()
        }
    }

    #[test]
    fn trims_once_a_burst_has_left() {
        let mut t = Trim::default();
        assert!(!t.due(load(10, 0)));
        assert!(!t.due(load(5000, 0)), "growing is not a reason");
        assert!(!t.due(load(4800, 0)), "200 gone is not enough");
        assert!(t.due(load(4700, 0)));
        assert!(
            t.due(load(4700, 0)),
            "and once more, for what was freed late"
        );
        assert!(!t.due(load(4700, 0)), "then not again for the same burst");
        assert!(!t.due(load(4700, 64 << 20)));
        assert!(t.due(load(4700, 0)), "a buffered burst freed");
        assert!(t.due(load(4700, 0)));
        assert!(!t.due(load(4700, 0)));
    }

    #[test]
    fn trims_after_a_burst_of_clients_shorter_than_a_tick() {
        let mut t = Trim::default();
        let at = |clients, clients_peak| Load {
            clients,
            clients_peak,
            ..Load::default()
        };
        assert!(!t.due(at(1, 1)));
        assert!(t.due(at(1, 2001)), "2000 came and went between two ticks");
        assert!(t.due(at(1, 1)), "and once more, for what was freed late");
        assert!(!t.due(at(1, 1)), "then not again for the same burst");
        assert!(!t.due(at(1, 200)), "a small one is not worth a heap walk");
    }

    #[test]
    fn trims_once_a_burst_of_transactions_is_over() {
        let mut t = Trim::default();
        let at = |waiting, waited| Load {
            clients: 5000,
            waiting,
            waited,
            ..Load::default()
        };
        assert!(!t.due(at(0, 0)));
        assert!(!t.due(at(4000, 4100)), "a burst going on is not a reason");
        assert!(!t.due(at(4000, 4000)));
        assert!(t.due(at(10, 4000)), "the burst is over");
        assert!(t.due(at(10, 10)), "and once more, for what was freed late");
        assert!(!t.due(at(10, 10)), "then not again for the same burst");
        assert!(!t.due(at(0, 200)), "a small one is not worth a heap walk");
        // A burst that came and went between two ticks is seen by its peak.
        assert!(t.due(at(0, 3000)));
    }

    #[test]
    fn trims_once_many_clients_went_to_sleep() {
        let mut t = Trim::default();
        let at = |clients, asleep| Load {
            clients,
            asleep,
            ..Load::default()
        };
        assert!(!t.due(at(5000, 0)), "growing is not a reason");
        assert!(!t.due(at(5000, 200)), "200 asleep is not worth a heap walk");
        assert!(t.due(at(5000, 4000)), "4000 freed their tasks");
        assert!(
            t.due(at(5000, 4000)),
            "and once more, for what was freed late"
        );
        assert!(!t.due(at(5000, 4000)), "then not again");
        assert!(!t.due(at(5000, 0)), "waking is not a reason");
        assert!(t.due(at(5000, 5000)), "asleep again");
    }
}
