//! CancelRequests passed between the shardbouncer processes on one address
//! (`[listen] so_reuseport`, a rolling restart): the kernel deals each new
//! connection to any of them, so a client's cancel may reach a process that
//! does not have the client. Each process listens on a Unix socket of its own,
//! `<peer_dir>/shardbouncer-<pid>.sock`; a process that finds no client for a
//! cancel's key passes the 16 bytes to every other socket in the directory.
//! A passed cancel is looked up where it arrives and never passed again, so a
//! cancel costs at most one hop to each peer. Every peer gets it at once, and
//! answers once it has handled it (`Y`: it had the client; `N`: not); the
//! pass waits for the `Y` (a few seconds at most): the client's cancel
//! connection closes only once the cancel has reached Postgres, as when its
//! own process has the client (libpq's `PQcancel` waits for that close).

use crate::app::App;
use crate::protocol::{self, startup::StartupPacket};
use bytes::BytesMut;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// How long one pass to a peer, or a peer's read of one, may take.
const PASS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a pass waits, at most, for the peer that has the client to say
/// it handled the cancel (a hung peer never says anything).
const HANDLED_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer's answer: it had the client, and the cancel is in Postgres's hands.
const HANDLED: u8 = b'Y';
/// A peer's answer: it has no client with that key (or the cancel came too
/// late to act on).
const NOT_HERE: u8 = b'N';
/// A passed cancel a peer gets to later than this after it was passed is
/// dropped: the peer was stopped or starved meanwhile, the query it was
/// for may have ended, and the cancel would stop the client's next one
/// (probe MM: a peer stopped for 2.5 s, then continued, cancelled the query
/// its client sent once the first was answered).
const MAX_PASS_AGE: Duration = Duration::from_secs(1);
/// Files of the directory looked at, at most, per cancel; every live peer
/// among them gets it, at once.
const MAX_FILES: usize = 256;
/// Passed cancels handled at once; more wait for the accept.
const MAX_IN_FLIGHT: usize = 64;

/// This process's socket in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(format!("shardbouncer-{}.sock", std::process::id()))
}

/// Listen for cancels passed by peers. A file left at this process's name (an
/// earlier process with the same pid) is replaced. Returns the socket's path,
/// to remove at exit.
pub fn listen(app: &Arc<App>, dir: &Path) -> std::io::Result<PathBuf> {
    let path = socket_path(dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    // Cancel keys reach it: only this user may connect (probe Q).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let app = app.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    // (Out of descriptors, say: try again in a moment.)
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let app = app.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                if let Ok(Some((pid, secret, fresh))) =
                    tokio::time::timeout(PASS_TIMEOUT, read_passed(&mut stream)).await
                {
                    // Answered once handled: the passing process waits for it.
                    let here = fresh && super::cancel_here(&app, pid, secret).await;
                    let answer = if here { HANDLED } else { NOT_HERE };
                    let _ = tokio::time::timeout(PASS_TIMEOUT, stream.write_all(&[answer])).await;
                }
                drop(stream);
                drop(slot);
            });
        }
    });
    Ok(path)
}

/// One passed cancel: the 16 bytes of a CancelRequest, as a client sends it,
/// then when it was passed ([`monotonic_ms`], 8 bytes; a process of an
/// earlier version sends none). `true`: passed less than [`MAX_PASS_AGE`]
/// ago (or not said).
async fn read_passed(s: &mut UnixStream) -> Option<(i32, i32, bool)> {
    let mut b = [0u8; 16];
    s.read_exact(&mut b).await.ok()?;
    if i32::from_be_bytes([b[0], b[1], b[2], b[3]]) != 16 {
        return None;
    }
    let mut at = [0u8; 8];
    let fresh = match s.read_exact(&mut at).await {
        Ok(_) => {
            let age = monotonic_ms().saturating_sub(u64::from_be_bytes(at));
            u128::from(age) <= MAX_PASS_AGE.as_millis()
        }
        Err(_) => true,
    };
    match protocol::startup::parse_startup(&b[4..]).ok()? {
        StartupPacket::Cancel { pid, secret } => Some((pid, secret, fresh)),
        _ => None,
    }
}

