//! Per-session tenant routing decisions: which shard a statement or an extended
//! protocol batch belongs to. Pure apart from reading the session's state; the
//! session loop turns decisions into I/O.

use crate::app::RoutingRt;
use crate::config::{NoTenant, TenantSource};
use crate::protocol::Bind;
use crate::router::{scan, scan_all_tenants, Source, Statement, TenantKey, TenantToken};
use crate::server::prepared::StmtRouting;

/// The tenant settings of a session.
#[derive(Debug, Default, Clone)]
pub struct TenantState {
    /// Tenant given at connect (startup parameter, options, user suffix).
    pub startup: Option<TenantKey>,
    /// Tenant set with `SET key = ...` (replaces the startup one unless locked).
    pub set: Option<TenantKey>,
    /// Tenant set with `SET LOCAL key = ...`, until the transaction ends.
    pub local: Option<TenantKey>,
}

/// A tenant mention in one statement or batch.
#[derive(Debug, Clone, Copy)]
pub struct Mention {
    /// The key.
    pub key: TenantKey,
    /// Where it came from.
    pub source: Source,
}

/// Where a unit of work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A shard chosen by a tenant (or the default shard); pins the transaction.
    Shard {
        /// Shard index.
        shard: usize,
        /// The tenant, if one was found.
        tenant: Option<TenantKey>,
        /// Its source (`Default` when the default shard was used).
        source: Source,
    },
    /// The statement touches no tenant data (SET, SHOW, describe-only batches...):
    /// any shard will do, and it does not pin a transaction.
    Any,
    /// Undecidable until the attached server finishes what is in flight (whether
    /// that work opens a transaction decides where this goes).
    Pending,
}

/// A routing failure, reported to the client as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

fn err(code: &'static str, message: String) -> RouteError {
    RouteError { code, message }
}

/// Decode a token, or fail naming the key.
pub fn decode(rt: &RoutingRt, t: &TenantToken<'_>) -> Result<TenantKey, RouteError> {
    t.to_key().ok_or_else(|| {
        err(
            crate::protocol::sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "invalid {} value: tenant keys are 1 to 63 bytes of UTF-8",
                rt.key
            ),
        )
    })
}

/// Routing facts of a statement text, for a Parse.
pub fn stmt_routing(rt: &RoutingRt, query: &[u8]) -> StmtRouting {
    let mut r = StmtRouting {
        tenant_free: is_tenant_free(query),
        ..Default::default()
    };
    match scan(query, rt.key.as_bytes()) {
        Statement::Begin => r.is_begin = true,
        Statement::Other { comment, scan } => {
            r.comment = comment.as_ref().and_then(TenantToken::to_key);
            match scan {
                Some(TenantToken::Param(n)) => r.param = Some(n),
                Some(t) => r.scan = t.to_key(),
                None => {}
            }
        }
        _ => {}
    }
    r
}

/// Choose the tenant for a statement: the first enabled source, in configured
/// order, that names one. Every other mention must live on the same shard: a
/// statement that names tenants on two shards is refused rather than half-routed.
pub fn resolve(
    rt: &RoutingRt,
    state: &TenantState,
    mentions: &[Mention],
) -> Result<Option<(TenantKey, Source, usize)>, RouteError> {
    let mut primary: Option<(TenantKey, Source)> = None;
    for src in &rt.sources {
        let found = match src {
            TenantSource::Startup => state
                .set
                .is_none()
                .then_some(state.startup)
                .flatten()
                .map(|k| (k, Source::Startup)),
            TenantSource::Comment => mentions
                .iter()
                .find(|m| m.source == Source::Comment)
                .map(|m| (m.key, Source::Comment)),
            TenantSource::Set => state.local.or(state.set).map(|k| (k, Source::Set)),
            TenantSource::Scan => mentions
                .iter()
                .find(|m| m.source == Source::Scan)
                .map(|m| (m.key, Source::Scan)),
        };
        if found.is_some() {
            primary = found;
            break;
        }
    }
    let Some((key, source)) = primary else {
        return Ok(None);
    };
    let shard = route_key(rt, &key)?;
    for m in mentions {
        if m.key == key {
            continue;
        }
        let other = route_key(rt, &m.key)?;
        if other != shard {
            return Err(err(
                crate::protocol::sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "cross-shard statement refused: {k} '{a}' ({sa}) lives on shard {s1} but {k} '{b}' ({sb}) lives on shard {s2}",
                    k = rt.key,
                    a = key,
                    sa = source,
                    s1 = rt.map.shard_names()[shard],
                    b = m.key,
                    sb = m.source,
                    s2 = rt.map.shard_names()[other],
                ),
            ));
        }
    }
    Ok(Some((key, source, shard)))
}

