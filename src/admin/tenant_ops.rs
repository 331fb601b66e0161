//! Console `PAUSE TENANT`, `MOVE TENANT` and `RESUME TENANT`: moving one tenant
//! to another shard while its clients stay connected and see no error.
//!
//! The protocol (see docs/tenant-operations.md):
//! 1. `PAUSE TENANT 'k'` closes the tenant's gate ([`crate::app::gate`]): from
//!    then on, no transaction of the tenant starts on any database that routes
//!    it; sessions whose next work needs the tenant wait, with no server. The
//!    command returns once the transactions already running have ended, or
//!    fails after its timeout, reopening the gate and naming the clients that
//!    still held the tenant.
//! 2. The operator copies the tenant's rows to the new shard.
//! 3. `MOVE TENANT 'k' TO s` writes a `[tenants]` override into every shard map
//!    file that routes the tenant (edited in place, written to a temporary file
//!    and renamed over the old one, version bumped), and publishes a new
//!    configuration built from them. Other shardbouncer processes watching the
//!    files pick the change up too.
//! 4. `RESUME TENANT 'k'` opens the gate: the waiting work is routed again,
//!    with the new map.

use crate::app::App;
use crate::router::shardmap;
use crate::router::TenantKey;
use crate::sqlstate::{self, PgError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long PAUSE TENANT waits for running transactions by default.
pub const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant as every routed database knows it: database name -> canonical key.
fn keys_of(app: &App, key: &str) -> Result<BTreeMap<String, TenantKey>, PgError> {
    let k = TenantKey::new(key.as_bytes()).ok_or_else(|| {
        PgError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "invalid tenant key (1 to 63 bytes, no NUL)",
        )
    })?;
    let snap = app.snapshot.load();
    let mut out = BTreeMap::new();
    for (name, db) in &snap.dbs {
        let Some(rt) = &db.routing else { continue };
        // A key that the map's key type cannot read is not a tenant there.
        if let Ok(c) = rt.map.canonical_tenant(&k) {
            out.insert(name.clone(), c);
        }
    }
    if out.is_empty() {
        return Err(PgError::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("no database routes tenant {key:?}"),
        ));
    }
    Ok(out)
}

/// The distinct canonical keys (databases of different key types may spell
/// the tenant differently).
fn distinct(keys: &BTreeMap<String, TenantKey>) -> Vec<TenantKey> {
    let mut v: Vec<TenantKey> = keys.values().copied().collect();
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v.dedup();
    v
}

/// The databases whose tenant `key` one MOVE TENANT moves: those of one map
/// file, the one of database `db` if named. Unnamed, a key that the maps of
/// several files route is refused: each map is a key space of its own (a
/// text map routes any key), and moving them all moved a tenant of another
/// database whose rows nobody copied (probe DC F1: `MOVE TENANT '7'` for a
/// bigint database also moved text tenant '7' of another one, which was
/// then split over two shards).
fn one_map(
    app: &App,
    key: &str,
    mut keys: BTreeMap<String, TenantKey>,
    db: Option<&str>,
) -> Result<BTreeMap<String, TenantKey>, PgError> {
    let snap = app.snapshot.load();
    let file = |name: &str| {
        snap.dbs
            .get(name)
            .and_then(|d| d.routing.as_ref())
            .and_then(|r| r.map_source.clone())
    };
    let chosen = match db {
        Some(db) => {
            if !keys.contains_key(db) {
                return Err(PgError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("database {db:?} does not route tenant {key:?}"),
                ));
            }
            file(db)
        }
        None => {
            let files: std::collections::BTreeSet<Option<PathBuf>> =
                keys.keys().map(|name| file(name)).collect();
            if files.len() > 1 {
                let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                return Err(PgError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!(
                        "tenant {key:?} is routed by the shard maps of several databases \
                         ({}), each a tenant of its own: name the database whose tenant \
                         moves (MOVE TENANT {} '{key}' TO shard); nothing was changed",
                        names.join(", "),
                        names[0]
                    ),
                ));
            }
            return Ok(keys);
        }
    };
    match chosen {
        // Every database that reads the same file moves with it.
        Some(path) => keys.retain(|name, _| file(name).as_ref() == Some(&path)),
        None => keys.retain(|name, _| Some(name.as_str()) == db),
    }
    Ok(keys)
}

