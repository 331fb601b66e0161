//! Bind parameter values read as tenant keys (text, or binary int2/int4/int8,
//! text-like and uuid), the way Postgres would read them for the key column.

use super::key::{parse_pg_int8, TenantKey};
use super::shardmap::{parse_uuid, KeyType};

/// Well-known type OIDs a binary tenant value may have.
mod oid {
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const NAME: u32 = 19;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const UUID: u32 = 2950;
    pub const INT8_ARRAY: u32 = 1016;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const NAME_ARRAY: u32 = 1003;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const UUID_ARRAY: u32 = 2951;
}

/// [`param_key`]'s error for a binary value whose type neither the Parse nor a
/// Describe gave.
pub const UNSPECIFIED_BINARY: &str =
    "is binary with an unspecified type: declare its type in the Parse, or send it as text";

/// [`param_key`]'s error for a value whose declared type is not one a key is
/// read as (`numeric` `42.0` is tenant 42 to Postgres, but not the same text).
pub const NOT_A_KEY_TYPE: &str = "is of a type that cannot be a tenant key";

/// Whether a text value declared `oid` (0: left to the server, which reads it
/// as the key column's type) is read the way its text spells the key: an
/// integer, text-like or uuid type. Any other (`numeric`, `float8`, `money`,
/// a domain ...) may read other text as the same tenant, or the same text as
/// another, so it is refused rather than guessed.
fn key_type(oid: u32) -> bool {
    matches!(
        oid,
        0 | oid::INT2
            | oid::INT4
            | oid::INT8
            | oid::TEXT
            | oid::VARCHAR
            | oid::BPCHAR
            | oid::NAME
            | oid::UUID
    )
}

/// [`key_type`] for an array parameter of `key = ANY($n)`.
fn key_array_type(oid: u32) -> bool {
    matches!(
        oid,
        0 | oid::INT2_ARRAY
            | oid::INT4_ARRAY
            | oid::INT8_ARRAY
            | oid::TEXT_ARRAY
            | oid::VARCHAR_ARRAY
            | oid::BPCHAR_ARRAY
            | oid::NAME_ARRAY
            | oid::UUID_ARRAY
    )
}

/// Parameter types of a statement: declared in its Parse (raw big-endian OIDs,
/// 0 = unspecified) and, where the server described them, inferred.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamTypes<'a> {
    /// The Parse's parameter-type array, 4 bytes per OID.
    pub declared: &'a [u8],
    /// ParameterDescription OIDs, if the statement was described.
    pub described: &'a [u32],
}

/// Postgres's `FirstNormalObjectId`: OIDs below are built in.
pub const FIRST_NORMAL_OID: u32 = 16384;

impl ParamTypes<'_> {
    /// Whether the Parse declares a parameter of a type of the database's
    /// own (an OID past the built-in ones): Postgres reads a literal it
    /// coerces to that type (`'{x}' = $1`) through the type's input at the
    /// Parse (probe DI F4).
    pub fn declares_own_type(&self) -> bool {
        self.declared
            .chunks_exact(4)
            .any(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) >= FIRST_NORMAL_OID)
    }

    /// Declared, else described, type of parameter `i` (0-based); 0 when unknown.
    pub fn get(&self, i: usize) -> u32 {
        let declared = i
            .checked_mul(4)
            .and_then(|at| self.declared.get(at..at + 4))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        if declared != 0 {
            return declared;
        }
        self.described.get(i).copied().unwrap_or(0)
    }
}

/// Access to a Bind message's parameter values (implemented by the protocol's
/// Bind view; routing stays independent of the wire format).
pub trait ParamValues {
    /// Number of parameter values.
    fn count(&self) -> usize;
    /// Format code of parameter `i` (0 text, 1 binary).
    fn format(&self, i: usize) -> i16;
    /// Calls `f(i, value)` for each parameter in order (`None` = SQL NULL), in one
    /// pass over the message; stops early at a malformed value.
    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>));
}

