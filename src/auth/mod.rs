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

/// Entries the auth_query cache holds at most (expired ones are swept first,
/// then the oldest half goes).
const CACHE_SWEEP_AT: usize = 10_000;

/// auth_query runs at once, over all databases: each opens a server
/// connection as `auth_user`, before the client proved anything (probe K:
/// a stream of unknown user names opened one each, unbounded, until the
/// server refused connections).
pub const AUTH_QUERIES_AT_ONCE: usize = 4;

/// The longest user name looked up with auth_query: a Postgres role name
/// has at most 63 bytes.
const MAX_ROLE_NAME: usize = 63;

/// Process-wide auth state (survives reloads).
pub struct AuthState {
    /// auth_query answers by (database, user).
    cache: Mutex<HashMap<(String, String), (Instant, Lookup)>>,
    /// Room for auth_query runs ([`AUTH_QUERIES_AT_ONCE`]); a login waits
    /// for one within its own timeout.
    queries: tokio::sync::Semaphore,
    /// Failed logins per (address, user) and per address.
    pub failures: ratelimit::FailureLimiter,
    /// SCRAM keys proven by clients, by (database, user), for pools created later.
    scram_keys: Mutex<HashMap<(String, String), ScramKeys>>,
}

impl Default for AuthState {
    fn default() -> AuthState {
        AuthState {
            cache: Mutex::default(),
            queries: tokio::sync::Semaphore::new(AUTH_QUERIES_AT_ONCE),
            failures: ratelimit::FailureLimiter::default(),
            scram_keys: Mutex::default(),
        }
    }
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
        if auth_user == user || user.len() > MAX_ROLE_NAME {
            // auth_user's own secret must be configured; do not ask the server
            // for it. A name no role can have costs no server connection.
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
        let found = {
            let _slot = self
                .queries
                .acquire()
                .await
                .map_err(|_| ServerError::Io("auth_query: shutting down".into()))?;
            run_auth_query(snap, db, auth_user, user).await?
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            if cache.len() >= CACHE_SWEEP_AT {
                // Still full (names sprayed faster than they expire): the
                // older half goes, so the cache stays bounded.
                let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
                let half = ages.len() / 2;
                let (_, cut, _) = ages.select_nth_unstable(half);
                let cut = *cut;
                cache.retain(|_, (at, _)| *at > cut);
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
