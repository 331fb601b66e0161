//! The untagged packets a connection may open with: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.

use super::{cstr, get_i32, get_u32};

/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80877103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80877104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80877102;
/// Largest startup packet we accept (Postgres uses 10000).
pub const MAX_STARTUP_LEN: usize = 10000;
/// The one-byte answer to SSLRequest/GSSENCRequest: go ahead with TLS.
pub const ENCRYPTION_ACCEPTED: u8 = b'S';
/// The one-byte answer to SSLRequest/GSSENCRequest: no encryption here.
pub const ENCRYPTION_REFUSED: u8 = b'N';

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    GssEnc,
    /// CancelRequest with the backend key it names.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// StartupMessage for protocol 3.x.
    Startup {
        /// Minor version requested (0 for 3.0).
        minor: u16,
        /// Name/value parameters in order (`user`, `database`, `options`, ...).
        params: Vec<(String, String)>,
        /// Earlier occurrences of names given more than once, which the
        /// later ones overwrite (see [`last_of_each`]): a value they
        /// contradict (a tenant) is refused rather than resolved.
        repeated: Vec<(String, String)>,
    },
}

/// Why a startup packet is refused; the text goes into an 08P01 ErrorResponse.
pub type StartupError = String;

/// How [`parse_startup`]'s error for a protocol version other than 3.x
/// begins (Postgres's words): that one is 0A000, not a protocol violation.
pub const UNSUPPORTED_PROTOCOL: &str = "unsupported frontend protocol";

/// Decode the body of a startup-phase packet (everything after the 4-byte length).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let (code, rest) = get_i32(body).ok_or("startup packet too short")?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST => {
            let (pid, rest) = get_i32(rest).ok_or("cancel request too short")?;
            let (secret, _) = get_u32(rest).ok_or("cancel request too short")?;
            Ok(StartupPacket::Cancel {
                pid,
                secret: secret as i32,
            })
        }
        c if (c >> 16) == 3 => {
            let minor = (c & 0xffff) as u16;
            let mut params: Vec<(String, String)> = Vec::new();
            let mut rest = rest;
            loop {
                let (name, r) = cstr(rest).ok_or("startup packet is not NUL-terminated")?;
                if name.is_empty() {
                    // As Postgres: the terminator must be the packet's last byte.
                    if !r.is_empty() {
                        return Err(
                            "invalid startup packet layout: expected terminator as last byte"
                                .into(),
                        );
                    }
                    break;
                }
                let (value, r) = cstr(r).ok_or("startup parameter has no value")?;
                let name = std::str::from_utf8(name)
                    .map_err(|_| "startup parameter name is not valid UTF-8")?;
                let value = std::str::from_utf8(value)
                    .map_err(|_| "startup parameter value is not valid UTF-8")?;
                params.push((name.to_owned(), value.to_owned()));
                rest = r;
            }
            let (params, repeated) = last_of_each(params);
            Ok(StartupPacket::Startup {
                minor,
                params,
                repeated,
            })
        }
        c => Err(format!(
            "{UNSUPPORTED_PROTOCOL} {}.{}: server supports 3.0 to 3.0",
            c >> 16,
            c & 0xffff
        )),
    }
}

/// A startup parameter: name and value.
type Param = (String, String);

/// Keep only the last occurrence of each parameter name (in the order of those
/// last occurrences): Postgres reads the packet in order and a repeated name
/// overwrites the earlier value, `user` and `database` included. Without this,
/// code looking up the first `user` would authenticate someone other than the
/// user Postgres would have logged in.
/// The earlier occurrences are returned apart.
fn last_of_each(params: Vec<Param>) -> (Vec<Param>, Vec<Param>) {
    if params.len() < 2 {
        return (params, Vec::new());
    }
    let mut seen = std::collections::HashSet::with_capacity(params.len());
    let (mut out, mut earlier): (Vec<_>, Vec<_>) = params
        .into_iter()
        .rev()
        .partition(|(k, _)| seen.insert(k.clone()));
    out.reverse();
    earlier.reverse();
    (out, earlier)
}

/// Split a libpq `options` value into `-c name=value` settings (also `--name=value`),
/// honouring backslash escapes for spaces as Postgres does. Unrecognised words are
/// returned as `Err` so the caller can refuse them.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    // Tokenize on unescaped whitespace.
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            // C's isspace, as Postgres's pg_split_opts (the vertical tab too).
            c if c.is_ascii_whitespace() || c == '\x0b' => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
                .ok_or_else(|| "options: -c needs name=value".to_string())?
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_string()
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_string()
        } else {
            return Err(format!("options: unsupported option {w:?}"));
        };
        let (k, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("options: {setting:?} is not name=value"))?;
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn decodes_startup() {
        let b = startup_body(&[("user", "app"), ("database", "db")]);
        assert_eq!(
            parse_startup(&b).unwrap(),
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ],
                repeated: vec![],
            }
        );
    }

    #[test]
    fn decodes_special_codes() {
        assert_eq!(
            parse_startup(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::Ssl
        );
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse_startup(&c).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: -9 }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_startup(b"").is_err());
        assert!(parse_startup(&[0, 2, 0, 0]).is_err());
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0app");
        assert!(parse_startup(&b).is_err());
    }

    #[test]
    fn options_split() {
        assert_eq!(
            parse_options("-c tenant_id=42 -cstatement_timeout=5s --search-path=a\\ b").unwrap(),
            vec![
                ("tenant_id".to_string(), "42".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("search_path".to_string(), "a b".to_string()),
            ]
        );
        // As Postgres: an escaped space joins words, so this is one setting.
        assert_eq!(
            parse_options(r"-c tenant_id=1\ -c\ tenant_id=42").unwrap(),
            vec![("tenant_id".to_string(), "1 -c tenant_id=42".to_string())]
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("-c").is_err());
        // A vertical tab splits words, as C's isspace does for Postgres: the
        // tenant is 7, not "7\x0b" (another shard's key).
        assert_eq!(
            parse_options("-c\x0btenant_id=7\x0b").unwrap(),
            vec![("tenant_id".to_string(), "7".to_string())]
        );
    }

    /// Differential-fuzz finding (fuzz/README.md, wire_diff): bytes after the
    /// terminating empty name were ignored; Postgres refuses the packet ("invalid
    /// startup packet layout: expected terminator as last byte").
    #[test]
    fn terminator_must_be_the_last_byte() {
        let mut b = startup_body(&[("user", "app")]);
        assert!(parse_startup(&b).is_ok());
        b.extend_from_slice(b"database\0other\0\0");
        let e = parse_startup(&b).unwrap_err();
        assert!(e.contains("expected terminator as last byte"), "{e}");
        let mut b = startup_body(&[]);
        b.push(0);
        assert!(parse_startup(&b).is_err());
    }

    /// Differential-fuzz finding: a repeated parameter takes its last value in
    /// Postgres (and pgwire); shardbouncer kept every copy and its login code read
    /// the first `user`.
    #[test]
    fn repeated_parameters_keep_the_last_value() {
        let b = startup_body(&[
            ("user", "first"),
            ("application_name", "a"),
            ("database", "db"),
            ("user", "second"),
        ]);
        assert_eq!(
            parse_startup(&b).unwrap(),
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("application_name".into(), "a".into()),
                    ("database".into(), "db".into()),
                    ("user".into(), "second".into()),
                ],
                // Kept apart: a tenant given twice with different values is
                // refused, not resolved.
                repeated: vec![("user".into(), "first".into())],
            }
        );
    }
}
