//! PostgreSQL wire protocol: framing, startup packets, builders for the messages we
//! originate, and typed views of the few messages we inspect. Pure, no I/O.
//!
//! Forwarded traffic is never re-encoded: the I/O layers find frame boundaries with
//! [`frame_header`] and pass the bytes through untouched. Only the messages that
//! routing or pooling must understand are looked at, through borrowed views.

pub mod md5;
pub mod messages;
pub mod scram;
pub mod startup;

pub use messages::*;
pub use startup::{parse_startup, StartupPacket};

/// Length of a regular message header: one tag byte plus a 4-byte length.
pub const HEADER_LEN: usize = 5;

/// Why a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below 4 (it counts itself).
    BadLength(i32),
    /// The message is larger than the configured maximum.
    TooLarge {
        /// Declared total length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message of a type that carries no data (Sync, Close, Execute, ...)
    /// is longer than Postgres's limit for such messages.
    TooLargeForType {
        /// Declared total length in bytes.
        len: usize,
        /// The limit (length word included, as Postgres counts it).
        max: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadLength(l) => write!(f, "invalid message length {l}"),
            FrameError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds max_message_size ({max})")
            }
            FrameError::TooLargeForType { len, max } => write!(
                f,
                "message of {len} bytes exceeds the {max} bytes Postgres allows a message of its type"
            ),
        }
    }
}

/// Peek at a regular message header (`tag`, 4-byte length) at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than 5 bytes are buffered, otherwise the tag and the
/// total frame size in bytes (tag included).
#[inline]
pub fn frame_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    Ok(Some((buf[0], total)))
}

/// Whether `tag` is a message type a client may send after login (Postgres's
/// `PostgresMain` refuses any other at once: "invalid frontend message type").
pub fn is_frontend_type(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' | b'X' | b'F' | b'd' | b'c' | b'f'
    )
}

/// [`frame_header`] for a client's message: its type's own limit
/// ([`frontend_len_limit`]) applies too, so a Sync that claims 100 MB is refused
/// from its header instead of being buffered first.
pub fn frontend_frame_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    match buf.first().and_then(|&t| frontend_len_limit(t)) {
        // The limit counts the length word, the frame also its tag byte.
        Some(limit) if limit < max => frame_header(buf, limit + 1).map_err(|e| match e {
            // Its type's limit, not max_message_size, is what it broke.
            FrameError::TooLarge { len, .. } => FrameError::TooLargeForType { len, max: limit },
            e => e,
        }),
        _ => frame_header(buf, max),
    }
}

/// Split a NUL-terminated string off the front of `b`: `(string, rest)`.
#[inline]
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(0, b)?;
    Some((&b[..i], &b[i + 1..]))
}

/// Read a big-endian i16 off the front of `b`.
#[inline]
pub fn get_i16(b: &[u8]) -> Option<(i16, &[u8])> {
    let (h, t) = b.split_first_chunk::<2>()?;
    Some((i16::from_be_bytes(*h), t))
}

/// Read a big-endian u16 off the front of `b`.
#[inline]
pub fn get_u16(b: &[u8]) -> Option<(u16, &[u8])> {
    let (h, t) = b.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*h), t))
}

/// Read a big-endian i32 off the front of `b`.
#[inline]
pub fn get_i32(b: &[u8]) -> Option<(i32, &[u8])> {
    let (h, t) = b.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*h), t))
}

/// Read a big-endian u32 off the front of `b`.
#[inline]
pub fn get_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (h, t) = b.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*h), t))
}

