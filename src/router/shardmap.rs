//! Shard map: which shard owns a tenant.
//!
//! Parsed from a small TOML file (see [`ShardMap::parse`]) and validated
//! strictly, because a map that parses "mostly" is a map that mis-routes:
//! unknown fields, unknown shard names, overlapping or gapped ranges and
//! partial hash-range coverage are all errors. Lookups never allocate.

use super::hash::{
    citus_shard_index, hashint8, hashint8extended, hashtext, hashtextextended, partition_row_hash,
    uuid_hash, uuid_hash_extended, PARTITION_SEED,
};
use super::key::TenantKey;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// What a new map moved ([`ShardMap::moved_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// These tenants (canonical keys; none if the list is empty).
    Tenants(Vec<TenantKey>),
    /// Any tenant may have moved.
    All,
}

/// How tenants are placed on shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Citus hash distribution: the type's 32-bit hash picks one of n uniform
    /// int32 ranges (or explicit `[[hash_ranges]]`).
    Citus,
    /// Native `PARTITION BY HASH` with `MODULUS n`: shard i holds remainder i.
    Partition,
    /// Explicit inclusive integer key ranges.
    Range,
}

/// How a key is turned into a hash (the distribution column's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Canonical integers hash as int8, everything else as text. Keys that
    /// Postgres could read either way ("042", " 42") are refused. Note this
    /// guess is wrong for a *text* column holding numeric-looking tenants:
    /// declare `key_type = "text"` for those.
    Auto,
    /// bigint/int column: keys must parse as int8 (Postgres `int8in` rules).
    Bigint,
    /// text/varchar column: keys hash as text, always.
    Text,
    /// uuid column: keys must be UUIDs.
    Uuid,
}

/// Why a key went to its shard (for logs and the admin console).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// Listed in `[tenants]`.
    Override,
    /// citus: hash value + shard (or hash range) index; partition: row hash
    /// (as i64) + remainder.
    Hash {
        /// The hash the decision was made on.
        hash: i64,
        /// Citus shard / hash-range index, or the partition remainder.
        index: u32,
        /// The Postgres function that computes `hash` (`hashtext`,
        /// `hashint8`, `uuid_hash`, and their `extended` forms): the key
        /// type decides it, not how the key looks.
        func: &'static str,
    },
    /// The integer range that contains the key.
    Range {
        /// Inclusive lower bound.
        from: i64,
        /// Inclusive upper bound.
        to: i64,
    },
}

/// The outcome of routing one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index into the database's shard list.
    pub shard: usize,
    /// Why.
    pub reason: RouteReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IntRange {
    from: i64,
    to: i64,
    shard: usize,
}

/// A validated shard map for one database.
#[derive(Debug, Clone)]
pub struct ShardMap {
    /// Map format version (positive integer).
    pub version: i64,
    /// Placement method.
    pub method: Method,
    key_type: KeyType,
    shard_names: Vec<String>,
    /// Integer ranges (method = range) sorted by `from`, contiguous.
    ranges: Vec<IntRange>,
    /// Explicit Citus hash ranges sorted, covering all of int32 (empty =
    /// uniform split).
    hash_ranges: Vec<IntRange>,
    overrides: HashMap<String, usize>,
    overrides_per_shard: Vec<usize>,
    /// `[tenant_limits]`: per-tenant caps on concurrent transactions per shard
    /// pool, by canonical key (they override the database's `max_active`).
    tenant_limits: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    version: Option<toml::Value>,
    method: Option<String>,
    key_type: Option<String>,
    ranges: Option<Vec<RawRange>>,
    hash_ranges: Option<Vec<RawHashRange>>,
    tenants: Option<BTreeMap<String, String>>,
    tenant_limits: Option<BTreeMap<String, i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: i64,
    to: i64,
    shard: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHashRange {
    min: i64,
    max: i64,
    shard: String,
}

fn shard_index(names: &[String], name: &str, ctx: &dyn Fn() -> String) -> Result<usize, String> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| format!("unknown shard name {name:?} in {}", ctx()))
}

/// Sorts, then checks ranges are non-empty, non-overlapping and contiguous.
fn check_ranges(ranges: &mut [IntRange], what: &str) -> Result<(), String> {
    for r in ranges.iter() {
        if r.from > r.to {
            return Err(format!("{what} {}..={} is empty (from > to)", r.from, r.to));
        }
    }
    ranges.sort_by_key(|r| r.from);
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.from <= a.to {
            return Err(format!(
                "overlapping {what}s {}..={} and {}..={}",
                a.from, a.to, b.from, b.to
            ));
        }
        // a.to < b.from here, so a.to + 1 cannot overflow.
        if b.from != a.to + 1 {
            return Err(format!(
                "gap between {what}s {}..={} and {}..={} ({}..={} is not covered)",
                a.from,
                a.to,
                b.from,
                b.to,
                a.to + 1,
                b.from - 1
            ));
        }
    }
    Ok(())
}

/// Whether `key` is its own canonical spelling under `key_type` (see
/// [`canonical_key`]): any text key, and an `auto` key unless it is an
/// integer that is not canonical. Asked without spelling the key out as a
/// string, which [`ShardMap::canonical_tenant`] does not need.
fn spelled_canonically(key_type: KeyType, key: &TenantKey) -> bool {
    match key_type {
        KeyType::Text => true,
        KeyType::Auto => !key.is_ambiguous_integer(),
        KeyType::Bigint | KeyType::Uuid => false,
    }
}

