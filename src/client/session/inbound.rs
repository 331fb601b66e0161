//! What the client sent that the session has not handled yet: its read buffer,
//! a large COPY frame streaming through, a large frame spilled to the driver's
//! spool file, and the unit of work a frame belongs to.
//!
//! Why spill rather than stream: every other large frame (a Query, a Parse, a
//! Bind) is routed, and routing sees the whole unit of work, every tenant
//! mention and every Bind value, before a byte of it reaches a server. So such
//! a frame is kept whole, but past `[limits] spool_threshold` it is kept on disk
//! while it arrives: a client that stops half-way through a huge message holds
//! a spool file, not the pooler's memory.

use crate::protocol::{self, tag};
use bytes::{Bytes, BytesMut};

/// Client frames larger than this (COPY data only) pass through as they arrive
/// instead of being buffered whole.
pub(super) use super::attachment::STREAM_THRESHOLD;

/// A unit of work.
#[derive(Debug)]
pub(super) enum Unit {
    /// A simple Query or FunctionCall (tag, frame).
    Simple(u8, Bytes),
    /// Extended-protocol messages up to and including a Sync or Flush.
    Batch(Vec<(u8, Bytes)>),
}

/// The client's read side.
#[derive(Debug)]
pub(super) struct Inbound {
    /// Bytes read from the client, not yet processed.
    buf: BytesMut,
    /// Bytes of a large client frame still to pass through unparsed.
    stream_left: usize,
    /// `max_message_size`.
    max_msg: usize,
    /// `spool_threshold`: an incomplete frame larger than this is spilled.
    spill_at: usize,
    /// The frame being spilled, if any.
    spill: Option<Spill>,
    /// A whole frame to give before what `buf` holds: a spilled one read
    /// back, in an allocation of its own (so its memory goes as soon as it
    /// is sent, whatever the client sent after it), or one put back
    /// ([`Inbound::unread`]).
    ready: Option<Bytes>,
}

/// A large frame part of which is in the spool file.
#[derive(Debug, Clone, Copy)]
struct Spill {
    /// The whole frame's length, header included.
    len: usize,
    /// Bytes of it handed to the driver to write to the spool.
    out: usize,
}

/// While spilling, the read buffer grows by at most this much at a time, so a
/// spilling client holds little more than one read of its own (and the spool
/// file's write buffer as much again: at 256 KiB, 400 clients stalled in
/// spooled messages held 510 KiB each, probe OO).
const SPILL_READ: usize = 64 * 1024;

/// The next thing in the read buffer.
#[derive(Debug)]
pub(super) enum Next {
    /// A whole frame (tag, header included).
    Frame(u8, Bytes),
    /// A piece of a large COPY frame, for the server as it is.
    Stream(Bytes),
    /// The start of a large incomplete frame, or more of it: append it to the
    /// spool file (see [`Inbound::unspilled`]).
    Spill(Bytes),
    /// The rest of a spilled frame is here: read the spool's first `n` bytes
    /// back and hand them to [`Inbound::unspilled`].
    Unspill(usize),
    /// Nothing complete yet: read more.
    More,
    /// The client broke the protocol (the message for its FATAL).
    Bad(String),
}

impl Inbound {
    pub(super) fn new(max_msg: usize) -> Inbound {
        Inbound {
            buf: BytesMut::new(),
            stream_left: 0,
            max_msg,
            spill_at: usize::MAX,
            spill: None,
            ready: None,
        }
    }

    /// With nothing held (no bytes, no buffer, no frame part way through or
    /// spilled): the limits, to [`Inbound::unpark`] with. `None` otherwise.
    pub(super) fn park(&self) -> Option<(usize, usize)> {
        let Inbound {
            buf,
            stream_left,
            max_msg,
            spill_at,
            spill,
            ready,
        } = self;
        (buf.is_empty()
            && buf.capacity() == 0
            && *stream_left == 0
            && spill.is_none()
            && ready.is_none())
        .then_some((*max_msg, *spill_at))
    }

    /// An empty inbound with these limits (from [`Inbound::park`]) and the
    /// bytes read since.
    pub(super) fn unpark((max_msg, spill_at): (usize, usize), buf: BytesMut) -> Inbound {
        Inbound {
            buf,
            stream_left: 0,
            max_msg,
            spill_at,
            spill: None,
            ready: None,
        }
    }

    /// Spill incomplete frames larger than `n` bytes (`[limits] spool_threshold`).
    pub(super) fn spill_above(&mut self, n: usize) {
        self.spill_at = n;
    }

    /// The spool's bytes read back (as asked by [`Next::Unspill`]): the rest
    /// of the frame, which is at the front of what is buffered, joins them,
    /// and the frame is whole again: the next one [`Inbound::next`] gives,
    /// in the allocation `head` came in (it has room for the rest), never
    /// shared with what the client sent after it.
    pub(super) fn unspilled(&mut self, head: BytesMut) {
        let spill = self.spill.take().expect("unspilled without a spill");
        debug_assert_eq!(head.len(), spill.out);
        let rest = (spill.len - spill.out).min(self.buf.len());
        let mut whole = head;
        whole.extend_from_slice(&self.buf[..rest]);
        let _ = self.buf.split_to(rest);
        self.ready = Some(whole.freeze());
    }

    /// A whole frame waits to be given ([`Inbound::unspilled`],
    /// [`Inbound::unread`]).
    pub(super) fn has_ready(&self) -> bool {
        self.ready.is_some()
    }

