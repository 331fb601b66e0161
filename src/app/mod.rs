//! Process-wide state, shared by every task as `Arc<App>`: a thin bundle of the live
//! configuration ([`crate::config::Live`]), the pools, the client registry
//! ([`clients`]), per-tenant statistics ([`tenants`]), console-controlled state
//! ([`admin_state`]) and the authentication state ([`crate::auth::AuthState`]).
//!
//! It sits below `client` and `admin` (both use it) and above `pool`, `server`,
//! `auth` and `config` (it ties them together); none of those import it.

pub mod admin_state;
pub mod clients;
pub mod gate;
pub mod tenants;

pub use admin_state::AdminState;
pub use clients::{
    ClientActivity, ClientHandle, Clients, CountGuard, PendingLogin, Registered, Seat,
};
// Old paths of items that moved to `config::live`, kept for the client session
// (src/client/session/, fuzz/fuzz_targets/session.rs) until it imports them from
// `crate::config`.
pub use crate::config::{DbRuntime, Snapshot};

use crate::auth::{AuthState, ScramKeys};
use crate::config::{Config, Live};
use crate::pool::{Pool, PoolKey, Pools};
use crate::server::Target;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tenants::TenantRegistry;
use tokio::sync::Notify;

/// The process.
pub struct App {
    /// Live configuration (the current snapshot; reloads).
    pub snapshot: Live,
    /// Server pools.
    pub pools: Pools,
    /// Logged-in clients and the connected-client count.
    pub clients: Clients,
    /// Clients attached to a server right now (shutdown waits for these).
    pub active_transactions: AtomicUsize,
    /// Fired when `active_transactions` drops, so shutdown can wait on an event.
    pub tx_done: Notify,
    /// Tasks waiting on `tx_done` (see [`App::watch_transactions`]).
    pub tx_waiters: AtomicUsize,
    /// Set once shutdown begins: sessions end at their next idle point.
    pub shutting_down: AtomicBool,
    /// Wakes idle sessions when shutdown begins, or when a reload changed
    /// what their waits time out by ([`App::wake_sessions`]).
    pub shutdown: Notify,
    /// Moved on by [`App::wake_sessions`]: a session that saw another value
    /// takes up the configuration in force before it waits again.
    pub wake_epoch: std::sync::atomic::AtomicU64,
    /// Per-tenant statistics (SHOW TENANTS, tenant metrics).
    pub tenants: TenantRegistry,
    /// Paused tenants and the transactions holding each tenant (console PAUSE,
    /// MOVE and RESUME TENANT).
    pub gate: Arc<gate::TenantGate>,
    /// Console state: DISABLEd / PAUSEd databases, SHUTDOWN WAIT_FOR_CLIENTS.
    pub admin: AdminState,
    /// auth_query cache, failed-login limiter, SCRAM pass-through keys.
    pub auth: AuthState,
}

