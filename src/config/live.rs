//! The live configuration: immutable, validated [`Snapshot`]s published through
//! [`Live`] (arc-swap), and their reload.
//!
//! Readers on the hot path take a cheap snapshot per transaction; a reload builds a
//! complete new snapshot (every file read and validated: config, shard maps, auth
//! file, certificates) and swaps it in atomically, so no reader ever sees half a
//! config, and a reload that fails anywhere leaves the previous snapshot in place.

use super::{Config, Database, NoTenant, PoolSettings, ServerTls, TenantSource, TlsRuntime};
use crate::router::{ShardMap, Source};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Routing settings of a database with its loaded shard map (the router's type).
pub type RoutingRt = crate::router::Routing;

/// Everything a client needs about one configured database, precomputed at load time.
pub struct DbRuntime {
    /// Name clients connect to.
    pub name: String,
    /// The config section.
    pub cfg: Database,
    /// Effective pool settings.
    pub settings: PoolSettings,
    /// Tenant routing; `None` for a plain single-shard pooler.
    pub routing: Option<Arc<RoutingRt>>,
    /// Snapshot generation this was built in.
    pub generation: u64,
    /// TLS toward this database's servers.
    pub server_tls: ServerTls,
}

impl DbRuntime {
    /// Server-side database name.
    pub fn dbname(&self) -> &str {
        self.cfg.dbname.as_deref().unwrap_or(&self.name)
    }

    /// The cap on one tenant's transactions per shard pool (0 = none): its
    /// shard map `[tenant_limits]` entry, else `[databases.NAME.tenant_limits]
    /// max_active`.
    pub fn tenant_cap(&self, tenant: &crate::router::TenantKey) -> usize {
        self.routing
            .as_ref()
            .and_then(|rt| rt.map.tenant_limit(tenant))
            .unwrap_or(self.cfg.tenant_limits.max_active)
    }

    /// Index of a shard by name.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.cfg.shards.iter().position(|s| s.name == name)
    }
}

/// An immutable, validated configuration generation.
pub struct Snapshot {
    /// The parsed config.
    pub config: Config,
    /// Databases by name.
    pub dbs: HashMap<String, Arc<DbRuntime>>,
    /// Monotonic reload counter.
    pub generation: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// TLS acceptor and connector built from `[tls]`.
    pub tls: TlsRuntime,
    /// Users from `[auth] auth_file` (secret `None` = empty password).
    pub file_users: HashMap<String, Option<String>>,
}

impl Snapshot {
    /// Build a snapshot from a validated config, loading and validating every shard
    /// map. Any error rejects the whole snapshot.
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, String> {
        Self::build_from(config, generation, None, &[])
    }

    /// [`Snapshot::build`], or with `prev`'s files (its certificates, auth
    /// file and shard maps) instead of reading them again, but for the maps
    /// `reread`: for a console `SET`, which changes one setting (probe U: it
    /// read every file, and published a shard map a writer had half written,
    /// or failed on one the file watcher had refused), and for a `MOVE
    /// TENANT` or a map change, which read only their maps.
    fn build_from(
        config: Config,
        generation: u64,
        prev: Option<&Snapshot>,
        reread: &[PathBuf],
    ) -> Result<Snapshot, String> {
        // Files are read here, so a reload with a broken certificate or auth file
        // fails as a whole and the previous snapshot stays.
        let tls = match prev {
            Some(p) => p.tls.clone(),
            None => TlsRuntime::load(&config)?,
        };
        let file_users = match (prev, &config.auth.auth_file) {
            (Some(p), _) => p.file_users.clone(),
            (None, Some(f)) => super::userlist::load(&config.resolve(f))?,
            (None, None) => HashMap::new(),
        };
        let mut dbs = HashMap::new();
        for (name, db) in &config.databases {
            let settings = config.pool_settings(db);
            let kept = prev
                .and_then(|p| p.dbs.get(name))
                .and_then(|d| d.routing.as_ref().map(|r| (d, r)))
                .filter(|(d, _)| d.cfg.shards == db.shards)
                .filter(|(_, r)| {
                    r.map_source.as_ref().is_none_or(|p| {
                        let p = super::watch::file_identity(p);
                        !reread.iter().any(|r| super::watch::file_identity(r) == p)
                    })
                });
            let routing = load_routing(&config, name, db, kept.map(|(_, r)| r))?;
            dbs.insert(
                name.clone(),
                Arc::new(DbRuntime {
                    name: name.clone(),
                    cfg: db.clone(),
                    settings,
                    routing,
                    generation,
                    server_tls: tls.server.clone(),
                }),
            );
        }
        Ok(Snapshot {
            config,
            dbs,
            generation,
            loaded_at: SystemTime::now(),
            tls,
            file_users,
        })
    }

