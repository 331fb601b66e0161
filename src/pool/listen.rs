//! LISTEN/NOTIFY in transaction mode: one listening server connection per pool.
//!
//! In transaction mode a client has no server of its own between transactions,
//! so a `LISTEN` run on a pooled server would listen for whoever gets that
//! server next (and is reset with `UNLISTEN *` before that). Instead the
//! session answers `LISTEN`/`UNLISTEN` itself and registers the client here.
//! Each pool with listeners keeps one extra server connection that `LISTEN`s on
//! the union of its clients' channels and relays every NotificationResponse,
//! unchanged, to each client listening on that channel. The session delivers
//! them between the client's transactions, as Postgres does.
//!
//! Bounds: a client holds at most [`MAX_UNREAD`] bytes of notifications it has
//! not been sent yet (it is inside a long transaction, or not reading); past it
//! the client is closed with 53200 rather than silently miss one. If the
//! listening connection is lost, it is re-opened and re-`LISTEN`s every
//! channel; notifications sent meanwhile are lost (a warning is logged), as
//! they would be for a client whose own connection dropped.

use super::Pool;
use crate::protocol::{self, tag};
use crate::server::ServerConn;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// Most bytes of notifications one client may have waiting to be sent.
pub const MAX_UNREAD: usize = 1 << 20;

/// A client's mailbox for notifications, shared by the listeners of every
/// shard it listens on.
pub struct Inbox {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes sent and not yet taken.
    unread: AtomicUsize,
    /// A notification did not fit under [`MAX_UNREAD`].
    overflowed: AtomicBool,
}

impl Inbox {
    /// A mailbox and the receiving end the session reads.
    pub fn new() -> (Arc<Inbox>, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = Inbox {
            tx,
            unread: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
        };
        (Arc::new(inbox), rx)
    }

    /// Hand over a NotificationResponse frame, or mark the inbox overflowed
    /// (an empty frame then wakes the session to close the client).
    fn offer(&self, frame: &Bytes) {
        if self.overflowed.load(Ordering::Acquire) {
            return;
        }
        let n = frame.len();
        let fits = self
            .unread
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= MAX_UNREAD).then_some(u + n)
            })
            .is_ok();
        if fits {
            let _ = self.tx.send(frame.clone());
        } else {
            self.overflowed.store(true, Ordering::Release);
            let _ = self.tx.send(Bytes::new());
        }
    }

    /// The session took a frame of `n` bytes.
    pub fn taken(&self, n: usize) {
        self.unread.fetch_sub(n, Ordering::AcqRel);
    }

    /// More notifications came than [`MAX_UNREAD`] allows.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }
}

/// A change to one client's registrations with one pool's listener.
pub enum ListenCmd {
    /// Relay `channel`'s notifications to `client`'s inbox.
    Listen {
        /// The channel as Postgres names it.
        channel: String,
        /// The client (its id).
        client: i32,
        /// Where its notifications go.
        inbox: Arc<Inbox>,
        /// Fired once the listening connection listens on the channel, so the
        /// client's LISTEN is answered only then: a NOTIFY committed after the
        /// answer must reach it (dropped if the relay goes away).
        ack: oneshot::Sender<()>,
    },
    /// Stop relaying `channel` to `client`.
    Unlisten {
        /// The channel.
        channel: String,
        /// The client.
        client: i32,
    },
    /// The client left: drop all its registrations.
    Leave {
        /// The client.
        client: i32,
    },
    /// The pool's target changed (reload, console RECONNECT): listen from a
    /// new connection to it.
    Reconnect,
}

/// The handle a pool keeps to its listener task.
pub struct Listener {
    tx: mpsc::UnboundedSender<ListenCmd>,
}

impl Listener {
    /// Start the listener task of `pool`; it ends when the pool is dropped.
    pub(super) fn start(pool: &Arc<Pool>) -> Listener {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::downgrade(pool), rx));
        Listener { tx }
    }

    /// Queue a change (applied in order).
    pub fn send(&self, cmd: ListenCmd) {
        let _ = self.tx.send(cmd);
    }
}

/// Channels and who listens on each.
#[derive(Default)]
struct Subscribers {
    by_channel: HashMap<String, HashMap<i32, Arc<Inbox>>>,
}

