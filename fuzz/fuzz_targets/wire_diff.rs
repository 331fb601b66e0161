//! Differential fuzzing of the frontend codec against `pgwire`, an independent
//! implementation of the PostgreSQL wire protocol, as the oracle.
//!
//! Every input is used three ways:
//!
//! 1. **as a client byte stream** after login: frames are cut with
//!    `protocol::frame_header` and each is judged by shardbouncer (the session's
//!    tag set plus `protocol::validate_frontend`) and decoded by pgwire
//!    (`PgWireFrontendMessage::decode`, given exactly that frame);
//! 2. **as a startup-phase packet** (length word and body), judged as
//!    `client::startup` does (length 8..=10000, then `protocol::parse_startup`) and by
//!    pgwire's `SslRequest` / `GssEncRequest` / `CancelRequest` / `Startup` decoders;
//! 3. **as a recipe** for well-formed Parse, Bind, Execute, Describe/Close, Query
//!    and startup messages, encoded by pgwire (so counts above 32767 and long names
//!    occur without megabyte inputs), which shardbouncer must accept and read back.
//!
//! Asserted, beyond "no panic in shardbouncer":
//!
//! * what shardbouncer accepts, pgwire decodes *faithfully* (its decode, encoded
//!   again, is the same frame) and the fields shardbouncer reads are pgwire's:
//!   Parse name, query and parameter types; Bind portal, statement, formats and
//!   values; Execute portal and row limit; Describe/Close kind and name; Query text;
//!   startup parameters and minor version; cancel pid and key;
//! * what pgwire decodes faithfully, shardbouncer accepts, except for the
//!   documented differences (fuzz/README.md, "wire_diff"), each recognised here by
//!   a predicate: messages pgwire has no decoder or no check for, and pgwire's
//!   leniencies (a missing NUL, a negative length other than -1, trailing bytes,
//!   lossy UTF-8), which pgwire accepts but cannot encode back.
//!
//! pgwire panics on some truncated bodies (it reads with `Buf::get_*`); such a panic
//! is caught and counted as a refusal by pgwire.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::{
    Bind as PwBind, Close, Describe, Execute as PwExecute, Parse as PwParse,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{GssEncRequest, SslRequest, Startup};
use pgwire::messages::{DecodeContext, Message, PgWireFrontendMessage, ProtocolVersion};
use shardbouncer::protocol::startup::{
    CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_LEN, SSL_REQUEST,
};
use shardbouncer::protocol::{
    self, frame_header, frontend_len_limit, parse_startup, validate_frontend, Bind, Execute,
    FrameError, Parse, StartupPacket, Target, HEADER_LEN,
};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `[limits] max_message_size` default.
const MAX_MESSAGE: usize = 256 << 20;
/// pgwire's (and Postgres's) limit for Query, Parse, Bind, CopyData.
const PG_LARGE_LIMIT: usize = 0x3fff_ffff - 1;

/// Tags the session core takes after login (anything else: FATAL "invalid
/// frontend message type").
const SESSION_TAGS: &[u8] = b"XQFPBDECHSdcf";

/// Run `f`, which may panic inside pgwire, without libfuzzer's abort-on-panic hook.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.ok()
}

