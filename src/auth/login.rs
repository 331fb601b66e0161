//! The authentication step of a client login: failed-login limiting, secret lookup,
//! and the password exchange (SCRAM-SHA-256, md5, trust) of the looked-up secret.

use super::{AuthState, Lookup, ScramKeys};
use crate::config::{AuthType, DbRuntime, Snapshot};
use crate::net::Stream;
use crate::protocol::{self, md5, scram, sqlstate};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a login is refused: sent as FATAL with its SQLSTATE (the crate's one error
/// shape).
pub type LoginError = crate::sqlstate::PgError;

/// What a successful authentication yields.
#[derive(Debug)]
pub struct Authenticated {
    /// The user's stored secret (the session uses it toward Postgres when it is usable).
    pub secret: Option<String>,
    /// Keys the client proved with SCRAM against a stored verifier, for SCRAM
    /// pass-through toward Postgres.
    pub scram_keys: Option<ScramKeys>,
}

/// Authenticate `user` logging in to `db` (`None` = admin console) from `peer`.
/// Failed attempts are counted in `state` (per address and user, and per address).
pub async fn check_and_authenticate(
    state: &AuthState,
    snap: &Snapshot,
    stream: &mut Stream,
    db: Option<&DbRuntime>,
    user: &str,
    peer: Option<SocketAddr>,
    deadline: tokio::time::Instant,
) -> Result<Authenticated, LoginError> {
    let auth = &snap.config.auth;
    let ip = peer.map(|p| p.ip());
    // Checked before the exchange (a blocked guesser costs no SCRAM work),
    // and again once the client's answer is in, before it is verified:
    // logins opened together all pass the first check, and their answers,
    // sent after the block, were each verified (probe K: 59 guesses from one
    // address in one window, and the right password let in while both the
    // user and the address were blocked).
    let not_blocked = || match ip {
        Some(ip) => refuse_if_blocked(state, ip, user),
        None => Ok(()),
    };
    not_blocked()?;
    let lookup = tokio::time::timeout_at(deadline, state.lookup(snap, db, user))
        .await
        .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))?
        .map_err(|e| {
            tracing::warn!(user, addr = ?peer, "auth_query failed: {}", e.to_string().escape_debug());
            LoginError::new(
                sqlstate::CANNOT_CONNECT,
                format!("could not look up user \"{user}\" (auth_query failed)"),
            )
        })?;
    let res = match &lookup {
        // Same exchange and message as a wrong password: do not reveal which
        // user names exist. (Under trust there is no exchange to go through.)
        Lookup::Unknown if auth.kind == AuthType::Trust => Err(auth_failed(user)),
        Lookup::Unknown => tokio::time::timeout_at(
            deadline,
            authenticate(stream, auth.kind, user, None, &not_blocked),
        )
        .await
        .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))
        .and_then(|r| r),
        Lookup::Found(stored) => tokio::time::timeout_at(
            deadline,
            authenticate(stream, auth.kind, user, stored.as_deref(), &not_blocked),
        )
        .await
        .map_err(|_| LoginError::new(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout"))
        .and_then(|r| r),
    };
    match res {
        Ok(scram_keys) => {
            let Lookup::Found(secret) = lookup else {
                return Err(auth_failed(user));
            };
            Ok(Authenticated { secret, scram_keys })
        }
        Err(e) => {
            // Only a wrong secret (or unknown user) counts: psql closing the first
            // connection to prompt for a password must not.
            if e.code == sqlstate::INVALID_PASSWORD {
                // Escaped: the message holds the client's user name, whose
                // newlines would forge log lines (probe K).
                tracing::warn!(user, addr = ?peer, "login failed: {}", e.message.escape_debug());
                if let Some(ip) = ip {
                    let limits = super::ratelimit::Limits {
                        limit: auth.auth_failure_limit,
                        address_limit: auth.address_failure_limit(),
                        window: auth.auth_failure_window.as_std(),
                        cooldown: auth.auth_failure_cooldown.as_std(),
                    };
                    match state
                        .failures
                        .record_failure(ip, user, limits, Instant::now())
                    {
                        Some(super::ratelimit::Scope::User) => tracing::warn!(
                            user,
                            addr = %ip,
                            "{} failed logins: refusing this user from this address for {:?}",
                            limits.limit,
                            limits.cooldown
                        ),
                        Some(super::ratelimit::Scope::Address) => tracing::warn!(
                            addr = %ip,
                            "{} failed logins (all users): refusing logins from this address for {:?}",
                            limits.address_limit,
                            limits.cooldown
                        ),
                        None => {}
                    }
                }
            }
            Err(e)
        }
    }
}

