//! [`TenantKey`]: a tenant identifier stored inline, so extracting and
//! routing a key never touches the allocator on the hot path.

use std::fmt;

/// Maximum key length in bytes. 63 is Postgres' `NAMEDATALEN - 1`, which keeps
/// keys usable as identifiers and bounds the inline buffer.
pub const MAX_KEY_LEN: usize = 63;

/// A normalized tenant key, stored inline (max 63 bytes; longer keys are an error).
///
/// Invariants (enforced by every constructor): `1 <= len <= 63`, the bytes
/// are valid UTF-8 without NUL (Postgres text cannot hold NUL, so such a key
/// can never name a real tenant), and bytes past `len` are zero so the derived
/// `Eq` only sees the key itself. `Hash` hashes the key's bytes only (not the
/// 63-byte buffer): tenants are hashed a few times per transaction (the tenant
/// gate, the pool's lanes, the statistics).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TenantKey {
    buf: [u8; MAX_KEY_LEN],
    len: u8,
}

impl TenantKey {
    /// Builds a key from raw bytes. `None` if empty, longer than 63 bytes,
    /// not valid UTF-8, or containing a NUL byte.
    pub fn new(bytes: &[u8]) -> Option<TenantKey> {
        let mut b = KeyBuilder::new();
        for &c in bytes {
            b.push(c)?;
        }
        b.finish()
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The key as text (always valid UTF-8 by construction).
    pub fn as_str(&self) -> &str {
        // Cannot fail given the constructor invariant; the fallback avoids a
        // panic path anyway.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// `Some(i64)` if the key is a canonical decimal integer ("42", "-7"; not
    /// "042", not "+1", not "-0", not "1.0"). Canonical form matters because
    /// routing hashes integers as int8 and everything else as text: "042"
    /// must not silently land where 42 lives, nor where text "042" would.
    pub fn as_i64(&self) -> Option<i64> {
        parse_canonical_i64(self.as_bytes())
    }

    /// True if Postgres would read the key as an integer (`int8in` accepts
    /// surrounding whitespace, a `+` sign and leading zeros) but the key is not
    /// in canonical form ("042", "+1", " 42", "-0"), or if it is all digits but
    /// outside i64, or if it is a number of another form ("42.0", "4.2e1"). Such a key names tenant 42 for an integer column and the
    /// string "042" for a text column, so a router that cannot know the
    /// column type must refuse it rather than guess.
    pub fn is_ambiguous_integer(&self) -> bool {
        let b = self.as_bytes();
        // Most tenant keys answer at their first byte, or are canonical
        // integers of up to 18 digits (which fit i64): a routed transaction
        // asks this of its tenant up to eight times.
        match b.first() {
            Some(c) if c.is_ascii_alphabetic() => return false,
            Some(b'1'..=b'9') if b.len() <= 18 && b.iter().all(u8::is_ascii_digit) => return false,
            _ => {}
        }
        let t = trim_pg_space(b);
        let digits = match t.first() {
            Some(b'-') | Some(b'+') => &t[1..],
            _ => t,
        };
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            return self.as_i64().is_none();
        }
        // A number of another form (`42.0`, `4.2e1`, `.5`): a numeric
        // column reads it as a number (42), a text column as the text, and
        // an integer one refuses it (probe CW F4: routed as the text, to
        // another shard than 42's).
        numeric_syntax(digits)
    }

    /// Parses the key the way Postgres' `int8in` would (whitespace around,
    /// optional sign, leading zeros allowed). Used when the map declares the
    /// key column as bigint, so `'042'` routes exactly where the server will
    /// store it.
    pub fn parse_pg_int8(&self) -> Option<i64> {
        parse_pg_int8(self.as_bytes())
    }
}

/// Whether `b` (past its sign) is a number as Postgres's `numeric` reads
/// one: digits with a decimal point among or around them, and an exponent,
/// with at least one digit before the exponent.
fn numeric_syntax(b: &[u8]) -> bool {
    let mantissa = b
        .iter()
        .position(|c| matches!(c, b'e' | b'E'))
        .map_or(b, |e| &b[..e]);
    let digits = mantissa.iter().filter(|c| c.is_ascii_digit()).count();
    let points = mantissa.iter().filter(|c| **c == b'.').count();
    if digits == 0 || points > 1 || digits + points != mantissa.len() {
        return false;
    }
    match b.get(mantissa.len() + 1..) {
        None => true,
        Some(exp) => {
            let exp = match exp.first() {
                Some(b'-') | Some(b'+') => &exp[1..],
                _ => exp,
            };
            !exp.is_empty() && exp.iter().all(u8::is_ascii_digit)
        }
    }
}

/// [`TenantKey::parse_pg_int8`] of any text, however long: Postgres reads an
/// integer with a thousand leading zeros or blanks as well as a short one
/// (probe W: such a value was refused as a key past 63 bytes before it was
/// read as the integer it is).
pub(crate) fn parse_pg_int8(text: &[u8]) -> Option<i64> {
    let t = trim_pg_space(text);
    let (neg, digits) = match t.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let mut acc: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// Strips the bytes C `isspace` accepts, as `int8in` does.
pub(super) fn trim_pg_space(mut b: &[u8]) -> &[u8] {
    let sp = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    while b.first().is_some_and(sp) {
        b = &b[1..];
    }
    while b.last().is_some_and(sp) {
        b = &b[..b.len() - 1];
    }
    b
}

/// Parses `-?(0|[1-9][0-9]*)` into an i64 without overflow; `-0` is rejected.
pub(crate) fn parse_canonical_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate negatively so i64::MIN parses without overflow.
    let mut acc: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

impl std::hash::Hash for TenantKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Consistent with `Eq`: equal keys have equal bytes (the padding is zero).
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantKey({:?})", self.as_str())
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Incremental, allocation-free builder used by the token decoders.
pub(crate) struct KeyBuilder {
    key: TenantKey,
    ok: bool,
}

impl KeyBuilder {
    pub(crate) fn new() -> Self {
        KeyBuilder {
            key: TenantKey {
                buf: [0; MAX_KEY_LEN],
                len: 0,
            },
            ok: true,
        }
    }

    /// Appends a byte; `None` once the key would exceed 63 bytes or on NUL.
    pub(crate) fn push(&mut self, c: u8) -> Option<()> {
        let len = self.key.len as usize;
        if c == 0 || len >= MAX_KEY_LEN {
            self.ok = false;
            return None;
        }
        self.key.buf[len] = c;
        self.key.len += 1;
        Some(())
    }

    /// Appends a Unicode scalar value as UTF-8.
    pub(crate) fn push_char(&mut self, ch: char) -> Option<()> {
        let mut tmp = [0u8; 4];
        for &c in ch.encode_utf8(&mut tmp).as_bytes() {
            self.push(c)?;
        }
        Some(())
    }

    /// Validates and returns the key.
    pub(crate) fn finish(self) -> Option<TenantKey> {
        if !self.ok || self.key.len == 0 {
            return None;
        }
        std::str::from_utf8(self.key.as_bytes()).ok()?;
        Some(self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_validates() {
        assert!(TenantKey::new(b"").is_none());
        assert!(TenantKey::new(&[b'a'; 63]).is_some());
        assert!(TenantKey::new(&[b'a'; 64]).is_none());
        assert!(TenantKey::new(b"\xff").is_none());
        assert!(TenantKey::new(b"a\0b").is_none());
        let k = TenantKey::new("日本".as_bytes()).unwrap();
        assert_eq!(k.as_str(), "日本");
        assert_eq!(format!("{k}"), "日本");
        assert_eq!(format!("{k:?}"), "TenantKey(\"日本\")");
    }

    /// [`TenantKey::is_ambiguous_integer`] without its fast paths.
    fn ambiguous_the_long_way(k: &TenantKey) -> bool {
        let t = trim_pg_space(k.as_bytes());
        let digits = match t.first() {
            Some(b'-') | Some(b'+') => &t[1..],
            _ => t,
        };
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            return k.as_i64().is_none();
        }
        numeric_syntax(digits)
    }

    proptest! {
        /// The fast paths answer as the whole test does, for keys made of
        /// what the answer hinges on: digits, zeros, signs, spaces, letters,
        /// and lengths around 18 and 19 digits.
        #[test]
        fn the_fast_paths_of_is_ambiguous_integer_change_nothing(
            s in "[0-9 +a.e-]{0,3}[0-9]{0,20}[ a0-9.eE]{0,2}"
        ) {
            if let Some(k) = TenantKey::new(s.as_bytes()) {
                prop_assert_eq!(k.is_ambiguous_integer(), ambiguous_the_long_way(&k), "{:?}", s);
            }
        }

        /// Around i64's 19 digits.
        #[test]
        fn long_integers_are_ambiguous_as_the_whole_test_says(s in "-?[1-9][0-9]{16,19}") {
            let k = TenantKey::new(s.as_bytes()).unwrap();
            prop_assert_eq!(k.is_ambiguous_integer(), ambiguous_the_long_way(&k), "{:?}", s);
        }
    }

    #[test]
    fn canonical_integers() {
        let i = |s: &str| TenantKey::new(s.as_bytes()).unwrap().as_i64();
        assert_eq!(i("42"), Some(42));
        assert_eq!(i("-7"), Some(-7));
        assert_eq!(i("0"), Some(0));
        assert_eq!(i("9223372036854775807"), Some(i64::MAX));
        assert_eq!(i("-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "042",
            "+1",
            "-0",
            "1.0",
            " 1",
            "1 ",
            "-",
            "9223372036854775808",
            "-9223372036854775809",
            "1e3",
            "0x10",
            "٣",
        ] {
            assert_eq!(i(bad), None, "{bad}");
        }
        let amb = |s: &str| TenantKey::new(s.as_bytes()).unwrap().is_ambiguous_integer();
        assert!(amb("042"));
        assert!(amb("+1"));
        assert!(amb("-0"));
        assert!(amb("99999999999999999999"));
        // Around the fast path's 18 digits and i64's 19.
        assert!(!amb("123456789012345678"));
        assert!(!amb("9223372036854775807"));
        assert!(amb("9223372036854775808"));
        assert!(!amb("0"));
        assert!(!amb("42"));
        assert!(!amb("acme"));
        assert!(!amb("-"));
        // Numbers of other forms: a numeric column reads them as numbers
        // (probe CW F4).
        for n in [
            "1.0", "42.0", "4.2e1", "42e0", ".5", "5.", "-1.5E-3", " 42.0 ",
        ] {
            assert!(amb(n), "{n}");
        }
        for t in [
            "1.2.3",
            "4e",
            "e4",
            "1e+",
            ".",
            "1-2",
            "v1.0",
            "123e4567-e89b-12d3-a456-426614174000",
        ] {
            assert!(!amb(t), "{t}");
        }
        assert!(amb(" 42"));
        assert!(amb("42\n"));
        let p = |s: &str| TenantKey::new(s.as_bytes()).unwrap().parse_pg_int8();
        assert_eq!(p(" +042 "), Some(42));
        assert_eq!(p("-0"), Some(0));
        assert_eq!(p("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(p("9223372036854775808"), None);
        assert_eq!(p("4 2"), None);
        assert_eq!(p("+"), None);
    }

    #[test]
    fn equality_ignores_spare_buffer() {
        assert_eq!(TenantKey::new(b"ab"), TenantKey::new(b"ab"));
        assert_ne!(TenantKey::new(b"ab"), TenantKey::new(b"abc"));
    }

    proptest! {
        #[test]
        fn i64_roundtrip(v in any::<i64>()) {
            let s = v.to_string();
            prop_assert_eq!(TenantKey::new(s.as_bytes()).unwrap().as_i64(), Some(v));
        }

        #[test]
        fn new_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(k) = TenantKey::new(&b) {
                prop_assert_eq!(k.as_bytes(), &b[..]);
                prop_assert_eq!(k.as_str().as_bytes(), &b[..]);
            }
        }
    }
}
