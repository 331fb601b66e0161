//! Small pure helpers of the session: message field access and text checks.

use crate::protocol;
use bytes::Bytes;

/// SQL that makes the server raise an error with our SQLSTATE and message (so the
/// transaction state on the server is exactly that of a Postgres error).
pub(super) fn raise_sql(code: &str, msg: &str) -> Option<String> {
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // The message goes inside a dollar-quoted body as a standard string literal.
    let mut lit = String::new();
    crate::server::push_literal(&mut lit, &msg.replace('$', "＄"));
    Some(format!(
        "DO $shardbouncer$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {lit}; END$shardbouncer$"
    ))
}

/// The statement name of a Describe/Close body aimed at a statement ('S').
pub(super) fn describe_statement_name(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    if kind != b'S' {
        return None;
    }
    protocol::cstr(rest).map(|(n, _)| n)
}

/// A Parse of a named statement.
pub(super) fn is_named_parse(frame: &[u8]) -> bool {
    frame.first() == Some(&b'P') && frame.get(5).is_some_and(|&b| b != 0)
}

/// Named Parses then one Sync, nothing else.
pub(super) fn is_parse_only_batch(msgs: &[(u8, Bytes)]) -> bool {
    msgs.len() >= 2
        && msgs.last().is_some_and(|(t, _)| *t == b'S')
        && msgs[..msgs.len() - 1]
            .iter()
            .all(|(t, f)| *t == b'P' && is_named_parse(f))
}

/// A Close of a named statement.
pub(super) fn is_named_statement_close(frame: &[u8]) -> bool {
    frame.first() == Some(&b'C')
        && describe_statement_name(&frame[5..]).is_some_and(|n| !n.is_empty())
}

/// Query text of a 'Q' frame (without the trailing NUL).
pub(super) fn query_text(frame: &[u8]) -> &[u8] {
    let b = frame.get(5..).unwrap_or_default();
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// ASCII case-insensitive substring search (needle given in lowercase).
pub(super) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || hay.len() < needle.len() {
        return needle.is_empty();
    }
    let first = needle[0];
    let upper = first.to_ascii_uppercase();
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match memchr::memchr2(first, upper, &hay[i..=hay.len() - needle.len()]) {
            None => return false,
            Some(off) => {
                let at = i + off;
                if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_ci_finds_mixed_case() {
        assert!(contains_ci(b"SET Search_Path TO x", b"search_path"));
        assert!(!contains_ci(b"SELECT 1", b"search_path"));
        assert!(contains_ci(b"reset", b"reset"));
        assert!(!contains_ci(b"rese", b"reset"));
    }

    #[test]
    fn raise_sql_is_safe() {
        let s = raise_sql("0A000", "it's $x$ here \\").unwrap();
        assert!(s.contains("E'it''s ＄x＄ here \\\\'"), "{s}");
        assert!(raise_sql("0A0'0", "x").is_none());
    }
}