/// `Err` (FATAL 28000) while `user` from `ip` is cooling down after failed logins.
fn refuse_if_blocked(
    state: &AuthState,
    ip: std::net::IpAddr,
    user: &str,
) -> Result<(), LoginError> {
    let Some(block) = state.failures.blocked(ip, user, Instant::now()) else {
        return Ok(());
    };
    let secs = block.left.as_secs().max(1);
    Err(match block.scope {
        super::ratelimit::Scope::User => {
            tracing::warn!(user, addr = %ip, "login refused: this user is cooling down after failed logins from this address");
            LoginError::new(
                sqlstate::INVALID_AUTHORIZATION,
                format!(
                    "too many failed login attempts for user \"{user}\" from {ip}; try again in {secs}s"
                ),
            )
        }
        super::ratelimit::Scope::Address => {
            tracing::warn!(user, addr = %ip, "login refused: address is cooling down after failed logins");
            LoginError::new(
                sqlstate::INVALID_AUTHORIZATION,
                format!("too many failed login attempts from {ip}; try again in {secs}s"),
            )
        }
    })
}

/// Read one tagged message during authentication (bounded size).
async fn read_auth_message(s: &mut Stream) -> Result<(u8, Vec<u8>), LoginError> {
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr).await.map_err(|_| {
        LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            "client closed during authentication",
        )
    })?;
    let len = i32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
    if !(4..=8192).contains(&len) {
        return Err(LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid authentication message length {len}"),
        ));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).await.map_err(|_| {
        LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            "client closed during authentication",
        )
    })?;
    if hdr[0] != b'p' {
        return Err(LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!(
                "expected password message, got message type {:?}",
                hdr[0] as char
            ),
        ));
    }
    Ok((hdr[0], body))
}

