//! The startup phase of a client connection: startup packets (TLS upgrade or SSL/GSS
//! refusal, cancel requests, protocol negotiation). The password exchange that
//! follows is [`crate::auth::login`].

use crate::auth::LoginError;
use crate::net::Stream as ClientStream;
use crate::protocol::{self, sqlstate, StartupPacket};
use crate::server::{params, ParamSet};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Outcome of reading the startup phase.
pub enum Startup {
    /// A regular login request.
    Login {
        /// Startup parameters.
        params: Vec<(String, String)>,
        /// Earlier occurrences of repeated names (see
        /// [`StartupPacket::Startup`]).
        repeated: Vec<(String, String)>,
    },
    /// A cancel request (the connection closes afterwards).
    Cancel {
        /// pid from BackendKeyData.
        pid: i32,
        /// secret from BackendKeyData.
        secret: i32,
    },
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
    // Postgres answers each encryption request once; a second one is taken as
    // a startup packet of an unknown protocol version.
    let (mut ssl_asked, mut gss_asked) = (false, false);
    loop {
        let Some(body) = read_startup_packet(s).await? else {
            return Ok(None);
        };
        let parsed = protocol::parse_startup(&body);
        let again = match parsed {
            Ok(StartupPacket::Ssl) => std::mem::replace(&mut ssl_asked, true).then_some("5679"),
            Ok(StartupPacket::GssEnc) => std::mem::replace(&mut gss_asked, true).then_some("5680"),
            _ => None,
        };
        if let Some(minor) = again {
            return Err(LoginError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unsupported frontend protocol 1234.{minor}: server supports 3.0 to 3.0"),
            ));
        }
        match parsed {
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
                s.write_all(&[protocol::startup::ENCRYPTION_ACCEPTED])
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
                s.write_all(&[protocol::startup::ENCRYPTION_REFUSED])
                    .await
                    .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
            }
            Ok(StartupPacket::Cancel { pid, secret }) => {
                return Ok(Some(Startup::Cancel { pid, secret }))
            }
            Ok(StartupPacket::Startup {
                minor,
                params,
                repeated,
            }) => {
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
                return Ok(Some(Startup::Login { params, repeated }));
            }
            // As Postgres: another major version is a feature it lacks, not a
            // broken packet.
            Err(e) if e.starts_with(protocol::startup::UNSUPPORTED_PROTOCOL) => {
                return Err(LoginError::new(sqlstate::FEATURE_NOT_SUPPORTED, e))
            }
            Err(e) => return Err(LoginError::new(sqlstate::PROTOCOL_VIOLATION, e)),
        }
    }
}

/// Session parameters a client asked for at login.
#[derive(Debug, Default)]
pub struct ClientLogin {
    /// Tracked (reported) parameters, e.g. application_name, TimeZone.
    pub reported: ParamSet,
    /// Other settings (search_path, statement_timeout, ...), applied with set_config.
    pub unreported: ParamSet,
    /// Raw tenant settings found at startup (name, value), for routing.
    pub settings: Vec<(String, String)>,
    /// Settings of parameters given more than once that the later ones
    /// overwrite (`options` expanded): a tenant they contradict is refused.
    pub overwritten: Vec<(String, String)>,
}

/// A setting Postgres takes at connect and then drops: the login's user is
/// the session's authorization whatever `session_authorization` says (probe
/// FF: applied by the pooler, the session ran as that role, and no RESET
/// undid it).
fn ignored_at_login(name: &str) -> bool {
    name.eq_ignore_ascii_case("session_authorization")
}

impl ClientLogin {
    /// Sort startup parameters into reported/unreported settings.
    pub fn from_params(params: &[(String, String)]) -> Result<ClientLogin, LoginError> {
        let mut out = ClientLogin::default();
        let add = |k: &str, v: &str, out: &mut ClientLogin| {
            if let Some(c) = params::canonical(k) {
                // Refused here as Postgres refuses it at login, and kept in the
                // spelling Postgres reports (`utf-8` is announced as `UTF8`).
                // A DateStyle given in part keeps the rest of the one set
                // before it (`options`), as Postgres keeps it.
                let base = out.reported.get(c).unwrap_or("ISO, MDY").to_string();
                let v = params::canonical_value(c, v, &base).ok_or_else(|| {
                    LoginError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("invalid value for parameter \"{k}\": \"{v}\""),
                    )
                })?;
                out.reported.set(c, &v);
            } else {
                out.unreported.set(&k.to_ascii_lowercase(), v);
            }
            Ok::<(), LoginError>(())
        };
        // As Postgres applies them (`process_startup_options`): `options`
        // first, then the other parameters, which win (probe R: PgJDBC sends
        // `options` last, and its TimeZone and DateStyle were taken for the
        // ones in force).
        for (_, v) in params.iter().filter(|(k, _)| k == "options") {
            let opts = protocol::startup::parse_options(v)
                .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e))?;
            for (k, v) in opts {
                if ignored_at_login(&k) {
                    continue;
                }
                out.settings.push((k.clone(), v.clone()));
                add(&k, &v, &mut out)?;
            }
        }
        for (k, v) in params {
            match k.as_str() {
                "user" | "database" | "replication" | "options" => {}
                _ if ignored_at_login(k) => {}
                _ => {
                    out.settings.push((k.clone(), v.clone()));
                    add(k, v, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Note the earlier occurrences of repeated startup parameters (see
    /// [`Self::overwritten`]).
    pub fn note_repeated(&mut self, repeated: &[(String, String)]) -> Result<(), LoginError> {
        for (k, v) in repeated {
            if k == "options" {
                let opts = protocol::startup::parse_options(v)
                    .map_err(|e| LoginError::new(sqlstate::PROTOCOL_VIOLATION, e))?;
                self.overwritten.extend(opts);
            } else {
                self.overwritten.push((k.clone(), v.clone()));
            }
        }
        Ok(())
    }

    /// Remove a setting (the tenant key must never reach Postgres).
    pub fn take_setting(&mut self, key: &str) -> Option<String> {
        self.unreported.remove(&key.to_ascii_lowercase());
        let pos = self
            .settings
            .iter()
            .rposition(|(k, _)| k.eq_ignore_ascii_case(key))?;
        let v = self.settings.remove(pos).1;
        self.settings.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Startup parameters as the login gets them.
    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `options` first, then the other parameters, which win; a DateStyle
    /// given in part keeps the rest of the one before it (probe R: PgJDBC's
    /// order).
    #[test]
    fn startup_settings_apply_in_postgres_order() {
        let login = ClientLogin::from_params(&owned(&[
            ("user", "app"),
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO"),
            ("options", "-c TimeZone=Asia/Tokyo -c DateStyle=SQL,DMY"),
        ]))
        .unwrap();
        assert_eq!(login.reported.get("TimeZone"), Some("UTC"));
        assert_eq!(login.reported.get("DateStyle"), Some("ISO, DMY"));
    }

    /// `session_authorization` at connect is dropped, as Postgres drops it:
    /// the login's user is the session's (probe FF: the session ran as the
    /// role named).
    #[test]
    fn session_authorization_at_connect_is_dropped() {
        for params in [
            &[("options", "-c session_authorization=bob")][..],
            &[("session_authorization", "bob")],
            &[("options", "-c SESSION_AUTHORIZATION=bob -c work_mem=8MB")],
        ] {
            let login = ClientLogin::from_params(&owned(params)).unwrap();
            assert_eq!(
                login.unreported.get("session_authorization"),
                None,
                "{params:?}"
            );
            assert!(
                !login
                    .settings
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("session_authorization")),
                "{params:?}"
            );
        }
    }
}