fn ctx_after_login() -> DecodeContext {
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// pgwire's verdict on one frame.
enum Pw {
    /// Decoded, all bytes used, and encoding it again gives the same frame.
    Faithful(PgWireFrontendMessage),
    /// Decoded with every byte used, but it is not what the bytes say (pgwire
    /// tolerated something): its encoding differs. `lossy` if a string came back
    /// with U+FFFD, when a byte comparison cannot tell.
    Lenient { lossy: bool },
    /// Error, panic, or bytes left over.
    Refused(&'static str),
}

fn strings_of(m: &PgWireFrontendMessage) -> Vec<&str> {
    use PgWireFrontendMessage as M;
    match m {
        M::Query(q) => vec![&q.query],
        M::Parse(p) => vec![p.name.as_deref().unwrap_or(""), &p.query],
        M::Bind(b) => vec![
            b.portal_name.as_deref().unwrap_or(""),
            b.statement_name.as_deref().unwrap_or(""),
        ],
        M::Describe(d) => vec![d.name.as_deref().unwrap_or("")],
        M::Close(c) => vec![c.name.as_deref().unwrap_or("")],
        M::Execute(e) => vec![e.name.as_deref().unwrap_or("")],
        M::CopyFail(f) => vec![&f.message],
        _ => vec![],
    }
}

fn pgwire_frame(frame: &[u8]) -> Pw {
    let mut buf = BytesMut::from(frame);
    let ctx = ctx_after_login();
    let decoded = quietly(|| {
        let r = PgWireFrontendMessage::decode(&mut buf, &ctx);
        (r, buf.len())
    });
    let (msg, left) = match decoded {
        None => return Pw::Refused("pgwire panicked"),
        Some((Err(_), _)) => return Pw::Refused("pgwire error"),
        Some((Ok(None), _)) => return Pw::Refused("pgwire wants more bytes"),
        Some((Ok(Some(m)), left)) => (m, left),
    };
    if left != 0 {
        return Pw::Refused("trailing bytes");
    }
    let mut again = BytesMut::new();
    let encoded = quietly(|| msg.encode(&mut again).is_ok()).unwrap_or(false);
    if encoded && again[..] == frame[..] {
        return Pw::Faithful(msg);
    }
    let lossy = strings_of(&msg).iter().any(|s| s.contains('\u{FFFD}'));
    Pw::Lenient { lossy }
}

/// shardbouncer's verdict on one complete frame.
fn sb_frame(tag: u8, body: &[u8]) -> Result<(), &'static str> {
    if !SESSION_TAGS.contains(&tag) {
        return Err("invalid frontend message type");
    }
    validate_frontend(tag, body)
}

/// Documented differences where pgwire decodes faithfully what shardbouncer (and
/// Postgres) refuse. Returns the README's name for it.
fn known_pgwire_accepts(tag: u8, body: &[u8], sb: &str) -> Option<&'static str> {
    match tag {
        // pgwire does not check the kind byte (Postgres: "invalid DESCRIBE message
        // subtype" / "invalid CLOSE message subtype").
        b'D' | b'C' if !matches!(body.first(), Some(b'S' | b'P')) => Some("W4 kind byte"),
        // pgwire does not check the number of parameter formats (Postgres: "bind
        // message has %d parameter formats but %d parameters").
        b'B' if sb.contains("parameter formats") => Some("W5 format count"),
        // pgwire reads the password message family in any state; after login it is
        // not a valid message.
        b'p' => Some("W6 password message"),
        _ => None,
    }
}

fn check_frame(frame: &[u8]) {
    let tag = frame[0];
    let body = &frame[HEADER_LEN..];
    let sb = sb_frame(tag, body);
    let pw = pgwire_frame(frame);
    match (&sb, &pw) {
        (Ok(()), Pw::Faithful(m)) => same_fields(tag, body, m),
        // pgwire has no FunctionCall decoder ("W7").
        (Ok(()), Pw::Refused(_)) if tag == b'F' => {}
        // A string that is not UTF-8: pgwire decodes it lossily and cannot give
        // the bytes back, so there is nothing to compare ("W3").
        (Ok(()), Pw::Lenient { lossy: true }) => {}
        (Ok(()), other) => panic!(
            "shardbouncer accepts {:?} {:?} but pgwire {}",
            tag as char,
            body,
            match other {
                Pw::Refused(why) => why,
                _ => "decodes it into something else",
            }
        ),
        (Err(why), Pw::Faithful(_)) => {
            if known_pgwire_accepts(tag, body, why).is_none() {
                panic!(
                    "pgwire decodes {:?} {:?} faithfully but shardbouncer refuses it: {why}",
                    tag as char, body
                );
            }
        }
        // Both refuse, or pgwire only accepts leniently (W1-W3).
        (Err(_), _) => {}
    }
}