/// Shard of a key, or an error naming it.
pub fn route_key(rt: &RoutingRt, key: &TenantKey) -> Result<usize, RouteError> {
    rt.map.route(key).map(|r| r.shard).map_err(|e| {
        err(
            crate::protocol::sqlstate::NO_TENANT,
            format!("cannot route {} '{key}': {e}", rt.key),
        )
    })
}

/// What to do when no tenant was found for work that needs one.
pub fn no_tenant(rt: &RoutingRt) -> Result<Target, RouteError> {
    match (rt.no_tenant, rt.default_shard) {
        (NoTenant::Default, Some(shard)) => Ok(Target::Shard {
            shard,
            tenant: None,
            source: Source::Default,
        }),
        _ => Err(err(
            crate::protocol::sqlstate::NO_TENANT,
            format!(
                "no {k} for this statement, and no_tenant = \"reject\": give it at connect \
                 (startup parameter {k} or options=-c{k}=...), in a comment /* {k}=... */, \
                 with SET {k} = ..., or in the statement as {k} = <value>",
                k = rt.key
            ),
        )),
    }
}

/// Tenant mentions of a simple-query text (every statement in it).
/// `st` is the text's classification by [`scan`], done once by the caller.
pub fn text_mentions(
    rt: &RoutingRt,
    st: Statement<'_>,
    sql: &[u8],
    out: &mut Vec<Mention>,
) -> Result<(), RouteError> {
    let key = rt.key.as_bytes();
    // Classified first mentions (comment vs scan) ...
    if let Statement::Other { comment, scan: sc } = st {
        if let (Some(c), true) = (comment, rt.has(TenantSource::Comment)) {
            out.push(Mention {
                key: decode(rt, &c)?,
                source: Source::Comment,
            });
        }
        if let (Some(s), true) = (sc, rt.has(TenantSource::Scan)) {
            if !matches!(s, TenantToken::Param(_)) {
                out.push(Mention {
                    key: decode(rt, &s)?,
                    source: Source::Scan,
                });
            }
        }
    }
    // ... and every other mention, so conflicts are caught.
    if rt.has(TenantSource::Comment) || rt.has(TenantSource::Scan) {
        let mut bad = false;
        scan_all_tenants(sql, key, |t| {
            if matches!(t, TenantToken::Param(_)) {
                return;
            }
            match t.to_key() {
                Some(k) => {
                    if !out.iter().any(|m| m.key == k) && out.len() < 64 {
                        out.push(Mention {
                            key: k,
                            source: Source::Scan,
                        })
                    }
                }
                None => bad = true,
            }
        });
        if bad {
            return Err(err(
                crate::protocol::sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid {} value in statement", rt.key),
            ));
        }
    }
    Ok(())
}