    /// A configured user's secret: `[[users]]` first (so the config can override a
    /// stale file entry), then the auth_file. `None` if the user is in neither.
    pub fn password_of(&self, user: &str) -> Option<Option<String>> {
        if let Some(u) = self.config.user(user) {
            return Some(u.password.clone());
        }
        self.file_users.get(user).cloned()
    }
}

/// Routing runtime for a database: configured, or implied by having several shards.
/// `kept`: the routing in force, whose map is used again if the database
/// still reads the same file (or none), instead of reading it.
fn load_routing(
    config: &Config,
    name: &str,
    db: &Database,
    kept: Option<&Arc<RoutingRt>>,
) -> Result<Option<Arc<RoutingRt>>, String> {
    let r = match (&db.routing, db.shards.len()) {
        (Some(r), _) => r.clone(),
        (None, 1) => return Ok(None),
        (None, _) => toml::from_str::<super::Routing>("")
            .map_err(|e| format!("internal: default routing: {e}"))?,
    };
    let names: Vec<String> = db.shards.iter().map(|s| s.name.clone()).collect();
    let same_file =
        |k: &&Arc<RoutingRt>| k.map_source == r.shard_map.as_ref().map(|p| config.resolve(p));
    let (map, source, loaded_at) = match (kept.filter(same_file), &r.shard_map) {
        (Some(k), _) => (k.map.clone(), k.map_source.clone(), k.loaded_at),
        (None, Some(p)) => {
            let path = config.resolve(p);
            let text = super::read_settled(&path).map_err(|e| {
                format!(
                    "[databases.{name}.routing] shard_map {}: {e}",
                    path.display()
                )
            })?;
            let map = ShardMap::parse(&text, &names)
                .map_err(|e| format!("shard map {} (database {name}): {e}", path.display()))?;
            (Arc::new(map), Some(path), SystemTime::now())
        }
        (None, None) => (
            Arc::new(ShardMap::default_for(&names)),
            None,
            SystemTime::now(),
        ),
    };
    let default_shard = r
        .default_shard
        .as_ref()
        .and_then(|d| names.iter().position(|n| n == d));
    let no_tenant = match (r.no_tenant, default_shard) {
        (NoTenant::Default, Some(d)) => crate::router::NoTenant::Default(d),
        _ => crate::router::NoTenant::Reject,
    };
    let sources = r
        .sources
        .iter()
        .map(|s| match s {
            TenantSource::Startup => Source::Startup,
            TenantSource::Comment => Source::Comment,
            TenantSource::Set => Source::Set,
            TenantSource::Scan => Source::Scan,
        })
        .collect();
    Ok(Some(Arc::new(RoutingRt {
        key: r.key.clone(),
        sources,
        no_tenant,
        default_shard,
        lock_startup_tenant: r.lock_startup_tenant,
        user_suffix: r.user_suffix.clone(),
        map,
        map_source: source,
        loaded_at,
    })))
}

