//! Named prepared statements in transaction mode.
//!
//! A client's statement names are private to the client; on servers, statements are
//! content-addressed: the same query text and parameter types get the same server-side
//! name (`sb_<hash>`) on every server, so one preparation serves every client that
//! uses that statement. Each server keeps an LRU of what it has prepared, bounded by
//! `max_prepared_statements`; statements a server lacks are prepared lazily right
//! before the Bind or Describe that needs them.
//!
//! A server's copy can go stale while its text stays the same: a type it names is
//! dropped and created again, a table's columns change. Drivers answer that by
//! closing or `DEALLOCATE`-ing their statement and preparing it again, and expect
//! a fresh plan. So a client's statement carries the moment its name was last
//! deallocated ([`StmtDef::not_before`]), each server copy the moment it was
//! prepared, both on one process-wide clock ([`tick`]); an older copy is not used
//! for that statement. A copy that a server reports as stale (a cached-plan error)
//! is not used again either. Stale copies are closed when their server is next idle.

use crate::protocol::{self, Parse};
use crate::router::bind::ParamTypes;
use crate::router::Facts;
use bytes::{BufMut, Bytes, BytesMut};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The clock that orders preparations and deallocations (see the module docs).
static CLOCK: AtomicU64 = AtomicU64::new(1);

/// A new, strictly later moment on the statement clock.
pub fn tick() -> u64 {
    CLOCK.fetch_add(1, Ordering::Relaxed)
}

/// The last moment a server reported a copy stale (0: never). Copies prepared
/// before it, on every server, are not used again: a schema change that made
/// one server's copy stale made the others' stale too, and a client whose
/// retry landed on another server would get the same error again (asyncpg
/// re-prepares once, then gives up), where Postgres never fails a fresh
/// Parse. After a migration each statement is prepared again once per server.
static INVALIDATED_AT: AtomicU64 = AtomicU64::new(0);

/// A server reported a copy stale: every copy prepared until now is suspect.
pub fn invalidate_all() {
    INVALIDATED_AT.fetch_max(tick(), Ordering::Relaxed);
}

/// A statement as prepared on servers.
#[derive(Debug)]
pub struct StmtDef {
    /// Content hash (query text, parameter types, and what changes the text's
    /// meaning: the search_path it was prepared under).
    pub hash: u64,
    /// [`StmtDef::context_hash`] of what the text was parsed under: a copy
    /// prepared on a server under other settings is not this statement.
    pub context: u64,
    /// Name used on servers: `sb_` + 16 hex digits.
    pub server_name: String,
    /// Query text.
    pub query: Bytes,
    /// Raw parameter-type section of the Parse (count + OIDs).
    pub types: Bytes,
    /// What the text is and names (routing, effects), found once at Parse time.
    pub facts: Facts,
    /// Parameter types reported by the server (ParameterDescription), if seen.
    pub described: OnceLock<Vec<u32>>,
    /// Server copies prepared before this moment are not used for this
    /// statement: its client deallocated the same text then (0: any copy).
    pub not_before: u64,
    /// The result column types its client was last told (its last Describe
    /// of the statement): a server copy must have the same, or the client
    /// would read the rows as what they no longer are (see [`Results`]).
    pub told: std::sync::Mutex<Option<Results>>,
    /// The parameter types its client was last told (a Describe of the
    /// statement): the types it sends its values in. A copy prepared afresh
    /// may infer others from a changed schema, and read binary values as
    /// what they are not (re-probe: asyncpg's int4 7 stored as a real 1e-44).
    pub told_params: std::sync::Mutex<Option<Results>>,
    /// The result types of the text as planned afresh in the transaction
    /// on the server with this key (described through the unnamed
    /// statement, where the server's copy could not be used; see
    /// `Attachment::fresh_key`).
    pub fresh_results: std::sync::Mutex<Option<(u64, Results)>>,
    /// The same for its parameter types.
    pub fresh_params: std::sync::Mutex<Option<(u64, Results)>>,
}