impl Subscribers {
    /// Apply `cmd`; the channels that gained their first listener, those that
    /// lost their last, and the acknowledgement the command waits for.
    fn apply(&mut self, cmd: ListenCmd) -> (Vec<String>, Vec<String>, Option<oneshot::Sender<()>>) {
        let (mut added, mut removed, mut wants) = (Vec::new(), Vec::new(), None);
        match cmd {
            ListenCmd::Listen {
                channel,
                client,
                inbox,
                ack,
            } => {
                wants = Some(ack);
                let subs = self.by_channel.entry(channel.clone()).or_default();
                if subs.is_empty() {
                    added.push(channel);
                }
                subs.insert(client, inbox);
            }
            ListenCmd::Unlisten { channel, client } => {
                if let Some(subs) = self.by_channel.get_mut(&channel) {
                    subs.remove(&client);
                    if subs.is_empty() {
                        self.by_channel.remove(&channel);
                        removed.push(channel);
                    }
                }
            }
            ListenCmd::Leave { client } => {
                self.by_channel.retain(|channel, subs| {
                    subs.remove(&client);
                    if subs.is_empty() {
                        removed.push(channel.clone());
                    }
                    !subs.is_empty()
                });
            }
            ListenCmd::Reconnect => {} // handled by the task
        }
        (added, removed, wants)
    }

    /// Relay one NotificationResponse to the channel's listeners.
    fn deliver(&self, frame: &Bytes) {
        let Some(channel) = channel_of(frame).and_then(|c| std::str::from_utf8(c).ok()) else {
            return;
        };
        if let Some(subs) = self.by_channel.get(channel) {
            for inbox in subs.values() {
                inbox.offer(frame);
            }
        }
    }
}

/// `LISTEN "channel"` / `UNLISTEN "channel"` for the listening connection.
fn command(verb: &str, channel: &str) -> BytesMut {
    let mut sql = String::with_capacity(channel.len() + 12);
    sql.push_str(verb);
    sql.push_str(" \"");
    sql.push_str(&channel.replace('"', "\"\""));
    sql.push('"');
    let mut out = BytesMut::new();
    protocol::query(&mut out, &sql);
    out
}

/// Acknowledgements waiting for the listening connection, in the order of
/// the commands sent on it: each command's ReadyForQuery fires its entry.
#[derive(Default)]
struct Acks {
    /// One entry per command in flight.
    in_flight: std::collections::VecDeque<Vec<oneshot::Sender<()>>>,
    /// Waiting for a connection (none yet, or it was lost).
    unconnected: Vec<oneshot::Sender<()>>,
}

impl Acks {
    /// An acknowledgement for a channel already listened on (or not, by a
    /// command still in flight): after everything sent so far.
    fn after_all(&mut self, connected: bool, ack: oneshot::Sender<()>) {
        match self.in_flight.back_mut() {
            _ if !connected => self.unconnected.push(ack),
            Some(last) => last.push(ack),
            None => {
                let _ = ack.send(());
            }
        }
    }

    /// `n` commands were sent; the last one carries `acks`.
    fn sent(&mut self, n: usize, acks: Vec<oneshot::Sender<()>>) {
        for _ in 1..n {
            self.in_flight.push_back(Vec::new());
        }
        if n > 0 {
            self.in_flight.push_back(acks);
        } else {
            for a in acks {
                let _ = a.send(());
            }
        }
    }

    /// A command completed (its ReadyForQuery).
    fn completed(&mut self) {
        for a in self.in_flight.pop_front().unwrap_or_default() {
            let _ = a.send(());
        }
    }

    /// The connection is gone: whatever was in flight waits for the next.
    fn lost(&mut self) {
        for v in self.in_flight.drain(..) {
            self.unconnected.extend(v);
        }
    }
}

