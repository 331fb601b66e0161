//! Builders for the messages shardbouncer originates itself (errors, auth, status),
//! appended to a caller-owned `BytesMut` so the hot path can reuse one buffer.

use bytes::{BufMut, BytesMut};

/// SQLSTATE codes (re-exported: they live in [`crate::sqlstate`]).
pub use crate::sqlstate;

/// Message type bytes, by direction. Named so that no code compares raw bytes.
pub mod tag {
    /// Messages a client (frontend) sends.
    pub mod frontend {
        /// Query (simple protocol).
        pub const QUERY: u8 = b'Q';
        /// Parse.
        pub const PARSE: u8 = b'P';
        /// Bind.
        pub const BIND: u8 = b'B';
        /// Describe.
        pub const DESCRIBE: u8 = b'D';
        /// Execute.
        pub const EXECUTE: u8 = b'E';
        /// Close.
        pub const CLOSE: u8 = b'C';
        /// Sync.
        pub const SYNC: u8 = b'S';
        /// Flush.
        pub const FLUSH: u8 = b'H';
        /// FunctionCall.
        pub const FUNCTION_CALL: u8 = b'F';
        /// Terminate.
        pub const TERMINATE: u8 = b'X';
        /// CopyData.
        pub const COPY_DATA: u8 = b'd';
        /// CopyDone.
        pub const COPY_DONE: u8 = b'c';
        /// CopyFail.
        pub const COPY_FAIL: u8 = b'f';
        /// PasswordMessage / SASLInitialResponse / SASLResponse.
        pub const PASSWORD: u8 = b'p';
    }

    /// Messages a server (backend) sends.
    pub mod backend {
        /// Authentication request.
        pub const AUTHENTICATION: u8 = b'R';
        /// BackendKeyData.
        pub const BACKEND_KEY_DATA: u8 = b'K';
        /// ParameterStatus.
        pub const PARAMETER_STATUS: u8 = b'S';
        /// ReadyForQuery.
        pub const READY_FOR_QUERY: u8 = b'Z';
        /// ErrorResponse.
        pub const ERROR_RESPONSE: u8 = b'E';
        /// NoticeResponse.
        pub const NOTICE_RESPONSE: u8 = b'N';
        /// NotificationResponse.
        pub const NOTIFICATION_RESPONSE: u8 = b'A';
        /// ParseComplete.
        pub const PARSE_COMPLETE: u8 = b'1';
        /// BindComplete.
        pub const BIND_COMPLETE: u8 = b'2';
        /// CloseComplete.
        pub const CLOSE_COMPLETE: u8 = b'3';
        /// ParameterDescription.
        pub const PARAMETER_DESCRIPTION: u8 = b't';
        /// RowDescription.
        pub const ROW_DESCRIPTION: u8 = b'T';
        /// NoData.
        pub const NO_DATA: u8 = b'n';
        /// DataRow.
        pub const DATA_ROW: u8 = b'D';
        /// CommandComplete.
        pub const COMMAND_COMPLETE: u8 = b'C';
        /// EmptyQueryResponse.
        pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
        /// PortalSuspended.
        pub const PORTAL_SUSPENDED: u8 = b's';
        /// CopyInResponse.
        pub const COPY_IN_RESPONSE: u8 = b'G';
        /// CopyOutResponse.
        pub const COPY_OUT_RESPONSE: u8 = b'H';
        /// CopyBothResponse.
        pub const COPY_BOTH_RESPONSE: u8 = b'W';
        /// CopyData.
        pub const COPY_DATA: u8 = b'd';
        /// CopyDone.
        pub const COPY_DONE: u8 = b'c';
        /// FunctionCallResponse.
        pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
        /// NegotiateProtocolVersion.
        pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    }
}

/// A transaction status, as ReadyForQuery reports it: the same enum serves the
/// client's view and the attached server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// The status byte of a ReadyForQuery body (anything unknown reads as Idle,
    /// as a malformed status cannot keep a transaction open).
    pub fn from_byte(b: u8) -> TxStatus {
        match b {
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }

    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

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

/// ReadyForQuery with a transaction status.
pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    let at = begin(buf, b'Z');
    buf.put_u8(status.as_byte());
    finish(buf, at);
}