/// The configuration in force: the current [`Snapshot`], where it was read from,
/// and the generation counter. Reloads (SIGHUP, file watcher, console RELOAD) and
/// console SETs publish new snapshots here.
pub struct Live {
    current: ArcSwap<Snapshot>,
    path: Option<PathBuf>,
    generation: AtomicU64,
    /// The generation of the snapshot last published: one atomic load tells
    /// a session whether there is anything new to take up, where a
    /// [`Live::load`] (an arc-swap debt slot, about 50 instructions) at
    /// every event was 1.5% of a `pgbench -S` transaction's (callgrind).
    published: AtomicU64,
    reload_lock: Mutex<()>,
}

impl Live {
    /// Publish `config` as generation 1; `path` is where reloads re-read it from.
    pub fn new(config: Config, path: Option<PathBuf>) -> Result<Live, String> {
        let snap = Snapshot::build(config, 1)?;
        Ok(Live {
            current: ArcSwap::from_pointee(snap),
            path,
            generation: AtomicU64::new(1),
            published: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
        })
    }

    /// The current snapshot, cheaply (for a short look; see [`Live::load_full`]).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The generation of the snapshot last published (a [`Live::load`] made
    /// after this returns sees that one or a newer one).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// The current snapshot, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The config file reloads read, if the process was started from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A fresh configuration generation number.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Re-read the config file and publish it; on any error the old snapshot stays.
    /// `apply` runs with the new snapshot before it is published (the pools take
    /// their new settings there). Returns a description of what changed.
    pub fn reload(&self, apply: impl FnOnce(&Snapshot)) -> Result<String, String> {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.as_ref().ok_or("no config file to reload")?;
        let mut config = Config::load(path)?;
        let old = self.current.load_full();
        let mut notes = Vec::new();
        // Settings that need a restart keep their running values in the live
        // configuration, which says what runs (SHOW CONFIG, the next reload).
        if config.listen.addr != old.config.listen.addr {
            notes.push(format!(
                "[listen] addr changed to {} but needs a restart; still listening on {}",
                config.listen.addr, old.config.listen.addr
            ));
            config.listen.addr = old.config.listen.addr.clone();
        }
        if config.listen.so_reuseport != old.config.listen.so_reuseport
            || config.listen.peer_dir != old.config.listen.peer_dir
        {
            notes.push(
                "[listen] so_reuseport and peer_dir changes need a restart; still as they were"
                    .to_string(),
            );
            config.listen.so_reuseport = old.config.listen.so_reuseport;
            config.listen.peer_dir = old.config.listen.peer_dir.clone();
        }
        if config.workers() != old.config.workers() {
            notes.push(format!(
                "[limits] workers changed to {} but needs a restart; still running {}",
                config.workers(),
                old.config.workers()
            ));
            config.limits.workers = old.config.limits.workers;
        }
        if config.admin.metrics_addr != old.config.admin.metrics_addr {
            notes.push("[admin] metrics_addr change needs a restart".to_string());
            config.admin.metrics_addr = old.config.admin.metrics_addr.clone();
        }
        let gen = self.next_generation();
        let snap = Snapshot::build(config, gen)?;
        no_older_maps(&old, &snap)?;
        apply(&snap);
        for (name, db) in &snap.dbs {
            if let Some(rt) = &db.routing {
                tracing::info!(
                    "database {name}: shard map version {} ({} overrides)",
                    rt.map.version,
                    rt.map.overrides_len()
                );
            }
        }
        self.current.store(Arc::new(snap));
        self.published.store(gen, Ordering::Release);
        for n in &notes {
            tracing::warn!("{n}");
        }
        Ok(if notes.is_empty() {
            format!("configuration reloaded (generation {gen})")
        } else {
            format!(
                "configuration reloaded (generation {gen}); {}",
                notes.join("; ")
            )
        })
    }

