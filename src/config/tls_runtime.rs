//! The TLS objects built from `[tls]`: the acceptor for clients and the connector
//! toward Postgres servers.
//!
//! Everything here is built from the files on every config load, so a reload (SIGHUP
//! or console RELOAD) picks up renewed certificates; a file that does not parse makes
//! the reload fail and the previous settings stay. Connected clients keep the session
//! they negotiated. The handshakes themselves are in [`crate::net`] (client side) and
//! `crate::tls` (the SSLRequest exchange toward a server).

use super::{ClientTlsMode, Config, ServerTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS state of one configuration generation.
#[derive(Clone)]
pub struct TlsRuntime {
    /// Client-side policy.
    pub client_mode: ClientTlsMode,
    /// Handshake acceptor for clients (present unless client_mode is disable).
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Server-side policy and connector.
    pub server: ServerTls,
}

impl TlsRuntime {
    /// Read the certificate files named in `[tls]` and build the rustls configs.
    /// Errors name the config key and the file.
    pub fn load(cfg: &Config) -> Result<TlsRuntime, String> {
        let t = &cfg.tls;
        let acceptor = match (t.client_mode, &t.cert, &t.key) {
            (ClientTlsMode::Disable, _, _) => None,
            (_, Some(cert), Some(key)) => {
                let cert = cfg.resolve(cert);
                let key = cfg.resolve(key);
                Some(build_acceptor(&cert, &key)?)
            }
            _ => return Err("[tls] client TLS needs `cert` and `key`".into()),
        };
        let server = match t.server_mode {
            ServerTlsMode::Disable => ServerTls::disabled(),
            mode => {
                let (roots, fingerprint) = match &t.server_ca {
                    Some(ca) => {
                        let path = cfg.resolve(ca);
                        let (roots, fp) = load_roots(&path)?;
                        (Some(roots), fp)
                    }
                    None => (None, [0; 32]),
                };
                let config = client_config(mode, roots)?;
                ServerTls {
                    mode,
                    connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
                    fingerprint,
                }
            }
        };
        Ok(TlsRuntime {
            client_mode: t.client_mode,
            acceptor,
            server,
        })
    }
}

fn build_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs = load_certs(cert, "cert")?;
    let key_bytes =
        super::read_regular(key).map_err(|e| format!("[tls] key {}: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| format!("[tls] key {}: no usable private key: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[tls] {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("[tls] cert {} / key {}: {e}", cert.display(), key.display()))?;
    // libpq 17 offers ALPN "postgresql"; older clients offer none, which is fine too.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        super::read_regular(path).map_err(|e| format!("[tls] {key} {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .map(|c| c.map(CertificateDer::into_owned))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("[tls] {key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[tls] {key} {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<(RootCertStore, [u8; 32]), String> {
    let bytes = super::read_regular(path)
        .map_err(|e| format!("[tls] server_ca {}: {e}", path.display()))?;
    let fingerprint: [u8; 32] = Sha256::digest(&bytes).into();
    let certs = load_certs(path, "server_ca")?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("[tls] server_ca {}: {e}", path.display()))?;
    }
    Ok((roots, fingerprint))
}

fn client_config(
    mode: ServerTlsMode,
    roots: Option<RootCertStore>,
) -> Result<rustls::ClientConfig, String> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[tls] {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (ServerTlsMode::VerifyFull, Some(roots)) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), p)
                .build()
                .map_err(|e| format!("[tls] server_ca: {e}"))?
        }
        (ServerTlsMode::VerifyCa, Some(roots)) => Arc::new(ChainVerifier {
            roots: Some(Arc::new(roots)),
            provider: p,
        }),
        (ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull, None) => {
            return Err("[tls] verify-ca / verify-full need `server_ca`".into())
        }
        _ => Arc::new(ChainVerifier {
            roots: None,
            provider: p,
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// How to reach Postgres servers. Equality ignores the connector itself and compares
/// the mode and the CA file's digest, so a reload that changes nothing does not make
/// the pools reconnect.
#[derive(Clone)]
pub struct ServerTls {
    /// Policy.
    pub mode: ServerTlsMode,
    connector: Option<tokio_rustls::TlsConnector>,
    fingerprint: [u8; 32],
}

impl ServerTls {
    /// Plaintext only.
    pub fn disabled() -> ServerTls {
        ServerTls {
            mode: ServerTlsMode::Disable,
            connector: None,
            fingerprint: [0; 32],
        }
    }

    /// The handshake connector; `None` when `mode` is `disable`.
    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }
}

impl Default for ServerTls {
    fn default() -> Self {
        ServerTls::disabled()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode.as_str())
            .finish_non_exhaustive()
    }
}

/// `verify-ca` (`roots` set): the chain must lead to `server_ca`, the host name is
/// not checked. `require` / `prefer` (`roots` unset): encryption without
/// authenticating the server, as libpq does. Handshake signatures are always checked.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
