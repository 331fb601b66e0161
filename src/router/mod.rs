//! Tenant extraction and the routing decision. Pure: no I/O, fuzzable.
//!
//! * [`lexer`]: Postgres-compatible SQL lexing (literals, quotes, comments).
//! * [`scanner`]: every tenant a statement mentions (comment, predicate, INSERT).
//! * `clause`: which clause of its statement a token stands in, for the scanner.
//! * [`copy`]: the key field of a `COPY .. FROM STDIN`'s rows, read as they stream.
//! * [`statement`]: the statements of a text, their forms and side effects.
//! * [`catalog`]: whether a `SELECT` reads the system catalogs alone.
//! * [`search_path`]: whether a `search_path` lets other types shadow
//!   `pg_catalog`'s.
//! * [`decide`]: the one function that routes a unit of work.
//! * [`bind`]: Bind parameter values as tenant keys.
//! * [`hash`]: Postgres-compatible hash functions (lookup3, `hashint8`, ...).
//! * [`key`]: [`TenantKey`], an inline, allocation-free tenant identifier.
//! * [`keyed`]: a fast keyed hash for the maps tenants are looked up in.
//! * [`shardmap`]: maps a tenant key to a shard (Citus ranges, hash
//!   partitions, integer ranges, explicit overrides).

pub mod bind;
pub mod catalog;
mod clause;
pub mod copy;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod hash;
pub mod key;
pub mod keyed;
mod lexer;
pub mod scanner;
pub mod search_path;
pub mod shardmap;
pub mod statement;

pub use decide::{
    decide, Decision, Item, Local, NoTenant, Refusal, Routing, SessionView, Tenants, Tx, Unit,
};
pub use key::TenantKey;
pub use lexer::contains_ci;
pub use lexer::{ascii_unsafe_encoding, keys_read_as_sent};
pub use scanner::{mentions, Source, TenantToken};
pub use shardmap::{KeyType, Method, Route, RouteReason, ShardMap};
pub use statement::{
    analyze, analyze_checked, begin_has_modes, common_prefix, int_spans, listen_ops, same_shape,
    shape_invariant, Effects, Facts, Kind, ListenOp, Mention, ParseInput, ShapeCache,
};
