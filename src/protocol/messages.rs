//! Builders for the messages shardbouncer originates itself (errors, auth, status),
//! appended to a caller-owned `BytesMut` so the hot path can reuse one buffer.

use bytes::{BufMut, BytesMut};

/// SQLSTATE codes (re-exported: they live in [`crate::sqlstate`]).
pub use crate::sqlstate;

/// Start a tagged message; returns the offset of its length field for [`finish`].
#[inline]
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Fill in the length of a message started with [`begin`].
#[inline]
fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    // A NUL inside would corrupt the framing; drop such bytes rather than emit garbage.
    for &b in s {
        if b != 0 {
            buf.put_u8(b);
        }
    }
    buf.put_u8(0);
}

/// ErrorResponse (or NoticeResponse with `tag = b'N'`) with severity, SQLSTATE and message.
pub fn error_fields(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, message: &str) {
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// ErrorResponse with severity ERROR.
pub fn error_response(buf: &mut BytesMut, code: &str, message: &str) {
    error_fields(buf, b'E', "ERROR", code, message);
}

/// ErrorResponse with severity FATAL (the connection is closed after it).
pub fn fatal_response(buf: &mut BytesMut, code: &str, message: &str) {
    error_fields(buf, b'E', "FATAL", code, message);
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(0);
    finish(buf, at);
}

/// AuthenticationMD5Password with a salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    let at = begin(buf, b'R');
    buf.put_i32(5);
    buf.put_slice(&salt);
    finish(buf, at);
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    put_cstr(buf, b"SCRAM-SHA-256");
    buf.put_u8(0);
    finish(buf, at);
}

/// AuthenticationSASLContinue (11) or AuthenticationSASLFinal (12) with data.
pub fn auth_sasl_data(buf: &mut BytesMut, kind: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(kind);
    buf.put_slice(data);
    finish(buf, at);
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish(buf, at);
}

/// ReadyForQuery with transaction status `I`, `T` or `E`.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// CommandComplete with a tag such as `SET` or `BEGIN`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag.as_bytes());
    finish(buf, at);
}

/// EmptyQueryResponse.
pub fn empty_query(buf: &mut BytesMut) {
    let at = begin(buf, b'I');
    finish(buf, at);
}

/// NegotiateProtocolVersion: newest version we support (full code, as Postgres sends)
/// and the options we ignored.
pub fn negotiate_protocol_version(buf: &mut BytesMut, version: i32, unsupported: &[&str]) {
    let at = begin(buf, b'v');
    buf.put_i32(version);
    buf.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(buf, o.as_bytes());
    }
    finish(buf, at);
}

/// Simple Query message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    let at = begin(buf, b'X');
    finish(buf, at);
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    let at = begin(buf, b'S');
    finish(buf, at);
}

/// SASLInitialResponse / SASLResponse / PasswordMessage share tag 'p'.
pub fn password_message(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'p');
    buf.put_slice(data);
    finish(buf, at);
}

/// SASLInitialResponse naming the mechanism.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, b'p');
    put_cstr(buf, mechanism.as_bytes());
    buf.put_i32(data.len() as i32);
    buf.put_slice(data);
    finish(buf, at);
}

/// StartupMessage 3.0 with parameters (untagged).
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(super::startup::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CancelRequest (untagged).
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(super::startup::CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// RowDescription of text columns (type OID given per column), for console replies.
pub fn row_description(buf: &mut BytesMut, cols: &[(&str, u32)]) {
    let at = begin(buf, b'T');
    buf.put_i16(cols.len() as i16);
    for (name, oid) in cols {
        put_cstr(buf, name.as_bytes());
        buf.put_i32(0); // table oid
        buf.put_i16(0); // attnum
        buf.put_u32(*oid);
        let size: i16 = match *oid {
            20 => 8,
            23 => 4,
            _ => -1,
        };
        buf.put_i16(size);
        buf.put_i32(-1); // typmod
        buf.put_i16(0); // text format
    }
    finish(buf, at);
}

/// DataRow with text values (`None` = NULL).
pub fn data_row<S: AsRef<str>>(buf: &mut BytesMut, vals: &[Option<S>]) {
    let at = begin(buf, b'D');
    buf.put_i16(vals.len() as i16);
    for v in vals {
        match v {
            None => buf.put_i32(-1),
            Some(s) => {
                let s = s.as_ref().as_bytes();
                buf.put_i32(s.len() as i32);
                buf.put_slice(s);
            }
        }
    }
    finish(buf, at);
}

/// Fields of an ErrorResponse/NoticeResponse body that shardbouncer looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Severity (S, or V).
    pub severity: String,
    /// SQLSTATE (C).
    pub code: String,
    /// Message (M).
    pub message: String,
}

/// Decode the interesting fields of an ErrorResponse/NoticeResponse body.
pub fn parse_error(body: &[u8]) -> ErrorInfo {
    let mut info = ErrorInfo::default();
    let mut rest = body;
    while let Some((&field, r)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((val, r)) = super::cstr(r) else {
            break;
        };
        let val = String::from_utf8_lossy(val).into_owned();
        match field {
            b'S' | b'V' => info.severity = val,
            b'C' => info.code = val,
            b'M' => info.message = val,
            _ => {}
        }
        rest = r;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips() {
        let mut b = BytesMut::new();
        error_response(&mut b, "08P01", "bad\0thing");
        assert_eq!(b[0], b'E');
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let info = parse_error(&b[5..]);
        assert_eq!(info.code, "08P01");
        assert_eq!(info.message, "badthing");
        assert_eq!(info.severity, "ERROR");
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, b'I');
        assert_eq!(&b[..], b"Z\0\0\0\x05I");
    }
}
