//! The SSLRequest exchange toward a Postgres server, with the settings built from
//! `[tls]` ([`crate::config::ServerTls`]).

use crate::config::{ServerTls, ServerTlsMode};
use crate::net::Stream;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Why TLS toward a server could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiateError {
    /// The socket failed or the server answered something unexpected; retrying may help.
    Io(String),
    /// TLS is impossible with this server and these settings: the answer will be the
    /// same until the configuration changes (not retryable).
    Refused(String),
}

fn refused(msg: String) -> NegotiateError {
    NegotiateError::Refused(msg)
}

/// Before the startup packet: ask a server for TLS according to `tls.mode` and do
/// the handshake. `host` is the shard's host (checked by verify-full).
pub async fn negotiate_server(
    stream: &mut Stream,
    tls: &ServerTls,
    host: &str,
) -> Result<(), NegotiateError> {
    let Some(connector) = tls.connector() else {
        return Ok(());
    };
    let io = |e: std::io::Error| NegotiateError::Io(format!("SSLRequest to {host}: {e}"));
    stream.write_all(&SSL_REQUEST).await.map_err(io)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        crate::protocol::startup::ENCRYPTION_ACCEPTED => {}
        crate::protocol::startup::ENCRYPTION_REFUSED if !tls.mode.required() => return Ok(()),
        crate::protocol::startup::ENCRYPTION_REFUSED => {
            return Err(refused(format!(
                "server {host} does not support SSL, but server_mode = \"{}\"",
                tls.mode.as_str()
            )))
        }
        other => {
            return Err(NegotiateError::Io(format!(
                "server {host} answered SSLRequest with unexpected byte {other:#04x}"
            )))
        }
    }
    // The server must wait for our ClientHello: anything already here was injected
    // before encryption started (CVE-2021-23222).
    if stream.has_pending_input() {
        return Err(refused(format!(
            "server {host} sent unencrypted data after accepting SSLRequest"
        )));
    }
    let name = ServerName::try_from(host.to_string())
        .or_else(|e| {
            if tls.mode == ServerTlsMode::VerifyFull {
                Err(e)
            } else {
                // Name unused without verify-full; any valid placeholder will do.
                ServerName::try_from("localhost".to_string())
            }
        })
        .map_err(|e| refused(format!("server host {host:?} is not a valid TLS name: {e}")))?;
    stream
        .connect_tls(connector, name)
        .await
        .map_err(|e| refused(format!("TLS handshake with server {host} failed: {e}")))
}