/// Decode a parameter value (`None`: NULL) with format code `format` and type
/// `oid` as a tenant key. The error says what is wrong, for a 22023 message.
pub fn param_key(value: Option<&[u8]>, format: i16, oid: u32) -> Result<TenantKey, &'static str> {
    let Some(v) = value else {
        return Err("is NULL");
    };
    if format == 0 {
        if !key_type(oid) {
            return Err(NOT_A_KEY_TYPE);
        }
        // The value is what Postgres reads it as, in the type declared, not
        // the text sent: an integer type reads `042` as 42, and `$1::text`
        // of it is '42' (probe: routed as '042'); `character` drops trailing
        // spaces when compared or made text (probe: 'b   ' routed apart
        // from 'b'); a uuid reads upper case and braces as its one spelling.
        return match oid {
            oid::INT2 | oid::INT4 | oid::INT8 => {
                let n = parse_pg_int8(v).ok_or("is not an integer")?;
                let fits = match oid {
                    oid::INT2 => i16::try_from(n).is_ok(),
                    oid::INT4 => i32::try_from(n).is_ok(),
                    _ => true,
                };
                if !fits {
                    return Err("is out of range for its integer type");
                }
                int_key(n)
            }
            oid::BPCHAR => bpchar_key(v),
            oid::UUID => uuid_key(&parse_uuid(v).ok_or("is not a valid uuid")?),
            _ => TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8"),
        };
    }
    // Binary: the type decides the width. An unspecified type (0, and the
    // statement not described) is refused: Postgres infers it from the text
    // (`$1::text::int8` reads the bytes `42` as the text "42"; so does a text
    // column), so reading it by its width (two bytes: the int2 13362) routed
    // another tenant (probe).
    if oid == 0 {
        return Err(UNSPECIFIED_BINARY);
    }
    match (oid, v.len()) {
        (oid::INT8, 8) => int_key(i64::from_be_bytes(v.try_into().unwrap_or([0; 8]))),
        (oid::INT4, 4) => int_key(i32::from_be_bytes(v.try_into().unwrap_or([0; 4])) as i64),
        (oid::INT2, 2) => int_key(i16::from_be_bytes(v.try_into().unwrap_or([0; 2])) as i64),
        (oid::UUID, 16) => uuid_key(v.try_into().unwrap_or(&[0; 16])),
        (oid::BPCHAR, _) => bpchar_key(v),
        (oid::TEXT | oid::VARCHAR | oid::NAME, _) => {
            TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8")
        }
        _ => Err("has a binary format of a type that cannot be a tenant key"),
    }
}

/// [`param_key`], then read as `conv` reads it (`$1::int`). An integer
/// cast reads the text sent, however long: Postgres takes `'000…042'` (any
/// number of leading zeros or blanks) as 42, so the 63-byte limit of a key
/// applies to the integer's text, not to what was sent (probe W).
pub fn param_key_as(
    value: Option<&[u8]>,
    format: i16,
    oid: u32,
    conv: Option<Conv>,
) -> Result<TenantKey, &'static str> {
    if let (Some(Conv::Int), 0, Some(v)) = (conv, format, value) {
        if key_type(oid) && oid != oid::UUID {
            return int_key(parse_pg_int8(v).ok_or("is not an integer")?);
        }
    }
    let key = param_key(value, format, oid)?;
    conv.map_or(Ok(key), |c| c.apply(&key))
}

/// A cast that makes Postgres read a value as an integer or a uuid on its way
/// to the key column, whatever the value's own type (`'042'::int`,
/// `$1::uuid`, `ARRAY['042']::int[]::text[]`): the value the key column gets
/// is that integer's or uuid's, and its text is the one Postgres prints
/// (probe: `INSERT .. VALUES ('042'::int, ..)` into a text column stores
/// '42', and was routed as '042').
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Conv {
    /// An integer type (`int`, `int2`, `int4`, `int8`, `integer`, `bigint`,
    /// `smallint`).
    Int,
    /// `uuid`.
    Uuid,
}

impl Conv {
    /// `key` read as this type and printed: the key of the value Postgres
    /// makes of it. The error says why Postgres would refuse it (22023).
    pub fn apply(self, key: &TenantKey) -> Result<TenantKey, &'static str> {
        self.apply_text(key.as_bytes())
    }

    /// [`Conv::apply`] to text not yet made a key, of any length (see
    /// [`param_key_as`]).
    pub fn apply_text(self, text: &[u8]) -> Result<TenantKey, &'static str> {
        match self {
            Conv::Int => int_key(parse_pg_int8(text).ok_or("is not an integer")?),
            Conv::Uuid => uuid_key(&parse_uuid(text).ok_or("is not a valid uuid")?),
        }
    }
}