/// The listener task: keep one connection listening on every channel someone
/// listens on, and relay what it hears.
async fn run(pool: Weak<Pool>, mut rx: mpsc::UnboundedReceiver<ListenCmd>) {
    let mut subs = Subscribers::default();
    let mut acks = Acks::default();
    let mut conn: Option<ServerConn> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if conn.is_none() && subs.by_channel.is_empty() {
            // Nobody listens any more: nothing to wait for.
            for a in acks.unconnected.drain(..) {
                let _ = a.send(());
            }
        }
        if conn.is_none() && !subs.by_channel.is_empty() {
            let Some(p) = pool.upgrade() else { return };
            let target = p.target.load_full();
            let timeout = p.settings.load().server_connect_timeout.as_std();
            drop(p);
            match ServerConn::connect(&target, timeout).await {
                Ok(mut c) => {
                    let mut out = BytesMut::new();
                    for channel in subs.by_channel.keys() {
                        out.extend_from_slice(&command("LISTEN", channel));
                    }
                    if c.stream.write_all(&out).await.is_ok() {
                        backoff = Duration::from_millis(100);
                        let waiting = std::mem::take(&mut acks.unconnected);
                        acks.sent(subs.by_channel.len(), waiting);
                        conn = Some(c);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        host = %target.host,
                        port = target.port,
                        error = %e,
                        "LISTEN relay: cannot connect; notifications are lost until it can"
                    );
                    // The clients waiting for their LISTEN are answered: the
                    // relay keeps trying, as their own connection would not.
                    for a in acks.unconnected.drain(..) {
                        let _ = a.send(());
                    }
                    // Retry later, still taking registrations meanwhile.
                    let sleep = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            cmd = rx.recv() => match cmd {
                                Some(cmd) => {
                                    if let (_, _, Some(a)) = subs.apply(cmd) {
                                        let _ = a.send(());
                                    }
                                }
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            }
        }
        let event = match conn.as_mut() {
            Some(c) => tokio::select! {
                cmd = rx.recv() => Ok(cmd),
                msg = c.read_message() => Err(msg),
            },
            None => Ok(rx.recv().await),
        };
        match event {
            Ok(None) => break,
            Ok(Some(ListenCmd::Reconnect)) => {
                if let Some(c) = conn.take() {
                    c.terminate().await;
                    acks.lost();
                }
            }
            Ok(Some(cmd)) => {
                let (added, removed, ack) = subs.apply(cmd);
                let mut out = BytesMut::new();
                for channel in &added {
                    out.extend_from_slice(&command("LISTEN", channel));
                }
                for channel in &removed {
                    out.extend_from_slice(&command("UNLISTEN", channel));
                }
                let n = added.len() + removed.len();
                if conn.is_none() {
                    // Connected at the top of the loop, then it listens on all.
                    acks.unconnected.extend(ack);
                    continue;
                }
                if subs.by_channel.is_empty() {
                    // Nobody listens: give the connection back to Postgres.
                    if let Some(c) = conn.take() {
                        c.terminate().await;
                    }
                    acks.lost();
                    for a in acks.unconnected.drain(..).chain(ack) {
                        let _ = a.send(());
                    }
                    continue;
                }
                let c = conn.as_mut().expect("connected");
                if n > 0 && c.stream.write_all(&out).await.is_err() {
                    conn = None;
                    acks.lost();
                    acks.unconnected.extend(ack);
                    continue;
                }
                match ack {
                    Some(a) if n > 0 => acks.sent(n, vec![a]),
                    Some(a) => acks.after_all(true, a),
                    None => acks.sent(n, Vec::new()),
                }
            }
            Err(Ok((t, body))) => match t {
                tag::backend::NOTIFICATION_RESPONSE => {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    frame.extend_from_slice(&[t]);
                    frame.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                    frame.extend_from_slice(&body);
                    subs.deliver(&frame.freeze());
                }
                tag::backend::READY_FOR_QUERY => acks.completed(),
                tag::backend::ERROR_RESPONSE => {
                    tracing::warn!(
                        error = %protocol::parse_error(&body).message,
                        "LISTEN relay: the listening connection reported an error"
                    );
                }
                _ => {} // CommandComplete, notices, parameters
            },
            Err(Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "LISTEN relay: the listening connection was lost; reconnecting \
                     (notifications sent meanwhile are lost)"
                );
                conn = None;
                acks.lost();
            }
        }
    }
    if let Some(c) = conn {
        c.terminate().await;
    }
}