/// `PAUSE TENANT key [seconds]`.
pub async fn pause(app: &App, key: &str, timeout: Option<u64>) -> Result<(), PgError> {
    let keys = distinct(&keys_of(app, key)?);
    let timeout = timeout.map_or(DEFAULT_PAUSE_TIMEOUT, Duration::from_secs);
    // Checked before anything is paused: a timeout past the clock's range is
    // refused, not a panic that leaves the tenant paused.
    let deadline = match tokio::time::Instant::now().checked_add(timeout) {
        Some(d) if timeout <= MAX_PAUSE_TIMEOUT => d,
        _ => {
            return Err(PgError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "PAUSE TENANT timeout must be at most {} seconds",
                    MAX_PAUSE_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    // Until the tenant is drained, any way out (a timeout, an error, the
    // console connection dropped mid-wait) resumes what this command paused.
    let mut paused = Paused {
        app,
        keys: Vec::new(),
    };
    for k in &keys {
        let Some(epoch) = app.gate.pause_owned(*k) else {
            return Err(PgError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("tenant {key:?} is already paused"),
            ));
        };
        paused.keys.push((*k, epoch));
    }
    tracing::info!(tenant = key, "PAUSE TENANT: new transactions are held");
    let mut left = Vec::new();
    for &(k, epoch) in &paused.keys {
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        left.extend(app.gate.drained(&k, epoch, rest).await);
    }
    if left.is_empty() {
        // Still this command's pause, each key: a RESUME TENANT while it
        // waited ended it (probe U: PAUSE answered success while the tenant
        // ran again).
        if !paused
            .keys
            .iter()
            .all(|(k, epoch)| app.gate.settle(k, *epoch))
        {
            return Err(PgError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "PAUSE TENANT {key:?}: the tenant was resumed while this command waited \
                     for its transactions; it is not paused"
                ),
            ));
        }
        paused.keys.clear();
        tracing::info!(
            tenant = key,
            "PAUSE TENANT: paused (a restart of shardbouncer ends the pause)"
        );
        return Ok(());
    }
    drop(paused);
    left.sort_unstable();
    left.dedup();
    let clients = left
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(tenant = key, clients, "PAUSE TENANT timed out; resumed");
    Err(PgError::new(
        sqlstate::QUERY_CANCELED,
        format!(
            "PAUSE TENANT {key:?} timed out after {} s: client(s) {clients} (SHOW CLIENTS) \
             still hold transactions of it; the tenant was not paused (a client that left \
             while its statement ran is no longer listed: its server is being closed, and \
             its backend ended if it runs on)",
            timeout.as_secs()
        ),
    ))
}

/// Longest `PAUSE TENANT` wait: a day.
const MAX_PAUSE_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Tenants a `PAUSE TENANT` paused and has not finished pausing, with their
/// pauses' epochs: resumed when dropped, unless another pause is in force
/// by then.
struct Paused<'a> {
    app: &'a App,
    keys: Vec<(TenantKey, u64)>,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        for (k, epoch) in &self.keys {
            self.app.gate.end_pause(k, *epoch);
        }
    }
}

/// `RESUME TENANT key`.
pub fn resume(app: &App, key: &str) -> Result<(), PgError> {
    let mut any = false;
    for k in distinct(&keys_of(app, key)?) {
        any |= app.gate.resume(&k);
    }
    if !any {
        return Err(PgError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("tenant {key:?} is not paused"),
        ));
    }
    tracing::info!(tenant = key, "RESUME TENANT: held transactions go on");
    Ok(())
}