/// The type OIDs of a statement's result columns, from a RowDescription
/// (empty: NoData). A copy prepared on a server after a migration may have
/// others than the client was told: Postgres answers a statement whose
/// result changed with 0A000 (`cached plan must not change result type`),
/// and the pooler must too, where it prepares a client's statement afresh
/// (probe: asyncpg read a `real` column's bits as the `int4` it was told,
/// 1109917696 for 42.0, with no error).
pub type Results = Arc<[u32]>;

/// Whether a RowDescription body has the result types `types`, read in
/// place (no allocation).
pub fn row_types_are(body: &[u8], types: &[u32]) -> bool {
    let Some(n) = body.get(..2) else { return false };
    if u16::from_be_bytes([n[0], n[1]]) as usize != types.len() {
        return false;
    }
    let mut at = 2;
    for &want in types {
        let Some(end) = body.get(at..).and_then(|b| memchr::memchr(0, b)) else {
            return false;
        };
        let t = at + end + 1 + 4 + 2;
        match body.get(t..t + 4) {
            Some(b) if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == want => {}
            _ => return false,
        }
        at = t + 12;
    }
    true
}

/// The result types of a RowDescription body (`None`: malformed).
pub fn row_types(body: &[u8]) -> Option<Results> {
    let n = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let mut at = 2;
    let mut types = Vec::with_capacity(n);
    for _ in 0..n {
        let name_end = at + memchr::memchr(0, body.get(at..)?)?;
        // Name, table OID (4), column number (2), then the type OID.
        let t = name_end + 1 + 4 + 2;
        types.push(u32::from_be_bytes(body.get(t..t + 4)?.try_into().ok()?));
        // Type OID (4), size (2), modifier (4), format (2).
        at = t + 12;
    }
    Some(types.into())
}

impl StmtDef {
    /// Build from a client Parse. `context` identifies what the text's meaning
    /// depends on besides itself (the client's search_path): statements that
    /// differ in it are different server statements.
    pub fn new(p: &Parse<'_>, facts: Facts, context: &str) -> StmtDef {
        let mut types = BytesMut::with_capacity(2 + p.param_types.len());
        types.put_i16((p.param_types.len() / 4) as i16);
        types.put_slice(p.param_types);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        p.query.hash(&mut h);
        p.param_types.hash(&mut h);
        context.hash(&mut h);
        let hash = h.finish();
        StmtDef {
            hash,
            context: Self::context_hash(context),
            server_name: format!("sb_{hash:016x}"),
            query: Bytes::copy_from_slice(p.query),
            types: types.freeze(),
            facts,
            described: OnceLock::new(),
            not_before: 0,
            told: std::sync::Mutex::new(None),
            told_params: std::sync::Mutex::new(None),
            fresh_results: std::sync::Mutex::new(None),
            fresh_params: std::sync::Mutex::new(None),
        }
    }

    /// A statement context (settings the text is parsed under), hashed.
    pub fn context_hash(context: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        context.hash(&mut h);
        h.finish()
    }

    /// Same statement (content equality, guarding against hash collisions; the
    /// hash covers the context, so a collision there is caught as different).
    pub fn same(&self, other: &StmtDef) -> bool {
        self.hash == other.hash && self.query == other.query && self.types == other.types
    }

    /// Declared, else described, parameter types.
    pub fn param_types(&self) -> ParamTypes<'_> {
        ParamTypes {
            declared: self.types.get(2..).unwrap_or_default(),
            described: self.described.get().map(Vec::as_slice).unwrap_or_default(),
        }
    }

    /// The Parse message that prepares this statement on a server.
    pub fn parse_message(&self, out: &mut BytesMut) -> Bytes {
        self.parse_as(out, self.server_name.as_bytes())
    }

    /// The Parse message that prepares this statement as `name` ("": the unnamed
    /// statement, used when the server's statement names cannot be trusted).
    pub fn parse_as(&self, out: &mut BytesMut, name: &[u8]) -> Bytes {
        protocol::parse(out, name, &self.query, &self.types);
        out.split().freeze()
    }

    /// [`StmtDef::parse_as`], declaring the parameter types the client was
    /// told when it was (Postgres keeps a statement's parameter types from
    /// its Parse: parsed afresh after an `ALTER`, it must not take others;
    /// probe CT).
    pub fn parse_as_told(&self, out: &mut BytesMut, name: &[u8]) -> Bytes {
        let told = self
            .told_params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match told {
            Some(told) => parse_declared(out, name, &self.query, &told),
            None => self.parse_as(out, name),
        }
    }
}