/// The channel a NotificationResponse frame is for.
pub fn channel_of(frame: &[u8]) -> Option<&[u8]> {
    frame
        .get(9..)
        .and_then(|b| protocol::cstr(b).map(|(c, _)| c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(channel: &str, payload: &str) -> Bytes {
        let mut body = BytesMut::new();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(channel.as_bytes());
        body.extend_from_slice(b"\0");
        body.extend_from_slice(payload.as_bytes());
        body.extend_from_slice(b"\0");
        let mut frame = BytesMut::new();
        frame.extend_from_slice(b"A");
        frame.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    #[test]
    fn channels_are_listened_on_while_someone_listens_and_relayed_only_to_them() {
        let mut subs = Subscribers::default();
        let (a, mut ra) = Inbox::new();
        let (b, mut rb) = Inbox::new();
        let listen = |channel: &str, client, inbox: &Arc<Inbox>| ListenCmd::Listen {
            channel: channel.into(),
            client,
            inbox: inbox.clone(),
            ack: oneshot::channel().0,
        };
        assert_eq!(subs.apply(listen("x", 1, &a)).0, ["x"]);
        assert!(
            subs.apply(listen("x", 2, &b)).0.is_empty(),
            "already listening"
        );
        assert_eq!(subs.apply(listen("y", 2, &b)).0, ["y"]);
        let frame = notification("x", "hi");
        subs.deliver(&frame);
        assert_eq!(ra.try_recv().unwrap(), frame);
        assert_eq!(rb.try_recv().unwrap(), frame);
        let frame = notification("y", "only b");
        subs.deliver(&frame);
        assert!(ra.try_recv().is_err(), "a does not listen on y");
        assert_eq!(rb.try_recv().unwrap(), frame);
        // The last listener of a channel leaving UNLISTENs it.
        let unlisten = ListenCmd::Unlisten {
            channel: "x".into(),
            client: 1,
        };
        assert!(subs.apply(unlisten).1.is_empty(), "b still listens on x");
        let (_, mut removed, _) = subs.apply(ListenCmd::Leave { client: 2 });
        removed.sort();
        assert_eq!(removed, ["x", "y"]);
        assert!(subs.by_channel.is_empty());
    }

    #[test]
    fn an_inbox_past_its_bound_is_marked_and_takes_nothing_more() {
        let (inbox, mut rx) = Inbox::new();
        let frame = notification("c", &"p".repeat(1000));
        let fit = MAX_UNREAD / frame.len();
        for _ in 0..fit + 5 {
            inbox.offer(&frame);
        }
        assert!(inbox.overflowed());
        let mut got = 0;
        while let Ok(f) = rx.try_recv() {
            if f.is_empty() {
                break; // the wake-up that says "overflowed"
            }
            got += 1;
        }
        assert_eq!(got, fit);
        assert!(rx.try_recv().is_err(), "nothing after the overflow");
    }

    #[test]
    fn a_listen_is_acknowledged_only_after_the_commands_before_it_complete() {
        let fired = |rx: &mut oneshot::Receiver<()>| rx.try_recv().is_ok();
        let mut acks = Acks::default();
        // Not connected: waits for the connection's LISTENs.
        let (a, mut ra) = oneshot::channel();
        acks.after_all(false, a);
        assert!(!fired(&mut ra));
        let waiting = std::mem::take(&mut acks.unconnected);
        acks.sent(2, waiting);
        acks.completed();
        assert!(!fired(&mut ra), "one of two LISTENs done");
        // A channel already listened on, while a command is in flight: after it.
        let (b, mut rb) = oneshot::channel();
        acks.after_all(true, b);
        acks.completed();
        assert!(fired(&mut ra) && fired(&mut rb));
        // Nothing in flight: at once.
        let (c, mut rc) = oneshot::channel();
        acks.after_all(true, c);
        assert!(fired(&mut rc));
        // The connection lost with a command in flight: waits for the next one.
        let (d, mut rd) = oneshot::channel();
        acks.sent(1, vec![d]);
        acks.lost();
        assert!(!fired(&mut rd));
        assert_eq!(acks.unconnected.len(), 1);
    }

    #[test]
    fn the_channel_of_a_notification_frame() {
        let frame = notification("jobs", "x");
        assert_eq!(channel_of(&frame), Some(&b"jobs"[..]));
        assert_eq!(channel_of(b"A\0\0"), None);
    }
}