    /// Length of the whole frame being spilled, if one is.
    pub(super) fn spilled_len(&self) -> Option<usize> {
        self.spill.map(|s| s.len)
    }

    /// Put a whole frame just taken back in front of what is buffered: it is
    /// the next one [`Inbound::next`] gives. Only right after `next` gave it,
    /// before anything else is taken (no frame is then streaming or spilled).
    pub(super) fn unread(&mut self, frame: Bytes) {
        debug_assert!(self.stream_left == 0 && self.spill.is_none() && self.ready.is_none());
        self.ready = Some(frame);
    }

    /// The read buffer (the driver reads into it).
    pub(super) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held and not yet processed, in the read buffer (a whole frame
    /// read back from the spool is counted with the spooled ones, see
    /// `Clients::hold_whole`).
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the read buffer takes, held or not.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Nothing held, in memory or in the spool.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.spill.is_none() && self.ready.is_none()
    }

    /// Whether the whole frames held include a Terminate (the client said
    /// goodbye after them). Walks the frames: asked only on a rare path.
    pub(super) fn holds_terminate(&self) -> bool {
        if self.stream_left > 0 || self.spill.is_some() {
            return false;
        }
        if self
            .ready
            .as_ref()
            .is_some_and(|f| f.first() == Some(&tag::frontend::TERMINATE))
        {
            return true;
        }
        let mut rest = &self.buf[..];
        while rest.len() >= 5 {
            if rest[0] == crate::protocol::tag::frontend::TERMINATE {
                return true;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            match rest.get(1 + len..) {
                Some(r) if len >= 4 => rest = r,
                _ => return false,
            }
        }
        false
    }

    /// A large frame is part way through: the server has only part of it.
    pub(super) fn mid_frame(&self) -> bool {
        self.stream_left > 0
    }

    /// The session is ending: give back the bytes held and the spilled
    /// frame's record (whether a COPY frame was streaming through stays known).
    pub(super) fn discard_held(&mut self) {
        self.buf = BytesMut::new();
        self.spill = None;
        self.ready = None;
    }

    /// Give the buffer back while nothing is in it (an idle client holds none).
    pub(super) fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Take the next frame, or piece of one. Large COPY data streams when
    /// `can_stream` says so (a server is attached to take it, for a COPY
    /// the router read): asked only for such a frame.
    pub(super) fn next(&mut self, can_stream: impl FnOnce() -> bool) -> Next {
        if let Some(frame) = self.ready.take() {
            return Next::Frame(frame[0], frame);
        }
        if self.stream_left > 0 {
            let n = self.stream_left.min(self.buf.len());
            if n == 0 {
                return Next::More;
            }
            self.stream_left -= n;
            return Next::Stream(self.buf.split_to(n).freeze());
        }
        if let Some(spill) = self.spill.as_mut() {
            if spill.out + self.buf.len() >= spill.len {
                return Next::Unspill(spill.out);
            }
            if self.buf.is_empty() {
                self.buf.reserve((spill.len - spill.out).min(SPILL_READ));
                return Next::More;
            }
            spill.out += self.buf.len();
            return Next::Spill(self.buf.split().freeze());
        }
        if let Some(&t) = self.buf.first() {
            // As Postgres: refused at the type byte, not after waiting for as
            // many bytes as the length that follows claims (which would take
            // in the client's next messages as this one's body).
            if !protocol::is_frontend_type(t) {
                return Next::Bad(format!("invalid frontend message type {t}"));
            }
        }
        let (tag, len) = match protocol::frontend_frame_header(&self.buf, self.max_msg) {
            Ok(Some(h)) => h,
            Ok(None) => return Next::More,
            Err(e) => return Next::Bad(format!("invalid frontend message: {e}")),
        };
        if self.buf.len() < len {
            if tag == tag::frontend::COPY_DATA && len > STREAM_THRESHOLD && can_stream() {
                // Stream big COPY data through instead of buffering it whole.
                let avail = self.buf.len();
                self.stream_left = len - avail;
                return Next::Stream(self.buf.split_to(avail).freeze());
            }
            // A frame over the threshold is spilled from its first read or so:
            // its header already said it will not be kept in memory.
            let spill_from = self.spill_at.min(SPILL_READ);
            if len > self.spill_at && self.buf.len() >= spill_from {
                // Everything buffered is this frame's start (earlier frames were
                // taken): it goes to the spool, and so will the rest as it comes.
                let out = self.buf.len();
                self.spill = Some(Spill { len, out });
                let head = self.buf.split().freeze();
                // Not the frame's size: the buffer now only passes reads through.
                self.buf = BytesMut::with_capacity((len - out).min(SPILL_READ));
                return Next::Spill(head);
            }
            // Grow toward the frame a step at a time, the buffer doubling as
            // it fills: reserving a claimed length up front would let a header
            // alone commit memory the client never sends. (Steps of up to
            // 1 MiB let a thousand clients that each sent a few KiB of a
            // large message hold 1 MiB each: reserved memory the allocator
            // had reused is resident, and `max_buffered` counts what is held.)
            let mut step = (len - self.buf.len())
                .min(self.buf.len().max(8192))
                .min(1024 * 1024);
            if len > self.spill_at {
                // Never past the spill point (not reached yet, see above): a
                // frame that will be spilled needs no more memory than that.
                step = step.min(spill_from - self.buf.len());
            }
            self.buf.reserve(step);
            return Next::More;
        }
        Next::Frame(tag, self.buf.split_to(len).freeze())
    }
}