/// An ErrorResponse or NoticeResponse for `e` (severity, code, message, detail).
pub fn pg_error(buf: &mut BytesMut, tag: u8, e: &crate::sqlstate::PgError) {
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, e.severity.as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, e.severity.as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, e.code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, e.message.as_bytes());
    if let Some(d) = &e.detail {
        buf.put_u8(b'D');
        put_cstr(buf, d.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    let at = begin(buf, tag::backend::PARSE_COMPLETE);
    finish(buf, at);
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    let at = begin(buf, tag::backend::BIND_COMPLETE);
    finish(buf, at);
}

/// NoData (a Describe of something that returns no rows).
pub fn no_data(buf: &mut BytesMut) {
    let at = begin(buf, tag::backend::NO_DATA);
    finish(buf, at);
}

/// ParameterDescription with these parameter type OIDs.
pub fn parameter_description(buf: &mut BytesMut, oids: &[u32]) {
    let at = begin(buf, tag::backend::PARAMETER_DESCRIPTION);
    buf.put_u16(oids.len() as u16);
    for o in oids {
        buf.put_u32(*o);
    }
    finish(buf, at);
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    let at = begin(buf, tag::backend::CLOSE_COMPLETE);
    finish(buf, at);
}

/// Parse of `query` as statement `name` with raw parameter types (`types`: an
/// Int16 count followed by that many OIDs, as in the client's Parse).
pub fn parse(buf: &mut BytesMut, name: &[u8], query: &[u8], types: &[u8]) {
    let at = begin(buf, tag::frontend::PARSE);
    put_cstr(buf, name);
    put_cstr(buf, query);
    buf.put_slice(types);
    finish(buf, at);
}

/// Bind of the unnamed portal to statement `stmt`, with no parameters and
/// default result formats.
pub fn bind_plain(buf: &mut BytesMut, stmt: &[u8]) {
    let at = begin(buf, tag::frontend::BIND);
    put_cstr(buf, b"");
    put_cstr(buf, stmt);
    buf.put_i16(0);
    buf.put_i16(0);
    buf.put_i16(0);
    finish(buf, at);
}

/// Bind of the unnamed portal to statement `stmt` with text parameters and
/// default result formats.
pub fn bind_text(buf: &mut BytesMut, stmt: &[u8], params: &[&[u8]]) {
    let at = begin(buf, tag::frontend::BIND);
    put_cstr(buf, b"");
    put_cstr(buf, stmt);
    buf.put_i16(0);
    buf.put_i16(params.len() as i16);
    for p in params {
        buf.put_i32(p.len() as i32);
        buf.put_slice(p);
    }
    buf.put_i16(0);
    finish(buf, at);
}

/// Execute of `portal` (0 = all rows).
pub fn execute(buf: &mut BytesMut, portal: &[u8], max_rows: i32) {
    let at = begin(buf, tag::frontend::EXECUTE);
    put_cstr(buf, portal);
    buf.put_i32(max_rows);
    finish(buf, at);
}

/// A client's Bind, or its Describe/Close of a statement, with the statement
/// name replaced by `name` (everything else copied as is). `None` if `frame` (a
/// whole message) is not one of those or is malformed.
pub fn rename_statement(buf: &mut BytesMut, frame: &[u8], name: &[u8]) -> Option<()> {
    let t = *frame.first()?;
    let body = frame.get(5..)?;
    let at = begin(buf, t);
    match t {
        tag::frontend::BIND => {
            let (portal, rest) = super::cstr(body)?;
            let (_, rest) = super::cstr(rest)?;
            put_cstr(buf, portal);
            put_cstr(buf, name);
            buf.put_slice(rest);
        }
        tag::frontend::DESCRIBE | tag::frontend::CLOSE => {
            buf.put_u8(*body.first()?);
            put_cstr(buf, name);
        }
        _ => {
            buf.truncate(at - 1);
            return None;
        }
    }
    finish(buf, at);
    Some(())
}

/// Close of prepared statement `name`.
pub fn close_statement(buf: &mut BytesMut, name: &[u8]) {
    let at = begin(buf, tag::frontend::CLOSE);
    buf.put_u8(b'S');
    put_cstr(buf, name);
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

/// Describe of a statement (`kind` b'S') or portal (b'P').
pub fn describe(buf: &mut BytesMut, kind: u8, name: &[u8]) {
    let at = begin(buf, b'D');
    buf.put_u8(kind);
    buf.put_slice(name);
    buf.put_u8(0);
    finish(buf, at);
}

/// CopyFail with `message`.
pub fn copy_fail(buf: &mut BytesMut, message: &str) {
    let at = begin(buf, b'f');
    put_cstr(buf, message.as_bytes());
    finish(buf, at);
}

/// Flush.
pub fn flush(buf: &mut BytesMut) {
    let at = begin(buf, b'H');
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

impl ErrorInfo {
    /// A FATAL or PANIC error: the server ends the connection after it.
    pub fn ends_connection(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

/// Decode a DataRow body into text values (`None` = NULL); stops at a malformed
/// value.
pub fn parse_data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let Some((n, mut rest)) = super::get_i16(body) else {
        return out;
    };
    for _ in 0..n.max(0) {
        let Some((len, r)) = super::get_i32(rest) else {
            break;
        };
        if len < 0 {
            out.push(None);
            rest = r;
            continue;
        }
        let Some(v) = r.get(..len as usize) else {
            break;
        };
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
        rest = &r[len as usize..];
    }
    out
}

/// Decode a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (k, rest) = super::cstr(body)?;
    let (v, _) = super::cstr(rest)?;
    Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
}

/// The parameter type OIDs of a ParameterDescription body.
pub fn parse_parameter_description(body: &[u8]) -> impl Iterator<Item = u32> + '_ {
    // Unsigned, as Postgres writes it: a statement may have up to 65,535 parameters.
    let n = super::get_i16(body)
        .map(|(n, _)| n as u16 as usize)
        .unwrap_or(0);
    body.get(2..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(n)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
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

/// Rebuild an ErrorResponse/NoticeResponse `body` (after the header) into `buf`
/// as a frame with `tag`: fields whose type is in `drop` are left out, and every
/// other field's text goes through `map` (`None` keeps it as it is). A body that
/// does not parse as fields is copied as it is: the server's words are never lost.
pub fn rewrite_error(
    buf: &mut BytesMut,
    tag: u8,
    body: &[u8],
    drop: &[u8],
    map: impl Fn(&[u8]) -> Option<Vec<u8>>,
) {
    rewrite_error_adding(buf, tag, body, drop, &[], map)
}

/// [`rewrite_error`], with the fields `extra` added at the end.
pub fn rewrite_error_adding(
    buf: &mut BytesMut,
    tag: u8,
    body: &[u8],
    drop: &[u8],
    extra: &[(u8, &[u8])],
    map: impl Fn(&[u8]) -> Option<Vec<u8>>,
) {
    let at = begin(buf, tag);
    let mut rest = body;
    while let Some((&field, r)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((val, r)) = super::cstr(r) else {
            // Truncated: keep the remainder untouched.
            buf.put_slice(rest);
            finish(buf, at);
            return;
        };
        rest = r;
        if drop.contains(&field) {
            continue;
        }
        buf.put_u8(field);
        match map(val) {
            Some(v) => put_cstr(buf, &v),
            None => put_cstr(buf, val),
        }
    }
    for (field, val) in extra {
        buf.put_u8(*field);
        put_cstr(buf, val);
    }
    buf.put_u8(0);
    finish(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_description_count_is_unsigned() {
        let mut body = 40_000u16.to_be_bytes().to_vec();
        for i in 0..40_000u32 {
            body.extend_from_slice(&(i % 7).to_be_bytes());
        }
        let oids: Vec<u32> = parse_parameter_description(&body).collect();
        assert_eq!(oids.len(), 40_000);
        assert_eq!(oids[39_999], 39_999 % 7);
    }

    #[test]
    fn rewrite_error_drops_and_maps_fields() {
        let mut b = BytesMut::new();
        let mut body = Vec::new();
        for (f, v) in [
            (b'S', "ERROR"),
            (b'C', "26000"),
            (b'M', "x \"sb_1\" y"),
            (b'W', "PL/pgSQL"),
        ] {
            body.push(f);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        rewrite_error(&mut b, b'E', &body, b"W", |v| {
            (v == b"x \"sb_1\" y").then(|| b"x \"s1\" y".to_vec())
        });
        let info = parse_error(&b[5..]);
        assert_eq!(
            (info.code.as_str(), info.message.as_str()),
            ("26000", "x \"s1\" y")
        );
        assert!(!b.windows(8).any(|w| w == b"PL/pgSQL"));
        assert_eq!(
            u32::from_be_bytes(b[1..5].try_into().unwrap()) as usize,
            b.len() - 1
        );
        // A truncated body keeps its bytes.
        let mut b = BytesMut::new();
        rewrite_error(&mut b, b'E', b"Mno-nul", b"", |_| None);
        assert_eq!(&b[5..], b"Mno-nul");
    }

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
    fn builders_and_parsers_agree() {
        let mut b = BytesMut::new();
        parse(&mut b, b"s1", b"SELECT $1", &[0, 1, 0, 0, 0, 23]);
        let p = crate::protocol::Parse::parse(&b[5..]).unwrap();
        assert_eq!(
            (p.name, p.query, p.param_type(0)),
            (&b"s1"[..], &b"SELECT $1"[..], Some(23))
        );
        b.clear();
        bind_plain(&mut b, b"");
        let bind = crate::protocol::Bind::parse(&b[5..]).unwrap();
        assert_eq!(bind.param_count(), 0);
        b.clear();
        data_row(&mut b, &[Some("a"), None]);
        assert_eq!(parse_data_row(&b[5..]), vec![Some("a".to_string()), None]);
        b.clear();
        parameter_status(&mut b, "TimeZone", "UTC");
        assert_eq!(parse_parameter_status(&b[5..]), Some(("TimeZone", "UTC")));
        let pd = [0u8, 2, 0, 0, 0, 23, 0, 0, 0, 25];
        assert_eq!(
            parse_parameter_description(&pd).collect::<Vec<_>>(),
            vec![23, 25]
        );
        for s in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(s.as_byte()), s);
        }
        b.clear();
        let e = crate::sqlstate::PgError::new("0A000", "no");
        pg_error(&mut b, tag::backend::ERROR_RESPONSE, &e);
        assert_eq!(parse_error(&b[5..]).code, "0A000");
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, TxStatus::Idle);
        assert_eq!(&b[..], b"Z\0\0\0\x05I");
    }
}
