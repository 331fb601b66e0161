//! Tenant extraction and shard lookup. Pure: no I/O, fuzzable.
//!
//! * [`hash`]: Postgres-compatible hash functions (lookup3, `hashint8`, ...).
//! * [`key`]: [`TenantKey`], an inline, allocation-free tenant identifier.
//! * [`scanner`]: finds the tenant a statement names (SET, comment, predicate).
//! * [`shardmap`]: maps a tenant key to a shard (Citus ranges, hash
//!   partitions, integer ranges, explicit overrides).

pub mod hash;
pub mod key;
pub mod scanner;
pub mod shardmap;

pub use key::TenantKey;
pub use scanner::{scan, scan_all_tenants, Source, Statement, TenantToken};
pub use shardmap::{KeyType, Method, Route, RouteReason, ShardMap};