    /// Publish a new generation built from a copy of the current config changed by
    /// `edit` (console SET, MOVE TENANT) and validated like a loaded file;
    /// `apply` runs with it before it is published, as for [`Live::reload`].
    /// Returns the snapshot published.
    ///
    /// It takes the reload lock: a file reload reads the config and the maps, then
    /// publishes, and a change published in between (a MOVE that rewrote a map)
    /// would otherwise be overwritten by what the reload read before it.
    pub fn modify(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<(), String>,
        apply: impl FnOnce(&Snapshot),
    ) -> Result<Arc<Snapshot>, String> {
        self.publish(edit, apply, None)
    }

    /// [`Live::modify`] with the files in force (certificates, auth file,
    /// shard maps) rather than read again: a console `SET`.
    pub fn modify_setting(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<(), String>,
        apply: impl FnOnce(&Snapshot),
    ) -> Result<Arc<Snapshot>, String> {
        self.publish(edit, apply, Some(&[]))
    }

    /// Publish the configuration in force with the shard map files `maps`
    /// read again, and every other file as it is in force: a `MOVE TENANT`,
    /// which wrote `maps` (probe X: it read every file, and published
    /// another database's map a writer had half written).
    pub fn reread_maps(
        &self,
        maps: &[PathBuf],
        apply: impl FnOnce(&Snapshot),
    ) -> Result<Arc<Snapshot>, String> {
        self.publish(|_| Ok(()), apply, Some(maps))
    }

    /// `keep`: build with the files in force but those listed (`None`: read
    /// every file).
    fn publish(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<(), String>,
        apply: impl FnOnce(&Snapshot),
        keep: Option<&[PathBuf]>,
    ) -> Result<Arc<Snapshot>, String> {
        // Every publisher holds this lock, so the snapshot read here is the one
        // replaced.
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.current.load_full();
        let mut cfg = prev.config.clone();
        edit(&mut cfg)?;
        cfg.validate()?;
        // A new generation: live sessions pick the change up between transactions.
        let generation = self.next_generation();
        let new = Arc::new(match keep {
            None => Snapshot::build(cfg, generation)?,
            Some(reread) => Snapshot::build_from(cfg, generation, Some(&prev), reread)?,
        });
        no_older_maps(&self.current.load(), &new)?;
        apply(&new);
        self.current.store(new.clone());
        self.published.store(generation, Ordering::Release);
        Ok(new)
    }
}

