//! Process-wide state: the live configuration snapshot, the pools, and the registry of
//! connected clients. Shared by every task as `Arc<App>`.

use crate::config::{Config, Database, NoTenant, PoolSettings, TenantSource};
use crate::pool::{Pool, PoolKey, Pools};
use crate::router::ShardMap;
use crate::router::Source;
use crate::server::{CancelKey, Target};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::Notify;

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
    pub server_tls: crate::tls::ServerTls,
}

impl DbRuntime {
    /// Server-side database name.
    pub fn dbname(&self) -> &str {
        self.cfg.dbname.as_deref().unwrap_or(&self.name)
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
    pub tls: crate::tls::TlsRuntime,
    /// Users from `[auth] auth_file` (secret `None` = empty password).
    pub file_users: HashMap<String, Option<String>>,
}

impl Snapshot {
    /// Build a snapshot from a validated config, loading and validating every shard
    /// map. Any error rejects the whole snapshot.
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, String> {
        // Files are read here, so a reload with a broken certificate or auth file
        // fails as a whole and the previous snapshot stays.
        let tls = crate::tls::TlsRuntime::load(&config)?;
        let file_users = match &config.auth.auth_file {
            Some(f) => crate::auth::userlist::load(&config.resolve(f))?,
            None => HashMap::new(),
        };
        let mut dbs = HashMap::new();
        for (name, db) in &config.databases {
            let settings = config.pool_settings(db);
            let routing = load_routing(&config, name, db)?;
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
fn load_routing(
    config: &Config,
    name: &str,
    db: &Database,
) -> Result<Option<Arc<RoutingRt>>, String> {
    let r = match (&db.routing, db.shards.len()) {
        (Some(r), _) => r.clone(),
        (None, 1) => return Ok(None),
        (None, _) => toml::from_str::<crate::config::Routing>("")
            .map_err(|e| format!("internal: default routing: {e}"))?,
    };
    let names: Vec<String> = db.shards.iter().map(|s| s.name.clone()).collect();
    let (map, source) = match &r.shard_map {
        Some(p) => {
            let path = config.resolve(p);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "[databases.{name}.routing] shard_map {}: {e}",
                    path.display()
                )
            })?;
            let map = ShardMap::parse(&text, &names)
                .map_err(|e| format!("shard map {} (database {name}): {e}", path.display()))?;
            (map, Some(path))
        }
        None => (ShardMap::default_for(&names), None),
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
        map: Arc::new(map),
        map_source: source,
        loaded_at: SystemTime::now(),
    })))
}

/// What the registry knows about a connected client (console and cancel).
pub struct ClientHandle {
    /// Process-unique id (also the BackendKeyData pid we hand out).
    pub id: i32,
    /// BackendKeyData secret.
    pub secret: i32,
    /// Cancel key of the server it is attached to right now, if any.
    pub server: ArcSwapOption<CancelKey>,
    /// Client user and database, for the console.
    pub user: String,
    /// Database name.
    pub database: String,
    /// Peer address.
    pub addr: Option<std::net::SocketAddr>,
    /// Set by KILL / KILL_CLIENT / shutdown: the session ends at the next opportunity.
    pub kill: Notify,
    /// Whether `kill` was fired (checked when the notify raced).
    pub killed: AtomicBool,
    /// When the client connected.
    pub connect_time: SystemTime,
    /// Console view of what the client is doing (waiting, last request, shard).
    pub activity: crate::admin::ClientActivity,
}

/// Registry of logged-in clients, by id.
#[derive(Default)]
pub struct Clients {
    map: Mutex<HashMap<i32, Arc<ClientHandle>>>,
}

impl Clients {
    /// Register a client.
    pub fn insert(&self, h: Arc<ClientHandle>) {
        self.map.lock().unwrap().insert(h.id, h);
    }

    /// Unregister.
    pub fn remove(&self, id: i32) {
        self.map.lock().unwrap().remove(&id);
    }