/// An integer's key: its canonical decimal text.
fn int_key(n: i64) -> Result<TenantKey, &'static str> {
    use std::io::Write;
    let mut buf = [0u8; 24];
    let mut w = &mut buf[..];
    let _ = write!(w, "{n}");
    let len = 24 - w.len();
    TenantKey::new(&buf[..len]).ok_or("is not a valid key")
}

/// A binary COPY field's key, read as the shard map's `key_type` says the
/// key column is (an integer's width tells int2, int4 or int8). The error
/// says what is wrong, for a 22023 message.
pub fn copy_binary_key(key_type: KeyType, v: &[u8]) -> Result<TenantKey, &'static str> {
    match (key_type, v.len()) {
        (KeyType::Bigint, 8) => int_key(i64::from_be_bytes(v.try_into().unwrap_or([0; 8]))),
        (KeyType::Bigint, 4) => int_key(i32::from_be_bytes(v.try_into().unwrap_or([0; 4])) as i64),
        (KeyType::Bigint, 2) => int_key(i16::from_be_bytes(v.try_into().unwrap_or([0; 2])) as i64),
        (KeyType::Uuid, 16) => uuid_key(v.try_into().unwrap_or(&[0; 16])),
        (KeyType::Text, _) => TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8"),
        (KeyType::Auto, _) => Err(
            "is in binary format, whose type the router knows only from the shard map: \
             set key_type (bigint, text or uuid) there, or send the rows as text or CSV",
        ),
        _ => Err("is not a value of the shard map's key_type"),
    }
}

/// A uuid's key: the lower-case hyphenated text Postgres prints.
pub(crate) fn uuid_key(u: &[u8; 16]) -> Result<TenantKey, &'static str> {
    let mut s = [0u8; 36];
    let hex = b"0123456789abcdef";
    let mut j = 0;
    for (k, b) in u.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = hex[(b >> 4) as usize];
        s[j + 1] = hex[(b & 15) as usize];
        j += 2;
    }
    TenantKey::new(&s).ok_or("is not a valid uuid")
}

/// A `character` value's key: without its trailing spaces, which Postgres
/// ignores in comparisons and drops when it makes the value text.
fn bpchar_key(v: &[u8]) -> Result<TenantKey, &'static str> {
    let end = v.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    TenantKey::new(&v[..end]).ok_or("is not 1 to 63 bytes of UTF-8")
}

/// [`param_array_keys`]'s error for an array past the unit's limit on tenant
/// values (refused as too complex, 54001, like as many literals).
pub const TOO_MANY_ELEMENTS: &str = "has more elements than one unit of work may name";

/// Decode an array parameter value (`None`: NULL) of `key = ANY($n)` declared
/// `oid` (0: unspecified), text or binary, calling `f` with every element as a
/// tenant key; at most `max` elements. The error says what is wrong, for a
/// 22023 message.
pub fn param_array_keys(
    value: Option<&[u8]>,
    format: i16,
    oid: u32,
    max: usize,
    f: &mut dyn FnMut(TenantKey),
) -> Result<(), &'static str> {
    let Some(v) = value else {
        return Err("is NULL");
    };
    if !key_array_type(oid) {
        return Err(NOT_A_KEY_TYPE);
    }
    let mut n = 0usize;
    let mut each = |k: TenantKey| {
        n += 1;
        if n > max {
            return Err(TOO_MANY_ELEMENTS);
        }
        f(k);
        Ok(())
    };
    if format == 0 {
        text_array(v, element_type(oid), &mut each)
    } else {
        binary_array(v, &mut each)
    }
}

/// The element type of a [`key_array_type`] (0: unspecified).
fn element_type(array: u32) -> u32 {
    match array {
        oid::INT2_ARRAY => oid::INT2,
        oid::INT4_ARRAY => oid::INT4,
        oid::INT8_ARRAY => oid::INT8,
        oid::TEXT_ARRAY => oid::TEXT,
        oid::VARCHAR_ARRAY => oid::VARCHAR,
        oid::BPCHAR_ARRAY => oid::BPCHAR,
        oid::NAME_ARRAY => oid::NAME,
        oid::UUID_ARRAY => oid::UUID,
        _ => 0,
    }
}