/// Refuse a shard map whose version is lower than the live one's for the
/// same database: a map's version only goes up (MOVE TENANT bumps it). An
/// older map put back (a deploy of a stale file, a backup restored) would
/// undo a move: the tenant's writes would go to its old shard, and it would
/// no longer see the rows it wrote since (probe H). Put back on purpose, it
/// gets a higher version.
fn no_older_maps(old: &Snapshot, new: &Snapshot) -> Result<(), String> {
    for (name, db) in &new.dbs {
        let (Some(n), Some(o)) = (
            db.routing.as_ref(),
            old.dbs.get(name).and_then(|d| d.routing.as_ref()),
        ) else {
            continue;
        };
        if n.map.version < o.map.version {
            return Err(format!(
                "database {name}: shard map version {} is lower than the live version {}; \
                 a map's version only goes up (give the map you mean a higher one)",
                n.map.version, o.map.version
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(path: &Path, pool_size: usize) {
        std::fs::write(
            path,
            format!(
                "[pool]\ndefault_pool_size = {pool_size}\n[databases.app]\n\
                 shards = [ {{ name = \"s0\", host = \"127.0.0.1\" }} ]\n"
            ),
        )
        .unwrap();
    }

    /// A console change published while a reload is between reading the file and
    /// publishing it is not lost: the reload cannot put back what it read before.
    #[test]
    fn a_change_made_during_a_reload_outlives_it() {
        let dir = std::env::temp_dir().join(format!("sb-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        write_config(&path, 5);
        let live = Arc::new(Live::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let other = live.clone();
        let mut change = None;
        live.reload(|_| {
            // The reload has read the file and not yet published: change the
            // config meanwhile.
            change = Some(std::thread::spawn(move || {
                let r = other.modify(
                    |c| {
                        c.pool.default_pool_size = Some(9);
                        Ok(())
                    },
                    |_| {},
                );
                done_tx.send(()).unwrap();
                r.map(|s| s.generation)
            }));
            // Without the lock the change lands here, before the reload publishes.
            let _ = done_rx.recv_timeout(std::time::Duration::from_millis(200));
        })
        .unwrap();
        let gen = change.unwrap().join().unwrap().unwrap();
        let now = live.load_full();
        assert_eq!(now.generation, gen, "the reload published over the change");
        assert_eq!(now.config.pool.default_pool_size, Some(9));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload that changes `[limits] workers` says it needs a restart.
    #[test]
    fn a_workers_change_is_reported_as_needing_a_restart() {
        let dir = std::env::temp_dir().join(format!("sb-live-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let body = "[databases.app]\nshards = [ { name = \"s0\", host = \"127.0.0.1\" } ]\n";
        std::fs::write(&path, format!("[limits]\nworkers = 1\n{body}")).unwrap();
        let live = Live::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
        assert!(!live.reload(|_| {}).unwrap().contains("workers"));
        std::fs::write(&path, format!("[limits]\nworkers = 3\n{body}")).unwrap();
        let msg = live.reload(|_| {}).unwrap();
        assert!(
            msg.contains("[limits] workers changed to 3 but needs a restart; still running 1"),
            "{msg}"
        );
        // What runs is what the live configuration says, reload after reload.
        assert_eq!(live.load_full().config.workers(), 1);
        assert!(live.reload(|_| {}).unwrap().contains("still running 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload that changes `[listen] addr` keeps the address that is bound
    /// in the live configuration (probe: SHOW CONFIG showed the new one, and
    /// changing it back logged "still listening on" the never-bound one).
    #[test]
    fn a_listen_change_keeps_the_bound_address() {
        let dir = std::env::temp_dir().join(format!("sb-live-l-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let body = "[databases.app]\nshards = [ { name = \"s0\", host = \"127.0.0.1\" } ]\n";
        let listen = |port: u16| format!("[listen]\naddr = \"127.0.0.1:{port}\"\n{body}");
        std::fs::write(&path, listen(7001)).unwrap();
        let live = Live::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
        std::fs::write(&path, listen(7002)).unwrap();
        let msg = live.reload(|_| {}).unwrap();
        assert!(msg.contains("still listening on 127.0.0.1:7001"), "{msg}");
        assert_eq!(live.load_full().config.listen.addr, "127.0.0.1:7001");
        std::fs::write(&path, listen(7001)).unwrap();
        assert!(!live.reload(|_| {}).unwrap().contains("listen"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `so_reuseport` and `peer_dir` are bound at start: a reload that changes
    /// them says so and keeps what runs (a drain reads `so_reuseport` to know
    /// whether the listener is shared).
    #[test]
    fn a_shared_listener_change_needs_a_restart() {
        let dir = std::env::temp_dir().join(format!("sb-live-r-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("p")).unwrap();
        let path = dir.join("c.toml");
        let body = "[databases.app]\nshards = [ { name = \"s0\", host = \"127.0.0.1\" } ]\n";
        let listen = |on: bool| format!("[listen]\nso_reuseport = {on}\npeer_dir = \"p\"\n{body}");
        std::fs::write(&path, listen(false)).unwrap();
        let live = Live::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
        assert_eq!(live.load_full().config.peer_dir(), Some(dir.join("p")));
        std::fs::write(&path, listen(true)).unwrap();
        let msg = live.reload(|_| {}).unwrap();
        assert!(
            msg.contains("so_reuseport and peer_dir changes need a restart"),
            "{msg}"
        );
        assert!(!live.load_full().config.listen.so_reuseport);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
