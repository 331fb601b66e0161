//! `[tls]`: TLS toward clients and toward Postgres servers.

use serde::Deserialize;
use std::path::PathBuf;

/// TLS policy toward connecting clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Answer every SSLRequest with 'N' (the default).
    #[default]
    Disable,
    /// TLS if the client asks for it; plaintext otherwise. (Same as `prefer`, as in
    /// PgBouncer: the server side cannot "prefer" anything, the client chooses.)
    Allow,
    /// Same as `allow`.
    Prefer,
    /// Refuse plaintext logins with FATAL 28000 "SSL required".
    Require,
}

/// TLS policy toward Postgres servers (libpq `sslmode` semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ServerTlsMode {
    /// Never send SSLRequest (the default: the shards are usually on a private network
    /// and an unverified handshake costs a round trip on every new server connection).
    #[default]
    #[serde(rename = "disable")]
    Disable,
    /// Try TLS, fall back to plaintext if the server refuses; no certificate checks.
    #[serde(rename = "prefer")]
    Prefer,
    /// TLS or fail; no certificate checks (encryption only, like libpq).
    #[serde(rename = "require")]
    Require,
    /// TLS or fail; the certificate must chain to `server_ca` (host name not checked).
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// TLS or fail; the certificate must chain to `server_ca` and name the shard's host.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl ServerTlsMode {
    /// Whether plaintext is unacceptable.
    pub fn required(self) -> bool {
        matches!(
            self,
            ServerTlsMode::Require | ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
        )
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyCa => "verify-ca",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// disable | allow | prefer | require.
    #[serde(default)]
    pub client_mode: ClientTlsMode,
    /// PEM certificate chain presented to clients (relative to the config file's dir).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// disable | prefer | require | verify-ca | verify-full.
    #[serde(default)]
    pub server_mode: ServerTlsMode,
    /// PEM CA bundle that Postgres server certificates must chain to (verify-*).
    #[serde(default)]
    pub server_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Checks that need no file access (the files are parsed when the snapshot is built).
    pub fn validate(&self) -> Result<(), String> {
        if self.client_mode != ClientTlsMode::Disable && (self.cert.is_none() || self.key.is_none())
        {
            return Err(format!(
                "[tls] client_mode = {:?} needs both `cert` and `key`",
                format!("{:?}", self.client_mode).to_lowercase()
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("[tls] `cert` and `key` must be given together".into());
        }
        if matches!(
            self.server_mode,
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
        ) && self.server_ca.is_none()
        {
            return Err(format!(
                "[tls] server_mode = \"{}\" needs `server_ca`",
                self.server_mode.as_str()
            ));
        }
        Ok(())
    }
}
