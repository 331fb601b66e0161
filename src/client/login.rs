//! Client login: startup packets (TLS upgrade or SSL/GSS refusal, cancel, protocol
//! negotiation) and authentication (SCRAM-SHA-256, md5, trust) of a looked-up secret.

use super::ClientStream;
use crate::auth::ScramKeys;
use crate::config::AuthType;
use crate::protocol::{self, md5, scram, sqlstate, StartupPacket};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Outcome of reading the startup phase.
pub enum Startup {
    /// A regular login request.
    Login {
        /// Startup parameters.
        params: Vec<(String, String)>,
    },
    /// A cancel request (the connection closes afterwards).
    Cancel {
        /// pid from BackendKeyData.
        pid: i32,
        /// secret from BackendKeyData.
        secret: i32,
    },
}

/// A login failure: SQLSTATE and message for a FATAL ErrorResponse.
#[derive(Debug)]
pub struct LoginError {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl LoginError {
    /// Build one.
    pub fn new(code: &'static str, message: impl Into<String>) -> LoginError {
        LoginError {
            code,
            message: message.into(),
        }
    }
}

/// Read one untagged startup-phase packet.
async fn read_startup_packet(s: &mut ClientStream) -> Result<Option<Vec<u8>>, LoginError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        // A client that connects and leaves (health checks) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string())),
    }
    let len = i32::from_be_bytes(len);
    if !(8..=protocol::startup::MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid startup packet length {len}"),
        ));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).await.map_err(|e| {
        LoginError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!("incomplete startup packet: {e}"),
        )
    })?;
    Ok(Some(body))
}

/// Run the startup phase: upgrade to TLS when asked and `acceptor` is configured
/// (else answer 'N'), refuse GSS encryption, negotiate the protocol version, and
/// return the login parameters or a cancel request.
pub async fn read_startup(
    s: &mut ClientStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Option<Startup>, LoginError> {
    loop {
        let Some(body) = read_startup_packet(s).await? else {
            return Ok(None);
        };
        match protocol::parse_startup(&body) {
            Ok(StartupPacket::Ssl) if s.is_tls() => {
                return Err(LoginError::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "SSLRequest received on an already encrypted connection",
                ));
            }
            Ok(StartupPacket::Ssl) if acceptor.is_some() => {
                // Bytes sent before the handshake would be taken as if they had come
                // through TLS (CVE-2021-23214): refuse instead.
                if s.has_pending_input() {
                    return Err(LoginError::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    ));
                }
                s.write_all(b"S")
                    .await
                    .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
                if let Some(acceptor) = acceptor {
                    s.accept_tls(acceptor).await.map_err(|e| {
                        LoginError::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            format!("TLS handshake failed: {e}"),
                        )
                    })?;
                }
            }
            Ok(StartupPacket::Ssl) | Ok(StartupPacket::GssEnc) => {
                s.write_all(b"N")
                    .await
                    .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
            }
            Ok(StartupPacket::Cancel { pid, secret }) => {
                return Ok(Some(Startup::Cancel { pid, secret }))
            }
            Ok(StartupPacket::Startup { minor, params }) => {
                let unsupported: Vec<&str> = params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with("_pq_."))
                    .collect();
                if minor > 0 || !unsupported.is_empty() {
                    let mut out = BytesMut::new();
                    // Postgres sends the full newest version code (3.0), not just the minor.
                    protocol::negotiate_protocol_version(
                        &mut out,
                        protocol::startup::PROTOCOL_3_0,
                        &unsupported,
                    );
                    s.write_all(&out).await.map_err(|e| {
                        LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string())
                    })?;
                }
                let params = params
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("_pq_."))
                    .collect();
                return Ok(Some(Startup::Login { params }));
            }
            Err(e) => return Err(LoginError::new(sqlstate::PROTOCOL_VIOLATION, e)),
        }
    }
}

/// Read one tagged message during authentication (bounded size).
async fn read_auth_message(s: &mut ClientStream) -> Result<(u8, Vec<u8>), LoginError> {
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
/// SCRAM verifier or md5 hash; `None` = no password configured).
///
/// When the client proved itself with SCRAM against a stored verifier, returns the
/// keys for SCRAM pass-through toward Postgres.
pub async fn authenticate(
    s: &mut ClientStream,
    kind: AuthType,
    user: &str,
    stored: Option<&str>,
) -> Result<Option<ScramKeys>, LoginError> {
    if kind == AuthType::Trust {
        return Ok(None);
    }
    let Some(stored) = stored else {
        return Err(auth_failed(user));
    };
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
        let data = if dlen < 0 {
            &[][..]
        } else {
            data.get(..dlen as usize).unwrap_or(data)
        };
        let first = server
            .handle_client_first(data)
            .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, format!("SCRAM: {e}")))?;
        protocol::auth_sasl_data(&mut out, 11, &first);
        write(s, &mut out).await?;
        let (_, body) = read_auth_message(s).await?;
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
        if stored.starts_with("SCRAM-SHA-256$") {
            return Err(LoginError::new(
                sqlstate::INVALID_AUTHORIZATION,
                format!("user \"{user}\" has a SCRAM verifier; md5 authentication is impossible"),
            ));
        }
        let mut salt = [0u8; 4];
        rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
        protocol::auth_md5(&mut out, salt);
        write(s, &mut out).await?;
        let (_, body) = read_auth_message(s).await?;
        let resp = body.strip_suffix(b"\0").unwrap_or(&body);
        if md5::md5_verify(user, stored, salt, resp) {
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

async fn write(s: &mut ClientStream, out: &mut BytesMut) -> Result<(), LoginError> {
    s.write_all(out)
        .await
        .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
    out.clear();
    Ok(())
}