/// Postgres's array text form, one dimension: `{1,42}`, `{"a b",c}`; elements
/// unquoted (trimmed) or double-quoted, with backslash escapes.
fn text_array(
    v: &[u8],
    elem: u32,
    each: &mut dyn FnMut(TenantKey) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    use super::key::{trim_pg_space, KeyBuilder};
    use super::lexer::is_space;
    const MALFORMED: &str = "is not an array of tenant keys";
    // Postgres's array_in skips its own blanks, the vertical tab among them
    // (Rust's ASCII whitespace has none; probe I: `{b\x0b}` was routed as
    // `b\x0b`, to another shard, where Postgres read `b`).
    let blank = |c: &u8| is_space(*c);
    let v = trim_pg_space(v);
    let inner = v
        .strip_prefix(b"{")
        .and_then(|r| r.strip_suffix(b"}"))
        .ok_or(MALFORMED)?;
    if trim_pg_space(inner).is_empty() {
        return Ok(());
    }
    let mut i = 0;
    loop {
        while inner.get(i).is_some_and(blank) {
            i += 1;
        }
        let mut k = KeyBuilder::new();
        match inner.get(i) {
            Some(b'{') => return Err("is a multi-dimensional array"),
            Some(b'"') => {
                i += 1;
                loop {
                    match inner.get(i) {
                        None => return Err(MALFORMED),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            i += 1;
                            k.push(*inner.get(i).ok_or(MALFORMED)?).ok_or(MALFORMED)?;
                        }
                        Some(&c) => k.push(c).ok_or(MALFORMED)?,
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => {
                let start = i;
                while inner.get(i).is_some_and(|&c| c != b',') {
                    if matches!(inner[i], b'"' | b'{' | b'}' | b'\\') {
                        return Err(MALFORMED);
                    }
                    i += 1;
                }
                let el = trim_pg_space(&inner[start..i]);
                if el.eq_ignore_ascii_case(b"NULL") {
                    return Err("has a NULL element");
                }
                for &c in el {
                    k.push(c).ok_or(MALFORMED)?;
                }
            }
        }
        // Each element is read as its type reads it (see [`param_key`]).
        let k = k.finish().ok_or(MALFORMED)?;
        each(param_key(Some(k.as_bytes()), 0, elem)?)?;
        while inner.get(i).is_some_and(blank) {
            i += 1;
        }
        match inner.get(i) {
            None => return Ok(()),
            Some(b',') => i += 1,
            Some(_) => return Err(MALFORMED),
        }
    }
}

/// Postgres's binary array form (`array_send`): dimensions, element type, then
/// each element with its length; elements decoded by their type as binary keys.
fn binary_array(
    v: &[u8],
    each: &mut dyn FnMut(TenantKey) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    const MALFORMED: &str = "is not a binary array of tenant keys";
    let mut at = 0usize;
    let int = |at: &mut usize| -> Result<i32, &'static str> {
        let b = v.get(*at..*at + 4).ok_or(MALFORMED)?;
        *at += 4;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let ndim = int(&mut at)?;
    let _flags = int(&mut at)?;
    let elem = int(&mut at)? as u32;
    if !(0..=6).contains(&ndim) {
        return Err(MALFORMED);
    }
    let mut total: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = int(&mut at)?;
        let _lbound = int(&mut at)?;
        let len = usize::try_from(len).map_err(|_| MALFORMED)?;
        // Every element takes at least its 4-byte length: a count the value
        // cannot hold is malformed (and cannot make us loop long).
        total = total
            .checked_mul(len)
            .filter(|&t| t <= v.len() / 4)
            .ok_or(MALFORMED)?;
    }
    for _ in 0..total {
        let len = int(&mut at)?;
        if len < 0 {
            return Err("has a NULL element");
        }
        let el = v.get(at..at + len as usize).ok_or(MALFORMED)?;
        at += len as usize;
        each(param_key(Some(el), 1, elem)?)?;
    }
    if at != v.len() {
        return Err(MALFORMED);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_params_decode() {
        let k = |v: &[u8], oid| param_key(Some(v), 1, oid).map(|k| k.as_str().to_string());
        assert_eq!(k(&(-42i64).to_be_bytes(), 20).unwrap(), "-42");
        // Of unspecified type: Postgres infers it from the statement, so the
        // width says nothing (b"42" is the text "42" to a text column).
        assert_eq!(
            param_key(Some(&7i32.to_be_bytes()), 1, 0),
            Err(UNSPECIFIED_BINARY)
        );
        assert_eq!(param_key(Some(b"42"), 1, 0), Err(UNSPECIFIED_BINARY));
        assert_eq!(k(&(-3i16).to_be_bytes(), 21).unwrap(), "-3");
        assert_eq!(
            k(&[0x12; 16], 2950).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
        assert_eq!(param_key(None, 1, 0), Err("is NULL"));
        assert!(k(&7i32.to_be_bytes(), 700).is_err()); // float4 cannot be a key
        assert!(k(b"abc", 0).is_err()); // binary of unknown type and odd width
        assert_eq!(k(b"abc", 25).unwrap(), "abc");
        assert_eq!(param_key(Some(b"42"), 0, 20).unwrap().as_str(), "42");
        assert!(param_key(Some(b""), 0, 25).is_err());
    }

    /// A text value is the key Postgres reads in its declared type: probes
    /// routed `042` declared int4 (tenant 42, and '42' as text) as "042", and
    /// `'b   '` declared `character` (tenant 'b') as "b   ".
    #[test]
    fn text_values_are_read_as_their_declared_type_reads_them() {
        let k = |v: &[u8], oid| param_key(Some(v), 0, oid).map(|k| k.as_str().to_string());
        for oid in [20, 21, 23] {
            for v in [&b"042"[..], b"+42", b" 42 ", b"42", b"0042"] {
                assert_eq!(k(v, oid).as_deref(), Ok("42"), "{oid} {v:?}");
            }
            assert_eq!(k(b"-07", oid).as_deref(), Ok("-7"));
            assert!(k(b"4.2e1", oid).is_err(), "{oid}");
            assert!(k(b"forty", oid).is_err(), "{oid}");
        }
        assert!(k(b"70000", 21).is_err(), "int2 range");
        assert!(k(b"3000000000", 23).is_err(), "int4 range");
        assert_eq!(k(b"3000000000", 20).as_deref(), Ok("3000000000"));
        // However long the text: the limit is the integer's (probe W).
        let long = format!("{}042", "0".repeat(100));
        assert_eq!(k(long.as_bytes(), 23).as_deref(), Ok("42"));
        let long = format!("{}42{}", " ".repeat(70), " ".repeat(70));
        assert_eq!(k(long.as_bytes(), 20).as_deref(), Ok("42"));
        // Text types other than `character` keep every byte.
        for oid in [0, 25, 1043, 19] {
            assert_eq!(k(b"042 ", oid).as_deref(), Ok("042 "), "{oid}");
        }
        assert_eq!(k(b"b   ", 1042).as_deref(), Ok("b"));
        assert_eq!(k(b" b", 1042).as_deref(), Ok(" b"));
        assert!(k(b"   ", 1042).is_err(), "empty once trimmed");
        assert_eq!(
            param_key(Some(b"b  "), 1, 1042).map(|k| k.as_str().to_string()),
            Ok("b".to_string())
        );
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for v in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
            canonical,
        ] {
            assert_eq!(k(v.as_bytes(), 2950).as_deref(), Ok(canonical), "{v}");
        }
        // Array elements likewise, by the array's element type.
        let arr = |v: &[u8], oid| {
            let mut out = Vec::new();
            param_array_keys(Some(v), 0, oid, 10, &mut |k| {
                out.push(k.as_str().to_string())
            })
            .map(|()| out)
        };
        assert_eq!(arr(b"{042, +7}", 1016), Ok(vec!["42".into(), "7".into()]));
        assert_eq!(arr(b"{\"b  \",c}", 1014), Ok(vec!["b".into(), "c".into()]));
        assert_eq!(arr(b"{042}", 1009), Ok(vec!["042".into()]));
    }

    #[test]
    fn text_values_of_types_that_read_other_text_as_the_key_are_refused() {
        // Probe: `numeric` '42.0' and `float8` '4.2e1' are tenant 42 to
        // Postgres but were routed as the text "42.0" (another shard).
        for oid in [1700, 700, 701, 790, 16, 114, 3802, 26] {
            assert_eq!(
                param_key(Some(b"42.0"), 0, oid),
                Err(NOT_A_KEY_TYPE),
                "{oid}"
            );
        }
        for oid in [0, 20, 21, 23, 25, 1043, 1042, 19] {
            assert!(param_key(Some(b"42"), 0, oid).is_ok(), "{oid}");
        }
        // A uuid must be one (Postgres refuses '42'::uuid too).
        assert!(param_key(Some(b"42"), 0, 2950).is_err());
        // Arrays: `numeric[]` (1231) and `float8[]` (1022) likewise.
        for oid in [1231, 1022, 1021] {
            let r = param_array_keys(Some(b"{42.0}"), 0, oid, 10, &mut |_| {});
            assert_eq!(r, Err(NOT_A_KEY_TYPE), "{oid}");
        }
        for oid in [0, 1016, 1007, 1005, 1009, 1015, 1014, 1003] {
            assert!(
                param_array_keys(Some(b"{42}"), 0, oid, 10, &mut |_| {}).is_ok(),
                "{oid}"
            );
        }
    }

    fn keys(v: &[u8], format: i16) -> Result<Vec<String>, &'static str> {
        let mut out = Vec::new();
        param_array_keys(Some(v), format, 0, 100, &mut |k| {
            out.push(k.as_str().to_string())
        })?;
        Ok(out)
    }

    #[test]
    fn text_arrays_decode_every_element() {
        assert_eq!(keys(b"{1,42}", 0).unwrap(), ["1", "42"]);
        assert_eq!(keys(b" { 1 , 42 } ", 0).unwrap(), ["1", "42"]);
        // Postgres's blanks, the vertical tab among them (probe I).
        assert_eq!(keys(b"{b\x0b}", 0).unwrap(), ["b"]);
        assert_eq!(
            keys(b"\x0b{\x0bb\x0c,\x0b\"c\"\x0b}\x0b", 0).unwrap(),
            ["b", "c"]
        );
        assert_eq!(
            keys(br#"{"a b","c\"d",e}"#, 0).unwrap(),
            ["a b", "c\"d", "e"]
        );
        assert_eq!(keys(b"{}", 0).unwrap(), Vec::<String>::new());
        for bad in [
            &b"{1,NULL}"[..],
            b"{{1,2},{3,4}}",
            b"[1:2]={1,2}",
            b"1,2",
            b"{1,,2}",
            b"{\"a}",
            b"{a\"b}",
        ] {
            assert!(keys(bad, 0).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            param_array_keys(None, 0, 0, 10, &mut |_| {}),
            Err("is NULL")
        );
        assert!(keys(format!("{{{}}}", vec!["1"; 101].join(",")).as_bytes(), 0).is_err());
    }

    fn binary(elem: u32, dims: &[i32], els: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&elem.to_be_bytes());
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
            v.extend_from_slice(&1i32.to_be_bytes());
        }
        for e in els {
            match e {
                Some(b) => {
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        v
    }

    #[test]
    fn binary_arrays_decode_every_element() {
        let (a, b) = (7i64.to_be_bytes(), (-42i64).to_be_bytes());
        assert_eq!(
            keys(&binary(20, &[2], &[Some(&a), Some(&b)]), 1).unwrap(),
            ["7", "-42"]
        );
        assert_eq!(
            keys(&binary(25, &[1], &[Some(b"acme")]), 1).unwrap(),
            ["acme"]
        );
        // Two dimensions: every element counts.
        let one = 1i32.to_be_bytes();
        let four: [Option<&[u8]>; 4] = [Some(&one); 4];
        assert_eq!(keys(&binary(23, &[2, 2], &four), 1).unwrap().len(), 4);
        assert_eq!(keys(&binary(23, &[], &[]), 1).unwrap().len(), 0);
        assert!(keys(&binary(20, &[2], &[Some(&a), None]), 1).is_err());
        assert!(keys(&binary(700, &[1], &[Some(&one)]), 1).is_err()); // float4
        let mut trailing = binary(23, &[1], &[Some(&one)]);
        trailing.push(0);
        assert!(keys(&trailing, 1).is_err());
        // A dimension the value cannot hold is malformed, not a long loop.
        assert!(keys(&binary(23, &[i32::MAX, i32::MAX], &[]), 1).is_err());
        assert!(keys(&binary(23, &[-1], &[]), 1).is_err());
        assert!(keys(&[0, 0, 0, 1], 1).is_err());
    }

    #[test]
    fn types_prefer_declared() {
        let declared = [0, 0, 0, 0, 0, 0, 0, 23];
        let t = ParamTypes {
            declared: &declared,
            described: &[20, 25, 16],
        };
        assert_eq!((t.get(0), t.get(1), t.get(2), t.get(3)), (20, 23, 16, 0));
        assert_eq!(t.get(usize::MAX), 0);
    }
}