/// Typed view of a Parse ('P') message body.
#[derive(Debug, Clone, Copy)]
pub struct Parse<'a> {
    /// Prepared statement name ("" = unnamed).
    pub name: &'a [u8],
    /// Query text.
    pub query: &'a [u8],
    /// Raw parameter type OIDs (4 bytes each, big-endian).
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Parse the body (after the 5-byte header).
    // The message is called Parse; `Parse::parse` reads like every other view's parser.
    #[allow(clippy::self_named_constructors)]
    pub fn parse(body: &'a [u8]) -> Option<Parse<'a>> {
        let (name, rest) = cstr(body)?;
        let (query, rest) = cstr(rest)?;
        // The count is unsigned on the wire as Postgres reads it (pq_getmsgint):
        // up to 65535 declared types, as libpq and PgJDBC send.
        let (n, rest) = get_u16(rest)?;
        let param_types = rest.get(..n as usize * 4)?;
        Some(Parse {
            name,
            query,
            param_types,
        })
    }

    /// Type OID of parameter `i` (0-based), if declared.
    pub fn param_type(&self, i: usize) -> Option<u32> {
        let b = self.param_types.get(i * 4..i * 4 + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Typed view of a Bind ('B') message body, enough to read one parameter.
#[derive(Debug, Clone, Copy)]
pub struct Bind<'a> {
    /// Portal name.
    pub portal: &'a [u8],
    /// Statement name.
    pub statement: &'a [u8],
    formats: &'a [u8],
    nformats: usize,
    params: &'a [u8],
    nparams: usize,
}

impl<'a> Bind<'a> {
    /// Parse the body (after the 5-byte header).
    pub fn parse(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = cstr(body)?;
        let (statement, rest) = cstr(rest)?;
        // Counts are unsigned on the wire, as Postgres reads them (up to 65535
        // parameters).
        let (nf, rest) = get_u16(rest)?;
        let nformats = nf as usize;
        let formats = rest.get(..nformats * 2)?;
        let rest = &rest[nformats * 2..];
        let (np, params) = get_u16(rest)?;
        let nparams = np as usize;
        Some(Bind {
            portal,
            statement,
            formats,
            nformats,
            params,
            nparams,
        })
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.nparams
    }

    /// Number of parameter format codes given (0, 1 for all, or one each).
    pub fn format_count(&self) -> usize {
        self.nformats
    }

    /// Format code of parameter `i` (0 text, 1 binary).
    pub fn format(&self, i: usize) -> i16 {
        let at = match self.nformats {
            0 => return 0,
            1 => 0,
            _ => i,
        };
        self.formats
            .get(at * 2..at * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0)
    }

    /// Value of parameter `i` (0-based): `Some(None)` for SQL NULL, `None` if malformed.
    pub fn param(&self, i: usize) -> Option<Option<&'a [u8]>> {
        if i >= self.nparams {
            return None;
        }
        let mut rest = self.params;
        for k in 0..=i {
            let (len, r) = get_i32(rest)?;
            if len < 0 {
                if k == i {
                    return Some(None);
                }
                rest = r;
                continue;
            }
            let len = len as usize;
            let v = r.get(..len)?;
            if k == i {
                return Some(Some(v));
            }
            rest = &r[len..];
        }
        None
    }
}

/// Typed view of an Execute ('E') message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// Portal name ("" = unnamed).
    pub portal: &'a [u8],
    /// Row limit (0 = all rows).
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Parse the body (after the 5-byte header); `None` unless it is exactly a
    /// name and a row count.
    pub fn parse(body: &'a [u8]) -> Option<Execute<'a>> {
        let (portal, rest) = cstr(body)?;
        let (max_rows, rest) = get_i32(rest)?;
        rest.is_empty().then_some(Execute { portal, max_rows })
    }
}

/// Typed view of a Describe ('D') or Close ('C') message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// `b'S'` (prepared statement) or `b'P'` (portal).
    pub kind: u8,
    /// Statement or portal name ("" = unnamed).
    pub name: &'a [u8],
}