/// A Parse of `query` as statement `name` declaring parameter types `types`.
pub fn parse_declared(out: &mut BytesMut, name: &[u8], query: &[u8], types: &[u32]) -> Bytes {
    let mut t = Vec::with_capacity(2 + 4 * types.len());
    t.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for oid in types {
        t.extend_from_slice(&oid.to_be_bytes());
    }
    protocol::parse(out, name, query, &t);
    out.split().freeze()
}

/// Whether a server can run a statement under its content-addressed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Prepared there, and fresh enough.
    Ready,
    /// Not prepared there.
    Missing,
    /// Prepared there, but too old for this statement or reported stale: the
    /// name cannot be used, nor prepared again until the old copy is closed.
    Stale,
}

/// One statement prepared on a server.
#[derive(Debug)]
struct ServerCopy {
    def: Arc<StmtDef>,
    /// Last use, for the LRU.
    used: u64,
    /// When it was prepared, on the statement clock.
    prepared_at: u64,
    /// Not to be used again; closed when the server is next idle.
    stale: bool,
    /// Its result types, once a Describe of it was answered here (a copy's
    /// never change: Postgres fails a statement whose result did).
    results: OnceLock<Results>,
    /// Its parameter types, once a Describe of it was answered here.
    params: OnceLock<Results>,
}

/// Most bytes of statement text one server keeps prepared (and shardbouncer
/// keeps for it) beyond the statement in use: statements a client closed, or
/// whose client left, stay prepared for the next client that prepares the
/// same text, but not without bound (probe: one client preparing, running
/// and closing 150 texts of 8 MiB took the pooler to 1.2 GB and the backend
/// to 2.4 GB). `max_prepared_statements` bounds their number.
pub const MAX_SERVER_STATEMENT_BYTES: usize = 16 << 20;

/// Statements prepared on one server, with least-recently-used eviction.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// By content hash (looked up at every Bind; keyed, as the statements'
    /// names are).
    map: crate::router::keyed::KeyedMap<u64, ServerCopy>,
    tick: u64,
    /// Bytes of text of the statements in `map`.
    bytes: usize,
}

impl ServerStatements {
    /// Whether this exact statement can run here under its name (and mark it used).
    pub fn touch(&mut self, def: &StmtDef) -> Held {
        self.tick += 1;
        match self.map.get_mut(&def.hash) {
            Some(c) if c.def.same(def) => {
                if c.prepared_at < def.not_before
                    || c.prepared_at < INVALIDATED_AT.load(Ordering::Relaxed)
                {
                    c.stale = true;
                }
                if c.stale {
                    return Held::Stale;
                }
                c.used = self.tick;
                Held::Ready
            }
            // Another text under the same hash (a collision): not usable, and
            // not preparable under that name while it is there.
            Some(_) => Held::Stale,
            None => Held::Missing,
        }
    }

    /// [`Self::touch`], and for a copy that can run here, whether its result
    /// (and parameter) types are the `told` ones (`None`: not known yet). One
    /// lookup, nothing cloned: it runs for every Bind of a statement whose
    /// client was told its types.
    pub fn touch_and_compare(
        &mut self,
        def: &StmtDef,
        told: &[u32],
        told_params: Option<&[u32]>,
    ) -> (Held, Option<bool>) {
        // One lookup: `touch`'s, with the comparison.
        self.tick += 1;
        let c = match self.map.get_mut(&def.hash) {
            Some(c) if c.def.same(def) => c,
            Some(_) => return (Held::Stale, None),
            None => return (Held::Missing, None),
        };
        if c.prepared_at < def.not_before || c.prepared_at < INVALIDATED_AT.load(Ordering::Relaxed)
        {
            c.stale = true;
        }
        if c.stale {
            return (Held::Stale, None);
        }
        c.used = self.tick;
        let held = Held::Ready;
        let Some(results) = c.results.get() else {
            return (held, None);
        };
        let params = match (told_params, c.params.get()) {
            (None, _) => true,
            (Some(t), Some(p)) => **p == *t,
            (Some(_), None) => return (held, None),
        };
        (held, Some(**results == *told && params))
    }