/// The spelling of `key` that overrides are looked up by: the value as Postgres
/// reads it for the declared key type (`02002` and `+2002` are bigint 2002; an
/// upper-case or braced uuid is the lower-case hyphenated one). Under `auto`, an
/// integer-looking key that is not canonical is refused (its type is unknown).
pub fn canonical_key(
    key_type: KeyType,
    key: &TenantKey,
) -> Result<std::borrow::Cow<'_, str>, String> {
    use std::borrow::Cow;
    if spelled_canonically(key_type, key) {
        return Ok(Cow::Borrowed(key.as_str()));
    }
    match key_type {
        // An ambiguous `auto` key (a text key is always spelled canonically).
        KeyType::Text | KeyType::Auto => Err(format!(
            "tenant key '{key}' is not a canonical integer; refusing to guess its type"
        )),
        KeyType::Bigint => key
            .parse_pg_int8()
            .map(|v| Cow::Owned(v.to_string()))
            .ok_or_else(|| format!("tenant key '{key}' is not a bigint")),
        KeyType::Uuid => {
            let b = parse_uuid(key.as_bytes())
                .ok_or_else(|| format!("tenant key {key:?} is not a uuid"))?;
            let mut s = String::with_capacity(36);
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                s.push_str(&format!("{byte:02x}"));
            }
            Ok(Cow::Owned(s))
        }
    }
}

fn key_type_name(k: KeyType) -> &'static str {
    match k {
        KeyType::Auto => "auto",
        KeyType::Bigint => "bigint",
        KeyType::Text => "text",
        KeyType::Uuid => "uuid",
    }
}