impl<'a> Target<'a> {
    /// Parse the body (after the 5-byte header); `None` unless it is exactly a
    /// kind byte `S` or `P` and one name.
    pub fn parse(body: &'a [u8]) -> Option<Target<'a>> {
        let (&kind, rest) = body.split_first()?;
        let (name, rest) = cstr(rest)?;
        (matches!(kind, b'S' | b'P') && rest.is_empty()).then_some(Target { kind, name })
    }
}

/// Postgres's limit on the total length (length word included) of frontend
/// messages that carry no data: `PQ_SMALL_MESSAGE_LIMIT`.
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// The largest total length (tag excluded, length word included) Postgres accepts
/// for a frontend message with tag `tag`: [`SMALL_MESSAGE_LIMIT`] for Close,
/// Describe, Execute, Flush, Sync, Terminate, CopyDone and CopyFail, `None` (only
/// `max_message_size`) for Query, Parse, Bind, FunctionCall and CopyData. Checking it
/// at the header lets a reader refuse an oversized message before buffering it.
pub fn frontend_len_limit(tag: u8) -> Option<usize> {
    match tag {
        b'C' | b'D' | b'E' | b'H' | b'S' | b'X' | b'c' | b'f' => Some(SMALL_MESSAGE_LIMIT),
        _ => None,
    }
}

impl crate::router::bind::ParamValues for Bind<'_> {
    fn count(&self) -> usize {
        self.nparams
    }

    fn format(&self, i: usize) -> i16 {
        Bind::format(self, i)
    }

    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>)) {
        let mut rest = self.params;
        for i in 0..self.nparams {
            let Some((len, r)) = get_i32(rest) else {
                return;
            };
            if len < 0 {
                f(i, None);
                rest = r;
                continue;
            }
            let Some(v) = r.get(..len as usize) else {
                return;
            };
            f(i, Some(v));
            rest = &r[len as usize..];
        }
    }
}

