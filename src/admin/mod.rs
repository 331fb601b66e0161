//! Admin console (PgBouncer-compatible, over psql) and Prometheus metrics.

pub mod console;