    /// Record a statement as prepared (or being prepared: a Parse is in flight).
    pub fn insert(&mut self, def: Arc<StmtDef>) {
        self.tick += 1;
        let c = ServerCopy {
            def,
            used: self.tick,
            prepared_at: tick(),
            stale: false,
            results: OnceLock::new(),
            params: OnceLock::new(),
        };
        self.bytes += c.def.query.len();
        if let Some(old) = self.map.insert(c.def.hash, c) {
            self.bytes -= old.def.query.len();
        }
    }

    /// The server reported its copy of `def` stale (a cached-plan error) or gone:
    /// it is not used again and is closed when the server is next idle.
    pub fn mark_stale(&mut self, def: &StmtDef) {
        if let Some(c) = self.map.get_mut(&def.hash) {
            if c.def.same(def) {
                c.stale = true;
            }
        }
    }

    /// Remove stale statements and least-recently-used ones beyond `cap`; the
    /// caller closes them on the server. Done only when the server is idle, so the
    /// Close cannot be skipped by an error elsewhere in a pipeline.
    pub fn evict_over(&mut self, cap: usize) -> Vec<Arc<StmtDef>> {
        let cap = cap.max(1);
        let mut out = Vec::new();
        if self.map.values().any(|c| c.stale) {
            let stale: Vec<u64> = self
                .map
                .iter()
                .filter(|(_, c)| c.stale)
                .map(|(h, _)| *h)
                .collect();
            for h in stale {
                if let Some(c) = self.map.remove(&h) {
                    out.push(c.def);
                }
            }
        }
        while self.map.len() > cap
            || (self.bytes > MAX_SERVER_STATEMENT_BYTES && self.map.len() > 1)
        {
            let Some((&h, _)) = self.map.iter().min_by_key(|(_, c)| c.used) else {
                break;
            };
            if let Some(c) = self.map.remove(&h) {
                out.push(c.def);
            }
        }
        self.bytes -= out.iter().map(|d| d.query.len()).sum::<usize>();
        out
    }

    /// The result types of this server's copy of `def`, if known.
    pub fn results(&self, def: &StmtDef) -> Option<Results> {
        self.map
            .get(&def.hash)
            .filter(|c| c.def.same(def))
            .and_then(|c| c.results.get().cloned())
    }

    /// A Describe of this server's copy of `def` was answered with `params`.
    pub fn set_params(&self, def: &StmtDef, params: Results) {
        if let Some(c) = self.map.get(&def.hash) {
            if c.def.same(def) {
                let _ = c.params.set(params);
            }
        }
    }

    /// A Describe of this server's copy of `def` was answered with `results`.
    pub fn set_results(&self, def: &StmtDef, results: Results) {
        if let Some(c) = self.map.get(&def.hash) {
            if c.def.same(def) {
                let _ = c.results.set(results);
            }
        }
    }

    /// Forget a statement (its Parse failed or was skipped). A stale copy stays:
    /// the failed Parse was not of it, and it still has to be closed.
    pub fn remove(&mut self, def: &StmtDef) {
        if self
            .map
            .get(&def.hash)
            .is_some_and(|c| c.def.same(def) && !c.stale)
        {
            if let Some(c) = self.map.remove(&def.hash) {
                self.bytes -= c.def.query.len();
            }
        }
    }