/// `MOVE TENANT key TO shard`: returns a description of what was written.
///
/// One at a time: a move reads the map files, edits and writes them, and
/// publishes the result; two at once read the same file, and the second
/// write undid the first while both answered (probe L, once MOVE left the
/// worker thread).
pub fn move_to(app: &App, key: &str, shard: &str, db: Option<&str>) -> Result<String, PgError> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let keys = one_map(app, key, keys_of(app, key)?, db)?;
    if let Some(k) = distinct(&keys).iter().find(|k| !app.gate.is_drained(k)) {
        let why = if app.gate.is_paused(k) {
            "its PAUSE TENANT still waits for its transactions to end"
        } else {
            "it is not paused"
        };
        return Err(PgError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "tenant {:?}: {why}: run PAUSE TENANT {key:?} first and wait for its \
                 answer, so that no transaction of it runs while it moves",
                k.as_str()
            ),
        ));
    }
    let snap = app.snapshot.load_full();
    // Every map file to edit, with the shard lists of the databases that use it.
    let mut files: BTreeMap<PathBuf, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for name in keys.keys() {
        let db = &snap.dbs[name];
        let names: Vec<String> = db.cfg.shards.iter().map(|s| s.name.clone()).collect();
        if !names.iter().any(|n| n == shard) {
            return Err(PgError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "database {name} has no shard {shard:?} (shards: {})",
                    names.join(", ")
                ),
            ));
        }
        let Some(path) = db.routing.as_ref().and_then(|r| r.map_source.clone()) else {
            return Err(PgError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "database {name} has no shard_map file for MOVE TENANT to write \
                     (set [databases.{name}.routing] shard_map)"
                ),
            ));
        };
        files.entry(path).or_default().push((name.clone(), names));
    }
    let k = TenantKey::new(key.as_bytes()).expect("checked by keys_of");
    // Everything is computed and checked before anything is written.
    let mut edits = Vec::new();
    for (path, dbs) in &files {
        let file_err = |e: String| {
            PgError::new(
                sqlstate::CONFIG_FILE_ERROR,
                format!("shard map {}: {e}; nothing was changed", path.display()),
            )
        };
        let old = crate::config::read_settled(path).map_err(|e| file_err(e.to_string()))?;
        // The move edits the map in force, nothing else: a file on disk that
        // is not it (an older map put back, which reloads refused; a change
        // not reloaded yet) would be published with the move, and an older
        // one would undo earlier moves (probe L).
        let live = snap.dbs[&dbs[0].0]
            .routing
            .as_ref()
            .map_or(0, |r| r.map.version);
        let on_disk = shardmap::ShardMap::parse(&old, &dbs[0].1)
            .map_err(|e| file_err(format!("for database {}: {e}", dbs[0].0)))?;
        if on_disk.version != live {
            return Err(file_err(format!(
                "the file has version {}, the map in force {live}: it is not the map in \
                 force (a change a reload refused, or one not reloaded yet); RELOAD, or put \
                 the map in force back, then MOVE again",
                on_disk.version
            )));
        }
        let (new, version) =
            shardmap::with_override(&old, &dbs[0].1, &k, shard).map_err(file_err)?;
        for (name, names) in &dbs[1..] {
            let m = shardmap::ShardMap::parse(&new, names)
                .map_err(|e| file_err(format!("for database {name}: {e}")))?;
            let to = m.route(&k).map_err(file_err)?.shard;
            if names[to] != shard {
                return Err(file_err(format!(
                    "database {name} would not route it to {shard}"
                )));
            }
        }
        edits.push((path.clone(), old, new, version));
    }
    let mut written: Vec<(PathBuf, String)> = Vec::new();
    for (path, old, new, _) in &edits {
        if let Err(e) = write_atomically(path, new) {
            restore(&written);
            return Err(PgError::new(
                sqlstate::CONFIG_FILE_ERROR,
                format!("writing {}: {e}; nothing was changed", path.display()),
            ));
        }
        written.push((path.clone(), old.clone()));
    }
    // The files are in place: publish a configuration built from them (the
    // file watcher would too, a moment later).
    // The gate learns of the move before the new map is published (the
    // tenant is paused too, so nothing of it runs meanwhile).
    let paths: Vec<PathBuf> = edits.iter().map(|e| e.0.clone()).collect();
    match app.snapshot.reread_maps(&paths, |s| app.record_moves(s)) {
        Ok(new) => {
            // Work routed with an older configuration must not reach the old shard.
            for k in distinct(&keys) {
                app.gate.moved(k, new.generation);
            }
            for name in keys.keys() {
                let db = &new.dbs[name];
                let rt = db.routing.as_ref().expect("routed");
                let at = rt.map.route(&k).map(|r| r.shard);
                if at.ok().map(|i| db.cfg.shards[i].name.as_str()) != Some(shard) {
                    // Said, not only logged: the operator would copy and
                    // delete rows by an answer that is not true.
                    tracing::error!(
                        database = name,
                        "MOVE TENANT: the new map does not route the tenant to {shard}"
                    );
                    return Err(PgError::new(
                        sqlstate::CONFIG_FILE_ERROR,
                        format!(
                            "the map now in force does not route tenant {key:?} to {shard} \
                             in database {name}: see SHOW ROUTE and SHOW SHARD_MAP"
                        ),
                    ));
                }
            }
        }
        Err(e) => {
            restore(&written);
            return Err(PgError::new(
                sqlstate::CONFIG_FILE_ERROR,
                format!("the new shard map was refused ({e}); the old one was put back"),
            ));
        }
    }
    let what = edits
        .iter()
        .map(|(p, _, _, v)| format!("{} version {v}", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(tenant = key, shard, "MOVE TENANT: {what}");
    Ok(format!("tenant {key:?} now routes to {shard} ({what})"))
}

/// Replace `path` with `text` so that a reader sees the old file or the new
/// one, never a part: written beside it, synced, then renamed over it.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    // A map reached through symlinks (a ConfigMap's) is replaced where it
    // resolves: renamed over the link itself, it left the file the links
    // share, which other processes read, unchanged (probe H).
    let resolved = std::fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per write, not only per process.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.shardbouncer-{}-{n}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Put back map files already replaced (a later step failed).
fn restore(written: &[(PathBuf, String)]) {
    for (path, old) in written {
        if let Err(e) = write_atomically(path, old) {
            tracing::error!("MOVE TENANT: could not restore {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map reached through a symlink (a ConfigMap's) is replaced where it
    /// resolves: the link stays, and the file it shares with other processes
    /// gets the new text (probe H: the link itself was replaced).
    #[test]
    fn a_map_behind_a_symlink_is_written_where_it_resolves() {
        let dir = std::env::temp_dir().join(format!("sb-wa-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..v1")).unwrap();
        std::fs::write(dir.join("..v1/map.toml"), "old").unwrap();
        std::os::unix::fs::symlink("..v1/map.toml", dir.join("map.toml")).unwrap();
        write_atomically(&dir.join("map.toml"), "new").unwrap();
        let link = std::fs::symlink_metadata(dir.join("map.toml")).unwrap();
        assert!(link.file_type().is_symlink(), "the link was replaced");
        assert_eq!(
            std::fs::read_to_string(dir.join("..v1/map.toml")).unwrap(),
            "new"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