fn same_fields(tag: u8, body: &[u8], m: &PgWireFrontendMessage) {
    use PgWireFrontendMessage as M;
    match (tag, m) {
        (b'Q', M::Query(q)) => assert_eq!(lossy(&body[..body.len() - 1]), q.query),
        (b'P', M::Parse(p)) => same_parse(body, p),
        (b'B', M::Bind(b)) => same_bind(body, b),
        (b'E', M::Execute(e)) => same_execute(body, e),
        (b'D', M::Describe(d)) => {
            let t = Target::parse(body).expect("validated Describe has a view");
            assert_eq!((t.kind, lossy(t.name)), (d.target_type, opt(&d.name)));
        }
        (b'C', M::Close(c)) => {
            let t = Target::parse(body).expect("validated Close has a view");
            assert_eq!((t.kind, lossy(t.name)), (c.target_type, opt(&c.name)));
        }
        (b'd', M::CopyData(d)) => assert_eq!(&d.data[..], body),
        (b'f', M::CopyFail(f)) => assert_eq!(lossy(&body[..body.len() - 1]), f.message),
        (b'S', M::Sync(_)) | (b'H', M::Flush(_)) | (b'X', M::Terminate(_)) => {}
        (b'c', M::CopyDone(_)) => {}
        (t, m) => panic!("tag {:?} decoded by pgwire as {m:?}", t as char),
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn same_parse(body: &[u8], p: &PwParse) {
    let v = Parse::parse(body).expect("validated Parse has a view");
    assert_eq!(lossy(v.name), opt(&p.name), "Parse name");
    assert_eq!(lossy(v.query), p.query, "Parse query");
    let n = v.param_types.len() / 4;
    assert_eq!(n, p.type_oids.len(), "Parse type count");
    for (i, oid) in p.type_oids.iter().enumerate() {
        assert_eq!(v.param_type(i), Some(*oid), "Parse type {i}");
    }
    assert_eq!(v.param_type(n), None);
}

fn same_bind(body: &[u8], b: &PwBind) {
    let v = Bind::parse(body).expect("validated Bind has a view");
    assert_eq!(lossy(v.portal), opt(&b.portal_name), "Bind portal");
    assert_eq!(lossy(v.statement), opt(&b.statement_name), "Bind statement");
    assert_eq!(
        v.format_count(),
        b.parameter_format_codes.len(),
        "format count"
    );
    assert_eq!(v.param_count(), b.parameters.len(), "param count");
    for i in 0..b.parameters.len() {
        // The format that applies to parameter i: none given = text, one = all.
        let want = match b.parameter_format_codes.len() {
            0 => 0,
            1 => b.parameter_format_codes[0],
            _ => b.parameter_format_codes[i],
        };
        assert_eq!(v.format(i), want, "format of parameter {i}");
    }
    // `param(i)` walks from the first value: check a few, not all (quadratic).
    let n = b.parameters.len();
    for i in [0, 1, 2, n / 2, n.saturating_sub(2), n.saturating_sub(1)] {
        if let Some(value) = b.parameters.get(i) {
            assert_eq!(
                v.param(i),
                Some(value.as_ref().map(|b| &b[..])),
                "value of parameter {i}"
            );
        }
    }
    // The router's own walk over the values sees the same.
    let mut seen = Vec::new();
    shardbouncer::router::bind::ParamValues::each(&v, &mut |i, val| {
        seen.push((i, val.map(<[u8]>::to_vec)))
    });
    let want: Vec<_> = b
        .parameters
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.as_ref().map(|b| b.to_vec())))
        .collect();
    assert_eq!(seen, want, "ParamValues::each");
}

fn same_execute(body: &[u8], e: &PwExecute) {
    let v = Execute::parse(body).expect("validated Execute has a view");
    assert_eq!(lossy(v.portal), opt(&e.name), "Execute portal");
    assert_eq!(v.max_rows, e.max_rows, "Execute max_rows");
}

/// Input 1: a client byte stream after login.
fn stream(data: &[u8]) {
    let mut pos = 0;
    for _ in 0..64 {
        let rest = &data[pos..];
        match frame_header(rest, MAX_MESSAGE) {
            Ok(None) => return,
            // pgwire does not check that the length counts itself (W2): it reads
            // past its frame. Nothing to compare.
            Err(FrameError::BadLength(_)) => return,
            Err(FrameError::TooLarge { .. }) => return,
            Err(e @ FrameError::TooLargeForType { .. }) => {
                panic!("frame_header knows no types: {e}")
            }
            Ok(Some((tag, len))) => {
                if rest.len() < len {
                    incomplete(tag, rest, len);
                    return;
                }
                check_frame(&rest[..len]);
                pos += len;
            }
        }
    }
}

/// A frame whose declared length is more than we have: both sides wait for more,
/// unless the length is too large for the type, which shardbouncer can tell from
/// the header alone (`frontend_len_limit`) exactly when pgwire refuses it.
fn incomplete(tag: u8, rest: &[u8], len: usize) {
    if !SESSION_TAGS.contains(&tag) || tag == b'F' || tag == b'p' {
        return;
    }
    let mut buf = BytesMut::from(rest);
    let ctx = ctx_after_login();
    let pw = quietly(|| PgWireFrontendMessage::decode(&mut buf, &ctx).map(|m| m.is_some()));
    let pw_too_large = matches!(
        pw,
        Some(Err(pgwire::error::PgWireError::MessageTooLarge(..)))
    );
    let limit = frontend_len_limit(tag).unwrap_or(PG_LARGE_LIMIT);
    assert_eq!(
        pw_too_large,
        len - 1 > limit,
        "tag {:?} length {}: pgwire says too large = {pw_too_large}",
        tag as char,
        len - 1
    );
}

