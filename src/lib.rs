//! shardbouncer: a PgBouncer-style transaction pooler and tenant-aware shard router.
//!
//! The crate is split so that pure logic (wire framing, authentication maths, the
//! tenant scanner and the shard map) knows nothing about sockets; the I/O layers
//! (`client`, `server`, `pool`, `admin`) call into it. That split is what makes the
//! pure parts fuzzable and benchmarkable.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod client;

pub mod app;
pub mod config;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod router;
mod serve;
pub mod server;
pub mod sqlstate;
pub mod tls;

pub use serve::run;
