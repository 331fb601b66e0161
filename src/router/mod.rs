//! Tenant extraction and shard lookup. Pure: no I/O, fuzzable.

pub mod hash;
pub mod scanner;
pub mod shardmap;
