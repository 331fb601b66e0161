//! Pure predicates over client frames (a tag byte, the length word, the body)
//! that both routing and forwarding ask. No state: kept apart so neither of
//! those files needs the other.

use super::inbound::Unit;
use crate::protocol::{self, tag};
use bytes::Bytes;

/// Query text of a 'Q' frame (without the trailing NUL).
pub(super) fn query_text(frame: &[u8]) -> &[u8] {
    let b = frame.get(5..).unwrap_or_default();
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// A Parse of a named statement.
pub(super) fn is_named_parse(frame: &[u8]) -> bool {
    frame.first() == Some(&tag::frontend::PARSE) && frame.get(5).is_some_and(|&b| b != 0)
}

/// The statement name of a Describe/Close body aimed at a statement ('S').
pub(super) fn describe_statement_name(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    if kind != b'S' {
        return None;
    }
    protocol::cstr(rest).map(|(n, _)| n)
}

/// Whether a Parse, Bind, Describe, Close or Execute body (of type `t`)
/// names a statement or portal longer than the 63 bytes Postgres keeps of
/// a name: two such names that start alike are one to the server.
pub(super) fn long_name(t: u8, body: &[u8]) -> bool {
    any_name(t, body, |n| n.len() > 63)
}

/// Whether a Parse, Bind, Describe, Close or Execute body (of type `t`)
/// names a statement or portal with a byte past ASCII. Postgres converts a
/// name to the server's encoding before it keeps 63 bytes of it, so under
/// a converted `client_encoding` two names that differ in such bytes may
/// be one to the server and two to the router (probe CN F1: a COPY's
/// portal ran unchecked under a second name).
pub(super) fn non_ascii_name(t: u8, body: &[u8]) -> bool {
    any_name(t, body, |n| !n.is_ascii())
}

/// Whether a statement or portal name the message (of type `t`) carries
/// passes `test`. (Asked of every message: names are short, so a plain
/// loop finds their end, cheaper than `memchr`'s setup.)
fn any_name(t: u8, body: &[u8], test: impl Fn(&[u8]) -> bool) -> bool {
    use tag::frontend as f;
    /// The C string `b` starts with, and what follows its NUL.
    fn name(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let end = b.iter().position(|&c| c == 0)?;
        Some((&b[..end], &b[end + 1..]))
    }
    match t {
        f::PARSE | f::EXECUTE => name(body).is_some_and(|(n, _)| test(n)),
        f::BIND => name(body).is_some_and(|(portal, rest)| {
            test(portal) || name(rest).is_some_and(|(stmt, _)| test(stmt))
        }),
        f::DESCRIBE | f::CLOSE => body.get(1..).and_then(name).is_some_and(|(n, _)| test(n)),
        _ => false,
    }
}

/// The portal an Execute body names.
pub(super) fn execute_portal(body: &[u8]) -> &[u8] {
    let end = memchr::memchr(0, body).unwrap_or(body.len());
    &body[..end]
}

/// Whether a Close frame closes a named statement.
pub(super) fn is_named_statement_close(frame: &[u8]) -> bool {
    frame.first() == Some(&tag::frontend::CLOSE)
        && describe_statement_name(&frame[5..]).is_some_and(|n| !n.is_empty())
}

/// Named Parses then one Sync, nothing else.
pub(super) fn is_parse_only_batch(msgs: &[(u8, Bytes)]) -> bool {
    msgs.len() >= 2
        && msgs.last().is_some_and(|(t, _)| *t == tag::frontend::SYNC)
        && msgs[..msgs.len() - 1]
            .iter()
            .all(|(t, f)| *t == tag::frontend::PARSE && is_named_parse(f))
}

/// Only a Sync or a Flush.
pub(super) fn is_sync_or_flush_only(msgs: &[(u8, Bytes)]) -> bool {
    matches!(msgs, [(tag::frontend::SYNC | tag::frontend::FLUSH, _)])
}

/// Whether a unit's text may be lexed differently under other settings: a
/// backslash (standard_conforming_strings) or a byte past ASCII
/// (client_encoding). A Bind's values count too: a key value past ASCII is
/// read in the client's encoding.
pub(super) fn lexing_depends_on_settings(unit: &Unit) -> bool {
    // The body, past the tag and length (a length byte may be past ASCII).
    fn body(f: &[u8]) -> &[u8] {
        f.get(5..).unwrap_or_default()
    }
    let hazard = |f: &[u8]| memchr::memchr(b'\\', body(f)).is_some() || !body(f).is_ascii();
    match unit {
        Unit::Simple(tag::frontend::QUERY, f) => hazard(f),
        Unit::Simple(..) => false,
        Unit::Batch(m) => m.iter().any(|(t, f)| {
            (*t == tag::frontend::PARSE && hazard(f))
                || (*t == tag::frontend::BIND && !body(f).is_ascii())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_strips_the_nul() {
        assert_eq!(query_text(b"Q\0\0\0\x0bSELECT\0"), b"SELECT");
    }

    #[test]
    fn statement_names() {
        assert_eq!(describe_statement_name(b"Sfoo\0"), Some(&b"foo"[..]));
        let long = [b'n'; 64];
        let mut parse = long.to_vec();
        parse.extend_from_slice(b"\0SELECT 1\0\0\0");
        assert!(long_name(tag::frontend::PARSE, &parse));
        assert!(!long_name(tag::frontend::PARSE, &parse[1..]));
        let mut bind = b"\0".to_vec();
        bind.extend_from_slice(&long);
        bind.extend_from_slice(b"\0\0\0\0\0\0\0");
        assert!(long_name(tag::frontend::BIND, &bind));
        let mut close = b"P".to_vec();
        close.extend_from_slice(&long);
        close.push(0);
        assert!(long_name(tag::frontend::CLOSE, &close));
        assert!(long_name(tag::frontend::EXECUTE, &close[1..]));
        assert!(!non_ascii_name(tag::frontend::CLOSE, &close));
        assert!(non_ascii_name(tag::frontend::EXECUTE, b"p\xe9\0\0\0\0\0"));
        assert!(non_ascii_name(
            tag::frontend::BIND,
            b"\0s\xe8\0\0\0\0\0\0\0"
        ));
        assert!(!non_ascii_name(
            tag::frontend::BIND,
            b"p\0s\0\0\0\0\0\0\0\xe9"
        ));
        assert!(non_ascii_name(tag::frontend::DESCRIBE, b"P\xe9\0"));
        assert_eq!(describe_statement_name(b"Pfoo\0"), None);
        assert!(is_named_statement_close(b"C\0\0\0\x09Sab\0"));
        assert!(!is_named_statement_close(b"C\0\0\0\x07S\0"));
        assert!(is_named_parse(b"P\0\0\0\x08a\0\0\0\0"));
        assert!(!is_named_parse(b"P\0\0\0\x08\0\0\0\0"));
    }
}
