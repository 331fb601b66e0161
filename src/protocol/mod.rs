//! PostgreSQL wire protocol: framing and the few typed views we need. Pure, no I/O.

pub mod md5;
pub mod scram;
