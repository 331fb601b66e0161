//! Per-attachment counters: kept in plain integers while a transaction runs and
//! added to the pool's atomics once, when the server is released.

use crate::pool::PoolStats;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What one attachment did, for SHOW STATS and metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Counters {
    bytes_in: u64,
    bytes_out: u64,
    queries: u64,
    query_us: u64,
    client_parses: u64,
    server_parses: u64,
    binds: u64,
    /// Requests answered over the session's life (never reset by a flush).
    answered: u64,
    /// When the oldest unanswered query was sent.
    query_start: Option<Instant>,
}

/// Totals of one finished attachment.
pub struct Flushed {
    /// ReadyForQuery messages forwarded.
    pub queries: u64,
    /// Time spent in queries, µs.
    pub query_us: u64,
}

impl Counters {
    pub(super) fn client_read(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }

    pub(super) fn client_wrote(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    pub(super) fn client_parse(&mut self) {
        self.client_parses += 1;
    }

    pub(super) fn server_parse(&mut self) {
        self.server_parses += 1;
    }

    pub(super) fn bind(&mut self) {
        self.binds += 1;
    }

    /// A query (or a Sync) goes out; `owed` ReadyForQuery were owed before it.
    pub(super) fn query_sent(&mut self, owed: usize) {
        if owed == 0 {
            self.query_start = Some(crate::net::clock::now());
        }
    }

    /// A ReadyForQuery for the client's work came back; `owed` more are owed.
    pub(super) fn query_done(&mut self, owed: usize) {
        self.queries += 1;
        self.answered = self.answered.wrapping_add(1);
        if let Some(t) = self.query_start.take() {
            self.query_us += crate::net::clock::since(t).as_micros() as u64;
        }
        if owed > 0 {
            self.query_start = Some(crate::net::clock::now());
        }
    }

    /// Requests answered by servers so far (a cancel retry checks it moved).
    pub(super) fn answered(&self) -> u64 {
        self.answered
    }

    /// Take the counters of a transaction; the session-long ones stay.
    /// Split for a parked session: the life-long answered count, and the rest
    /// only when something is counted (most idle sessions count nothing).
    pub(super) fn park(self) -> (u64, Option<Box<Counters>>) {
        let answered = self.answered;
        let rest = Counters {
            answered: 0,
            ..self
        };
        let empty = rest == Counters::default();
        (answered, (!empty).then(|| Box::new(rest)))
    }

    /// The counters [`Counters::park`] split.
    pub(super) fn unpark(answered: u64, rest: Option<Box<Counters>>) -> Counters {
        Counters {
            answered,
            ..rest.map(|b| *b).unwrap_or_default()
        }
    }

    pub(super) fn take(&mut self) -> Counters {
        let answered = self.answered;
        let out = std::mem::take(self);
        self.answered = answered;
        out
    }

    /// Add everything to `stats` and start over.
    pub fn flush(&mut self, stats: &PoolStats) -> Flushed {
        let out = Flushed {
            queries: self.queries,
            query_us: self.query_us,
        };
        stats.query_count.fetch_add(self.queries, Ordering::Relaxed);
        stats
            .query_time_us
            .fetch_add(self.query_us, Ordering::Relaxed);
        stats
            .bytes_received
            .fetch_add(self.bytes_in, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(self.bytes_out, Ordering::Relaxed);
        for (a, v) in [
            (&stats.client_parse_count, self.client_parses),
            (&stats.server_parse_count, self.server_parses),
            (&stats.bind_count, self.binds),
        ] {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        *self = Counters {
            query_start: self.query_start,
            answered: self.answered,
            ..Counters::default()
        };
        out
    }
}
