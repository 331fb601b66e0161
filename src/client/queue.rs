//! A queue of outbound byte chunks written with vectored I/O.
//!
//! Forwarded frames are split off the read buffer as `Bytes` (reference counted, no
//! copy) and queued here; one `write_vectored` sends many of them in a single syscall.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The room for chunks an empty queue keeps ([`OutQueue::shrink`]).
const KEPT_ROOM: usize = 16;

/// Pending outbound chunks.
#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl OutQueue {
    /// Free the queue's spare room (it is empty between transactions) if it
    /// grew large. The room for a few chunks stays: freed, it was allocated
    /// again at the next transaction's first answer (a session's out queue
    /// goes when it parks anyway).
    pub fn shrink(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > KEPT_ROOM {
            self.chunks = VecDeque::new();
        }
    }

    /// Drop whatever is queued and keep the room, unless it grew past
    /// `max_room` chunks (then it is freed).
    pub fn clear_keeping_room(&mut self, max_room: usize) {
        self.chunks.clear();
        self.len = 0;
        if self.chunks.capacity() > max_room {
            self.chunks = VecDeque::new();
        }
    }

    /// Queue a chunk.
    #[inline]
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// Bytes queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write what the socket takes in one call; returns bytes written (0 = closed).
    ///
    /// The slices are built inside each poll rather than held across it: a future
    /// holding them would be half a kilobyte bigger, in every client's task.
    pub async fn write_some<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); 32];
            let mut n = 0;
            for (slot, c) in slices.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(c);
                n += 1;
            }
            std::pin::Pin::new(&mut *w).poll_write_vectored(cx, &slices[..n])
        })
        .await
    }

    /// [`Self::write_some`] without a wait, when the stream can say at once
    /// (see [`crate::net::Stream::try_write_vectored`]): `None` when it cannot
    /// or when the socket takes nothing now.
    pub fn try_write_some(&self, s: &crate::net::Stream) -> Option<std::io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); 32];
        let mut n = 0;
        for (slot, c) in slices.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(c);
            n += 1;
        }
        match s.try_write_vectored(&slices[..n])? {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    /// Drop `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Take every queued byte at once (socket-free tests and fuzzing drive the
    /// session core through this instead of a socket).
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for c in self.chunks.drain(..) {
            out.extend_from_slice(&c);
        }
        self.len = 0;
        out
    }

    /// Write everything (used outside the event loop, e.g. at login and exit).
    pub async fn flush_all<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        while let Some(c) = self.chunks.pop_front() {
            w.write_all(&c).await?;
        }
        self.len = 0;
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_across_chunks() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b""));
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 7);
        q.advance(4);
        assert_eq!(q.len(), 3);
        assert_eq!(&q.chunks[0][..], b"efg");
        q.advance(3);
        assert!(q.is_empty());
    }
}