/// Input 2: a startup-phase packet.
fn startup_packet(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let code = i32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    // As client::startup reads it.
    let sb_len_ok = (8..=MAX_STARTUP_LEN as i32).contains(&len);
    if !sb_len_ok || data.len() < len as usize {
        return;
    }
    let packet = &data[..len as usize];
    let sb = parse_startup(&packet[4..]);
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut buf = BytesMut::from(packet);
    match code {
        SSL_REQUEST => {
            // pgwire looks at the code only (W8); shardbouncer reads the declared length.
            assert_eq!(sb, Ok(StartupPacket::Ssl));
            let r = quietly(|| SslRequest::decode(&mut buf, &ctx).map(|m| m.is_some()));
            assert!(matches!(r, Some(Ok(true))));
        }
        GSSENC_REQUEST => {
            assert_eq!(sb, Ok(StartupPacket::GssEnc));
            let r = quietly(|| GssEncRequest::decode(&mut buf, &ctx).map(|m| m.is_some()));
            assert!(matches!(r, Some(Ok(true))));
        }
        CANCEL_REQUEST => {
            let pw = quietly(|| CancelRequest::decode(&mut buf, &ctx));
            match (&sb, pw) {
                (Ok(StartupPacket::Cancel { pid, secret }), Some(Ok(Some(c)))) => {
                    assert_eq!(*pid, c.pid);
                    assert_eq!(Some(*secret), c.secret_key.as_i32());
                }
                (Err(_), Some(Ok(None) | Err(_)) | None) => {}
                // Longer than 16 bytes (a protocol 3.2 key): shardbouncer reads the
                // first 4 key bytes and ignores the rest; pgwire 3.0 reads 4 and
                // leaves the rest (W9). Either way no key of ours can match.
                (Ok(StartupPacket::Cancel { .. }), _) if len > 16 => {}
                (sb, pw) => panic!("cancel request {packet:?}: shardbouncer {sb:?}, pgwire {pw:?}"),
            }
        }
        _ => {
            let pw = quietly(|| {
                let r = Startup::decode(&mut buf, &ctx);
                (r, buf.len())
            });
            let pw_ok = match &pw {
                Some((Ok(Some(s)), 0)) => Some(s),
                _ => None,
            };
            match (&sb, pw_ok) {
                (Ok(StartupPacket::Startup { minor, params, .. }), Some(s)) => {
                    assert_eq!(s.protocol_number_major, 3);
                    assert_eq!(*minor, s.protocol_number_minor);
                    let mine: BTreeMap<String, String> = params.iter().cloned().collect();
                    assert_eq!(mine.len(), params.len(), "one value per name: {params:?}");
                    assert_eq!(mine, s.parameters, "startup parameters");
                }
                (Ok(p), None) => panic!(
                    "shardbouncer accepts startup {packet:?} as {p:?}, pgwire refuses: {:?}",
                    pw.map(|p| p.0.is_ok())
                ),
                (Err(why), Some(_)) => {
                    // pgwire takes a packet without its final terminator or with a
                    // name and no value (W1), and non-UTF-8 text lossily (W3).
                    let documented = why.contains("not NUL-terminated")
                        || why.contains("has no value")
                        || why.contains("not valid UTF-8");
                    assert!(
                        documented,
                        "pgwire accepts startup {packet:?}, shardbouncer refuses: {why}"
                    );
                }
                (Err(_), None) => {}
                (Ok(p), Some(_)) => panic!("startup {packet:?} decoded as {p:?}"),
            }
        }
    }
}

/// Input 3: a recipe for well-formed messages, encoded by pgwire.
struct Recipe<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Recipe<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    /// A string without NUL: up to `b & 0x3f` bytes of input, or a long run of one
    /// character when the top bit is set.
    fn text(&mut self) -> String {
        let n = self.byte();
        let s = if n & 0x80 != 0 {
            let c = char::from(b'a' + self.byte() % 26);
            std::iter::repeat_n(c, usize::from(n & 0x7f) * 97).collect()
        } else {
            let n = usize::from(n & 0x3f);
            let end = (self.pos + n).min(self.data.len());
            let s = lossy(&self.data[self.pos.min(end)..end]);
            self.pos += n;
            s
        };
        let s = s.replace('\0', "");
        (!s.is_empty()).then_some(s).unwrap_or_default()
    }
    /// A count: mostly small, sometimes around 32767 or 65535.
    fn count(&mut self) -> usize {
        match self.byte() {
            // Rarely, the edges of the signed and unsigned 16-bit ranges.
            0xfe => 32_767 + usize::from(self.byte() % 3),
            0xff => 65_535 - usize::from(self.byte() % 2),
            c => usize::from(c & 0x0f),
        }
    }
    fn name(&mut self) -> Option<String> {
        Some(self.text()).filter(|s| !s.is_empty())
    }
}