impl App {
    /// Create the process state from a validated config.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<App>, String> {
        Ok(Arc::new(App {
            snapshot: Live::new(config, config_path)?,
            pools: Pools::default(),
            clients: Clients::default(),
            active_transactions: AtomicUsize::new(0),
            tx_done: Notify::new(),
            tx_waiters: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            wake_epoch: std::sync::atomic::AtomicU64::new(0),
            tenants: Default::default(),
            gate: Default::default(),
            admin: Default::default(),
            auth: AuthState::default(),
        }))
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
        let pool = self.pools.get_or_create(&key, || {
            let mut target = self::target_for(db, shard, user, password);
            // Keys prove the client's own role; they mean nothing for a server_user.
            if target.user == user {
                target.scram_keys = self.auth.keys_for(&db.name, user);
            }
            let user_cap = self.snapshot.load().config.user_connection_cap(user);
            (target, db.settings.clone(), user_cap)
        });
        // A pool made after a console PAUSE or KILL of its database (a new
        // user or shard, the first client since the pooler started) is held
        // before its first checkout. The console pauses the pools it sees
        // after setting the flag read here, so no pool is missed either way;
        // a RESUME that came in between is honoured by the second look.
        let held =
            || self.admin.paused_all.load(Ordering::Acquire) || self.admin.is_paused(&db.name);
        if held() && !pool.paused.load(Ordering::Acquire) {
            pool.pause();
            if !held() {
                pool.resume();
            }
        }
        pool
    }

    /// A client proved `keys` with SCRAM: keep them for pass-through toward Postgres,
    /// and give them to this (database, user)'s existing pools that have no password.
    pub fn remember_scram_keys(&self, database: &str, user: &str, keys: ScramKeys) {
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
    /// The pools take their new targets and settings before the new snapshot is
    /// published. Returns a description of what changed.
    pub fn reload(&self) -> Result<String, String> {
        let before = self.snapshot.load_full();
        let msg = self
            .snapshot
            .reload(|snap| {
                self.record_moves(snap);
                self.apply_to_pools(snap);
            })
            .map_err(bounded)?;
        self.wake_if_waits_changed(&before);
        Ok(msg)
    }

    /// Most of a refused reload's reason that is told (console, log): a
    /// parse error quotes the line it is on, and one line of a file may be
    /// megabytes (probe AC: a 4 MB line made a 4 MB ErrorResponse and 50 MB
    /// of log).
    pub const MAX_REASON: usize = 2048;

    /// Read the shard map files `maps` again into the configuration in force
    /// (console `SET`s kept), the other files as they are in force; on any
    /// error the old configuration stays.
    pub fn reload_maps(&self, maps: &[std::path::PathBuf]) -> Result<String, String> {
        let before = self.snapshot.load_full();
        self.snapshot
            .reread_maps(maps, |snap| self.record_moves(snap))
            .map_err(bounded)?;
        self.wake_if_waits_changed(&before);
        let names: Vec<String> = maps.iter().map(|p| p.display().to_string()).collect();
        Ok(format!("shard map(s) read again: {}", names.join(", ")))
    }

    /// After a reload, a console SET or a shard map read again: sessions that
    /// wait with the timeouts of `before` take up the new ones now, not at
    /// their next statement (probe O: `idle_transaction_timeout` turned on by
    /// a reload spared the client already idle in its transaction, holding
    /// its locks); work waiting for a server is routed again when a tenant
    /// moved or a database's shards changed (probe DN-3: it ran on the
    /// tenant's old shard once a server freed up there).
    pub fn wake_if_waits_changed(&self, before: &Snapshot) {
        let now = self.snapshot.load();
        let changed = now.dbs.iter().any(|(name, db)| {
            before.dbs.get(name).is_some_and(|b| {
                b.settings.client_idle_timeout != db.settings.client_idle_timeout
                    || b.settings.idle_transaction_timeout != db.settings.idle_transaction_timeout
                    || b.settings.query_wait_timeout != db.settings.query_wait_timeout
                    || b.cfg.shards != db.cfg.shards
            })
        }) || self.gate.any_moved_since(before.generation);
        if changed {
            self.wake_sessions();
        }
    }

    /// Wake every session, those asleep in a dormitory included, to take up
    /// the configuration in force before they wait again.
    pub fn wake_sessions(&self) {
        self.wake_epoch.fetch_add(1, Ordering::SeqCst);
        self.shutdown.notify_waiters();
        self.clients.rouse_all();
    }

    /// Note in the gate every tenant `new` places on another shard than the
    /// live snapshot does, before `new` is published: work routed with the
    /// older configuration (a transaction open across the reload) is sent
    /// back, as after a console MOVE TENANT. Without it a move that reached
    /// this process by a map reload (the other processes of a move, a map
    /// edited by hand) let such a transaction write the tenant's rows on its
    /// old shard (probe H, high).
    pub fn record_moves(&self, new: &Snapshot) {
        use crate::router::shardmap::Moved;
        let old = self.snapshot.load();
        for (name, db) in &new.dbs {
            // (Work routed with no map names no tenant to the gate.)
            let before = old.dbs.get(name).and_then(|d| d.routing.as_ref());
            let (Some(b), Some(n)) = (before, db.routing.as_ref()) else {
                continue;
            };
            if Arc::ptr_eq(&b.map, &n.map) {
                continue;
            }
            match b.map.moved_in(&n.map) {
                Moved::All => self.gate.replaced(name, new.generation, n.map.clone()),
                Moved::Tenants(keys) => {
                    for k in keys {
                        self.gate.moved(k, new.generation);
                    }
                }
            }
        }
    }

    /// Shutdown begins: logins are refused and sessions end at their next idle
    /// point. Tenant pauses live in memory only, so they end with the process:
    /// said here, for the operator who is moving a tenant.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown.notify_waiters();
        // Clients asleep in a dormitory have no waiter to notify: wake them.
        self.clients.rouse_all();
        let paused = self.gate.paused();
        if !paused.is_empty() {
            let keys: Vec<&str> = paused.iter().map(|(k, _)| k.as_str()).collect();
            tracing::warn!(
                "shutting down with paused tenants ({}): the pause ends with the process; \
                 the shard map on disk is the last one MOVE TENANT wrote",
                keys.join(", ")
            );
        }
    }

    /// Give every live pool its target and settings from `snap`, and drop the pools
    /// of databases and shards `snap` no longer has (reload, console SET).
    pub fn apply_to_pools(&self, snap: &Snapshot) {
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
            pool.set_cap_limits(
                db.settings.max_db_connections,
                snap.config.user_connection_cap(&pool.key.user),
            );
            pool.update(target, db.settings.clone());
        }
        self.pools.retain(|k| {
            snap.dbs
                .get(&k.database)
                .is_some_and(|db| db.shard_index(&k.shard).is_some())
        });
        self.admin.forget_databases(|db| snap.dbs.contains_key(db));
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

/// Wait until `flag` is up, woken by `notify`, which its raiser notifies
/// (`notify_waiters`) after raising it. The waiter is registered before the
/// flag is read, so a raise cannot slip between the two; other notifications
/// of `notify` only make it look again.
pub async fn until_raised(notify: &Notify, flag: &AtomicBool) {
    loop {
        let n = notify.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if flag.load(Ordering::Acquire) {
            return;
        }
        n.await;
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

/// `reason` cut to [`App::MAX_REASON`] bytes, saying how much was left out.
fn bounded(mut reason: String) -> String {
    if reason.len() > App::MAX_REASON {
        let mut cut = App::MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = reason.len() - cut;
        reason.truncate(cut);
        reason.push_str(&format!("... ({more} bytes more)"));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        // One byte, then two-byte characters: the cut falls inside one.
        let long = format!("x{}", "é".repeat(App::MAX_REASON));
        let cut = bounded(long.clone());
        let kept = cut.split("... (").next().unwrap();
        assert_eq!(kept.len(), App::MAX_REASON - 1);
        assert!(long.starts_with(kept));
        assert!(
            cut.ends_with(&format!("({} bytes more)", long.len() - kept.len())),
            "{}",
            &cut[kept.len()..]
        );
    }
}