/// Check the structure of a frontend message body (after the 5-byte header) of the
/// kinds shardbouncer inspects or forwards in a session, so that malformed input is
/// refused up front (FATAL 08P01, as Postgres does) instead of being half-routed.
/// Returns a description of what is wrong.
pub fn validate_frontend(tag: u8, body: &[u8]) -> Result<(), &'static str> {
    if frontend_len_limit(tag).is_some_and(|max| body.len() + 4 > max) {
        // Postgres: FATAL "invalid message length" (PQ_SMALL_MESSAGE_LIMIT).
        return Err("message too long for its type");
    }
    let nul_terminated_once =
        |b: &[u8]| b.last() == Some(&0) && memchr::memchr(0, b) == Some(b.len() - 1);
    match tag {
        b'Q' => nul_terminated_once(body)
            .then_some(())
            .ok_or("Query text must be one NUL-terminated string"),
        b'f' => nul_terminated_once(body)
            .then_some(())
            .ok_or("CopyFail message must be one NUL-terminated string"),
        b'P' => {
            let p = Parse::parse(body).ok_or("malformed Parse message")?;
            let used = p.name.len() + 1 + p.query.len() + 1 + 2 + p.param_types.len();
            (used == body.len())
                .then_some(())
                .ok_or("trailing bytes in Parse message")
        }
        b'B' => {
            let b = Bind::parse(body).ok_or("malformed Bind message")?;
            // Walk every parameter and the result formats: lengths must fit exactly.
            let mut rest = b.params;
            for _ in 0..b.param_count() {
                let (len, r) = get_i32(rest).ok_or("malformed Bind message")?;
                rest = if len < 0 {
                    if len != -1 {
                        return Err("malformed Bind message");
                    }
                    r
                } else {
                    r.get(len as usize..).ok_or("malformed Bind message")?
                };
            }
            let (n, r) = get_u16(rest).ok_or("malformed Bind message")?;
            if b.format_count() > 1 && b.format_count() != b.param_count() {
                return Err("Bind message has an invalid number of parameter formats");
            }
            (r.len() == n as usize * 2)
                .then_some(())
                .ok_or("malformed Bind message")
        }
        b'D' | b'C' => match body.first() {
            Some(b'S' | b'P') => Target::parse(body)
                .map(|_| ())
                .ok_or("malformed Describe/Close message"),
            _ => Err("Describe/Close must name a statement (S) or portal (P)"),
        },
        b'E' => Execute::parse(body)
            .map(|_| ())
            .ok_or("malformed Execute message"),
        b'F' => {
            // FunctionCall: oid, argument formats, arguments, result format.
            const BAD: &str = "malformed FunctionCall message";
            let (_, r) = get_i32(body).ok_or(BAD)?;
            let (nformats, r) = get_u16(r).ok_or(BAD)?;
            let r = r.get(nformats as usize * 2..).ok_or(BAD)?;
            let (nargs, mut rest) = get_u16(r).ok_or(BAD)?;
            if nformats > 1 && nformats != nargs {
                return Err("FunctionCall message has an invalid number of argument formats");
            }
            for _ in 0..nargs {
                let (len, r) = get_i32(rest).ok_or(BAD)?;
                rest = match len {
                    -1 => r,
                    n if n < 0 => return Err(BAD),
                    n => r.get(n as usize..).ok_or(BAD)?,
                };
            }
            let (_, r) = get_i16(rest).ok_or(BAD)?;
            r.is_empty().then_some(()).ok_or(BAD)
        }
        b'S' | b'H' | b'X' | b'c' => body
            .is_empty()
            .then_some(())
            .ok_or("unexpected bytes in a message that has no body"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn function_call_structure_is_checked() {
        // oid 1, 1 format (text), 2 args ("42", NULL), result format 0.
        let mut f = 1i32.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(&2i32.to_be_bytes());
        f.extend_from_slice(b"42");
        f.extend_from_slice(&(-1i32).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        assert_eq!(validate_frontend(b'F', &f), Ok(()));
        assert!(
            validate_frontend(b'F', &f[..f.len() - 1]).is_err(),
            "no result format"
        );
        let mut extra = f.clone();
        extra.push(0);
        assert!(validate_frontend(b'F', &extra).is_err(), "trailing bytes");
        let mut long = f.clone();
        long[10..14].copy_from_slice(&100i32.to_be_bytes());
        assert!(
            validate_frontend(b'F', &long).is_err(),
            "argument longer than the message"
        );
        let mut formats = f.clone();
        formats[4..6].copy_from_slice(&3u16.to_be_bytes());
        assert!(
            validate_frontend(b'F', &formats).is_err(),
            "3 formats for 2 arguments"
        );
    }

    #[test]
    fn small_messages_are_refused_from_their_header() {
        let sync = |len: i32| {
            let mut b = vec![b'S'];
            b.extend_from_slice(&len.to_be_bytes());
            b
        };
        let max = 1 << 28;
        // As Postgres: up to PQ_SMALL_MESSAGE_LIMIT (length word included).
        assert_eq!(
            frontend_frame_header(&sync(SMALL_MESSAGE_LIMIT as i32), max).unwrap(),
            Some((b'S', SMALL_MESSAGE_LIMIT + 1))
        );
        let e = frontend_frame_header(&sync(SMALL_MESSAGE_LIMIT as i32 + 1), max).unwrap_err();
        // It names the limit it broke, not max_message_size (probe).
        assert_eq!(
            e.to_string(),
            "message of 10002 bytes exceeds the 10000 bytes Postgres allows a message of its type"
        );
        assert!(frontend_frame_header(&sync(100 << 20), max).is_err());
        // A Query is limited by max_message_size only.
        let mut q = sync(100 << 20);
        q[0] = b'Q';
        assert!(frontend_frame_header(&q, max).unwrap().is_some());
    }

    #[test]
    fn only_the_types_postgres_reads_after_login_are_frontend_types() {
        let known = b"QPBDECHSXFdcf";
        for t in 0..=255u8 {
            assert_eq!(is_frontend_type(t), known.contains(&t), "type {t}");
        }
    }

    use super::*;

    #[test]
    fn validation_accepts_real_messages_and_refuses_garbage() {
        assert!(validate_frontend(b'Q', b"SELECT 1\0").is_ok());
        assert!(validate_frontend(b'Q', b"SELECT 1").is_err());
        assert!(validate_frontend(b'Q', b"SELECT\0\x31\0").is_err());
        assert!(validate_frontend(b'P', b"s\0SELECT $1\0\0\x01\0\0\0\x17").is_ok());
        assert!(validate_frontend(b'P', b"s\0SELECT\0\0\x01").is_err());
        // Bind: portal "", stmt "", 0 formats, 1 param of 2 bytes, 0 result formats.
        assert!(validate_frontend(b'B', b"\0\0\0\0\0\x01\0\0\0\x0242\0\0").is_ok());
        assert!(validate_frontend(b'B', b"\0\0\0\0\0\x01\0\0\0\x0942\0\0").is_err());
        assert!(validate_frontend(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0").is_err());
        assert!(validate_frontend(b'D', b"Ss1\0").is_ok());
        assert!(validate_frontend(b'D', b"Xs1\0").is_err());
        assert!(validate_frontend(b'E', b"\0\0\0\0\0").is_ok());
        assert!(validate_frontend(b'E', b"\0\0\0").is_err());
        assert!(validate_frontend(b'S', b"").is_ok());
        assert!(validate_frontend(b'S', b"x").is_err());
    }

    #[test]
    fn header_needs_five_bytes_and_sane_length() {
        assert_eq!(frame_header(b"Q\0\0", 100), Ok(None));
        assert_eq!(frame_header(b"Q\0\0\0\x08abcd", 100), Ok(Some((b'Q', 9))));
        assert_eq!(
            frame_header(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength(3))
        );
        assert_eq!(
            frame_header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength(-1))
        );
        assert!(matches!(
            frame_header(b"Q\0\0\x10\0", 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn bind_params_read_back() {
        // portal "", stmt "s", 1 format (binary), 2 params: NULL, "abc"; 0 result formats
        let mut b = Vec::new();
        b.extend_from_slice(b"\0s\0");
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&0i16.to_be_bytes());
        let bind = Bind::parse(&b).unwrap();
        assert_eq!(bind.statement, b"s");
        assert_eq!(bind.param_count(), 2);
        assert_eq!(bind.param(0), Some(None));
        assert_eq!(bind.param(1), Some(Some(&b"abc"[..])));
        assert_eq!(bind.param(2), None);
        assert_eq!(bind.format(1), 1);
    }

    #[test]
    fn parse_view_reads_types() {
        let mut b = Vec::new();
        b.extend_from_slice(b"\0SELECT $1\0");
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&20u32.to_be_bytes());
        let p = Parse::parse(&b).unwrap();
        assert_eq!(p.query, b"SELECT $1");
        assert_eq!(p.param_type(0), Some(20));
        assert_eq!(p.param_type(1), None);
        assert!(Parse::parse(b"\0SELECT\0\0\x05").is_none());
    }

    /// Differential-fuzz finding (fuzz/README.md, wire_diff): Postgres reads the
    /// Parse and Bind counts as unsigned 16-bit (pq_getmsgint), so a statement may
    /// declare and bind up to 65535 parameters (libpq and PgJDBC send that many);
    /// shardbouncer read them as i16 and refused 32768.. as malformed, closing the
    /// client with 08P01 where Postgres runs the query.
    #[test]
    fn counts_are_unsigned_up_to_65535() {
        let n: u16 = 40_000;
        let mut p = b"s\0SELECT 1\0".to_vec();
        p.extend_from_slice(&n.to_be_bytes());
        for i in 0..u32::from(n) {
            p.extend_from_slice(&(20 + i % 3).to_be_bytes());
        }
        assert!(validate_frontend(b'P', &p).is_ok());
        let view = Parse::parse(&p).unwrap();
        assert_eq!(view.param_types.len(), 4 * n as usize);
        assert_eq!(view.param_type(39_998), Some(22)); // 20 + 39_998 % 3

        // Bind: 1 format (binary), 40,000 params (NULL but the last, "x"),
        // 40,000 result formats.
        let mut b = b"\0s\0".to_vec();
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        for _ in 0..n - 1 {
            b.extend_from_slice(&(-1i32).to_be_bytes());
        }
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(b'x');
        b.extend_from_slice(&n.to_be_bytes());
        b.extend(std::iter::repeat_n([0u8, 1], n as usize).flatten());
        assert!(validate_frontend(b'B', &b).is_ok());
        let view = Bind::parse(&b).unwrap();
        assert_eq!(view.param_count(), n as usize);
        assert_eq!(view.format(39_999), 1);
        assert_eq!(view.param(0), Some(None));
        assert_eq!(view.param(39_999), Some(Some(&b"x"[..])));
        // 65535 is the most the count can say; a 65536th value is trailing garbage.
        let mut p = b"\0\0".to_vec();
        p.extend_from_slice(&u16::MAX.to_be_bytes());
        p.extend(std::iter::repeat_n(0u8, 4 * 65_535));
        assert!(validate_frontend(b'P', &p).is_ok());
        p.extend_from_slice(&[0; 4]);
        assert!(validate_frontend(b'P', &p).is_err());
    }

    /// Differential-fuzz finding: Postgres refuses Close, Describe, Execute, Flush,
    /// Sync, Terminate, CopyDone and CopyFail longer than PQ_SMALL_MESSAGE_LIMIT
    /// (FATAL "invalid message length"); shardbouncer forwarded them.
    #[test]
    fn small_message_types_are_limited_to_10000_bytes() {
        let mut name = vec![b'S'];
        name.extend(std::iter::repeat_n(b'n', SMALL_MESSAGE_LIMIT - 4 - 2));
        name.push(0);
        assert_eq!(name.len() + 4, SMALL_MESSAGE_LIMIT);
        assert!(validate_frontend(b'D', &name).is_ok());
        assert!(validate_frontend(b'C', &name).is_ok());
        name.insert(1, b'n');
        assert!(validate_frontend(b'D', &name).is_err());
        assert!(validate_frontend(b'C', &name).is_err());
        let mut exec = name[1..].to_vec();
        exec.extend_from_slice(&[0; 4]);
        assert!(validate_frontend(b'E', &exec).is_err());
        // Query, Parse, Bind, CopyData are limited only by max_message_size.
        let mut q = vec![b'x'; 2 * SMALL_MESSAGE_LIMIT];
        q.push(0);
        assert!(validate_frontend(b'Q', &q).is_ok());
        assert!(validate_frontend(b'd', &q).is_ok());
        assert_eq!(frontend_len_limit(b'S'), Some(SMALL_MESSAGE_LIMIT));
        assert_eq!(frontend_len_limit(b'd'), None);
    }

    /// Differential-fuzz finding: a CopyFail is a NUL-terminated message (Postgres
    /// reads it with pq_getmsgstring); shardbouncer forwarded any bytes.
    #[test]
    fn copy_fail_is_one_string() {
        assert!(validate_frontend(b'f', b"client gave up\0").is_ok());
        assert!(validate_frontend(b'f', b"\0").is_ok());
        assert!(validate_frontend(b'f', b"").is_err());
        assert!(validate_frontend(b'f', b"no terminator").is_err());
    }

    #[test]
    fn execute_and_target_views() {
        assert_eq!(
            Execute::parse(b"p1\0\0\0\0\x0a"),
            Some(Execute {
                portal: b"p1",
                max_rows: 10
            })
        );
        assert_eq!(
            Execute::parse(b"\0\xff\xff\xff\xff").map(|e| e.max_rows),
            Some(-1)
        );
        assert_eq!(Execute::parse(b"\0\0\0\0\0\0"), None);
        assert_eq!(Execute::parse(b"p1"), None);
        assert_eq!(
            Target::parse(b"Ps1\0"),
            Some(Target {
                kind: b'P',
                name: b"s1"
            })
        );
        assert_eq!(Target::parse(b"Xs1\0"), None);
        assert_eq!(Target::parse(b"Ss1\0\0"), None);
        assert_eq!(Target::parse(b"S"), None);
    }
}