/// Parses a UUID in the forms Postgres' `uuid_in` accepts: 32 hex digits,
/// optionally in braces, with an optional hyphen after any group of four
/// digits.
pub fn parse_uuid(s: &[u8]) -> Option<[u8; 16]> {
    let s = match (s.first(), s.last()) {
        (Some(b'{'), Some(b'}')) if s.len() >= 2 => &s[1..s.len() - 1],
        _ => s,
    };
    let mut out = [0u8; 16];
    let mut n = 0usize; // hex digits consumed
    let mut i = 0usize;
    while n < 32 {
        let d = (*s.get(i)? as char).to_digit(16)? as u8;
        out[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
        n += 1;
        i += 1;
        if n % 4 == 0 && n < 32 && s.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    (i == s.len()).then_some(out)
}

impl ShardMap {
    /// Parse + validate against the database's shard names (order = shard
    /// index order used by citus/partition hashing).
    ///
    /// Format:
    /// ```toml
    /// version = 1
    /// method = "citus"        # citus | partition | range
    /// key_type = "auto"       # optional: auto | bigint | text | uuid
    /// [[ranges]]              # method = range only; inclusive, contiguous
    /// from = 0
    /// to = 9999
    /// shard = "s0"
    /// [[hash_ranges]]         # method = citus only; must cover all of int32
    /// min = -2147483648
    /// max = 2147483647
    /// shard = "s0"
    /// [tenants]               # overrides, always win
    /// "42" = "s1"
    /// ```
    pub fn parse(text: &str, shard_names: &[String]) -> Result<ShardMap, String> {
        if shard_names.is_empty() {
            return Err("database has no shards".into());
        }
        for (i, n) in shard_names.iter().enumerate() {
            if shard_names[..i].contains(n) {
                return Err(format!("duplicate shard name {n:?}"));
            }
        }
        let raw: RawMap = toml::from_str(text).map_err(|e| format!("invalid shard map: {e}"))?;
        let version = match raw.version {
            None => return Err("version missing (expected `version = 1`)".into()),
            Some(toml::Value::Integer(v)) if v > 0 => v,
            Some(v) => return Err(format!("version must be a positive integer, got {v}")),
        };
        let method = match raw.method.as_deref() {
            None => return Err("method missing (expected citus, partition or range)".into()),
            Some("citus") => Method::Citus,
            Some("partition") => Method::Partition,
            Some("range") => Method::Range,
            Some(m) => {
                return Err(format!(
                    "unknown method {m:?} (expected citus, partition or range)"
                ))
            }
        };
        let key_type = match raw.key_type.as_deref() {
            None | Some("auto") => KeyType::Auto,
            Some("bigint") => KeyType::Bigint,
            Some("text") => KeyType::Text,
            Some("uuid") => KeyType::Uuid,
            Some(k) => {
                return Err(format!(
                    "unknown key_type {k:?} (expected auto, bigint, text or uuid)"
                ))
            }
        };

        let mut ranges = Vec::new();
        match (method, raw.ranges) {
            (Method::Range, None) => return Err("method = \"range\" but no [[ranges]]".into()),
            (Method::Range, Some(rs)) if rs.is_empty() => {
                return Err("method = \"range\" but no [[ranges]]".into())
            }
            (Method::Range, Some(rs)) => {
                for r in rs {
                    let shard = shard_index(shard_names, &r.shard, &|| {
                        format!("[[ranges]] {}..={}", r.from, r.to)
                    })?;
                    ranges.push(IntRange {
                        from: r.from,
                        to: r.to,
                        shard,
                    });
                }
                check_ranges(&mut ranges, "range")?;
                if matches!(key_type, KeyType::Text | KeyType::Uuid) {
                    return Err(
                        "method = \"range\" needs integer keys (key_type auto or bigint)".into(),
                    );
                }
            }
            (_, Some(_)) => return Err("[[ranges]] is only valid with method = \"range\"".into()),
            (_, None) => {}
        }

        let mut hash_ranges = Vec::new();
        match (method, raw.hash_ranges) {
            (Method::Citus, Some(hrs)) => {
                if hrs.is_empty() {
                    return Err("[[hash_ranges]] is empty".into());
                }
                for r in hrs {
                    for v in [r.min, r.max] {
                        if v < i32::MIN as i64 || v > i32::MAX as i64 {
                            return Err(format!(
                                "[[hash_ranges]] bound {v} is outside the int32 hash space"
                            ));
                        }
                    }
                    let shard = shard_index(shard_names, &r.shard, &|| {
                        format!("[[hash_ranges]] {}..={}", r.min, r.max)
                    })?;
                    hash_ranges.push(IntRange {
                        from: r.min,
                        to: r.max,
                        shard,
                    });
                }
                check_ranges(&mut hash_ranges, "hash range")?;
                let (lo, hi) = (hash_ranges[0].from, hash_ranges[hash_ranges.len() - 1].to);
                if lo != i32::MIN as i64 || hi != i32::MAX as i64 {
                    return Err(format!(
                        "[[hash_ranges]] cover {lo}..={hi} but must cover the whole int32 hash space {}..={}",
                        i32::MIN,
                        i32::MAX
                    ));
                }
            }
            (_, Some(_)) => {
                return Err("[[hash_ranges]] is only valid with method = \"citus\"".into())
            }
            (_, None) => {}
        }

        let mut overrides = HashMap::new();
        let mut overrides_per_shard = vec![0; shard_names.len()];
        for (tenant, shard) in raw.tenants.unwrap_or_default() {
            let Some(key) = TenantKey::new(tenant.as_bytes()) else {
                return Err(format!(
                    "invalid tenant key {tenant:?} in [tenants] (must be 1..=63 bytes, no NUL)"
                ));
            };
            // Overrides are stored in the key type's canonical spelling, so every
            // spelling Postgres reads as the same value ('02002', ' 2002', upper-case
            // uuids) finds them.
            let canonical =
                canonical_key(key_type, &key).map_err(|e| format!("[tenants] {tenant:?}: {e}"))?;
            let idx = shard_index(shard_names, &shard, &|| format!("[tenants] {tenant:?}"))?;
            overrides_per_shard[idx] += 1;
            if overrides
                .insert(canonical.into_owned(), idx)
                .is_some_and(|old| old != idx)
            {
                return Err(format!(
                    "[tenants] {tenant:?} is the same {} tenant as another entry, on another shard",
                    key_type_name(key_type)
                ));
            }
        }

        let mut tenant_limits = HashMap::new();
        for (tenant, limit) in raw.tenant_limits.unwrap_or_default() {
            let key = TenantKey::new(tenant.as_bytes()).ok_or_else(|| {
                format!("invalid tenant key {tenant:?} in [tenant_limits] (must be 1..=63 bytes, no NUL)")
            })?;
            let canonical = canonical_key(key_type, &key)
                .map_err(|e| format!("[tenant_limits] {tenant:?}: {e}"))?;
            let limit = usize::try_from(limit).map_err(|_| {
                format!("[tenant_limits] {tenant:?}: a limit is a count of transactions (0 = no cap), got {limit}")
            })?;
            if tenant_limits
                .insert(canonical.into_owned(), limit)
                .is_some_and(|old| old != limit)
            {
                return Err(format!(
                    "[tenant_limits] {tenant:?} is the same {} tenant as another entry, with another limit",
                    key_type_name(key_type)
                ));
            }
        }

        Ok(ShardMap {
            version,
            method,
            key_type,
            shard_names: shard_names.to_vec(),
            ranges,
            hash_ranges,
            overrides,
            overrides_per_shard,
            tenant_limits,
        })
    }

    /// A trivial map used when a database has no shard_map file: everything hashes citus-style over the shards.
    pub fn default_for(shard_names: &[String]) -> ShardMap {
        ShardMap {
            version: 1,
            method: Method::Citus,
            key_type: KeyType::Auto,
            shard_names: shard_names.to_vec(),
            ranges: Vec::new(),
            hash_ranges: Vec::new(),
            overrides: HashMap::new(),
            overrides_per_shard: vec![0; shard_names.len()],
            tenant_limits: HashMap::new(),
        }
    }

    /// The key type hashing assumes.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Shard names in index order.
    pub fn shard_names(&self) -> &[String] {
        &self.shard_names
    }

    /// Which tenants `new` places on another shard (by name) than `self`
    /// does. Only overrides are compared one by one; any other change to the
    /// placement (method, key type, ranges, hash ranges, the shards or their
    /// order) may move any tenant.
    pub fn moved_in(&self, new: &ShardMap) -> Moved {
        if self.method != new.method
            || self.key_type != new.key_type
            || self.shard_names != new.shard_names
            || self.ranges != new.ranges
            || self.hash_ranges != new.hash_ranges
        {
            return Moved::All;
        }
        let mut keys: Vec<TenantKey> = self
            .overrides
            .keys()
            .chain(new.overrides.keys())
            .filter_map(|k| TenantKey::new(k.as_bytes()))
            .filter(|k| self.place(k) != new.place(k))
            .collect();
        keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        keys.dedup();
        Moved::Tenants(keys)
    }

    /// The name of the shard `key` is placed on (`None`: not routable).
    pub fn place(&self, key: &TenantKey) -> Option<&str> {
        self.route(key)
            .ok()
            .map(|r| self.shard_names[r.shard].as_str())
    }

    /// Number of `[tenants]` overrides.
    pub fn overrides_len(&self) -> usize {
        self.overrides.len()
    }

    /// Number of `[[ranges]]` (method = range).
    pub fn ranges_len(&self) -> usize {
        self.ranges.len()
    }

    /// Override count per shard (for the admin console).
    pub fn overrides_for(&self, shard: usize) -> usize {
        self.overrides_per_shard.get(shard).copied().unwrap_or(0)
    }

    /// Integer value of `key` for int8 hashing / ranges, per key type.
    fn int_key(&self, key: &TenantKey) -> Result<Option<i64>, String> {
        match self.key_type {
            KeyType::Auto => {
                if key.is_ambiguous_integer() {
                    return Err(format!(
                        "tenant key '{key}' is not a canonical integer; refusing to guess its type"
                    ));
                }
                Ok(key.as_i64())
            }
            KeyType::Bigint => key
                .parse_pg_int8()
                .map(Some)
                .ok_or_else(|| format!("tenant key '{key}' is not a bigint")),
            KeyType::Text | KeyType::Uuid => Ok(None),
        }
    }

    fn uuid_key(key: &TenantKey) -> Result<[u8; 16], String> {
        parse_uuid(key.as_bytes()).ok_or_else(|| format!("tenant key {key:?} is not a uuid"))
    }

    /// `key` in its canonical spelling under this map's key type (`042` is
    /// bigint `42`), the one tenant every spelling names: what the tenant gate,
    /// the pool's lanes and the console compare. `Err` when the key type cannot
    /// read the key (it is not a tenant of this map).
    pub fn canonical_tenant(&self, key: &TenantKey) -> Result<TenantKey, String> {
        // The key itself, without making it a string first: a routed
        // transaction asks this up to six times.
        if spelled_canonically(self.key_type, key) {
            return Ok(*key);
        }
        Ok(match canonical_key(self.key_type, key)? {
            std::borrow::Cow::Borrowed(_) => *key,
            std::borrow::Cow::Owned(c) => TenantKey::new(c.as_bytes()).unwrap_or(*key),
        })
    }

    /// The `[tenant_limits]` entry of `key`, if the map has one (`Some(0)`: no
    /// cap for this tenant, whatever the database's default).
    pub fn tenant_limit(&self, key: &TenantKey) -> Option<usize> {
        if self.tenant_limits.is_empty() {
            return None;
        }
        let c = canonical_key(self.key_type, key).ok()?;
        self.tenant_limits.get(c.as_ref()).copied()
    }

    /// Route a key. `Err(reason)` when the key cannot be placed without
    /// guessing: method = range and no range covers the key or the key isn't
    /// an integer; a key that does not fit the declared `key_type`; an
    /// ambiguous integer-looking key under `key_type = "auto"`; or a map with
    /// no shards.
    pub fn route(&self, key: &TenantKey) -> Result<Route, String> {
        let canonical = canonical_key(self.key_type, key)?;
        if let Some(&shard) = self.overrides.get(canonical.as_ref()) {
            return Ok(Route {
                shard,
                reason: RouteReason::Override,
            });
        }
        let n = self.shard_names.len();
        if n == 0 {
            return Err("database has no shards".into());
        }
        match self.method {
            Method::Citus => {
                let (h, func) = match self.key_type {
                    KeyType::Uuid => (uuid_hash(&Self::uuid_key(key)?), "uuid_hash"),
                    _ => match self.int_key(key)? {
                        Some(v) => (hashint8(v), "hashint8"),
                        None => (hashtext(key.as_bytes()), "hashtext"),
                    },
                };
                if self.hash_ranges.is_empty() {
                    let index = citus_shard_index(h, n as u32);
                    Ok(Route {
                        shard: index as usize,
                        reason: RouteReason::Hash {
                            hash: h as i64,
                            index,
                            func,
                        },
                    })
                } else {
                    let (i, r) = find_range(&self.hash_ranges, h as i64)
                        .ok_or_else(|| format!("no hash range covers hash {h}"))?;
                    Ok(Route {
                        shard: r.shard,
                        reason: RouteReason::Hash {
                            hash: h as i64,
                            index: i as u32,
                            func,
                        },
                    })
                }
            }
            Method::Partition => {
                let (h, func) = match self.key_type {
                    KeyType::Uuid => (
                        uuid_hash_extended(&Self::uuid_key(key)?, PARTITION_SEED),
                        "uuid_hash_extended",
                    ),
                    _ => match self.int_key(key)? {
                        Some(v) => (hashint8extended(v, PARTITION_SEED), "hashint8extended"),
                        None => (
                            hashtextextended(key.as_bytes(), PARTITION_SEED),
                            "hashtextextended",
                        ),
                    },
                };
                let row = partition_row_hash(h as u64);
                let rem = row % n as u64;
                Ok(Route {
                    shard: rem as usize,
                    reason: RouteReason::Hash {
                        hash: row as i64,
                        index: rem as u32,
                        func,
                    },
                })
            }
            Method::Range => {
                let v = match self.key_type {
                    KeyType::Bigint => self.int_key(key)?,
                    _ => key.as_i64(),
                }
                .ok_or_else(|| {
                    format!("tenant key {key:?} is not an integer (shard map method is range)")
                })?;
                let (_, r) = find_range(&self.ranges, v)
                    .ok_or_else(|| format!("no range covers tenant key {v}"))?;
                Ok(Route {
                    shard: r.shard,
                    reason: RouteReason::Range {
                        from: r.from,
                        to: r.to,
                    },
                })
            }
        }
    }
}

/// Binary search over sorted, non-overlapping ranges.
fn find_range(ranges: &[IntRange], v: i64) -> Option<(usize, &IntRange)> {
    let i = ranges.partition_point(|r| r.from <= v).checked_sub(1)?;
    let r = ranges.get(i)?;
    (v <= r.to).then_some((i, r))
}

/// The text of a shard map with `key` placed on `shard` by a `[tenants]`
/// override and its `version` one higher (console `MOVE TENANT`). The edit is
/// made in the text, so comments and layout elsewhere stay; an entry spelling
/// the same tenant differently (`042` for bigint 42) is replaced. The result is
/// checked before it is returned: it parses, routes `key` to `shard` as an
/// override, has the next version, and places every other override, range and
/// hash range exactly as before. A text the line edit cannot handle (say, an
/// inline `tenants = {...}` table) is rewritten whole from its parsed form
/// instead, comments lost, and checked the same way. Returns the new text and
/// its version.
pub fn with_override(
    text: &str,
    shard_names: &[String],
    key: &TenantKey,
    shard: &str,
) -> Result<(String, i64), String> {
    let old = ShardMap::parse(text, shard_names)?;
    let idx = shard_names.iter().position(|n| n == shard).ok_or_else(|| {
        format!(
            "unknown shard {shard:?} (shards: {})",
            shard_names.join(", ")
        )
    })?;
    let canonical = canonical_key(old.key_type, key)?.into_owned();
    // Checked: at the largest version the next one cannot be written (probe
    // U: it wrapped to a negative version the map then refused).
    let next = old.version.checked_add(1).ok_or_else(|| {
        format!(
            "the map's version is {}, the largest there is: no higher one can be written; \
             give the map a lower version on a restart",
            old.version
        )
    })?;
    let check = |new_text: &str| -> Result<(), String> {
        let new = ShardMap::parse(new_text, shard_names)?;
        let mut want = old.overrides.clone();
        want.insert(canonical.clone(), idx);
        let same = new.version == next
            && new.method == old.method
            && new.key_type == old.key_type
            && new.ranges == old.ranges
            && new.hash_ranges == old.hash_ranges
            && new.overrides == want
            && new.tenant_limits == old.tenant_limits
            && new.route(key).map(|r| (r.shard, r.reason)) == Ok((idx, RouteReason::Override));
        if same {
            Ok(())
        } else {
            Err("internal: the edited shard map does not match the edit".into())
        }
    };
    let line_edit = edit_lines(text, next, old.key_type, &canonical, shard);
    if let Some(t) = line_edit.filter(|t| check(t).is_ok()) {
        return Ok((t, next));
    }
    let whole = rewrite_whole(text, next, old.key_type, &canonical, shard)?;
    check(&whole)?;
    Ok((whole, next))
}

/// A TOML basic string (also a quoted key).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The table a header line opens (`[tenants]  # c` -> `tenants`), if it is one.
fn header_of(line: &str) -> Option<String> {
    let t = line.split('#').next().unwrap_or("").trim();
    let inner = t.strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.trim().to_string())
}

/// The key of a `key = value` line, if it is one (read by TOML itself).
fn line_key(line: &str) -> Option<String> {
    let t: toml::Table = toml::from_str(line).ok()?;
    let mut keys = t.keys();
    let k = keys.next()?.clone();
    keys.next().is_none().then_some(k)
}

/// Whether a `[tenants]` key names the tenant `canonical`.
fn same_tenant(key_type: KeyType, written: &str, canonical: &str) -> bool {
    TenantKey::new(written.as_bytes())
        .and_then(|k| canonical_key(key_type, &k).ok().map(|c| c == canonical))
        .unwrap_or(false)
}

/// The line edit of [`with_override`]; `None` when the text has a shape it does
/// not handle.
fn edit_lines(
    text: &str,
    version: i64,
    key_type: KeyType,
    canonical: &str,
    shard: &str,
) -> Option<String> {
    let entry = format!("{} = {}", toml_str(canonical), toml_str(shard));
    let mut out: Vec<String> = Vec::new();
    let mut table: Option<String> = None;
    let (mut versioned, mut tenants_seen) = (false, false);
    let mut tenants_end = None;
    for line in text.lines() {
        if let Some(h) = header_of(line) {
            table = Some(h);
            out.push(line.to_string());
            if table.as_deref() == Some("tenants") {
                if tenants_seen {
                    return None;
                }
                tenants_seen = true;
                tenants_end = Some(out.len());
            }
            continue;
        }
        let key = line_key(line);
        match (table.as_deref(), key.as_deref()) {
            (None, Some("version")) => {
                out.push(format!("version = {version}"));
                versioned = true;
            }
            (None, Some("tenants")) => return None,
            (Some("tenants"), Some(k)) if same_tenant(key_type, k, canonical) => {}
            (Some("tenants"), Some(_)) => {
                out.push(line.to_string());
                tenants_end = Some(out.len());
            }
            _ => out.push(line.to_string()),
        }
    }
    if !versioned {
        return None;
    }
    match tenants_end {
        Some(at) => out.insert(at, entry),
        None => {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("[tenants]".to_string());
            out.push(entry);
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    Some(s)
}

/// The fallback of [`with_override`]: the map rewritten from its parsed form.
fn rewrite_whole(
    text: &str,
    version: i64,
    key_type: KeyType,
    canonical: &str,
    shard: &str,
) -> Result<String, String> {
    let mut t: toml::Table = toml::from_str(text).map_err(|e| format!("invalid shard map: {e}"))?;
    t.insert("version".into(), toml::Value::Integer(version));
    let tenants = t
        .entry("tenants")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(tenants) = tenants else {
        return Err("[tenants] is not a table".into());
    };
    tenants.retain(|k, _| !same_tenant(key_type, k, canonical));
    tenants.insert(
        canonical.to_string(),
        toml::Value::String(shard.to_string()),
    );
    toml::to_string(&t).map_err(|e| format!("internal: writing the shard map: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::hash::{
        citus_shard_index, hashint8, hashtext, partition_index_int8, partition_index_text,
    };
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn k(s: &str) -> TenantKey {
        TenantKey::new(s.as_bytes()).unwrap()
    }

    fn err(text: &str) -> String {
        ShardMap::parse(text, &names(4)).unwrap_err()
    }

    /// What a reload moved, for the gate (probe H: a move by reload was
    /// not recorded): overrides one by one, anything else as a whole.
    #[test]
    fn moved_in_names_what_a_new_map_moves() {
        let map = |body: &str, n: usize| {
            ShardMap::parse(&format!("method = \"citus\"\n{body}"), &names(n)).unwrap()
        };
        let old = map(
            "version = 1\n[tenants]\n\"42\" = \"s1\"\n\"7\" = \"s0\"\n",
            2,
        );
        assert_eq!(old.moved_in(&old), Moved::Tenants(vec![]));
        // 42 moves; 7 stays; 9 gets an override where it already was; 5 one
        // elsewhere.
        let at = |key: &str| old.route(&k(key)).unwrap().shard;
        let new = map(
            &format!(
                "version = 2\n[tenants]\n\"42\" = \"s0\"\n\"7\" = \"s0\"\n\"9\" = \"s{}\"\n\"5\" = \"s{}\"\n",
                at("9"),
                1 - at("5")
            ),
            2,
        );
        assert_eq!(old.moved_in(&new), Moved::Tenants(vec![k("42"), k("5")]));
        // An override removed: 42 goes back where the hash puts it.
        let back = map("version = 3\n[tenants]\n\"7\" = \"s0\"\n", 2);
        let hashed_at = back.route(&k("42")).unwrap().shard;
        let want = if hashed_at == 1 {
            vec![]
        } else {
            vec![k("42")]
        };
        assert_eq!(old.moved_in(&back), Moved::Tenants(want));
        // Another shard list, method or key type: anyone may move.
        assert_eq!(old.moved_in(&map("version = 1\n", 3)), Moved::All);
        let partition = ShardMap::parse("version = 1\nmethod = \"partition\"\n", &names(2));
        assert_eq!(old.moved_in(&partition.unwrap()), Moved::All);
    }

    #[test]
    fn citus_default_and_overrides() {
        let m = ShardMap::parse(
            "version = 1\nmethod = \"citus\"\n[tenants]\n\"42\" = \"s1\"\nacme = \"s3\"\n",
            &names(4),
        )
        .unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.method, Method::Citus);
        assert_eq!(m.overrides_len(), 2);
        assert_eq!(m.overrides_for(1), 1);
        assert_eq!(m.overrides_for(3), 1);
        assert_eq!(m.overrides_for(0), 0);
        assert_eq!(m.overrides_for(99), 0);
        assert_eq!(
            m.route(&k("42")).unwrap(),
            Route {
                shard: 1,
                reason: RouteReason::Override
            }
        );
        assert_eq!(m.route(&k("acme")).unwrap().shard, 3);
        let r = m.route(&k("7")).unwrap();
        let h = hashint8(7);
        assert_eq!(
            r,
            Route {
                shard: citus_shard_index(h, 4) as usize,
                reason: RouteReason::Hash {
                    hash: h as i64,
                    index: citus_shard_index(h, 4),
                    func: "hashint8",
                }
            }
        );
        let h = hashtext(b"globex");
        assert_eq!(
            m.route(&k("globex")).unwrap().shard,
            citus_shard_index(h, 4) as usize
        );
        // Ambiguous integers are refused under auto.
        assert!(m.route(&k("042")).is_err());
        assert!(m.route(&k(" 42")).is_err());
        // ...but overrides still win, verbatim.
        let d = ShardMap::default_for(&names(4));
        assert_eq!(d.route(&k("7")).unwrap(), m.route(&k("7")).unwrap());
        assert_eq!(d.overrides_len(), 0);
    }

    #[test]
    fn key_types() {
        let big = ShardMap::parse(
            "version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"",
            &names(8),
        )
        .unwrap();
        assert_eq!(big.key_type(), KeyType::Bigint);
        assert_eq!(big.route(&k("042")).unwrap(), big.route(&k("42")).unwrap());
        assert!(big.route(&k("acme")).is_err());
        let text = ShardMap::parse(
            "version = 1\nmethod = \"citus\"\nkey_type = \"text\"",
            &names(8),
        )
        .unwrap();
        match text.route(&k("42")).unwrap().reason {
            RouteReason::Hash { hash, func, .. } => {
                assert_eq!(hash, hashtext(b"42") as i64);
                assert_eq!(func, "hashtext", "the key type names the function");
            }
            r => panic!("{r:?}"),
        }
        match big.route(&k("042")).unwrap().reason {
            RouteReason::Hash { func, .. } => assert_eq!(func, "hashint8"),
            r => panic!("{r:?}"),
        }
        let uuid = ShardMap::parse(
            "version = 1\nmethod = \"citus\"\nkey_type = \"uuid\"",
            &names(8),
        )
        .unwrap();
        let a = uuid
            .route(&k("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
            .unwrap();
        assert_eq!(
            a,
            uuid.route(&k("{A0EEBC999C0B4EF8BB6D6BB9BD380A11}"))
                .unwrap()
        );
        assert_eq!(
            a,
            uuid.route(&k("a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"))
                .unwrap()
        );
        assert!(uuid.route(&k("not-a-uuid")).is_err());
        assert!(uuid
            .route(&k("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"))
            .is_err());
        assert!(uuid
            .route(&k("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111"))
            .is_err());
    }

    #[test]
    fn parse_uuid_forms() {
        let u = parse_uuid(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(u[0], 0xa0);
        assert_eq!(u[15], 0x11);
        assert!(parse_uuid(b"").is_none());
        assert!(parse_uuid(b"{}").is_none());
        assert!(parse_uuid(b"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11").is_none());
        assert!(parse_uuid(b"-a0eebc999c0b4ef8bb6d6bb9bd380a11").is_none());
        assert!(parse_uuid(b"a0eebc999c0b4ef8bb6d6bb9bd380a11-").is_none());
    }

    #[test]
    fn partition_method() {
        let m = ShardMap::parse("version = 1\nmethod = \"partition\"", &names(4)).unwrap();
        for v in [-5i64, 0, 1, 42, i64::MAX] {
            let r = m.route(&k(&v.to_string())).unwrap();
            assert_eq!(r.shard as u64, partition_index_int8(v, 4));
        }
        for s in ["acme", "globex", "x"] {
            assert_eq!(
                m.route(&k(s)).unwrap().shard as u64,
                partition_index_text(s.as_bytes(), 4)
            );
        }
    }

    #[test]
    fn range_method() {
        let text = r#"
version = 2
method = "range"
[[ranges]]
from = 10000
to = 19999
shard = "s1"
[[ranges]]
from = 0
to = 9999
shard = "s0"
[tenants]
acme = "s2"
"#;
        let m = ShardMap::parse(text, &names(3)).unwrap();
        assert_eq!(m.ranges_len(), 2);
        assert_eq!(
            m.route(&k("0")).unwrap(),
            Route {
                shard: 0,
                reason: RouteReason::Range { from: 0, to: 9999 }
            }
        );
        assert_eq!(m.route(&k("9999")).unwrap().shard, 0);
        assert_eq!(m.route(&k("10000")).unwrap().shard, 1);
        assert_eq!(m.route(&k("19999")).unwrap().shard, 1);
        assert!(m.route(&k("20000")).is_err());
        assert!(m.route(&k("-1")).is_err());
        assert!(m.route(&k("globex")).is_err());
        assert!(m.route(&k("042")).is_err());
        assert_eq!(m.route(&k("acme")).unwrap().reason, RouteReason::Override);
        // Extreme bounds do not overflow.
        let m = ShardMap::parse(
            "version=1\nmethod=\"range\"\n[[ranges]]\nfrom=-9223372036854775808\nto=-1\nshard=\"s0\"\n[[ranges]]\nfrom=0\nto=9223372036854775807\nshard=\"s1\"",
            &names(2),
        )
        .unwrap();
        assert_eq!(m.route(&k(&i64::MIN.to_string())).unwrap().shard, 0);
        assert_eq!(m.route(&k(&i64::MAX.to_string())).unwrap().shard, 1);
    }

    #[test]
    fn citus_hash_ranges() {
        let text = r#"
version = 1
method = "citus"
[[hash_ranges]]
min = 0
max = 2147483647
shard = "s0"
[[hash_ranges]]
min = -2147483648
max = -1
shard = "s1"
"#;
        let m = ShardMap::parse(text, &names(2)).unwrap();
        for v in 0..200i64 {
            let h = hashint8(v);
            let want = if h >= 0 { 0 } else { 1 };
            assert_eq!(m.route(&k(&v.to_string())).unwrap().shard, want);
        }
    }

    #[test]
    fn validation_errors() {
        let cases: &[(&str, &str)] = &[
            ("method = \"citus\"", "version missing"),
            ("version = 0\nmethod = \"citus\"", "positive integer"),
            ("version = \"1\"\nmethod = \"citus\"", "positive integer"),
            ("version = 1", "method missing"),
            ("version = 1\nmethod = \"hash\"", "unknown method \"hash\""),
            ("version = 1\nmethod = \"citus\"\nkey_type = \"int\"", "unknown key_type"),
            ("version = 1\nmethod = \"citus\"\nfoo = 1", "unknown field `foo`"),
            ("version = 1\nmethod = \"range\"", "no [[ranges]]"),
            ("version = 1\nmethod = \"range\"\nranges = []", "no [[ranges]]"),
            ("version = 1\nmethod = \"citus\"\n[tenants]\nacme = \"s9\"", "unknown shard name \"s9\" in [tenants] \"acme\""),
            ("version = 1\nmethod = \"citus\"\n[tenants]\nacme = 1", "invalid shard map"),
            (
                "version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 0\nto = 9999\nshard = \"s0\"\n[[ranges]]\nfrom = 5000\nto = 6000\nshard = \"s1\"",
                "overlapping ranges 0..=9999 and 5000..=6000",
            ),
            (
                "version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 0\nto = 9999\nshard = \"s0\"\n[[ranges]]\nfrom = 10001\nto = 20000\nshard = \"s1\"",
                "gap between ranges 0..=9999 and 10001..=20000 (10000..=10000 is not covered)",
            ),
            ("version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 5\nto = 4\nshard = \"s0\"", "from > to"),
            ("version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 5\nto = 9\nshard = \"x\"", "unknown shard name \"x\" in [[ranges]] 5..=9"),
            ("version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 5\nto = 9\nshard = \"s0\"\nextra = 1", "unknown field `extra`"),
            ("version = 1\nmethod = \"range\"\nkey_type = \"text\"\n[[ranges]]\nfrom = 5\nto = 9\nshard = \"s0\"", "integer keys"),
            ("version = 1\nmethod = \"citus\"\n[[ranges]]\nfrom = 5\nto = 9\nshard = \"s0\"", "only valid with method = \"range\""),
            ("version = 1\nmethod = \"range\"\n[[ranges]]\nfrom = 5\nto = 9\nshard = \"s0\"\n[[hash_ranges]]\nmin = -2147483648\nmax = 2147483647\nshard = \"s0\"", "only valid with method = \"citus\""),
            ("version = 1\nmethod = \"citus\"\n[[hash_ranges]]\nmin = -2147483648\nmax = 0\nshard = \"s0\"", "must cover the whole int32"),
            ("version = 1\nmethod = \"citus\"\n[[hash_ranges]]\nmin = -2147483649\nmax = 0\nshard = \"s0\"", "outside the int32"),
            ("version = 1\nmethod = \"citus\"\n[tenants]\n\"\" = \"s0\"", "invalid tenant key"),
            ("not toml [", "invalid shard map"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
        assert!(ShardMap::parse("version = 1\nmethod = \"citus\"", &[])
            .unwrap_err()
            .contains("no shards"));
        assert!(
            ShardMap::parse("version = 1\nmethod = \"citus\"", &["a".into(), "a".into()])
                .unwrap_err()
                .contains("duplicate shard name")
        );
    }

    #[test]
    fn default_for_no_shards_does_not_panic() {
        let m = ShardMap::default_for(&[]);
        assert!(m.route(&k("1")).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            if let Ok(m) = ShardMap::parse(&s, &names(3)) {
                let _ = m.route(&k("42"));
            }
        }

        #[test]
        fn citus_route_in_bounds(v in any::<i64>(), n in 1usize..64) {
            let m = ShardMap::default_for(&names(n));
            let r = m.route(&k(&v.to_string())).unwrap();
            prop_assert!(r.shard < n);
        }

        #[test]
        fn ranges_route_to_containing_range(cuts in proptest::collection::btree_set(any::<i64>(), 1..10), v in any::<i64>()) {
            let cuts: Vec<i64> = cuts.into_iter().collect();
            // Contiguous ranges [cuts[i], cuts[i+1]-1], last to i64::MAX.
            let mut text = String::from("version = 1\nmethod = \"range\"\n");
            for (i, &from) in cuts.iter().enumerate() {
                let to = cuts.get(i + 1).map_or(i64::MAX, |n| n - 1);
                text.push_str(&format!("[[ranges]]\nfrom = {from}\nto = {to}\nshard = \"s{}\"\n", i % 3));
            }
            let m = ShardMap::parse(&text, &names(3)).unwrap();
            let r = m.route(&k(&v.to_string()));
            if v < cuts[0] {
                prop_assert!(r.is_err());
            } else {
                match r.unwrap().reason {
                    RouteReason::Range { from, to } => prop_assert!(from <= v && v <= to),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }

    fn names3() -> Vec<String> {
        vec!["s0".into(), "s1".into(), "s2".into()]
    }

    #[test]
    fn with_override_edits_the_text_and_keeps_the_rest() {
        let text = "# the map\nversion = 3 # bumped by MOVE\nmethod = \"citus\"\nkey_type = \"bigint\"\n\n[tenants]\n# Acme\n\"042\" = \"s1\"\n\"7\" = \"s0\"\n";
        let k = TenantKey::new(b"42").unwrap();
        let (new, v) = with_override(text, &names3(), &k, "s2").unwrap();
        assert_eq!(v, 4);
        assert!(new.contains("# the map") && new.contains("# Acme"), "{new}");
        assert!(!new.contains("\"042\""), "the old spelling goes: {new}");
        let m = ShardMap::parse(&new, &names3()).unwrap();
        assert_eq!(m.version, 4);
        assert_eq!(m.route(&k).unwrap().shard, 2);
        assert_eq!(m.route(&TenantKey::new(b"7").unwrap()).unwrap().shard, 0);
        // Moving again replaces the entry rather than adding one.
        let (again, v) = with_override(&new, &names3(), &k, "s0").unwrap();
        assert_eq!(v, 5);
        assert_eq!(again.matches("\"42\"").count(), 1, "{again}");
    }

    #[test]
    fn with_override_adds_a_tenants_table_or_rewrites_odd_shapes() {
        let k = TenantKey::new(b"acme").unwrap();
        let plain = "version = 1\nmethod = \"citus\"\nkey_type = \"text\"\n";
        let (new, _) = with_override(plain, &names3(), &k, "s1").unwrap();
        assert!(new.ends_with("[tenants]\n\"acme\" = \"s1\"\n"), "{new}");
        let inline = "version = 1\nmethod = \"citus\"\nkey_type = \"text\"\ntenants = { acme = \"s0\", b = \"s2\" }\n";
        let (new, v) = with_override(inline, &names3(), &k, "s1").unwrap();
        let m = ShardMap::parse(&new, &names3()).unwrap();
        assert_eq!((v, m.route(&k).unwrap().shard), (2, 1));
        assert_eq!(m.route(&TenantKey::new(b"b").unwrap()).unwrap().shard, 2);
    }

    #[test]
    fn with_override_refuses_what_it_cannot_do() {
        let text = "version = 1\nmethod = \"citus\"\n";
        let k = TenantKey::new(b"42").unwrap();
        assert!(with_override(text, &names3(), &k, "s9")
            .unwrap_err()
            .contains("unknown shard"));
        assert!(with_override("version = 1\n", &names3(), &k, "s1").is_err());
        assert!(
            with_override(text, &names3(), &TenantKey::new(b"042").unwrap(), "s1")
                .unwrap_err()
                .contains("canonical")
        );
        let max = format!("version = {}\nmethod = \"citus\"\n", i64::MAX);
        assert!(with_override(&max, &names3(), &k, "s1")
            .unwrap_err()
            .contains("largest"));
    }

    #[test]
    fn canonical_tenants_are_the_canonical_keys() {
        for kt in ["auto", "text", "bigint", "uuid"] {
            let text = format!("version = 1\nmethod = \"citus\"\nkey_type = \"{kt}\"\n");
            let m = ShardMap::parse(&text, &names3()).unwrap();
            for key in [
                "42",
                "042",
                " 42",
                "+1",
                "-7",
                "9223372036854775808",
                "acme",
                "ACME corp",
                "0",
                "123e4567-e89b-12d3-a456-426614174000",
                "123E4567E89B12D3A456426614174000",
            ] {
                let key = k(key);
                let want = canonical_key(m.key_type, &key)
                    .map(|c| TenantKey::new(c.as_bytes()).unwrap_or(key));
                assert_eq!(m.canonical_tenant(&key), want, "{kt} {key:?}");
            }
        }
    }

    #[test]
    fn tenant_limits_are_read_by_canonical_key() {
        let text = "version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"\n[tenant_limits]\n\"042\" = 10\n\"7\" = 0\n";
        let m = ShardMap::parse(text, &names3()).unwrap();
        assert_eq!(m.tenant_limit(&k("42")), Some(10));
        assert_eq!(m.tenant_limit(&k("7")), Some(0));
        assert_eq!(m.tenant_limit(&k("8")), None);
        for bad in [
            "version = 1\nmethod = \"citus\"\n[tenant_limits]\n\"1\" = -1\n",
            "version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"\n[tenant_limits]\n\"1\" = 2\n\"01\" = 3\n",
            "version = 1\nmethod = \"citus\"\nkey_type = \"bigint\"\n[tenant_limits]\nx = 2\n",
        ] {
            assert!(ShardMap::parse(bad, &names3()).is_err(), "{bad}");
        }
        // A MOVE keeps the limits.
        let (moved, _) = with_override(text, &names3(), &k("42"), "s1").unwrap();
        assert_eq!(
            ShardMap::parse(&moved, &names3())
                .unwrap()
                .tenant_limit(&k("42")),
            Some(10)
        );
    }
}
