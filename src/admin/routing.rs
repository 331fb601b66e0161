//! What the console says about the shard router (SHOW SHARD_MAP, SHOW ROUTE, the
//! overrides column of SHOW SHARDS), read from the live configuration snapshot: each
//! database's [`RoutingRt`](crate::config::RoutingRt) and shard map.

use crate::config::Snapshot;
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

/// SHOW SHARD_MAP: one row per configured database.
pub fn shard_maps(snap: &Snapshot) -> Vec<ShardMapInfo> {
    let mut names: Vec<&String> = snap.dbs.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let db = &snap.dbs[name];
            match &db.routing {
                Some(rt) => ShardMapInfo {
                    database: name.clone(),
                    version: rt.map.version.max(0) as u64,
                    method: method_name(rt.map.method).to_string(),
                    loaded_at: Some(rt.loaded_at),
                    source: rt
                        .map_source
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(built in)".to_string()),
                    overrides: rt.map.overrides_len() as u64,
                    ranges: rt.map.ranges_len() as u64,
                },
                None => ShardMapInfo {
                    database: name.clone(),
                    version: 0,
                    method: "single".to_string(),
                    loaded_at: Some(snap.loaded_at),
                    source: "(none)".to_string(),
                    overrides: 0,
                    ranges: 0,
                },
            }
        })
        .collect()
}

/// SHOW ROUTE: where `key` goes in `database`.
pub fn route(snap: &Snapshot, database: &str, key: &str) -> RouteInfo {
    let Some(db) = snap.dbs.get(database) else {
        return RouteInfo {
            shard: None,
            reason: format!("no such database: {database}"),
            map_version: 0,
        };
    };
    let Some(rt) = &db.routing else {
        return RouteInfo {
            shard: Some(db.cfg.shards[0].name.clone()),
            reason: "single shard".to_string(),
            map_version: 0,
        };
    };
    let version = rt.map.version.max(0) as u64;
    let Some(k) = crate::router::TenantKey::new(key.as_bytes()) else {
        return RouteInfo {
            shard: None,
            reason: "invalid key: tenant keys are 1 to 63 bytes of UTF-8".to_string(),
            map_version: version,
        };
    };
    match rt.map.route(&k) {
        Ok(r) => RouteInfo {
            shard: rt.map.shard_names().get(r.shard).cloned(),
            reason: describe(&r.reason, rt.map.method),
            map_version: version,
        },
        Err(e) => RouteInfo {
            shard: None,
            reason: e,
            map_version: version,
        },
    }
}

/// Tenants of `database` pinned to `shard` by override (SHOW SHARDS).
pub fn overrides(snap: &Snapshot, database: &str, shard: &str) -> u64 {
    let Some(rt) = snap.dbs.get(database).and_then(|d| d.routing.as_ref()) else {
        return 0;
    };
    rt.map
        .shard_names()
        .iter()
        .position(|n| n == shard)
        .map(|i| rt.map.overrides_for(i) as u64)
        .unwrap_or(0)
}

fn method_name(m: crate::router::Method) -> &'static str {
    match m {
        crate::router::Method::Citus => "citus",
        crate::router::Method::Partition => "partition",
        crate::router::Method::Range => "range",
    }
}

/// The reason of a route, in words. The hash function is the one the map's
/// key type used (probe U: a text key that looked like an integer was said
/// to be hashed with hashint8).
fn describe(r: &crate::router::RouteReason, m: crate::router::Method) -> String {
    use crate::router::RouteReason;
    match r {
        RouteReason::Override => "override ([tenants] in the shard map)".to_string(),
        RouteReason::Hash { hash, index, func } => match m {
            crate::router::Method::Partition => {
                format!("partition hash {hash} ({func}), remainder {index}")
            }
            _ => format!("citus hash {hash} ({func}), hash range {index}"),
        },
        RouteReason::Range { from, to } => format!("range {from}..={to}"),
    }
}
