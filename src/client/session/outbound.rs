//! What goes to the client: the queue of bytes for its socket, and the scratch
//! buffer the messages shardbouncer writes itself are built in.

use crate::client::queue::OutQueue;
use bytes::{Bytes, BytesMut};

/// The client's write side.
#[derive(Default)]
pub(super) struct Outbound {
    /// Bytes for the client.
    queue: OutQueue,
    /// Scratch for messages we build (split off whole, so no copy).
    scratch: BytesMut,
}

impl Outbound {
    /// The buffer to build a message in ([`crate::protocol`]'s builders).
    pub(super) fn build(&mut self) -> &mut BytesMut {
        &mut self.scratch
    }

    /// What was built since the last call.
    pub(super) fn built(&mut self) -> Bytes {
        self.scratch.split().freeze()
    }

    /// Queue what was built for the client, now.
    pub(super) fn emit(&mut self) {
        let b = self.built();
        self.queue.push(b);
    }

    /// Queue bytes for the client.
    pub(super) fn push(&mut self, b: Bytes) {
        self.queue.push(b);
    }

    /// The queue (for the driver's writes and the server scan).
    pub(super) fn queue(&mut self) -> &mut OutQueue {
        &mut self.queue
    }

    /// Bytes queued.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Nothing queued and nothing built but not queued.
    pub(super) fn is_clear(&self) -> bool {
        let Outbound { queue, scratch } = self;
        queue.is_empty() && scratch.is_empty()
    }

    /// Give memory back while the client is idle.
    pub(super) fn trim(&mut self) {
        if self.scratch.capacity() > 0 {
            self.scratch = BytesMut::new();
        }
        self.queue.shrink();
    }
}
