//! What the client sent that the session has not handled yet: its read buffer,
//! a large COPY frame streaming through, and the unit of work a frame belongs to.

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
}

/// The next thing in the read buffer.
#[derive(Debug)]
pub(super) enum Next {
    /// A whole frame (tag, header included).
    Frame(u8, Bytes),
    /// A piece of a large COPY frame, for the server as it is.
    Stream(Bytes),
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
        }
    }

    /// The read buffer (the driver reads into it).
    pub(super) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held and not yet processed.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing held.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A large frame is part way through: the server has only part of it.
    pub(super) fn mid_frame(&self) -> bool {
        self.stream_left > 0
    }

    /// Give the buffer back while nothing is in it (an idle client holds none).
    pub(super) fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Take the next frame, or piece of one. Large COPY data streams when
    /// `can_stream` (a server is attached to take it).
    pub(super) fn next(&mut self, can_stream: bool) -> Next {
        if self.stream_left > 0 {
            let n = self.stream_left.min(self.buf.len());
            if n == 0 {
                return Next::More;
            }
            self.stream_left -= n;
            return Next::Stream(self.buf.split_to(n).freeze());
        }
        let (tag, len) = match protocol::frontend_frame_header(&self.buf, self.max_msg) {
            Ok(Some(h)) => h,
            Ok(None) => return Next::More,
            Err(e) => return Next::Bad(format!("invalid frontend message: {e}")),
        };
        if self.buf.len() < len {
            if tag == tag::frontend::COPY_DATA && len > STREAM_THRESHOLD && can_stream {
                // Stream big COPY data through instead of buffering it whole.
                let avail = self.buf.len();
                self.stream_left = len - avail;
                return Next::Stream(self.buf.split_to(avail).freeze());
            }
            // Grow toward the frame a step at a time (the buffer doubles as it
            // fills): reserving a claimed length up front would let a header
            // alone commit memory the client never sends.
            self.buf.reserve((len - self.buf.len()).min(1024 * 1024));
            return Next::More;
        }
        Next::Frame(tag, self.buf.split_to(len).freeze())
    }
}
