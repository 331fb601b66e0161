//! The extended-protocol batch being collected: messages held until a Sync or
//! Flush lets the whole batch be routed at once, and the skip after an error
//! shardbouncer raised with no server (as Postgres skips to the next Sync).

use bytes::Bytes;

/// Most extended-protocol messages held before a Sync or Flush.
pub(super) const MAX_BATCH: usize = 100_000;

/// A batch this long goes at its next Execute, as if the client had sent a
/// Flush there, and the rest of it is routed on its own (asyncpg's
/// `executemany` sends two messages a row and one Sync: past 50,000 rows it
/// was refused as too long). Routing it in slices is what a client that
/// flushes gets: the next slice is decided against the shard the open batch
/// is pinned to, and an error fails the batch's transaction, as in one piece.
pub(super) const SLICE: usize = 1024;

/// The batch being collected.
#[derive(Debug)]
pub(super) struct Batch {
    /// Messages held until the batch can be routed.
    msgs: Vec<(u8, Bytes)>,
    /// Their bytes.
    bytes: usize,
    /// The bytes of the largest of them.
    largest: usize,
    /// After an error we raised with no server: drop client messages until Sync.
    skip_until_sync: bool,
    /// [`SLICE`], or less for the session fuzz target.
    slice_at: u32,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            msgs: Vec::new(),
            bytes: 0,
            largest: 0,
            skip_until_sync: false,
            slice_at: SLICE as u32,
        }
    }
}

/// Most bytes of messages held before a Sync or Flush (or an Execute that
/// ends a slice), besides the largest one: a client could otherwise make the
/// pooler hold 100,000 messages of up to `max_message_size` each (probe:
/// 1,600 Binds of 1 MB, no Execute, no Sync, took 1.5 GB). The largest is
/// left out so that one Bind or Parse up to `max_message_size` (a 70 MB
/// value, as psycopg 3 and asyncpg send it) goes at its Execute, as the same
/// text in a Query does (probe DG F2: it ended the session with 53400).
pub(super) const MAX_BATCH_BYTES: usize = 64 << 20;

/// A batch holding this many bytes goes at its next Execute, as at
/// [`SLICE`] messages: few large Binds (bulk bytea) would otherwise be held
/// whole until the Sync.
pub(super) const SLICE_BYTES: usize = 8 << 20;

/// The batch grew past a bound before its Sync.
#[derive(Debug)]
pub(super) enum TooLong {
    /// More than [`MAX_BATCH`] messages.
    Messages,
    /// More than [`MAX_BATCH_BYTES`] bytes.
    Bytes,
}

impl TooLong {
    /// The SQLSTATE and message the client is closed with.
    pub(super) fn error(&self) -> (&'static str, &'static str) {
        match self {
            TooLong::Messages => (
                crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                "too many extended-protocol messages without Sync",
            ),
            TooLong::Bytes => (
                crate::protocol::sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                "extended-protocol messages held without Sync or Execute exceed 64 MiB \
                 besides the largest one",
            ),
        }
    }
}

impl Batch {
    /// Hold a message.
    pub(super) fn push(&mut self, t: u8, frame: Bytes) -> Result<(), TooLong> {
        self.bytes += frame.len();
        self.largest = self.largest.max(frame.len());
        self.msgs.push((t, frame));
        if self.msgs.len() > MAX_BATCH {
            return Err(TooLong::Messages);
        }
        if self.bytes - self.largest > MAX_BATCH_BYTES {
            return Err(TooLong::Bytes);
        }
        Ok(())
    }

    /// The messages held, leaving none.
    pub(super) fn take(&mut self) -> Vec<(u8, Bytes)> {
        self.bytes = 0;
        self.largest = 0;
        std::mem::take(&mut self.msgs)
    }

    /// The batch is long enough to go at this message, an Execute (see
    /// [`SLICE`]).
    pub(super) fn slice_ends_at(&self, t: u8) -> bool {
        t == crate::protocol::tag::frontend::EXECUTE
            && (self.msgs.len() >= self.slice_at as usize || self.bytes >= SLICE_BYTES)
    }

    /// Slice batches at `n` messages instead of [`SLICE`].
    pub(super) fn slice_at(&mut self, n: usize) {
        self.slice_at = n.clamp(1, SLICE) as u32;
    }

    /// Nothing held.
    pub(super) fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Every message held is of type `t` (true when none is).
    pub(super) fn all(&self, t: u8) -> bool {
        self.msgs.iter().all(|(m, _)| *m == t)
    }

    /// Nothing held and nothing being skipped.
    pub(super) fn is_clear(&self) -> bool {
        let Batch {
            msgs,
            bytes: _,
            largest: _,
            skip_until_sync,
            slice_at: _,
        } = self;
        msgs.is_empty() && !skip_until_sync
    }

    /// Client messages are dropped until the next Sync.
    pub(super) fn skipping(&self) -> bool {
        self.skip_until_sync
    }

    /// Drop client messages until the next Sync.
    pub(super) fn skip(&mut self) {
        self.skip_until_sync = true;
    }

    /// The Sync that ends the skip arrived.
    pub(super) fn synced(&mut self) {
        self.skip_until_sync = false;
    }
}
