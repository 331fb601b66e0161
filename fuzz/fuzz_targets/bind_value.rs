//! Bind parameter values decoded as tenant keys (`router::bind::param_key`), in
//! text and in binary, through shard maps of each key type.
//!
//! Invariants:
//! * never a panic; NULL and every other refusal say why;
//! * a text value is the key as its declared type reads it: as sent when the
//!   type is text or unspecified (the shard map normalises), the canonical
//!   decimal of the integer an integer type reads (refused if it reads none,
//!   or one out of its range), the lower-case hyphenated uuid a uuid reads;
//! * the same tenant lands on the same shard however the driver sends it: an
//!   int2/int4/int8 in binary (type declared or not) where its decimal text lands
//!   (and where "+n" or "00n" land, when the map accepts them), a binary uuid
//!   where its text forms land (upper or lower case, with or without hyphens or
//!   braces);
//! * a binary value of a type that cannot be a key, or of the wrong width, is
//!   refused, never guessed;
//! * the same bytes read as an array (`key = ANY($n)`, text or binary) give at
//!   most the allowed number of elements, each a valid key, and a text array's
//!   elements appear in its text; an element that fails stops the whole value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::bind::{param_array_keys, param_key};
use shardbouncer::router::shardmap::parse_uuid;
use shardbouncer::router::{ShardMap, TenantKey};

const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const UUID: u32 = 2950;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;
const OIDS: [u32; 8] = [0, INT2, INT4, INT8, UUID, TEXT, FLOAT8, NUMERIC];

fn map(text: &str) -> ShardMap {
    let names: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    ShardMap::parse(text, &names).expect("fuzz map")
}

fn shard(m: &ShardMap, key: &str) -> Option<usize> {
    m.route(&TenantKey::new(key.as_bytes())?)
        .ok()
        .map(|r| r.shard)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, v)) = data.split_first() else {
        return;
    };
    let oid = OIDS[(sel & 7) as usize];
    let format = ((sel >> 3) & 1) as i16;
    let mut els = Vec::new();
    let max = (sel >> 4) as usize;
    if param_array_keys(Some(v), format, 0, max, &mut |k| els.push(k)).is_ok() {
        assert!(els.len() <= max);
        for k in &els {
            assert!(!k.as_bytes().is_empty() && k.as_bytes().len() <= 63);
            if format == 0 {
                // Unescaped, an element's bytes are in the text (backslashes aside).
                let plain: Vec<u8> = k
                    .as_bytes()
                    .iter()
                    .copied()
                    .filter(|&c| c != b'\\')
                    .collect();
                let hay: Vec<u8> = v.iter().copied().filter(|&c| c != b'\\').collect();
                assert!(
                    plain.is_empty() || hay.windows(plain.len()).any(|w| w == &plain[..]),
                    "{k:?} not in {v:?}"
                );
            }
        }
    } else {
        assert!(els.len() <= max);
    }
    let refused = param_key(None, format, oid).expect_err("NULL is no tenant");
    assert!(!refused.is_empty());
    let key = match param_key(Some(v), format, oid) {
        Ok(k) => k,
        Err(why) => {
            assert!(!why.is_empty());
            if format == 0 && matches!(oid, 0 | TEXT) {
                // Text of a text type is refused only when it cannot be a key at all.
                assert!(TenantKey::new(v).is_none(), "text {v:?} refused: {why}");
            }
            if format == 0 && matches!(oid, INT2 | INT4 | INT8) {
                let n = TenantKey::new(v).and_then(|k| k.parse_pg_int8());
                let fits = n.is_some_and(|n| match oid {
                    INT2 => i16::try_from(n).is_ok(),
                    INT4 => i32::try_from(n).is_ok(),
                    _ => true,
                });
                assert!(!fits, "integer text {v:?} of type {oid} refused: {why}");
            }
            if format == 0 && oid == UUID {
                assert!(parse_uuid(v).is_none(), "uuid text {v:?} refused: {why}");
            }
            return;
        }
    };
    // A type that reads other text as the same number is never a key's type.
    assert!(
        !matches!(oid, FLOAT8 | NUMERIC) || format != 0,
        "text {v:?} of type {oid} routed"
    );
    if format == 0 {
        match oid {
            INT2 | INT4 | INT8 => {
                let n = TenantKey::new(v).and_then(|k| k.parse_pg_int8());
                assert_eq!(
                    Some(key.as_str().to_string()),
                    n.map(|n| n.to_string()),
                    "{v:?}"
                );
            }
            UUID => {
                let u = parse_uuid(v).expect("a uuid read");
                assert_eq!(parse_uuid(key.as_bytes()), Some(u));
                assert!(
                    !key.as_str().bytes().any(|c| c.is_ascii_uppercase()),
                    "{key}"
                );
                assert_eq!(key.as_str().len(), 36, "{key}");
            }
            _ => assert_eq!(key.as_bytes(), v, "text is the key as sent"),
        }
        return;
    }
    // Binary: only integers and uuids of their exact width, or text types.
    let int = match (oid, v.len()) {
        (INT8 | 0, 8) => Some(i64::from_be_bytes(v.try_into().unwrap())),
        (INT4 | 0, 4) => Some(i32::from_be_bytes(v.try_into().unwrap()) as i64),
        (INT2 | 0, 2) => Some(i16::from_be_bytes(v.try_into().unwrap()) as i64),
        _ => None,
    };
    let uuid = matches!((oid, v.len()), (UUID | 0, 16));
    assert!(
        int.is_some() || uuid || oid == TEXT,
        "binary oid {oid} of {} bytes accepted as {key}",
        v.len()
    );
    if let Some(n) = int {
        assert_eq!(key.as_str(), n.to_string());
        let maps = [
            map("version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"\n"),
            map("version = 1\nmethod = \"partition\"\nkey_type = \"bigint\"\n"),
            map(concat!(
                "version = 1\nmethod = \"range\"\n",
                "[[ranges]]\nfrom = -9223372036854775808\nto = -1\nshard = \"s0\"\n",
                "[[ranges]]\nfrom = 0\nto = 1000\nshard = \"s1\"\n",
                "[[ranges]]\nfrom = 1001\nto = 9223372036854775807\nshard = \"s2\"\n",
            )),
        ];
        let mut texts = vec![format!("{n:+}")];
        if n >= 0 {
            texts.push(format!("00{n}"));
        }
        for m in &maps {
            let want = m.route(&key).ok().map(|r| r.shard);
            assert!(want.is_some(), "int {n} must route");
            for t in &texts {
                if let Some(got) = shard(m, t) {
                    assert_eq!(Some(got), want, "{t:?} vs binary {n}");
                }
            }
        }
    }
    if uuid {
        let m = map("version = 1\nmethod = \"citus\"\nkey_type = \"uuid\"\n");
        let want = m.route(&key).ok().map(|r| r.shard);
        assert!(want.is_some(), "uuid {key} must route");
        let lower = key.as_str().to_string();
        let forms = [
            lower.to_uppercase(),
            lower.replace('-', ""),
            format!("{{{lower}}}"),
        ];
        for t in &forms {
            assert_eq!(shard(&m, t), want, "{t:?} vs binary {lower}");
        }
    }
});