fn encoded(m: &PgWireFrontendMessage) -> Option<Vec<u8>> {
    let mut b = BytesMut::new();
    m.encode(&mut b).ok()?;
    Some(b.to_vec())
}

fn recipe(data: &[u8]) {
    let mut r = Recipe { data, pos: 0 };
    use PgWireFrontendMessage as M;
    for _ in 0..4 {
        if r.pos >= data.len() {
            return;
        }
        let m = match r.byte() % 7 {
            0 => {
                let (name, query) = (r.name(), r.text());
                let n = r.count();
                let seed = r.i32() as u32;
                let oids = (0..n as u32).map(|i| seed.wrapping_mul(i + 1)).collect();
                M::Parse(PwParse::new(name, query, oids))
            }
            1 => {
                let (portal, stmt) = (r.name(), r.name());
                let n = r.count();
                let formats: Vec<i16> = match r.byte() % 3 {
                    0 => vec![],
                    1 => vec![r.u16() as i16],
                    _ => (0..n).map(|i| (i % 2) as i16).collect(),
                };
                // Keep the message under a few MB: long values only for few params.
                let mut value = r.text();
                if n > 16 {
                    value.truncate(value.floor_char_boundary(64));
                }
                let params = (0..n)
                    .map(|i| match i % 3 {
                        0 => None,
                        1 => Some(Bytes::from(value.clone())),
                        _ => Some(Bytes::from((i as u32).to_be_bytes().to_vec())),
                    })
                    .collect();
                let results = (0..r.count()).map(|i| (i % 2) as i16).collect();
                M::Bind(PwBind::new(portal, stmt, formats, params, results))
            }
            2 => M::Execute(PwExecute::new(r.name(), r.i32())),
            3 => M::Describe(Describe::new(
                if r.byte() & 1 == 0 { b'S' } else { b'P' },
                r.name(),
            )),
            4 => M::Close(Close::new(
                if r.byte() & 1 == 0 { b'S' } else { b'P' },
                r.name(),
            )),
            5 => M::Query(Query::new(r.text())),
            _ => {
                let mut s = Startup::new();
                s.protocol_number_minor = u16::from(r.byte() % 3);
                for _ in 0..r.count().min(20) {
                    if let Some(k) = r.name() {
                        s.parameters.insert(k, r.text());
                    }
                }
                let mut b = BytesMut::new();
                if s.encode(&mut b).is_ok() && !s.parameters.is_empty() {
                    startup_packet(&b);
                    match parse_startup(&b[4..]) {
                        Ok(StartupPacket::Startup { params, .. }) => {
                            let mine: BTreeMap<_, _> = params.into_iter().collect();
                            assert_eq!(mine, s.parameters);
                        }
                        other => panic!("pgwire's startup {b:?} refused: {other:?}"),
                    }
                }
                continue;
            }
        };
        let Some(frame) = encoded(&m) else { continue };
        if frame.len() > MAX_MESSAGE {
            continue;
        }
        let tag = frame[0];
        let body = &frame[HEADER_LEN..];
        // pgwire itself does not enforce the small-message limit when encoding.
        if frontend_len_limit(tag).is_some_and(|max| frame.len() - 1 > max) {
            assert!(validate_frontend(tag, body).is_err());
            continue;
        }
        assert_eq!(
            frame_header(&frame, MAX_MESSAGE),
            Ok(Some((tag, frame.len())))
        );
        if let Err(why) = validate_frontend(tag, body) {
            if known_pgwire_accepts(tag, body, why).is_none() {
                panic!("pgwire encoded {m:?}; shardbouncer refuses it: {why}");
            }
            continue;
        }
        same_fields(tag, body, &m);
        // And the message builders shardbouncer uses agree byte for byte.
        let mut ours = BytesMut::new();
        match &m {
            M::Parse(p) => {
                // The builder takes the client's raw count and OIDs.
                let mut types = (p.type_oids.len() as u16).to_be_bytes().to_vec();
                types.extend(p.type_oids.iter().flat_map(|o| o.to_be_bytes()));
                protocol::parse(
                    &mut ours,
                    opt(&p.name).as_bytes(),
                    p.query.as_bytes(),
                    &types,
                );
            }
            M::Execute(e) => protocol::execute(&mut ours, opt(&e.name).as_bytes(), e.max_rows),
            M::Query(q) => protocol::query(&mut ours, &q.query),
            _ => {}
        }
        if !ours.is_empty() {
            assert_eq!(&ours[..], &frame[..], "builder for {m:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    stream(data);
    startup_packet(data);
    recipe(data);
});
