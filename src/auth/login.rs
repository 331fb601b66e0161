//! The authentication step of a client login: failed-login limiting, secret lookup,
//! the password exchange, and remembering SCRAM keys for pass-through.

use super::Lookup;
use crate::app::{App, DbRuntime, Snapshot};
use crate::client::login::{self, LoginError};
use crate::client::ClientStream;
use crate::protocol::sqlstate;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn auth_failed(user: &str) -> LoginError {
    LoginError::new(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Authenticate `user` logging in to `db` (`None` = admin console) from `peer`.
/// Returns the user's secret (the session uses it toward Postgres when it is usable).
pub async fn check_and_authenticate(
    app: &Arc<App>,
    snap: &Snapshot,
    stream: &mut ClientStream,
    db: Option<&DbRuntime>,
    user: &str,
    peer: Option<SocketAddr>,
    login_timeout: Duration,
) -> Result<Option<String>, LoginError> {
    let auth = &snap.config.auth;
    let ip = peer.map(|p| p.ip());
    if let Some(ip) = ip {
        if let Some(left) = app.auth.failures.blocked(ip, Instant::now()) {
            tracing::warn!(user, addr = %ip, "login refused: address is cooling down after failed logins");
            return Err(LoginError::new(
                sqlstate::INVALID_AUTHORIZATION,
                format!(
                    "too many failed login attempts from {ip}; try again in {}s",
                    left.as_secs().max(1)
                ),
            ));
        }
    }
    let lookup = tokio::time::timeout(login_timeout, app.auth.lookup(snap, db, user))
        .await
        .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))?
        .map_err(|e| {
            tracing::warn!(user, addr = ?peer, "auth_query failed: {e}");
            LoginError::new(
                sqlstate::CANNOT_CONNECT,
                format!("could not look up user \"{user}\" (auth_query failed)"),
            )
        })?;
    let res = match &lookup {
        // Same message as a wrong password: do not reveal which user names exist.
        Lookup::Unknown => Err(auth_failed(user)),
        Lookup::Found(stored) => tokio::time::timeout(
            login_timeout,
            login::authenticate(stream, auth.kind, user, stored.as_deref()),
        )
        .await
        .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))
        .and_then(|r| r),
    };
    match res {
        Ok(keys) => {
            if let (Some(keys), Some(db)) = (keys, db) {
                app.remember_scram_keys(&db.name, user, keys);
            }
            let Lookup::Found(stored) = lookup else {
                return Err(auth_failed(user));
            };
            Ok(stored)
        }
        Err(e) => {
            // Only a wrong secret (or unknown user) counts: psql closing the first
            // connection to prompt for a password must not.
            if e.code == sqlstate::INVALID_PASSWORD {
                tracing::warn!(user, addr = ?peer, "login failed: {}", e.message);
                if let Some(ip) = ip {
                    let limits = super::ratelimit::Limits {
                        limit: auth.auth_failure_limit,
                        window: auth.auth_failure_window.as_std(),
                        cooldown: auth.auth_failure_cooldown.as_std(),
                    };
                    if app.auth.failures.record_failure(ip, limits, Instant::now()) {
                        tracing::warn!(
                            addr = %ip,
                            "{} failed logins: refusing logins from this address for {:?}",
                            limits.limit,
                            limits.cooldown
                        );
                    }
                }
            }
            Err(e)
        }
    }
}