    /// Find by BackendKeyData; the secret must match.
    pub fn find_for_cancel(&self, pid: i32, secret: i32) -> Option<Arc<ClientHandle>> {
        let m = self.map.lock().unwrap();
        m.get(&pid).filter(|h| h.secret == secret).cloned()
    }

    /// All clients, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        let m = self.map.lock().unwrap();
        let mut v: Vec<_> = m.values().cloned().collect();
        v.sort_by_key(|h| h.id);
        v
    }
}

impl ClientHandle {
    /// Ask the client's session to end.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
        self.kill.notify_one();
    }
}

/// The process.
pub struct App {
    /// Live configuration.
    pub snapshot: ArcSwap<Snapshot>,
    /// Where the config was read from (for reloads).
    pub config_path: Option<PathBuf>,
    /// Server pools.
    pub pools: Pools,
    /// Logged-in clients.
    pub clients: Clients,
    /// Connected client sockets (including those logging in), for max_client_conn.
    pub client_count: AtomicUsize,
    /// Clients attached to a server right now (shutdown waits for these).
    pub active_transactions: AtomicUsize,
    /// Fired when `active_transactions` drops, so shutdown can wait on an event.
    pub tx_done: Notify,
    /// Tasks waiting on `tx_done` (see [`App::watch_transactions`]).
    pub tx_waiters: AtomicUsize,
    /// Set once shutdown begins: sessions end at their next idle point.
    pub shutting_down: AtomicBool,
    /// Wakes idle sessions when shutdown begins.
    pub shutdown: Notify,
    /// Per-tenant statistics (SHOW TENANTS, tenant metrics).
    pub tenants: crate::admin::tenants::TenantRegistry,
    /// Console state: DISABLEd / PAUSEd databases, SHUTDOWN WAIT_FOR_CLIENTS.
    pub admin: crate::admin::AdminState,
    /// auth_query cache, failed-login limiter, SCRAM pass-through keys.
    pub auth: crate::auth::AuthState,
    next_client_id: AtomicU64,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
}