    /// Forget everything (DISCARD ALL / DEALLOCATE ALL ran on the server).
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Number prepared.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Whether an error answering a Bind, Describe or Execute of a server statement
/// means the server's copy can no longer serve its text: its plan depends on
/// objects that changed (`cached plan must not change result type`, `cache
/// lookup failed for type ...` after a type was dropped and created again), or
/// the server no longer has it.
pub fn stale_error(code: &str, message: &str) -> bool {
    match code {
        "0A000" => message.starts_with("cached plan must not change result type"),
        "XX000" => message.starts_with("cache lookup failed for "),
        "26000" => message.contains("\"sb_"),
        _ => false,
    }
}

/// Build a Close(statement) for a server-side name.
pub fn close_message(out: &mut BytesMut, server_name: &str) -> Bytes {
    protocol::close_statement(out, server_name.as_bytes());
    out.split().freeze()
}

/// A Bind, or a Describe/Close of a statement, rewritten to name `server_name`
/// (see [`protocol::rename_statement`]).
pub fn rewrite_name(out: &mut BytesMut, frame: &[u8], server_name: &str) -> Option<Bytes> {
    protocol::rename_statement(out, frame, server_name.as_bytes())?;
    Some(out.split().freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(q: &str) -> Arc<StmtDef> {
        let p = Parse {
            name: b"x",
            query: q.as_bytes(),
            param_types: &[],
        };
        Arc::new(StmtDef::new(&p, Facts::default(), ""))
    }

    #[test]
    fn content_addressed_names() {
        assert_eq!(def("SELECT 1").server_name, def("SELECT 1").server_name);
        assert_ne!(def("SELECT 1").server_name, def("SELECT 2").server_name);
        assert_eq!(def("SELECT 1").server_name.len(), 19);
    }

    #[test]
    fn context_makes_a_different_statement() {
        let p = Parse {
            name: b"x",
            query: b"SELECT * FROM t",
            param_types: &[],
        };
        let a = StmtDef::new(&p, Facts::default(), "ta");
        let b = StmtDef::new(&p, Facts::default(), "tb");
        assert_ne!(a.server_name, b.server_name);
        assert!(!a.same(&b));
    }

    #[test]
    fn lru_evicts_least_recent() {
        let mut s = ServerStatements::default();
        let (a, b, c) = (def("a"), def("b"), def("c"));
        s.insert(a.clone());
        s.insert(b.clone());
        assert_eq!(s.touch(&a), Held::Ready);
        s.insert(c.clone());
        let ev = s.evict_over(2);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].same(&b));
        assert_eq!(s.touch(&a), Held::Ready);
        assert_eq!(s.touch(&c), Held::Ready);
        assert_eq!(s.touch(&b), Held::Missing);
    }

    #[test]
    fn a_copy_older_than_a_deallocation_is_stale_until_closed() {
        let mut s = ServerStatements::default();
        let old = def("SELECT $1::e");
        s.insert(old.clone());
        // Another client's statement of the same text still uses the copy.
        assert_eq!(s.touch(&def("SELECT $1::e")), Held::Ready);
        // This client deallocated the text after the copy was made.
        let mut fresh = StmtDef::new(
            &Parse {
                name: b"y",
                query: b"SELECT $1::e",
                param_types: &[],
            },
            Facts::default(),
            "",
        );
        fresh.not_before = tick();
        assert_eq!(s.touch(&fresh), Held::Stale);
        // Once stale, for everyone; a failed Parse elsewhere does not forget it.
        assert_eq!(s.touch(&old), Held::Stale);
        s.remove(&old);
        assert_eq!(s.touch(&old), Held::Stale);
        // Closed at the next idle point, then prepared afresh.
        let ev = s.evict_over(100);
        assert_eq!(ev.len(), 1);
        assert_eq!(s.touch(&fresh), Held::Missing);
        s.insert(Arc::new(fresh));
        assert_eq!(s.touch(&old), Held::Ready);
    }

    #[test]
    fn a_copy_the_server_reports_stale_is_closed() {
        let mut s = ServerStatements::default();
        let a = def("SELECT * FROM t");
        s.insert(a.clone());
        s.mark_stale(&a);
        assert_eq!(s.touch(&a), Held::Stale);
        assert_eq!(s.evict_over(100).len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn rewrite_bind_keeps_the_rest() {
        let mut f = BytesMut::new();
        f.put_u8(b'B');
        f.put_i32(4 + 2 + 3 + 4);
        f.put_slice(b"p\0");
        f.put_slice(b"s1\0");
        f.put_slice(&[0, 0, 0, 0]);
        let mut out = BytesMut::new();
        let r = rewrite_name(&mut out, &f, "sb_0000000000000001").unwrap();
        assert_eq!(&r[5..7], b"p\0");
        assert_eq!(&r[7..27], b"sb_0000000000000001\0");
        assert_eq!(&r[27..], &[0, 0, 0, 0]);
        let len = i32::from_be_bytes([r[1], r[2], r[3], r[4]]) as usize;
        assert_eq!(len + 1, r.len());
    }
}