/// Pass a cancel this process has no client for to every peer in `dir`.
pub async fn pass(dir: &Path, pid: i32, secret: i32) {
    let own = socket_path(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut peers: Vec<PathBuf> = entries
        .flatten()
        .take(MAX_FILES)
        .filter(|e| {
            // A socket of this user only: a cancel key is a secret, and a
            // socket another user planted in the directory must not get it
            // (probe Q).
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            e.metadata()
                .is_ok_and(|m| m.file_type().is_socket() && m.uid() == uid)
        })
        .map(|e| e.path())
        .filter(|p| {
            *p != own
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shardbouncer-") && n.ends_with(".sock"))
        })
        .collect();
    peers.sort();
    let mut msg = BytesMut::with_capacity(24);
    protocol::cancel_request(&mut msg, pid, secret);
    msg.extend_from_slice(&monotonic_ms().to_be_bytes());
    let msg = msg.freeze();
    // Every peer at once: one that is hung (stopped, wedged) costs a
    // canceller its wait once, not once per peer, and does not hold up the
    // cancel of a client on a healthy one (probe LL: 6 s per hung peer,
    // one after another). A peer that is gone left its file: its connect
    // fails at once (probe Q: files of crashed processes that sort first
    // kept the cancel from the live peer).
    let mut passes = tokio::task::JoinSet::new();
    for p in peers {
        let msg = msg.clone();
        passes.spawn(async move {
            let sent = tokio::time::timeout(PASS_TIMEOUT, async {
                let mut s = UnixStream::connect(&p).await?;
                s.write_all(&msg).await?;
                s.shutdown().await?;
                Ok::<_, std::io::Error>(s)
            })
            .await;
            let Ok(Ok(mut s)) = sent else {
                return false;
            };
            let mut b = [0u8; 1];
            matches!(
                tokio::time::timeout(HANDLED_TIMEOUT, s.read(&mut b)).await,
                Ok(Ok(1)) if b[0] == HANDLED
            )
        });
    }
    // Until the peer with the client has handled it: the cancel is then in
    // Postgres's hands before the client hears it went through. Postgres
    // signals a backend twice for one cancel (the process and its group); a
    // client that sends its next query once told could have that query
    // cancelled by the second signal (a test saw it, under load).
    let _ = tokio::time::timeout(PASS_TIMEOUT + HANDLED_TIMEOUT, async {
        while let Some(done) = passes.join_next().await {
            if matches!(done, Ok(true)) {
                return;
            }
        }
    })
    .await;
    // Passes still waiting are dropped with the set: each peer already has
    // the cancel, or never will.
}

/// Milliseconds on the system's monotonic clock, the same for every process
/// on the machine (`CLOCK_MONOTONIC`): when a cancel was passed.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn passed(extra: Option<u64>) -> Option<(i32, i32, bool)> {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut msg = BytesMut::new();
        protocol::cancel_request(&mut msg, 7, 9);
        if let Some(at) = extra {
            msg.extend_from_slice(&at.to_be_bytes());
        }
        a.write_all(&msg).await.unwrap();
        a.shutdown().await.unwrap();
        read_passed(&mut b).await
    }

    /// A passed cancel a peer gets to long after it was passed is not acted
    /// on (probe MM: it stopped the client's next query); one from a process
    /// that does not say when is.
    #[tokio::test]
    async fn a_cancel_passed_long_ago_is_dropped() {
        let now = monotonic_ms();
        assert_eq!(passed(Some(now)).await, Some((7, 9, true)));
        assert_eq!(passed(Some(now - 5_000)).await, Some((7, 9, false)));
        assert_eq!(passed(None).await, Some((7, 9, true)));
    }
}