fn auth_failed(user: &str) -> LoginError {
    LoginError::new(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Authenticate the client as `user` whose stored secret is `stored` (plaintext,
/// SCRAM verifier or md5 hash; `None` = an unknown user, or no password
/// configured).
///
/// When the client proved itself with SCRAM against a stored verifier, returns the
/// keys for SCRAM pass-through toward Postgres.
///
/// With no secret, the client goes through the same exchange as with a wrong
/// password ([`mock_secret`]) and fails at its end, as Postgres's mock
/// authentication does: refused at once, a login told an attacker which user
/// names exist (probe).
///
/// `admit` runs once the client's answer is read, before it is verified: an
/// `Err` there refuses the login unverified.
pub async fn authenticate(
    s: &mut Stream,
    kind: AuthType,
    user: &str,
    stored: Option<&str>,
    admit: &(dyn Fn() -> Result<(), LoginError> + Sync),
) -> Result<Option<ScramKeys>, LoginError> {
    match stored {
        _ if kind == AuthType::Trust => Ok(None),
        Some(stored) => exchange(s, kind, user, stored, admit).await,
        None => {
            let mock = match kind {
                AuthType::ScramSha256 => mock_secret(user),
                // md5 of a password no one was told.
                _ => scram::generate_nonce(),
            };
            exchange(s, kind, user, &mock, admit).await?;
            Err(auth_failed(user))
        }
    }
}

/// The SCRAM verifier an unknown user is checked against: random keys, which
/// no proof matches, under a salt that depends only on the name and a key of
/// this process (every attempt sees the same salt, as for a real user;
/// Postgres's `scram_mock_salt`). It is kept nowhere and needs no PBKDF2
/// derivation: strangers' names neither fill the salt and derivation caches
/// of real users nor cost a derivation each.
fn mock_secret(user: &str) -> String {
    use sha2::{Digest, Sha256};
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let salt = Sha256::new()
        .chain_update(key)
        .chain_update(user.as_bytes())
        .finalize();
    scram::ScramVerifier {
        iterations: 4096,
        salt: salt[..16].to_vec(),
        stored_key: rand::random(),
        server_key: rand::random(),
    }
    .to_string_form()
}

/// The password exchange of [`authenticate`] against `stored`.
async fn exchange(
    s: &mut Stream,
    kind: AuthType,
    user: &str,
    stored: &str,
    admit: &(dyn Fn() -> Result<(), LoginError> + Sync),
) -> Result<Option<ScramKeys>, LoginError> {
    let is_md5 = stored.starts_with("md5") && stored.len() == 35;
    // A user stored only as an md5 hash cannot do SCRAM: fall back to md5 as PgBouncer does.
    let use_scram = kind == AuthType::ScramSha256 && !is_md5;
    let mut out = BytesMut::new();
    if use_scram {
        let parsed = scram::ScramVerifier::parse(stored);
        // Keys derived from a plaintext password with our own random salt would not
        // match the server's verifier; only a stored verifier gives usable keys.
        let from_verifier = parsed.is_some();
        let verifier = match parsed {
            Some(v) => v,
            // Never a password: its text (a leaked hash) would log in.
            None if stored.starts_with("SCRAM-SHA-256$") => {
                tracing::warn!(
                    user,
                    "the user's secret starts like a SCRAM verifier but does not parse as one; \
                     no password can log in as this user"
                );
                scram::ScramVerifier::parse(&mock_secret(user)).expect("a verifier")
            }
            None => plaintext_verifier(user, stored),
        };
        let mut server = scram::ScramServer::new(verifier, scram::generate_nonce());
        protocol::auth_sasl(&mut out);
        write(s, &mut out).await?;
        let (_, body) = read_auth_message(s).await?;
        // SASLInitialResponse: mechanism\0, int32 len, data
        let (mech, rest) = protocol::cstr(&body).ok_or_else(|| {
            LoginError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed SASLInitialResponse",
            )
        })?;
        if mech != b"SCRAM-SHA-256" {
            return Err(LoginError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            ));
        }
        let (dlen, data) = protocol::get_i32(rest).ok_or_else(|| {
            LoginError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed SASLInitialResponse",
            )
        })?;
        // As Postgres: -1 (no data), else exactly the length given (a length
        // past the message's end was read as what there was: probe).
        let data = match dlen {
            -1 if data.is_empty() => &[][..],
            n if n >= 0 && data.len() == n as usize => data,
            _ => {
                return Err(LoginError::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "malformed SASLInitialResponse: its length does not match its data",
                ))
            }
        };
        let first = server.handle_client_first(data).map_err(|e| {
            // As Postgres: what it does not support is 0A000 (an
            // authorization identity, a mandatory extension); the rest is a
            // protocol violation.
            let code = match e {
                scram::ScramError::Unsupported(
                    "authorization identity" | "mandatory SCRAM extension",
                ) => sqlstate::FEATURE_NOT_SUPPORTED,
                _ => sqlstate::PROTOCOL_VIOLATION,
            };
            LoginError::new(code, format!("SCRAM: {e}"))
        })?;
        protocol::auth_sasl_data(&mut out, 11, &first);
        write(s, &mut out).await?;
        let (_, body) = read_auth_message(s).await?;
        admit()?;
        let fin = server.handle_client_final(&body).map_err(|e| match e {
            scram::ScramError::BadProof => auth_failed(user),
            e => LoginError::new(sqlstate::PROTOCOL_VIOLATION, format!("SCRAM: {e}")),
        })?;
        protocol::auth_sasl_data(&mut out, 12, &fin);
        write(s, &mut out).await?;
        Ok(server
            .client_key()
            .filter(|_| from_verifier)
            .map(|client_key| ScramKeys {
                client_key,
                server_key: server.verifier().server_key,
            }))
    } else {
        // A SCRAM verifier cannot check an md5 answer. Said at once, that
        // told a stranger the user exists (a re-probe): the exchange goes
        // on, fails as a wrong password does, and the reason goes to the log.
        let impossible = stored.starts_with("SCRAM-SHA-256$");
        if impossible {
            tracing::warn!(
                user,
                "user has a SCRAM verifier; md5 authentication is impossible (set [auth] type = \"scram-sha-256\")"
            );
        }
        let mut salt = [0u8; 4];
        rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
        protocol::auth_md5(&mut out, salt);
        write(s, &mut out).await?;
        let (_, body) = read_auth_message(s).await?;
        admit()?;
        let resp = body.strip_suffix(b"\0").unwrap_or(&body);
        if !impossible && md5::md5_verify(user, stored, salt, resp) {
            Ok(None)
        } else {
            Err(auth_failed(user))
        }
    }
}

/// A SCRAM verifier for a plaintext password, with a per-user salt chosen once per
/// process: the derivation is then cached (see `scram::salted_password`) instead of
/// paying 4096 PBKDF2 rounds on every login.
fn plaintext_verifier(user: &str, password: &str) -> scram::ScramVerifier {
    type Salts = std::sync::Mutex<std::collections::HashMap<String, [u8; 16]>>;
    static SALTS: std::sync::OnceLock<Salts> = std::sync::OnceLock::new();
    let salts = SALTS.get_or_init(Default::default);
    let salt = {
        let mut m = salts.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.clear();
        }
        *m.entry(user.to_string())
            .or_insert_with(scram::generate_salt)
    };
    scram::ScramVerifier::from_password(password, &salt, 4096)
}

async fn write(s: &mut Stream, out: &mut BytesMut) -> Result<(), LoginError> {
    s.write_all(out)
        .await
        .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
    out.clear();
    Ok(())
}
