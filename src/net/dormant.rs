//! The dormitory: where idle plain-TCP clients sleep without a task.
//!
//! Most of a pooler's clients are idle most of the time. An idle client that
//! keeps a tokio task keeps the task's memory and tokio's I/O registration for
//! its socket; here it keeps only its socket, in this worker's own `epoll` set
//! (mio), and the record it needs to go on (a boxed [`Resume`]). One readiness
//! source, one task per worker, however many clients sleep.
//!
//! What wakes a sleeper: its socket becoming readable (bytes, or the client
//! hanging up), its deadline (`client_idle_timeout`), or a [`Bell::wake`] from
//! another thread (KILL, a cancel, shutdown). Waking does nothing but give the
//! socket back to [`Resume`], on this worker: the client's own code decides what
//! the event was. So the dormitory never reads a byte, and a sleeper cannot be
//! woken into another client's record: the socket and the record travel together.

use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Goes on with a sleeper: called on the sleeper's worker, with its socket.
pub type Resume = Box<dyn FnOnce(std::net::TcpStream) + Send>;

/// A client put to sleep.
pub struct Sleeper {
    /// Its socket (taken out of tokio's event loop).
    pub tcp: std::net::TcpStream,
    /// Its client id, for [`Bell::wake`].
    pub id: i32,
    /// Woken at this instant even if nothing else happens.
    pub until: Option<Instant>,
    /// What goes on with it.
    pub resume: Resume,
}

enum Cmd {
    Sleep(Sleeper),
    Wake(i32),
}

/// A worker's dormitory as other threads see it: put a client to sleep, wake
/// one. Cheap to hold ([`Arc`]); the dormitory itself runs as a task on its
/// worker ([`run`]).
pub struct Bell {
    cmds: Mutex<Vec<Cmd>>,
    ring: tokio::sync::Notify,
}

/// Clients asleep in all dormitories of the process.
static ASLEEP: AtomicUsize = AtomicUsize::new(0);

/// Clients asleep in all dormitories now (the maintenance task gives memory
/// back when many have gone to sleep).
pub fn asleep() -> usize {
    ASLEEP.load(Ordering::Relaxed)
}

thread_local! {
    /// The dormitory of the worker this thread drives (none elsewhere).
    static HERE: std::cell::RefCell<Option<Arc<Bell>>> = const { std::cell::RefCell::new(None) };
}

/// This worker's dormitory: `None` on a thread without one (the control
/// runtime, a test's runtime), where clients stay in their tasks.
pub fn here() -> Option<Arc<Bell>> {
    HERE.with(|h| h.borrow().clone())
}

impl Bell {
    /// Start a dormitory on the calling worker's runtime and make it this
    /// thread's [`here`].
    pub fn start() -> std::io::Result<Arc<Bell>> {
        let bell = Arc::new(Bell {
            cmds: Mutex::new(Vec::new()),
            ring: tokio::sync::Notify::new(),
        });
        let dorm = Dormitory::new(bell.clone())?;
        tokio::spawn(dorm.run());
        HERE.with(|h| *h.borrow_mut() = Some(bell.clone()));
        Ok(bell)
    }

    /// Put a client to sleep. It is woken by what [`Sleeper`] says, or by
    /// [`Bell::wake`] after this call (a wake queued before it is lost: see
    /// the caller's check in `client::hibernate`).
    pub fn sleep(&self, sleeper: Sleeper) {
        ASLEEP.fetch_add(1, Ordering::Relaxed);
        self.push(Cmd::Sleep(sleeper));
    }

    /// Wake client `id` if it sleeps here (nothing if it does not).
    pub fn wake(&self, id: i32) {
        self.push(Cmd::Wake(id));
    }

    fn push(&self, cmd: Cmd) {
        self.cmds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(cmd);
        self.ring.notify_one();
    }
}

/// One sleeper in the poll set.
struct Bed {
    tcp: mio::net::TcpStream,
    id: i32,
    /// Which sleep of the dormitory's this is (its deadline's, if any).
    sleep: u64,
    resume: Resume,
}

/// The dormitory's own state, owned by its task.
struct Dormitory {
    bell: Arc<Bell>,
    poll: tokio::io::unix::AsyncFd<mio::Poll>,
    /// Beds by token; `None` is free (listed in `free`).
    beds: Vec<Option<Bed>>,
    free: Vec<usize>,
    /// Deadlines, soonest first, of beds by token and sleep; stale entries
    /// (the sleeper woke, the bed was laid again) are skipped by comparing
    /// the sleep.
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
    /// Sleeps so far: each bed's is its own.
    sleeps: u64,
}

