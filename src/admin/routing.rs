//! What the console needs from the shard router, behind a trait so the router can be
//! wired in without the console knowing how shard maps work.
//!
//! Until the router installs its view with
//! [`AdminState::set_router_view`](super::AdminState::set_router_view), [`NoRouter`]
//! answers: every database has map version 0 from "(none)", and only single-shard
//! databases can be routed.

use crate::app::Snapshot;
use std::time::SystemTime;

/// One database's shard map, for SHOW SHARD_MAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMapInfo {
    /// Database name.
    pub database: String,
    /// Map version (0 = no map loaded).
    pub version: u64,
    /// Hash method, e.g. "citus", "pg_hash", "range".
    pub method: String,
    /// When the map was loaded.
    pub loaded_at: Option<SystemTime>,
    /// File it came from, or "(none)".
    pub source: String,
    /// Tenants pinned by override.
    pub overrides: u64,
    /// Hash ranges in the map.
    pub ranges: u64,
}

/// Where one tenant key goes, for SHOW ROUTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Shard name, or `None` when the key cannot be routed.
    pub shard: Option<String>,
    /// Why (e.g. "hash 0x1234 in range [..]", "override", "single shard").
    pub reason: String,
    /// Map version the decision was made with.
    pub map_version: u64,
}

/// The router's side of the console.
pub trait RouterView: Send + Sync {
    /// One row per configured database.
    fn shard_maps(&self, snap: &Snapshot) -> Vec<ShardMapInfo>;
    /// Route `key` in `database`.
    fn route(&self, snap: &Snapshot, database: &str, key: &str) -> RouteInfo;
    /// Tenants of `database` pinned to `shard` by override (SHOW SHARDS).
    fn overrides(&self, snap: &Snapshot, database: &str, shard: &str) -> u64;
}

/// The view used before the router is wired in.
pub struct NoRouter;

impl RouterView for NoRouter {
    fn shard_maps(&self, snap: &Snapshot) -> Vec<ShardMapInfo> {
        let mut names: Vec<&String> = snap.dbs.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| ShardMapInfo {
                database: name.clone(),
                version: 0,
                method: "citus".to_string(),
                loaded_at: None,
                source: "(none)".to_string(),
                overrides: 0,
                ranges: 0,
            })
            .collect()
    }

    fn route(&self, snap: &Snapshot, database: &str, _key: &str) -> RouteInfo {
        match snap.dbs.get(database) {
            Some(db) if db.cfg.shards.len() == 1 => RouteInfo {
                shard: Some(db.cfg.shards[0].name.clone()),
                reason: "single shard".to_string(),
                map_version: 0,
            },
            Some(_) => RouteInfo {
                shard: None,
                reason: "no shard map loaded".to_string(),
                map_version: 0,
            },
            None => RouteInfo {
                shard: None,
                reason: format!("no such database: {database}"),
                map_version: 0,
            },
        }
    }

    fn overrides(&self, _snap: &Snapshot, _database: &str, _shard: &str) -> u64 {
        0
    }
}
