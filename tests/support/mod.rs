//! Integration-test harness for shardbouncer: throwaway real PostgreSQL clusters
//! ([`PgCluster`]) and a supervised shardbouncer process ([`Bouncer`]).
//!
//! Use it from an integration test with `mod support;` and then
//! `use support::*;`. Nothing here is mocked: every cluster is a real
//! `postgres` started with `pg_ctl`, and every bouncer is the real
//! `shardbouncer` binary built by cargo for this test run.
//!
//! Clean-up is tied to `Drop`: a test that panics still stops its servers
//! and removes their temp dirs while unwinding.
#![allow(dead_code)]

mod bouncer;
pub mod metrics;
mod pg;
pub mod raw;
mod util;
mod wait;

#[allow(unused_imports)] // not every test crate uses every helper
pub use bouncer::{basic_config, routed_config, shard_list, Bouncer, SYMLINK};
pub use pg::{PgCluster, APP_PASSWORD, APP_USER};
#[allow(unused_imports)] // not every test crate reads the console
pub use util::clients_waiting;
pub use util::free_port;
#[allow(unused_imports)] // for tests that block (signals, raw sockets) from async code
pub(crate) use wait::blocking;
#[allow(unused_imports)] // not every test crate waits
pub use wait::{eventually, eventually_ok};