impl Dormitory {
    fn new(bell: Arc<Bell>) -> std::io::Result<Dormitory> {
        // SAFETY: a `mio::Poll` owns its epoll fd from creation to drop and
        // always reports that same fd, which is what `AsyncFd` asks.
        let poll = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                mio::Poll::new()?,
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Dormitory {
            bell,
            poll,
            beds: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            sleeps: 0,
        })
    }

    async fn run(mut self) {
        let mut events = mio::Events::with_capacity(256);
        loop {
            let next = self.deadlines.peek().map(|d| d.0 .0);
            tokio::select! {
                biased;
                () = self.bell.ring.notified() => self.take_cmds(),
                ready = self.poll.readable() => match ready {
                    Ok(mut guard) => {
                        // Cleared before draining: what arrives during the
                        // drain marks the poll readable again.
                        guard.clear_ready();
                        drop(guard);
                        self.wake_ready(&mut events);
                    }
                    Err(e) => {
                        // Not expected (an epoll fd in an epoll set); wake
                        // everyone rather than leave clients asleep for good.
                        tracing::error!("dormitory poll failed: {e}; waking every client");
                        (0..self.beds.len()).for_each(|t| self.wake_token(t));
                    }
                },
                () = super::until(next) => self.wake_due(),
            }
        }
    }

    /// Lay down the new sleepers, then wake the ones asked for (a wake is
    /// rare: KILL, a cancel, shutdown; it costs a walk over the beds, which
    /// spares every sleeper an index entry).
    fn take_cmds(&mut self) {
        let cmds = std::mem::take(
            &mut *self
                .bell
                .cmds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut wake = HashSet::new();
        for cmd in cmds {
            match cmd {
                Cmd::Sleep(s) => self.lay(s),
                Cmd::Wake(id) => {
                    wake.insert(id);
                }
            }
        }
        if wake.is_empty() {
            return;
        }
        for token in 0..self.beds.len() {
            // `get`: the beds are given back once the last sleeper is up.
            if self
                .beds
                .get(token)
                .and_then(Option::as_ref)
                .is_some_and(|b| wake.contains(&b.id))
            {
                self.wake_token(token);
            }
        }
    }

    fn lay(&mut self, s: Sleeper) {
        let Sleeper {
            tcp,
            id,
            until,
            resume,
        } = s;
        let token = self.free.pop().unwrap_or_else(|| {
            self.beds.push(None);
            self.beds.len() - 1
        });
        let mut tcp = mio::net::TcpStream::from_std(tcp);
        // Edge-triggered: bytes already waiting are reported at once.
        if let Err(e) = self.poll.get_ref().registry().register(
            &mut tcp,
            mio::Token(token),
            mio::Interest::READABLE,
        ) {
            // Cannot watch it: it goes on awake at once instead.
            tracing::warn!(client = id, "dormitory cannot watch a client: {e}");
            self.free.push(token);
            ASLEEP.fetch_sub(1, Ordering::Relaxed);
            resume(tcp.into());
            return;
        }
        self.sleeps += 1;
        let sleep = self.sleeps;
        self.beds[token] = Some(Bed {
            tcp,
            id,
            sleep,
            resume,
        });
        if let Some(at) = until {
            self.deadlines.push(std::cmp::Reverse((at, token, sleep)));
            let asleep = self.beds.len() - self.free.len();
            if self.deadlines.len() > 2 * asleep + 64 {
                self.drop_stale_deadlines();
            }
        }
    }

    /// Drop the deadlines of sleepers that woke otherwise (their bytes, a
    /// wake): each stayed until it came due, and a client that slept and woke
    /// often under a long `client_idle_timeout` piled them up, one per sleep,
    /// kept for the whole timeout after it had left (probe KK: RSS grew by
    /// megabytes a minute). Done when they pass twice the sleepers, so
    /// their count stays within that and the work per sleep is constant on
    /// average.
    fn drop_stale_deadlines(&mut self) {
        let beds = &self.beds;
        self.deadlines
            .retain(|std::cmp::Reverse((_, token, sleep))| {
                beds.get(*token)
                    .and_then(Option::as_ref)
                    .is_some_and(|b| b.sleep == *sleep)
            });
    }

    fn wake_ready(&mut self, events: &mut mio::Events) {
        loop {
            if let Err(e) = self
                .poll
                .get_mut()
                .poll(events, Some(std::time::Duration::ZERO))
            {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("dormitory poll failed: {e}");
                return;
            }
            let mut n = 0;
            for ev in events.iter() {
                n += 1;
                self.wake_token(ev.token().0);
            }
            if n < events.capacity() {
                return;
            }
        }
    }

    fn wake_due(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, token, sleep))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self
                .beds
                .get(token)
                .and_then(Option::as_ref)
                .map(|b| b.sleep)
                == Some(sleep)
            {
                self.wake_token(token);
            }
        }
    }

    /// Give bed `token`'s client its socket back, on this worker.
    fn wake_token(&mut self, token: usize) {
        let Some(Bed {
            mut tcp,
            id,
            sleep: _,
            resume,
        }) = self.beds.get_mut(token).and_then(Option::take)
        else {
            return;
        };
        self.free.push(token);
        ASLEEP.fetch_sub(1, Ordering::Relaxed);
        if self.free.len() == self.beds.len() && self.beds.capacity() > 1024 {
            // Everyone is up after a crowd slept: give the beds back.
            (self.beds, self.free) = (Vec::new(), Vec::new());
        }
        if let Err(e) = self.poll.get_ref().registry().deregister(&mut tcp) {
            tracing::debug!(client = id, "dormitory deregister: {e}");
        }
        resume(tcp.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A connected pair: the server side (non-blocking, as a client socket
    /// of the pooler is) and the peer.
    fn pair(l: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
        let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, peer)
    }

    /// Each sleeper wakes for what it is due, with its own socket and nothing
    /// read from it: bytes, a hang-up, a wake by id, its deadline.
    #[tokio::test]
    async fn sleepers_wake_for_bytes_a_hang_up_a_wake_or_their_deadline() {
        let bell = Bell::start().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (woke, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let mut peers = Vec::new();
        let mut ports = Vec::new();
        let laid_at = Instant::now();
        for id in 0..4 {
            let (ours, peer) = pair(&l);
            ports.push(ours.local_addr().unwrap());
            peers.push(Some(peer));
            let woke = woke.clone();
            bell.sleep(Sleeper {
                tcp: ours,
                id,
                until: (id == 3).then(|| Instant::now() + Duration::from_millis(50)),
                resume: Box::new(move |tcp| woke.send((id, tcp)).unwrap()),
            });
        }
        // A wake for a client that does not sleep here does nothing.
        bell.wake(99);

        peers[0].as_mut().unwrap().write_all(b"hi").unwrap();
        let (id, mut tcp) = woken.recv().await.unwrap();
        assert_eq!(id, 0);
        assert_eq!(tcp.local_addr().unwrap(), ports[0], "its own socket");
        let mut buf = [0u8; 8];
        tcp.set_nonblocking(false).unwrap();
        assert_eq!(
            tcp.read(&mut buf).unwrap(),
            2,
            "the bytes are all still there"
        );
        assert_eq!(&buf[..2], b"hi");

        drop(peers[1].take());
        let (id, mut tcp) = woken.recv().await.unwrap();
        assert_eq!(id, 1);
        tcp.set_nonblocking(false).unwrap();
        assert_eq!(tcp.read(&mut buf).unwrap(), 0, "the hang-up");

        bell.wake(2);
        let (id, tcp) = woken.recv().await.unwrap();
        assert_eq!(id, 2);
        assert_eq!(tcp.local_addr().unwrap(), ports[2]);

        let (id, _) = woken.recv().await.unwrap();
        assert_eq!(id, 3);
        assert!(
            laid_at.elapsed() >= Duration::from_millis(50),
            "not before its deadline"
        );
        assert!(woken.try_recv().is_err(), "each woke once");
    }

    /// The deadlines of sleepers woken by their bytes do not pile up: a
    /// client sleeping and waking a thousand times under a long idle timeout
    /// leaves a bounded number of them behind.
    #[tokio::test]
    async fn deadlines_of_sleepers_that_woke_do_not_pile_up() {
        let bell = Arc::new(Bell {
            cmds: Mutex::new(Vec::new()),
            ring: tokio::sync::Notify::new(),
        });
        let mut dorm = Dormitory::new(bell).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut ours, _peer) = pair(&l);
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..1000 {
            let (back, got) = std::sync::mpsc::channel();
            dorm.lay(Sleeper {
                tcp: ours,
                id: 5,
                until: Some(far),
                resume: Box::new(move |tcp| back.send(tcp).unwrap()),
            });
            ASLEEP.fetch_add(1, Ordering::Relaxed);
            dorm.wake_token(0);
            ours = got.recv().unwrap();
        }
        assert!(dorm.deadlines.len() <= 64 + 2, "{}", dorm.deadlines.len());
    }

    /// A client put to sleep and woken in the same batch of commands is woken
    /// (the wake is applied after the beds are laid), and a second wake finds
    /// no one.
    #[tokio::test]
    async fn a_wake_right_after_a_sleep_is_not_lost() {
        let bell = Bell::start().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (woke, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let (ours, _peer) = pair(&l);
        bell.sleep(Sleeper {
            tcp: ours,
            id: 7,
            until: None,
            resume: Box::new(move |_| woke.send(7).unwrap()),
        });
        bell.wake(7);
        bell.wake(7);
        assert_eq!(woken.recv().await, Some(7));
        assert_eq!(
            woken.recv().await,
            None,
            "woken once, and the record dropped"
        );
    }
}