impl App {
    /// Create the process state from a validated config.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<App>, String> {
        let snap = Snapshot::build(config, 1)?;
        Ok(Arc::new(App {
            snapshot: ArcSwap::from_pointee(snap),
            config_path,
            pools: Pools::default(),
            clients: Clients::default(),
            client_count: AtomicUsize::new(0),
            active_transactions: AtomicUsize::new(0),
            tx_done: Notify::new(),
            tx_waiters: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            tenants: Default::default(),
            admin: Default::default(),
            auth: crate::auth::AuthState::default(),
            next_client_id: AtomicU64::new(1),
            generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
        }))
    }

    /// Next client id (positive i32, wraps well before overflow).
    pub fn next_client_id(&self) -> i32 {
        (self.next_client_id.fetch_add(1, Ordering::Relaxed) % (i32::MAX as u64 - 1)) as i32 + 1
    }

    /// The pool for (database, user, shard), created on first use.
    pub fn pool(
        &self,
        db: &DbRuntime,
        user: &str,
        shard: usize,
        password: Option<&str>,
    ) -> Arc<Pool> {
        let shard_cfg = &db.cfg.shards[shard];
        let key = PoolKey {
            database: db.name.clone(),
            user: user.to_string(),
            shard: shard_cfg.name.clone(),
        };
        self.pools.get_or_create(&key, || {
            let mut target = self::target_for(db, shard, user, password);
            // Keys prove the client's own role; they mean nothing for a server_user.
            if target.user == user {
                target.scram_keys = self.auth.keys_for(&db.name, user);
            }
            (target, db.settings.clone())
        })
    }

    /// A client proved `keys` with SCRAM: keep them for pass-through toward Postgres,
    /// and give them to this (database, user)'s existing pools that have no password.
    pub fn remember_scram_keys(&self, database: &str, user: &str, keys: crate::auth::ScramKeys) {
        if !self.auth.remember_keys(database, user, keys) {
            return;
        }
        for pool in self.pools.all() {
            if pool.key.database != database || pool.key.user != user {
                continue;
            }
            let t = pool.target.load_full();
            if t.password.is_none() && t.user == user && t.scram_keys != Some(keys) {
                let mut nt = (*t).clone();
                nt.scram_keys = Some(keys);
                // Stored directly (not Pool::update): nothing about existing servers changed.
                pool.target.store(Arc::new(nt));
            }
        }
    }

    /// Re-read the config file and swap it in; on any error the old config stays.
    /// Returns a description of what changed.
    pub fn reload(&self) -> Result<String, String> {
        let _g = self.reload_lock.lock().unwrap();
        let path = self
            .config_path
            .as_ref()
            .ok_or("no config file to reload")?;
        let config = Config::load(path)?;
        let old = self.snapshot.load_full();
        let mut notes = Vec::new();
        if config.listen.addr != old.config.listen.addr {
            notes.push(format!(
                "[listen] addr changed to {} but needs a restart; still listening on {}",
                config.listen.addr, old.config.listen.addr
            ));
        }
        if config.admin.metrics_addr != old.config.admin.metrics_addr {
            notes.push("[admin] metrics_addr change needs a restart".to_string());
        }
        let gen = self.next_generation();
        let snap = Snapshot::build(config, gen)?;
        // Existing pools: apply new targets/settings; drop pools of removed databases/shards.
        for pool in self.pools.all() {
            let Some(db) = snap.dbs.get(&pool.key.database) else {
                continue;
            };
            let Some(idx) = db.shard_index(&pool.key.shard) else {
                continue;
            };
            let old = pool.target.load_full();
            // Users from auth_query are not in the snapshot: keep what they brought.
            let pw = snap
                .password_of(&pool.key.user)
                .unwrap_or_else(|| old.password.clone());
            let mut target = target_for(db, idx, &pool.key.user, pw.as_deref());
            target.scram_keys = old.scram_keys;
            pool.update(target, db.settings.clone());
        }
        self.pools.retain(|k| {
            snap.dbs
                .get(&k.database)
                .is_some_and(|db| db.shard_index(&k.shard).is_some())
        });
        for (name, db) in &snap.dbs {
            if let Some(rt) = &db.routing {
                tracing::info!(
                    "database {name}: shard map version {} ({} overrides)",
                    rt.map.version,
                    rt.map.overrides_len()
                );
                crate::admin::metrics::map_version(name, rt.map.version.max(0) as u64);
            }
        }
        self.snapshot.store(Arc::new(snap));
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

    /// A fresh configuration generation number.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Called when a client detaches from a server.
    pub fn transaction_finished(&self) {
        self.active_transactions.fetch_sub(1, Ordering::SeqCst);
        // Notify takes a lock: pay it only when someone (shutdown, PAUSE) listens.
        if self.tx_waiters.load(Ordering::SeqCst) > 0 {
            self.tx_done.notify_waiters();
        }
    }

    /// Register as a listener of `tx_done` for as long as the guard lives. Register
    /// *before* creating the `Notified` and checking the condition, so a transaction
    /// finishing in between is never missed.
    pub fn watch_transactions(&self) -> TxWatch<'_> {
        self.tx_waiters.fetch_add(1, Ordering::SeqCst);
        TxWatch(self)
    }
}

/// Connection target for a shard as a given client user.
pub fn target_for(db: &DbRuntime, shard: usize, user: &str, password: Option<&str>) -> Target {
    let s = &db.cfg.shards[shard];
    let server_user = db
        .cfg
        .server_user
        .clone()
        .unwrap_or_else(|| user.to_string());
    // A client's own password is usable toward Postgres only in plaintext form.
    let password = db.cfg.server_password.clone().or_else(|| {
        password
            .filter(|p| !p.starts_with("SCRAM-SHA-256$"))
            .map(str::to_owned)
    });
    Target {
        host: s.host.clone(),
        port: s.port,
        dbname: db.dbname().to_string(),
        user: server_user,
        password,
        scram_keys: None,
        tls: db.server_tls.clone(),
    }
}

/// Guard of [`App::watch_transactions`].
pub struct TxWatch<'a>(&'a App);

impl Drop for TxWatch<'_> {
    fn drop(&mut self) {
        self.0.tx_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