/// Mentions contributed by executing `def` with `bind`.
pub fn bind_mentions(
    rt: &RoutingRt,
    r: &StmtRouting,
    param_type: impl Fn(usize) -> u32,
    bind: &Bind<'_>,
    out: &mut Vec<Mention>,
) -> Result<(), RouteError> {
    if let (Some(k), true) = (r.comment, rt.has(TenantSource::Comment)) {
        out.push(Mention {
            key: k,
            source: Source::Comment,
        });
    }
    if !rt.has(TenantSource::Scan) {
        return Ok(());
    }
    if let Some(k) = r.scan {
        out.push(Mention {
            key: k,
            source: Source::Scan,
        });
    }
    if let Some(n) = r.param {
        let i = usize::from(n).saturating_sub(1);
        let key = param_key(bind, i, param_type(i)).map_err(|m| {
            err(
                crate::protocol::sqlstate::INVALID_PARAMETER_VALUE,
                format!("{} parameter ${n}: {m}", rt.key),
            )
        })?;
        out.push(Mention {
            key,
            source: Source::Scan,
        });
    }
    Ok(())
}

/// Routing facts of the client's unnamed statement, kept in place: an unnamed Parse
/// per statement is the common extended-protocol pattern, so it must not allocate.
#[derive(Debug, Default)]
pub struct UnnamedStmt {
    /// Facts from the query text.
    pub routing: StmtRouting,
    /// Parameter types declared in the Parse.
    pub declared: Vec<u32>,
    /// Parameter types the server described (ParameterDescription).
    pub described: Vec<u32>,
}

impl UnnamedStmt {
    /// Replace with a new unnamed Parse.
    pub fn set(&mut self, routing: StmtRouting, p: &crate::protocol::Parse<'_>) {
        self.routing = routing;
        self.declared.clear();
        self.declared.extend(
            p.param_types
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        );
        self.described.clear();
    }

    /// Declared, else described, type of parameter `i`; 0 when unknown.
    pub fn param_type(&self, i: usize) -> u32 {
        match self.declared.get(i) {
            Some(&t) if t != 0 => t,
            _ => self.described.get(i).copied().unwrap_or(0),
        }
    }
}

