//! Where client secrets come from and who may try them.
//!
//! A user's secret is looked up, in order, in `[[users]]`, the `auth_file`, and —
//! for users found in neither — with `auth_query` on the database's first shard
//! (cached for `auth_cache_ttl`). Failed logins are counted per (source address,
//! user), with a higher cap per address ([`ratelimit`]). [`login`] is the whole
//! authentication step of a client login, password exchange included. The auth
//! file itself is parsed with the rest of the configuration
//! ([`crate::config::userlist`]).

pub mod login;
pub mod query;
pub mod ratelimit;

pub use login::{Authenticated, LoginError};

use crate::config::{DbRuntime, Snapshot};
use crate::server::{ServerConn, ServerError, Target};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub use crate::protocol::scram::ScramKeys;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such user.
    Unknown,
    /// The user exists; its secret (`None`: no password, only `trust` lets it in).
    Found(Option<String>),
}

/// Entries kept in the auth_query cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 10_000;

/// Process-wide auth state (survives reloads).
#[derive(Default)]
pub struct AuthState {
    /// auth_query answers by (database, user).
    cache: Mutex<HashMap<(String, String), (Instant, Lookup)>>,
    /// Failed logins per (address, user) and per address.
    pub failures: ratelimit::FailureLimiter,
    /// SCRAM keys proven by clients, by (database, user), for pools created later.
    scram_keys: Mutex<HashMap<(String, String), ScramKeys>>,
}

impl AuthState {
    /// Remember keys for (database, user); returns true if they are new or changed.
    pub fn remember_keys(&self, database: &str, user: &str, keys: ScramKeys) -> bool {
        let mut m = self.scram_keys.lock().unwrap_or_else(|p| p.into_inner());
        let old = m.insert((database.to_string(), user.to_string()), keys);
        old != Some(keys)
    }

    /// Keys proven earlier for (database, user), if any.
    pub fn keys_for(&self, database: &str, user: &str) -> Option<ScramKeys> {
        let m = self.scram_keys.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(database.to_string(), user.to_string())).copied()
    }

    /// Find `user`'s secret for a login to `db` (`None` for the admin console).
    pub async fn lookup(
        &self,
        snap: &Snapshot,
        db: Option<&DbRuntime>,
        user: &str,
    ) -> Result<Lookup, ServerError> {
        if let Some(secret) = snap.password_of(user) {
            return Ok(Lookup::Found(secret));
        }
        let auth = &snap.config.auth;
        let (Some(db), Some(auth_user)) = (db, auth.auth_user.as_deref()) else {
            return Ok(Lookup::Unknown);
        };
        if auth_user == user {
            // auth_user's own secret must be configured; do not ask the server for it.
            return Ok(Lookup::Unknown);
        }
        let key = (db.name.clone(), user.to_string());
        let ttl = auth.auth_cache_ttl.as_std();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, hit)) = cache.get(&key) {
                if at.elapsed() < ttl {
                    return Ok(hit.clone());
                }
            }
        }
        let found = run_auth_query(snap, db, auth_user, user).await?;
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            cache.insert(key, (Instant::now(), found.clone()));
        }
        Ok(found)
    }
}

/// Log in to the database's first shard as `auth_user` and run `auth_query`.
async fn run_auth_query(
    snap: &Snapshot,
    db: &DbRuntime,
    auth_user: &str,
    user: &str,
) -> Result<Lookup, ServerError> {
    let shard = &db.cfg.shards[0];
    // A SCRAM verifier cannot log us in; plaintext and md5 hashes can.
    let password = snap
        .password_of(auth_user)
        .flatten()
        .filter(|p| !p.starts_with("SCRAM-SHA-256$"));
    let target = Target {
        host: shard.host.clone(),
        port: shard.port,
        dbname: db.dbname().to_string(),
        user: auth_user.to_string(),
        password,
        scram_keys: None,
        tls: db.server_tls.clone(),
    };
    let timeout = db.settings.server_connect_timeout.as_std();
    let mut conn = ServerConn::connect(&target, timeout).await?;
    let res = tokio::time::timeout(
        timeout,
        query::run(&mut conn, &snap.config.auth.auth_query, user),
    )
    .await
    .unwrap_or_else(|_| Err(ServerError::Io("auth_query timed out".into())));
    conn.terminate().await;
    let row = res?;
    Ok(match row.as_slice() {
        [] => Lookup::Unknown,
        [_, secret, ..] => Lookup::Found(secret.clone().filter(|s| !s.is_empty())),
        [_] => {
            return Err(ServerError::Io(
                "auth_query must return two columns (user name, secret)".into(),
            ))
        }
    })
}
