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
    /// After an error we raised with no server: drop client messages until Sync.
    skip_until_sync: bool,
    /// [`SLICE`], or less for the session fuzz target.
    slice_at: u32,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            msgs: Vec::new(),
            skip_until_sync: false,
            slice_at: SLICE as u32,
        }
    }
}

/// The client sent more than [`MAX_BATCH`] messages without a Sync.
#[derive(Debug)]
pub(super) struct TooLong;

impl Batch {
    /// Hold a message.
    pub(super) fn push(&mut self, t: u8, frame: Bytes) -> Result<(), TooLong> {
        self.msgs.push((t, frame));
        if self.msgs.len() > MAX_BATCH {
            return Err(TooLong);
        }
        Ok(())
    }

    /// The messages held, leaving none.
    pub(super) fn take(&mut self) -> Vec<(u8, Bytes)> {
        std::mem::take(&mut self.msgs)
    }

    /// The batch is long enough to go at this message, an Execute (see
    /// [`SLICE`]).
    pub(super) fn slice_ends_at(&self, t: u8) -> bool {
        t == crate::protocol::tag::frontend::EXECUTE && self.msgs.len() >= self.slice_at as usize
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