/// Decode Bind parameter `i` as a tenant key, text or binary (int2/4/8, text, uuid).
pub fn param_key(bind: &Bind<'_>, i: usize, oid: u32) -> Result<TenantKey, &'static str> {
    let v = match bind.param(i) {
        Some(Some(v)) => v,
        Some(None) => return Err("is NULL"),
        None => return Err("is missing"),
    };
    if bind.format(i) == 0 {
        return TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8");
    }
    let int = |n: i64| TenantKey::new(itoa_buf(n).as_slice()).ok_or("is not a valid key");
    match (oid, v.len()) {
        (20, 8) | (0, 8) => int(i64::from_be_bytes(v.try_into().unwrap_or([0; 8]))),
        (23, 4) | (0, 4) => int(i32::from_be_bytes(v.try_into().unwrap_or([0; 4])) as i64),
        (21, 2) | (0, 2) => int(i16::from_be_bytes(v.try_into().unwrap_or([0; 2])) as i64),
        (2950, 16) | (0, 16) => {
            let mut s = [0u8; 36];
            let hex = b"0123456789abcdef";
            let mut j = 0;
            for (k, b) in v.iter().enumerate() {
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
        (25 | 1043 | 1042 | 19, _) => TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8"),
        _ => Err("has a binary format of a type that cannot be a tenant key"),
    }
}

/// Decimal digits of `n` on the stack.
fn itoa_buf(n: i64) -> SmallBuf {
    let mut b = SmallBuf::default();
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let neg = n < 0;
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        b.push(b'-');
    }
    for &c in &tmp[i..] {
        b.push(c);
    }
    b
}

/// A 24-byte stack buffer for formatting integers.
#[derive(Default)]
struct SmallBuf {
    buf: [u8; 24],
    len: usize,
}

impl SmallBuf {
    fn push(&mut self, c: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = c;
            self.len += 1;
        }
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The first SQL keyword of a statement (comments and whitespace skipped), upper-cased
/// into `buf`; empty when the text has none.
pub fn first_keyword<'b>(sql: &[u8], buf: &'b mut [u8; 16]) -> &'b [u8] {
    let rest = skip_space_and_comments(sql);
    let mut n = 0;
    for &c in rest {
        if !c.is_ascii_alphabetic() || n == buf.len() {
            break;
        }
        buf[n] = c.to_ascii_uppercase();
        n += 1;
    }
    &buf[..n]
}

/// Whether the whole text is one keyword statement such as `COMMIT` (optionally
/// followed by `WORK`/`TRANSACTION` and `;`), so it can be answered locally.
pub fn is_bare(sql: &[u8], words: &[&[u8]]) -> bool {
    let mut rest = skip_space_and_comments(sql);
    let mut i = 0;
    loop {
        rest = skip_space_and_comments(rest);
        let end = rest
            .iter()
            .position(|c| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        let word = &rest[..end];
        let ok = if i == 0 {
            words.iter().any(|w| word.eq_ignore_ascii_case(w))
        } else {
            word.eq_ignore_ascii_case(b"WORK") || word.eq_ignore_ascii_case(b"TRANSACTION")
        };
        if !ok || i > 1 {
            return false;
        }
        rest = &rest[end..];
        i += 1;
    }
    let rest = skip_space_and_comments(rest);
    (1..=2).contains(&i) && rest.iter().all(|&c| c == b';' || c.is_ascii_whitespace())
}

fn skip_space_and_comments(mut s: &[u8]) -> &[u8] {
    loop {
        while let Some((&c, r)) = s.split_first() {
            if c.is_ascii_whitespace() {
                s = r;
            } else {
                break;
            }
        }
        if s.starts_with(b"--") {
            s = match memchr::memchr(b'\n', s) {
                Some(i) => &s[i + 1..],
                None => &[],
            };
        } else if s.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut i = 0;
            while i + 1 < s.len() {
                if s[i] == b'/' && s[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == b'*' && s[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            s = if depth == 0 { &s[i..] } else { &[] };
        } else {
            return s;
        }
    }
}

/// Statements that touch no tenant data and may run on any shard.
pub fn is_tenant_free(sql: &[u8]) -> bool {
    let mut b = [0u8; 16];
    let kw = first_keyword(sql, &mut b);
    matches!(
        kw,
        b"" | b"SET"
            | b"RESET"
            | b"SHOW"
            | b"DISCARD"
            | b"DEALLOCATE"
            | b"COMMIT"
            | b"ROLLBACK"
            | b"END"
            | b"ABORT"
            | b"SAVEPOINT"
            | b"RELEASE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        let mut b = [0u8; 16];
        assert_eq!(
            first_keyword(b"  /* x */ -- y\n commit;", &mut b),
            b"COMMIT"
        );
        assert!(is_bare(b"COMMIT", &[b"COMMIT", b"END"]));
        assert!(is_bare(b" end transaction ; ", &[b"COMMIT", b"END"]));
        assert!(!is_bare(b"COMMIT AND CHAIN", &[b"COMMIT"]));
        assert!(!is_bare(b"COMMIT; SELECT 1", &[b"COMMIT"]));
        assert!(is_tenant_free(b"set statement_timeout = 5"));
        assert!(!is_tenant_free(b"SELECT 1"));
        assert!(is_tenant_free(b""));
    }

    #[test]
    fn binary_params_decode() {
        use bytes::BufMut;
        let mut body = bytes::BytesMut::new();
        body.put_slice(b"\0s\0");
        body.put_i16(1);
        body.put_i16(1);
        body.put_i16(3);
        body.put_i32(8);
        body.put_i64(-42);
        body.put_i32(4);
        body.put_i32(7);
        body.put_i32(16);
        body.put_slice(&[0x12; 16]);
        body.put_i16(0);
        let bind = Bind::parse(&body).unwrap();
        assert_eq!(param_key(&bind, 0, 20).unwrap().as_str(), "-42");
        assert_eq!(param_key(&bind, 1, 0).unwrap().as_str(), "7");
        assert_eq!(
            param_key(&bind, 2, 2950).unwrap().as_str(),
            "12121212-1212-1212-1212-121212121212"
        );
        assert!(param_key(&bind, 3, 0).is_err());
    }
}
