//! Tests of [`super::decide`]: examples of each rule, and properties over
//! statements generated from a grammar of tenant mentions (every quoting style,
//! comments, IN lists, INSERT rows, OR branches, parameters, multi-statement
//! texts, hidden look-alikes).
//!
//! The properties, checked on every `cargo test`:
//! * a unit naming tenants on two shards never gets a shard;
//! * with the lock on, no shard but the locked tenant's is ever returned;
//! * "tenant-free" is never returned for a statement outside the allow-list;
//! * nothing panics.

use super::decide::*;
use super::statement::{analyze, analyze_checked, Facts};
use super::{bind::ParamTypes, bind::ParamValues, Source, TenantKey};
use crate::router::ShardMap;
use proptest::prelude::*;
use std::sync::Arc;

/// Tenants of the test map and their shards (overrides, so placement is certain).
const TENANTS: &[(&str, usize)] = &[
    ("1", 0),
    ("2", 1),
    ("3", 0),
    ("42", 1),
    ("acme", 0),
    ("globex", 1),
];

fn shard_of(k: &str) -> usize {
    TENANTS.iter().find(|(t, _)| *t == k).map(|t| t.1).unwrap()
}

fn routing(sources: &[Source], lock: bool, no_tenant: NoTenant) -> Routing {
    let mut map = String::from("version = 1\nmethod = \"citus\"\n[tenants]\n");
    for (t, s) in TENANTS {
        map.push_str(&format!("\"{t}\" = \"s{s}\"\n"));
    }
    let names = vec!["s0".to_string(), "s1".to_string()];
    Routing {
        key: "tenant_id".into(),
        sources: sources.to_vec(),
        no_tenant,
        default_shard: match no_tenant {
            NoTenant::Default(d) => Some(d),
            NoTenant::Reject => None,
        },
        lock_startup_tenant: lock,
        user_suffix: None,
        map: Arc::new(ShardMap::parse(&map, &names).unwrap()),
        map_source: None,
        loaded_at: std::time::SystemTime::now(),
    }
}

const ALL: &[Source] = &[Source::Startup, Source::Comment, Source::Set, Source::Scan];

fn key(s: &str) -> TenantKey {
    TenantKey::new(s.as_bytes()).unwrap()
}

fn view(t: &Tenants, tx: Tx) -> SessionView<'_> {
    SessionView {
        tenants: t,
        tx,
        pinned_by: None,
        std_strings: true,
        ascii_only: false,
        keys_ascii_only: false,
        lexing_unsure: false,
        owns_server: false,
        server_failed: false,
        types_untrusted: false,
        runs_rollback_to: false,
        held_state: false,
        server_copies: false,
    }
}

fn query(r: &Routing, t: &Tenants, tx: Tx, sql: &str) -> Decision {
    let mut f = Facts::default();
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    decide(r, &view(t, tx), Unit::query(&f), &mut Vec::new())
}

/// A session whose server may hold types of its own, or whose
/// `search_path` names `pg_catalog` after another schema.
fn untrusted(t: &Tenants) -> SessionView<'_> {
    SessionView {
        types_untrusted: true,
        ..view(t, Tx::Idle)
    }
}

/// Decide `sql` as a simple Query for session `v`.
fn query_in(r: &Routing, v: &SessionView<'_>, sql: &str) -> Decision {
    let mut f = Facts::default();
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    decide(r, v, Unit::query(&f), &mut Vec::new())
}

/// Text-format Bind values.
struct Values(Vec<Option<Vec<u8>>>);

impl ParamValues for &Values {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn format(&self, _: usize) -> i16 {
        0
    }
    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>)) {
        for (i, v) in self.0.iter().enumerate() {
            f(i, v.as_deref());
        }
    }
}

/// Parse + Bind + Execute + Sync of `sql` with `values`.
fn extended(r: &Routing, t: &Tenants, tx: Tx, sql: &str, values: &[&str]) -> Decision {
    let mut f = Facts::default();
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    let v = Values(values.iter().map(|s| Some(s.as_bytes().to_vec())).collect());
    let items = [
        Item::Parse(&f),
        Item::Bind(&f, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
    ];
    batch(r, t, tx, items)
}

/// Decide an extended batch of `items` for a session with tenants `t` in `tx`.
fn batch<'a, V: ParamValues + 'a>(
    r: &Routing,
    t: &Tenants,
    tx: Tx,
    items: impl IntoIterator<Item = Item<'a, V>>,
) -> Decision {
    decide(
        r,
        &view(t, tx),
        Unit::batch(items.into_iter()),
        &mut Vec::new(),
    )
}

fn shard(d: &Decision) -> Option<usize> {
    match d {
        Decision::Shard { shard, .. } => Some(*shard),
        _ => None,
    }
}

fn code(d: &Decision) -> &'static str {
    match d {
        Decision::Refuse(r) => r.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_mention_routes_and_two_shards_are_refused() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let d = query(&r, &t, Tx::Idle, "SELECT * FROM a WHERE tenant_id = 42");
    assert_eq!(shard(&d), Some(1));
    for sql in [
        "SELECT * FROM a WHERE tenant_id = 1 OR tenant_id = 2",
        "SELECT * FROM a WHERE tenant_id IN (1, 2)",
        "INSERT INTO a (tenant_id, x) VALUES (1, 'a'), (2, 'b')",
        "/* tenant_id=1 */ SELECT * FROM a WHERE tenant_id = 2",
        "SELECT 1 WHERE tenant_id = 1; SELECT 2 WHERE tenant_id = 2",
    ] {
        assert_eq!(code(&query(&r, &t, Tx::Idle, sql)), "0A000", "{sql}");
    }
    // Two tenants on one shard are fine.
    let d = query(
        &r,
        &t,
        Tx::Idle,
        "SELECT * FROM a WHERE tenant_id IN (1, 3)",
    );
    assert_eq!(shard(&d), Some(0));
}

/// A value an UPDATE's SET list gives the key is checked against the
/// shard the work runs on, and never picks it (probe CX F9: `UPDATE .. SET
/// tenant_id = 42 WHERE id = 1` went to 42's shard, where row 1 was another
/// tenant's).
#[test]
fn a_value_a_set_list_writes_checks_the_shard_and_never_picks_it() {
    let r = routing(ALL, false, NoTenant::Reject);
    let none = Tenants::default();
    let one = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    let forty_two = Tenants {
        startup: Some(key("42")),
        ..Default::default()
    };
    let sql = "UPDATE a SET tenant_id = 42, x = 1 WHERE id = 1";
    assert_eq!(code(&query(&r, &none, Tx::Idle, sql)), "42P17");
    assert_eq!(code(&query(&r, &one, Tx::Idle, sql)), "0A000");
    assert_eq!(shard(&query(&r, &forty_two, Tx::Idle, sql)), Some(1));
    // The filter's tenant places it; the new value is checked.
    let d = query(
        &r,
        &none,
        Tx::Idle,
        "UPDATE a SET tenant_id = 3 WHERE tenant_id = 1",
    );
    assert_eq!(shard(&d), Some(0));
    let sql = "UPDATE a SET tenant_id = 42 WHERE tenant_id = 1";
    assert_eq!(code(&query(&r, &none, Tx::Idle, sql)), "0A000");
    // Bound: a parameter only the SET list uses picks nothing; one also in
    // the filter does.
    let sql = "UPDATE a SET tenant_id = $1 WHERE id = $2";
    assert_eq!(
        code(&extended(&r, &none, Tx::Idle, sql, &["42", "7"])),
        "42P17"
    );
    assert_eq!(
        code(&extended(&r, &one, Tx::Idle, sql, &["42", "7"])),
        "0A000"
    );
    assert_eq!(
        shard(&extended(&r, &one, Tx::Idle, sql, &["3", "7"])),
        Some(0)
    );
    let sql = "UPDATE a SET tenant_id = $1 WHERE tenant_id = $1";
    assert_eq!(shard(&extended(&r, &none, Tx::Idle, sql, &["42"])), Some(1));
    // A MERGE's INSERT alike: its other actions change what ON matches.
    let sql = "MERGE INTO a USING s ON a.id = s.id WHEN MATCHED THEN UPDATE SET x = 1 \
               WHEN NOT MATCHED THEN INSERT (tenant_id, x) VALUES (42, 1)";
    assert_eq!(code(&query(&r, &none, Tx::Idle, sql)), "42P17");
    assert_eq!(code(&query(&r, &one, Tx::Idle, sql)), "0A000");
    assert_eq!(shard(&query(&r, &forty_two, Tx::Idle, sql)), Some(1));
    // In a transaction a tenant placed, and under no_tenant = default.
    let mut v = view(&none, Tx::Pinned(0));
    v.pinned_by = Some((key("1"), Source::Scan));
    let mut f = Facts::default();
    crate::router::statement::analyze(
        b"UPDATE a SET tenant_id = 42 WHERE id = 1",
        b"tenant_id",
        true,
        &mut f,
    );
    let mut scratch = Vec::new();
    let d = decide(&r, &v, Unit::query(&f), &mut scratch);
    assert_eq!(code(&d), "0A000");
    let r = routing(ALL, false, NoTenant::Default(0));
    let sql = "UPDATE a SET tenant_id = 42 WHERE id = 1";
    assert_eq!(code(&query(&r, &none, Tx::Idle, sql)), "0A000");
    let sql = "UPDATE a SET tenant_id = 3 WHERE id = 1";
    assert_eq!(shard(&query(&r, &none, Tx::Idle, sql)), Some(0));
}

#[test]
fn every_bind_parameter_is_checked() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let ins = "INSERT INTO a (tenant_id, x) VALUES ($1, $2), ($3, $4)";
    assert_eq!(
        code(&extended(&r, &t, Tx::Idle, ins, &["1", "a", "2", "b"])),
        "0A000"
    );
    assert_eq!(
        shard(&extended(&r, &t, Tx::Idle, ins, &["1", "a", "3", "b"])),
        Some(0)
    );
    let or = "SELECT * FROM a WHERE tenant_id = $1 OR tenant_id = $2";
    assert_eq!(
        code(&extended(&r, &t, Tx::Idle, or, &["acme", "globex"])),
        "0A000"
    );
    // A missing or empty key parameter is an error, not "no tenant".
    assert_eq!(code(&extended(&r, &t, Tx::Idle, or, &["acme"])), "22023");
    assert_eq!(
        code(&extended(&r, &t, Tx::Idle, or, &["acme", ""])),
        "22023"
    );
}

/// A parameter cast to an integer type is the integer its text makes
/// (`$1::int` of '042' is 42, and 42 is what a text column gets): probe,
/// routed as '042'.
#[test]
fn a_bind_value_is_read_as_its_cast_reads_it() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    for (sql, values) in [
        ("SELECT * FROM a WHERE tenant_id = $1::int", &["042"][..]),
        (
            "INSERT INTO a (tenant_id, x) VALUES ($1::int8, $2)",
            &["+42", "x"],
        ),
        ("SELECT * FROM a WHERE tenant_id = $1::text::int", &[" 42 "]),
        (
            "SELECT * FROM a WHERE tenant_id = ANY($1::int[])",
            &["{042,2}"],
        ),
        // Used twice, the readings must agree: '42' and 42 do.
        (
            "SELECT * FROM a WHERE tenant_id = $1 OR tenant_id = $1::int",
            &["42"],
        ),
    ] {
        assert_eq!(
            shard(&extended(&r, &t, Tx::Idle, sql, values)),
            Some(1),
            "{sql}"
        );
    }
    for (sql, values, want) in [
        (
            "SELECT * FROM a WHERE tenant_id = $1::int",
            &["acme"][..],
            "22023",
        ),
        (
            "SELECT * FROM a WHERE tenant_id = $1::uuid",
            &["42"],
            "22023",
        ),
        (
            "SELECT * FROM a WHERE tenant_id = ANY($1::int[])",
            &["{42,x}"],
            "22023",
        ),
        // Without the cast, '042' is no canonical integer: its type is
        // unknown, an invalid tenant value (probe CW F6: it was 42P17).
        ("SELECT * FROM a WHERE tenant_id = $1", &["042"], "22023"),
        ("SELECT * FROM a WHERE tenant_id = $1", &["42.0"], "22023"),
    ] {
        assert_eq!(
            code(&extended(&r, &t, Tx::Idle, sql, values)),
            want,
            "{sql}"
        );
    }
}

/// An integer is read however long it is spelled: Postgres takes any number
/// of leading zeros or blanks, so the 63-byte limit of a key is the limit of
/// the integer's text, not of the value sent (probe W: refused, 22023).
#[test]
fn an_integer_is_read_however_long_it_is_spelled() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let zeros = format!("{}42", "0".repeat(100));
    let blanks = format!("{}042 ", " ".repeat(100));
    for value in [&zeros, &blanks] {
        let d = extended(
            &r,
            &t,
            Tx::Idle,
            "SELECT * FROM a WHERE tenant_id = $1::int",
            &[value],
        );
        assert_eq!(shard(&d), Some(1), "{value:?}");
    }
    let sql = format!("SELECT * FROM a WHERE tenant_id = '{zeros}'::int8");
    assert_eq!(shard(&query(&r, &t, Tx::Idle, &sql)), Some(1));
    let sql = format!("SELECT * FROM a WHERE tenant_id = E'{blanks}'::int");
    assert_eq!(shard(&query(&r, &t, Tx::Idle, &sql)), Some(1));
    // Not an integer however it is read, and a text key past 63 bytes, stay
    // refused.
    let long = format!("{}x", "0".repeat(100));
    let d = extended(
        &r,
        &t,
        Tx::Idle,
        "SELECT * FROM a WHERE tenant_id = $1::int",
        &[&long],
    );
    assert_eq!(code(&d), "22023");
    let d = extended(
        &r,
        &t,
        Tx::Idle,
        "SELECT * FROM a WHERE tenant_id = $1",
        &[&zeros],
    );
    assert_eq!(code(&d), "22023");
    let sql = format!("SELECT * FROM a WHERE tenant_id = '{zeros}'");
    assert_eq!(code(&query(&r, &t, Tx::Idle, &sql)), "22023");
}

/// A value cast to a type Postgres finds by name (`text`, `int8`, `uuid`,
/// ...) is refused where the session may have a type of that name: a
/// temporary domain `text AS varchar(1)` reads `'gamma'::text` as `g`
/// (probe EE). Keyword types (`varchar`, `int`, `bigint`) are always
/// `pg_catalog`'s.
#[test]
fn a_cast_to_a_type_found_by_name_is_refused_once_types_may_have_been_created() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let distrust = untrusted(&t);
    let run = |v: &SessionView<'_>, sql: &str| query_in(&r, v, sql);
    for sql in [
        "INSERT INTO a (tenant_id, x) VALUES ('42'::text, 1)",
        "SELECT * FROM a WHERE tenant_id = '42'::int8",
        "SELECT * FROM a WHERE tenant_id IN ('42'::text, 43)",
        "SELECT * FROM a WHERE tenant_id = ANY(ARRAY['42']::text[])",
        // The CAST spelling, which has no `::` (probe II).
        "SELECT * FROM a WHERE tenant_id = CAST('42' AS text)",
        "SELECT * FROM a WHERE CAST(42 AS int8) = tenant_id",
    ] {
        assert_eq!(shard(&run(&view(&t, Tx::Idle), sql)), Some(1), "{sql}");
        assert_eq!(code(&run(&distrust, sql)), "0A000", "{sql}");
        // In the same text as what may create the type, or put a schema
        // that has one ahead of pg_catalog.
        for before in [
            "CREATE DOMAIN pg_temp.text AS varchar(1)",
            "SET search_path = evil, pg_catalog",
            "SELECT set_config('search_path', 'evil, pg_catalog', true)",
        ] {
            let both = format!("{before}; {sql}");
            assert_eq!(code(&run(&view(&t, Tx::Idle), &both)), "0A000", "{both}");
        }
        let safe = format!("SET search_path = pg_catalog, evil; {sql}");
        assert_eq!(shard(&run(&view(&t, Tx::Idle), &safe)), Some(1), "{safe}");
    }
    // Keyword types, no cast, and casts elsewhere in the text route.
    for sql in [
        "SELECT * FROM a WHERE tenant_id = '42'::varchar",
        "SELECT * FROM a WHERE tenant_id = '42'::bigint",
        "SELECT * FROM a WHERE tenant_id = 42",
        "SELECT x::text FROM a WHERE tenant_id = '42'",
    ] {
        assert_eq!(shard(&run(&distrust, sql)), Some(1), "{sql}");
    }
    // A parameter cast by name, in a batch behind what may create the type.
    let mut create = Facts::default();
    analyze(
        b"CREATE DOMAIN pg_temp.int8 AS numeric(2,-1)",
        r.key.as_bytes(),
        true,
        &mut create,
    );
    let mut ins = Facts::default();
    let sql = "INSERT INTO a (tenant_id, x) VALUES ($1::int8, 1)";
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut ins);
    assert!(ins.casts_by_name);
    let values = Values(vec![Some(b"42".to_vec()), None]);
    let d = batch(
        &r,
        &t,
        Tx::Pinned(1),
        vec![
            Item::Parse(&create),
            Item::Execute(b""),
            Item::Bind(&ins, ParamTypes::default(), &values, b""),
            Item::Execute(b""),
        ],
    );
    assert_eq!(code(&d), "0A000");
}

/// A statement of 65,535 key parameters is analyzed and decided in
/// n log n: a search per mention took a worker for a minute (probe FF). Its
/// values name one tenant (repeats count once), or two shards.
#[test]
fn a_statement_of_every_parameter_there_can_be_is_decided() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let n = u16::MAX as usize;
    for cast in ["", "::int"] {
        let list: Vec<String> = (1..=n).map(|i| format!("${i}{cast}")).collect();
        let sql = format!("SELECT * FROM a WHERE tenant_id IN ({})", list.join(", "));
        let mut values = vec!["42"; n];
        assert_eq!(
            shard(&extended(&r, &t, Tx::Idle, &sql, &values)),
            Some(1),
            "{cast}"
        );
        values[n - 1] = "1";
        let other = shard_of("1");
        if other != 1 {
            assert_eq!(
                code(&extended(&r, &t, Tx::Idle, &sql, &values)),
                "0A000",
                "{cast}"
            );
        }
    }
}

/// A Bind of a statement the client does not have gets Postgres's 26000
/// where the unit would want for a tenant: drivers prepare again on it
/// (probe T: 42P17).
#[test]
fn a_bind_of_an_unknown_statement_is_26000_not_a_missing_tenant() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let run = |items: Vec<Item<'_, &Values>>| batch(&r, &t, Tx::Idle, items);
    let d = run(vec![Item::BindUnknown(b"s1"), Item::Execute(b"")]);
    match &d {
        Decision::Refuse(e) => {
            assert_eq!(e.code, "26000");
            assert_eq!(e.message, "prepared statement \"s1\" does not exist");
        }
        other => panic!("{other:?}"),
    }
    let d = run(vec![Item::BindUnknown(b""), Item::Execute(b"")]);
    assert_eq!(code(&d), "26000");
    // With a tenant, the unit goes to its server, which answers it.
    let with = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    let d = batch(
        &r,
        &with,
        Tx::Idle,
        vec![Item::<&Values>::BindUnknown(b"s1"), Item::Execute(b"")],
    );
    assert_eq!(shard(&d), Some(0));
}

/// A key parameter the text also uses elsewhere takes its type from its
/// first use, which may be there (probe W: `$1 = 'x'::"char"` in a CTE made
/// 'bXYZ' the tenant 'b'): without a type from the Parse or a Describe it is
/// refused. Used only where the key is, it routes.
#[test]
fn a_key_parameter_used_elsewhere_needs_a_known_type() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    for sql in [
        "WITH c AS (SELECT $1 = 'x'::\"char\") INSERT INTO a (tenant_id) VALUES ($1)",
        "SELECT * FROM a WHERE $1 <> 'zz'::char(2) AND tenant_id = $1",
        "INSERT INTO a (tenant_id, created_by) VALUES ($1, $1)",
    ] {
        assert_eq!(
            code(&extended(&r, &t, Tx::Idle, sql, &["1"])),
            "22023",
            "{sql}"
        );
    }
    let both = "SELECT * FROM a JOIN b ON b.tenant_id = $1 WHERE a.tenant_id = $1";
    assert_eq!(shard(&extended(&r, &t, Tx::Idle, both, &["1"])), Some(0));
    // Under the lock, two key columns may not type it either (probe Y: a
    // temporary table's `"char"` tenant_id did).
    let locked = routing(ALL, true, NoTenant::Reject);
    let t1 = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    assert_eq!(
        code(&extended(&locked, &t1, Tx::Idle, both, &["1"])),
        "22023"
    );
    let one = "SELECT * FROM a WHERE a.tenant_id = $1";
    assert_eq!(
        shard(&extended(&locked, &t1, Tx::Idle, one, &["1"])),
        Some(0)
    );
    // With its type declared, it is read as that type.
    let mut f = Facts::default();
    let sql = "INSERT INTO a (tenant_id, created_by) VALUES ($1, $1)";
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    let v = Values(vec![Some(b"1".to_vec())]);
    let text = 25u32.to_be_bytes();
    let types = ParamTypes {
        declared: &text,
        described: &[],
    };
    let d = batch(
        &r,
        &t,
        Tx::Idle,
        [
            Item::Parse(&f),
            Item::Bind(&f, types, &v, b""),
            Item::Execute(b""),
        ],
    );
    assert_eq!(shard(&d), Some(0));
}

#[test]
fn the_lock_wins_whatever_the_source_order() {
    let t = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    for order in [
        ALL.to_vec(),
        vec![Source::Comment, Source::Startup, Source::Set, Source::Scan],
        vec![Source::Scan, Source::Comment, Source::Set, Source::Startup],
    ] {
        let r = routing(&order, true, NoTenant::Reject);
        // Another shard's tenant: cross-shard; another tenant on the same shard:
        // the lock.
        assert_eq!(
            code(&query(&r, &t, Tx::Idle, "/* tenant_id=2 */ SELECT 1")),
            "0A000"
        );
        assert_eq!(
            code(&query(&r, &t, Tx::Idle, "/* tenant_id=3 */ SELECT 1")),
            "42501"
        );
        assert_eq!(
            code(&query(
                &r,
                &t,
                Tx::Idle,
                "SELECT * FROM a WHERE tenant_id = 3"
            )),
            "42501"
        );
        assert_eq!(
            code(&extended(
                &r,
                &t,
                Tx::Idle,
                "SELECT * FROM a WHERE tenant_id = $1",
                &["2"]
            )),
            "0A000"
        );
        assert_eq!(code(&query(&r, &t, Tx::Idle, "SET tenant_id = 2")), "42501");
        assert_eq!(
            code(&query(
                &r,
                &t,
                Tx::Held { stmts: false },
                "SET LOCAL tenant_id = 2"
            )),
            "42501"
        );
        assert_eq!(
            code(&query(&r, &t, Tx::Idle, "SET LOCAL tenant_id = 3")),
            "42501"
        );
        assert_eq!(code(&query(&r, &t, Tx::Idle, "RESET tenant_id")), "42501");
        // The locked tenant itself, and no tenant at all, go to its shard.
        assert_eq!(
            shard(&query(
                &r,
                &t,
                Tx::Idle,
                "SELECT * FROM a WHERE tenant_id = 1"
            )),
            Some(0)
        );
        assert_eq!(shard(&query(&r, &t, Tx::Idle, "SELECT * FROM a")), Some(0));
        let d = decide(
            &r,
            &view(&t, Tx::Idle),
            Unit::function_call(),
            &mut Vec::new(),
        );
        assert_eq!(shard(&d), Some(0));
        assert_eq!(
            query(&r, &t, Tx::Held { stmts: false }, "SET LOCAL tenant_id = 1"),
            Decision::Local(Local::SetTenant {
                local: true,
                key: Some(key("1"))
            })
        );
    }
}

#[test]
fn tenant_free_is_an_allow_list() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    for sql in [
        "SET x.y = 1; SELECT * FROM a",
        "SHOW work_mem; SELECT * FROM a",
        "COMMIT; SELECT * FROM a",
        "RESET ALL; DELETE FROM a",
        "(SELECT * FROM a)",
        ";SELECT * FROM a",
        "WITH q AS (SELECT 1) SELECT * FROM a",
        // Settings and server facts only with no FROM, else not.
        "SELECT version() FROM a",
        "SELECT version(), * FROM a",
        "SELECT set_config('a.b', (SELECT name FROM a LIMIT 1), false)",
        "SELECT current_setting(name) FROM a",
        "SELECT f()",
        "SELECT public.version()",
        "SELECT version() WHERE EXISTS (SELECT 1 FROM a)",
        "SELECT version() UNION SELECT name FROM a",
        "SELECT 1 FROM a",
        // A cast to a type of the application's runs its code (a domain's
        // CHECK), whatever the function (probe CW F6).
        "SELECT current_setting('x'::tdom, true)",
        "SELECT set_config('app.x', 'y'::tdom, false)",
        "SELECT current_setting('x'::public.text)",
        // The catalog read with a table of the application's.
        "SELECT * FROM pg_catalog.pg_class c JOIN a ON true",
        // `ordinality` is no alias's announcement (probe CW F1).
        "SELECT *, 1 AS ordinality FROM a /* pg_ */",
    ] {
        assert_eq!(code(&query(&r, &t, Tx::Idle, sql)), "42P17", "{sql}");
    }
    for sql in [
        "SET statement_timeout = '5s'; SHOW statement_timeout",
        "",
        "DISCARD ALL",
        "LISTEN a; UNLISTEN a",
        // Drivers' and ORMs' connection setup (probe CB: Django's time
        // zone, SQLAlchemy's version and schema, asyncpg's jit switch).
        "SELECT set_config('TimeZone', 'UTC', false)",
        "SELECT set_config('TimeZone', $1, false)",
        "select pg_catalog.version()",
        "select current_schema()",
        "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
        "SELECT current_user, session_user, current_database() db, pg_backend_pid()",
        "SELECT current_setting('search_path'::text)",
        // Health checks, and catalog reads (router::catalog): drivers'
        // type and table introspection.
        "SELECT 1",
        "SELECT t.oid, typarray FROM pg_type t WHERE t.typname = 'json'",
    ] {
        assert_eq!(query(&r, &t, Tx::Idle, sql), Decision::TenantFree, "{sql}");
    }
    // No tenant inside a transaction a tenant placed: its shard.
    let mut f = Facts::default();
    analyze(b"SELECT * FROM a", r.key.as_bytes(), true, &mut f);
    let placed = SessionView {
        pinned_by: Some((key("42"), Source::Scan)),
        ..view(&t, Tx::Pinned(1))
    };
    assert_eq!(
        shard(&decide(&r, &placed, Unit::query(&f), &mut Vec::new())),
        Some(1)
    );
    // ... but one tenant-free work opened (`BEGIN; SET ..` as one Query) is
    // on no tenant's shard: the policy decides, as outside it.
    assert_eq!(
        code(&query(&r, &t, Tx::Pinned(1), "SELECT * FROM a")),
        "42P17"
    );
    for (default, want) in [(1, Ok(1)), (0, Err("0A000"))] {
        let r = routing(ALL, false, NoTenant::Default(default));
        let d = query(&r, &t, Tx::Pinned(1), "SELECT * FROM a");
        match want {
            Ok(s) => assert_eq!(shard(&d), Some(s), "default {default}"),
            Err(c) => assert_eq!(code(&d), c, "default {default}"),
        }
    }
    // ... and while work in flight may open one: wait.
    assert_eq!(
        query(&r, &t, Tx::Unsettled(1), "SELECT * FROM a"),
        Decision::Wait
    );
    // FunctionCall has no text: the session tenant, or the policy.
    let d = decide(
        &r,
        &view(&t, Tx::Idle),
        Unit::function_call(),
        &mut Vec::new(),
    );
    assert_eq!(code(&d), "42P17");
    let with = Tenants {
        set: Some(key("globex")),
        ..Default::default()
    };
    let d = decide(
        &r,
        &view(&with, Tx::Idle),
        Unit::function_call(),
        &mut Vec::new(),
    );
    assert_eq!(shard(&d), Some(1));
    let r = routing(ALL, false, NoTenant::Default(1));
    assert_eq!(shard(&query(&r, &t, Tx::Idle, "SELECT * FROM a")), Some(1));
}

/// A SHOW that would run outside a held BEGIN with modes or held
/// statements is refused: it would answer the session's setting, not the
/// transaction's (probe YY). Placed by a tenant, it runs inside.
#[test]
fn show_outside_a_held_begin_that_changed_settings_is_refused() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let decide_one = |sql: &str, held_state: bool, ext: bool, t: &Tenants| {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
        let v = SessionView {
            held_state,
            ..view(t, Tx::Held { stmts: held_state })
        };
        let none = Values(Vec::new());
        if ext {
            let items = [
                Item::Parse(&f),
                Item::Bind(&f, ParamTypes::default(), &none, b""),
                Item::Execute(b""),
            ];
            decide(&r, &v, Unit::batch(items.into_iter()), &mut Vec::new())
        } else {
            decide(&r, &v, Unit::query(&f), &mut Vec::new())
        }
    };
    for ext in [false, true] {
        for sql in ["SHOW transaction_isolation", "SHOW a; SHOW b"] {
            assert_eq!(code(&decide_one(sql, true, ext, &t)), "0A000", "{sql}");
            assert_eq!(decide_one(sql, false, ext, &t), Decision::TenantFree);
        }
        // A tenant places the transaction: the SHOW runs inside it.
        let d = decide_one("/* tenant_id=2 */ SHOW work_mem", true, ext, &t);
        assert!(matches!(d, Decision::Shard { .. }), "{d:?}");
        let with = Tenants {
            set: Some(key("2")),
            ..Tenants::default()
        };
        let d = decide_one("SHOW work_mem", true, ext, &with);
        assert!(matches!(d, Decision::Shard { .. }), "{d:?}");
    }
    // Other tenant-free work still runs outside.
    assert_eq!(
        decide_one("DISCARD TEMP", true, false, &t),
        Decision::TenantFree
    );
}

#[test]
fn held_and_failed_transactions() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let held = Tx::Held { stmts: false };
    assert_eq!(
        query(&r, &t, Tx::Idle, "BEGIN"),
        Decision::Local(Local::HoldBegin)
    );
    assert_eq!(
        query(&r, &t, held, "BEGIN"),
        Decision::Local(Local::BeginAgain)
    );
    assert_eq!(
        query(&r, &t, held, "COMMIT"),
        Decision::Local(Local::EndHeld { commit: true })
    );
    assert_eq!(
        query(&r, &t, held, "SET LOCAL statement_timeout = 1"),
        Decision::Local(Local::Hold)
    );
    assert_eq!(
        query(&r, &t, held, "SET a.b = 1; SAVEPOINT s"),
        Decision::Local(Local::Hold)
    );
    // Transaction control among tenant-free statements runs inside the held
    // BEGIN (on the home shard), never outside it; without it, they run outside.
    for sql in [
        "SHOW work_mem; BEGIN",
        "SHOW work_mem; SAVEPOINT s",
        "SHOW a; COMMIT",
        // A SET among them too: a ROLLBACK undoes it (probe AC).
        "SET work_mem = '3MB'; SHOW work_mem",
        "DISCARD TEMP; RESET work_mem",
    ] {
        assert_eq!(shard(&query(&r, &t, held, sql)), Some(0), "{sql}");
        assert!(matches!(
            extended(&r, &t, held, sql, &[]),
            Decision::Shard { shard: 0, .. }
        ));
    }
    assert_eq!(query(&r, &t, held, "SHOW work_mem"), Decision::TenantFree);
    assert_eq!(
        query(&r, &t, Tx::Idle, "SHOW a; BEGIN"),
        Decision::TenantFree
    );
    // Held statements must take effect when the transaction commits.
    assert_eq!(
        shard(&query(&r, &t, Tx::Held { stmts: true }, "COMMIT")),
        Some(0)
    );
    assert_eq!(
        query(&r, &t, Tx::Held { stmts: true }, "ROLLBACK"),
        Decision::Local(Local::EndHeld { commit: false })
    );
    // A failed transaction refuses everything but its end, which rolls back.
    assert_eq!(
        code(&query(
            &r,
            &t,
            Tx::Failed,
            "SELECT * FROM a WHERE tenant_id = 1"
        )),
        "25P02"
    );
    assert_eq!(
        code(&query(&r, &t, Tx::Failed, "SET LOCAL tenant_id = 1")),
        "25P02"
    );
    assert_eq!(
        query(&r, &t, Tx::Failed, "COMMIT"),
        Decision::Local(Local::EndHeld { commit: false })
    );
    assert_eq!(
        code(&extended(&r, &t, Tx::Failed, "SELECT 1", &[])),
        "25P02"
    );
    // A ROLLBACK TO goes back to a savepoint the session holds, as a Query
    // or through Parse/Bind/Execute (PgJDBC's rollback(savepoint)).
    assert_eq!(
        query(&r, &t, Tx::Failed, "ROLLBACK TO SAVEPOINT a"),
        Decision::Local(Local::RollbackToHeld)
    );
    assert_eq!(
        extended(&r, &t, Tx::Failed, "ROLLBACK TO a", &[]),
        Decision::Local(Local::RollbackToHeld)
    );
    // Its end through Parse/Bind/Execute too (PgJDBC's rollback()), but only
    // alone: a chain, a tenant comment or anything after it stays refused.
    for end in ["ROLLBACK", "COMMIT", "END", "ABORT"] {
        assert_eq!(
            extended(&r, &t, Tx::Failed, end, &[]),
            Decision::Local(Local::EndHeld { commit: false }),
            "{end}"
        );
    }
    for other in [
        "ROLLBACK AND CHAIN",
        "/* tenant_id=1 */ ROLLBACK",
        "ROLLBACK; SELECT 1",
    ] {
        assert_eq!(
            code(&extended(&r, &t, Tx::Failed, other, &[])),
            "25P02",
            "{other}"
        );
    }
    let (mut end, mut sel) = (Facts::default(), Facts::default());
    analyze(b"ROLLBACK", r.key.as_bytes(), true, &mut end);
    analyze(b"SELECT 1", r.key.as_bytes(), true, &mut sel);
    let v = Values(Vec::new());
    let run = |items: Vec<Item<'_, &Values>>| batch(&r, &t, Tx::Failed, items);
    // The Execute must run the ROLLBACK's own portal, once.
    let twice = vec![
        Item::Parse(&end),
        Item::Bind(&end, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
        Item::Execute(b""),
    ];
    assert_eq!(code(&run(twice)), "25P02");
    let elsewhere = vec![
        Item::Parse(&end),
        Item::Bind(&end, ParamTypes::default(), &v, b"p"),
        Item::Execute(b""),
    ];
    assert_eq!(code(&run(elsewhere)), "25P02");
    let after = vec![
        Item::Parse(&end),
        Item::Bind(&end, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
        Item::Parse(&sel),
    ];
    assert_eq!(code(&run(after)), "25P02");
    let parse_only = vec![Item::Parse(&end), Item::Other];
    assert_eq!(code(&run(parse_only)), "25P02");
    // Fuzz regression: an empty query is fine in a failed transaction, but one
    // whose comment names a tenant is not "tenant-free".
    assert_eq!(query(&r, &t, Tx::Failed, "/* x */"), Decision::TenantFree);
    assert_eq!(
        code(&query(&r, &t, Tx::Failed, "/* tenant_id=aET *x = ")),
        "25P02"
    );
    // A pinned transaction refuses another shard's tenant.
    assert_eq!(
        code(&query(
            &r,
            &t,
            Tx::Pinned(0),
            "SELECT * FROM a WHERE tenant_id = 2"
        )),
        "0A000"
    );
    assert_eq!(
        code(&query(&r, &t, Tx::Pinned(0), "SET LOCAL tenant_id = 2")),
        "0A000"
    );
    assert_eq!(
        query(&r, &t, Tx::Idle, "SET LOCAL tenant_id = 2"),
        Decision::Local(Local::SetLocalOutsideTx)
    );
}

#[test]
fn too_many_values_in_an_array_parameter_is_too_complex() {
    // As for literals (54001), not an invalid value (probe: 22023).
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let sql = "SELECT * FROM accounts WHERE tenant_id = ANY($1)";
    let many = format!("{{{}}}", vec!["1"; 10_001].join(","));
    assert_eq!(code(&extended(&r, &t, Tx::Idle, sql, &[&many])), "54001");
    let fine = format!("{{{}}}", vec!["1"; 10_000].join(","));
    assert_eq!(shard(&extended(&r, &t, Tx::Idle, sql, &[&fine])), Some(0));
    assert_eq!(
        code(&extended(&r, &t, Tx::Idle, sql, &["{1,NULL}"])),
        "22023"
    );
}

#[test]
fn a_pinned_transaction_always_ends_on_its_shard() {
    // Probe finding: BEGIN, tenant 42's work (shard s1), `SET tenant_id = 1`
    // (shard s0) was accepted, and from then on COMMIT and ROLLBACK were
    // placed by the session tenant and refused: the transaction could not end.
    let r = routing(ALL, false, NoTenant::Reject);
    let none = Tenants::default();
    let pinned = Tx::Pinned(1);
    assert_eq!(
        code(&query(&r, &none, pinned, "SET tenant_id = 1")),
        "0A000",
        "a session SET names the tenant inside the transaction too"
    );
    assert_eq!(
        query(&r, &none, pinned, "SET tenant_id = 42"),
        Decision::Local(Local::SetTenant {
            local: false,
            key: Some(key("42"))
        })
    );
    assert_eq!(
        query(&r, &none, Tx::Unsettled(1), "SET tenant_id = 1"),
        Decision::Wait
    );
    assert!(matches!(
        query(&r, &none, pinned, "RESET tenant_id"),
        Decision::Local(Local::SetTenant { key: None, .. })
    ));
    // Whatever the session's tenants say (here: tenant 1, on s0, pinned to
    // s1 by a mention when the scan came first), tenant-free work naming no
    // tenant runs in the transaction, and its end always reaches the shard.
    let set = Tenants {
        set: Some(key("1")),
        ..Tenants::default()
    };
    let startup = Tenants {
        startup: Some(key("1")),
        ..Tenants::default()
    };
    for t in [&set, &startup] {
        for sql in [
            "COMMIT",
            "ROLLBACK",
            "END",
            "ABORT",
            "COMMIT AND CHAIN",
            "SHOW x",
        ] {
            assert_eq!(query(&r, t, pinned, sql), Decision::TenantFree, "{sql}");
            assert_eq!(
                extended(&r, t, pinned, sql, &[]),
                Decision::TenantFree,
                "{sql}"
            );
        }
        // Work that needs a tenant is still placed by it, and refused here.
        assert_eq!(
            code(&query(&r, t, pinned, "SELECT * FROM accounts")),
            "0A000"
        );
    }
    // A tenant the end names itself is still checked against the pin.
    assert_eq!(
        code(&query(&r, &none, pinned, "/* tenant_id=1 */ COMMIT")),
        "0A000"
    );
}

#[test]
fn reserved_names_and_sets_in_batches_are_refused() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    assert_eq!(
        code(&query(&r, &t, Tx::Idle, "SELECT 1; DEALLOCATE sb_0123")),
        "42939"
    );
    assert_eq!(
        code(&query(&r, &t, Tx::Idle, "SET tenant_id = 1; SELECT 1")),
        "0A000"
    );
    assert_eq!(
        code(&query(&r, &t, Tx::Idle, "SET tenant_id = ''")),
        "22023"
    );
}

#[test]
fn set_through_the_extended_protocol_is_answered_alone_in_its_batch() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    // Parse/Bind/Execute of SET: the same decision as the simple Query.
    assert_eq!(
        extended(&r, &t, Tx::Idle, "SET tenant_id = 1", &[]),
        Decision::Local(Local::SetTenant {
            local: false,
            key: Some(key("1"))
        })
    );
    assert_eq!(
        extended(&r, &t, Tx::Idle, "RESET tenant_id", &[]),
        Decision::Local(Local::SetTenant {
            local: false,
            key: None
        })
    );
    assert_eq!(
        extended(&r, &t, Tx::Idle, "SET LOCAL tenant_id = 1", &[]),
        Decision::Local(Local::SetLocalOutsideTx)
    );
    assert_eq!(
        code(&extended(&r, &t, Tx::Idle, "SET tenant_id = ''", &[])),
        "22023"
    );
    let (mut set, mut sel) = (Facts::default(), Facts::default());
    analyze(b"SET tenant_id = 3", b"tenant_id", true, &mut set);
    analyze(
        b"SELECT * FROM t WHERE tenant_id = 1",
        b"tenant_id",
        true,
        &mut sel,
    );
    let v = Values(vec![]);
    let run = |items: Vec<Item<'_, &Values>>| batch(&r, &t, Tx::Idle, items);
    // Prepared and described, not executed: answered, nothing changes.
    assert_eq!(
        run(vec![Item::Parse(&set), Item::Other]),
        Decision::Local(Local::SetNotExecuted)
    );
    // Anything else in the batch, or an Execute of a portal it did not bind,
    // and the batch is refused whole.
    for items in [
        vec![Item::Parse(&set), Item::Parse(&sel)],
        vec![
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
            Item::Bind(&sel, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
        ],
        vec![
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Execute(b"p"),
        ],
        vec![
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Bind(&sel, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
        ],
        vec![
            Item::Parse(&set),
            Item::BindUnknown(b"s"),
            Item::Execute(b""),
        ],
    ] {
        assert_eq!(code(&run(items)), "0A000");
    }
    // PgJDBC with autocommit off: BEGIN, then the SET, in one batch. The BEGIN
    // is held and the SET applies inside it; any other shape is refused.
    let mut begin = Facts::default();
    analyze(b"BEGIN", b"tenant_id", true, &mut begin);
    fn begin_then<'a>(
        begin: &'a Facts,
        set: &'a Facts,
        v: &'a Values,
    ) -> Vec<Item<'a, &'a Values>> {
        vec![
            Item::Parse(begin),
            Item::Bind(begin, ParamTypes::default(), v, b""),
            Item::Execute(b""),
            Item::Parse(set),
            Item::Bind(set, ParamTypes::default(), v, b""),
            Item::Other,
            Item::Execute(b""),
        ]
    }
    assert_eq!(
        run(begin_then(&begin, &set, &v)),
        Decision::Local(Local::BeginThenSetTenant {
            local: false,
            key: Some(key("3"))
        })
    );
    let mut set_local = Facts::default();
    analyze(
        b"SET LOCAL tenant_id = 3",
        b"tenant_id",
        true,
        &mut set_local,
    );
    assert_eq!(
        run(begin_then(&begin, &set_local, &v)),
        Decision::Local(Local::BeginThenSetTenant {
            local: true,
            key: Some(key("3"))
        })
    );
    // prepareThreshold=-1: the SET only parsed and described behind the
    // BEGIN, bound and executed in the next batch. The BEGIN is held, and
    // the rest decided inside it (probe CC: refused).
    assert_eq!(
        run(vec![
            Item::Parse(&begin),
            Item::Bind(&begin, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
            Item::Parse(&set_local),
            Item::Other,
        ]),
        Decision::Local(Local::BeginThenRest)
    );
    let mut refused = vec![
        // The SET first, then BEGIN.
        vec![
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
            Item::Bind(&begin, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
        ],
        // BEGIN never executed, or run twice.
        vec![
            Item::Bind(&begin, ParamTypes::default(), &v, b""),
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
        ],
        vec![
            Item::Bind(&begin, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
            Item::Execute(b""),
            Item::Bind(&set, ParamTypes::default(), &v, b""),
            Item::Execute(b""),
        ],
    ];
    // Anything else with them.
    let mut with_select = begin_then(&begin, &set, &v);
    with_select.push(Item::Bind(&sel, ParamTypes::default(), &v, b"p"));
    with_select.push(Item::Execute(b"p"));
    refused.push(with_select);
    for items in refused {
        assert_eq!(code(&run(items)), "0A000");
    }
    // Inside a transaction already, BEGIN + SET is not this form either.
    let in_tx = batch(
        &r,
        &t,
        Tx::Held { stmts: false },
        begin_then(&begin, &set, &v),
    );
    assert_eq!(code(&in_tx), "0A000");
    // The lock holds through this path too.
    let locked = routing(ALL, true, NoTenant::Reject);
    let t1 = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    assert_eq!(
        code(&extended(&locked, &t1, Tx::Idle, "SET tenant_id = 2", &[])),
        "42501"
    );
    // ... and behind a BEGIN in the same batch, for SET and SET LOCAL alike.
    let (mut set2, mut set2_local) = (Facts::default(), Facts::default());
    analyze(b"SET tenant_id = 2", b"tenant_id", true, &mut set2);
    analyze(
        b"SET LOCAL tenant_id = 2",
        b"tenant_id",
        true,
        &mut set2_local,
    );
    for set in [&set2, &set2_local] {
        let d = batch(&locked, &t1, Tx::Idle, begin_then(&begin, set, &v));
        assert_eq!(code(&d), "42501");
    }
    // With the SET source off, SET tenant_id is an ordinary setting.
    let no_set = routing(&[Source::Startup, Source::Scan], false, NoTenant::Reject);
    assert_eq!(
        extended(&no_set, &t, Tx::Idle, "SET tenant_id = 1", &[]),
        Decision::TenantFree
    );
}

#[test]
fn standard_conforming_strings_cannot_be_flipped_under_the_router() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let sql = br"SET standard_conforming_strings = off; SELECT * FROM a WHERE n = '\' AND tenant_id = 1 --' AND tenant_id = 2";
    let (mut f, mut alt) = (Facts::default(), Facts::default());
    analyze_checked(sql, b"tenant_id", true, &mut f, &mut alt);
    let d = decide(&r, &view(&t, Tx::Idle), Unit::query(&f), &mut Vec::new());
    assert_eq!(code(&d), "0A000");
    // A statement prepared under one setting is not bound under the other.
    let p = br"SELECT * FROM a WHERE n = '\' AND tenant_id = 1 --' AND tenant_id = 2";
    analyze_checked(p, b"tenant_id", false, &mut f, &mut alt);
    let v = Values(vec![]);
    let items = [
        Item::Bind(&f, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
    ];
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(code(&d), "0A000");
}

#[test]
fn executing_a_portal_bound_earlier_is_not_tenant_free() {
    // Probe regression: a tenant-free Bind next to an Execute of a portal bound in
    // an earlier batch must not make that Execute tenant-free.
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let mut show = Facts::default();
    analyze(b"SHOW work_mem", b"tenant_id", true, &mut show);
    let v = Values(vec![]);
    let items = [
        Item::Parse(&show),
        Item::Bind(&show, ParamTypes::default(), &v, b""),
        Item::Execute(b"p1"),
        Item::Execute(b""),
    ];
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(code(&d), "42P17");
    let items = [
        Item::Bind(&show, ParamTypes::default(), &v, b"p1"),
        Item::Execute(b"p1"),
    ];
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(d, Decision::TenantFree);
}

// ---------------------------------------------------------------------------
// Properties over generated statements
// ---------------------------------------------------------------------------

/// A generated statement: its text, the tenants it really names (by source), and
/// the parameters compared with the key (1-based) with the tenant each is bound to.
#[derive(Debug, Clone, Default)]
struct Gen {
    sql: String,
    mentions: Vec<(String, Source)>,
    params: Vec<(usize, String)>,
    /// Every statement is on the tenant-free allow-list.
    tenant_free: bool,
}

fn tenant() -> impl Strategy<Value = String> {
    prop::sample::select(TENANTS.iter().map(|t| t.0.to_string()).collect::<Vec<_>>())
}

/// A literal for `k` in one of Postgres's quoting styles.
fn literal(k: String) -> impl Strategy<Value = String> {
    let numeric = k.parse::<i64>().is_ok();
    let mut styles = vec![
        format!("'{k}'"),
        format!("E'{k}'"),
        format!("$${k}$$"),
        format!("$q${k}$q$"),
        format!("'{k}'::text"),
    ];
    if numeric {
        styles.push(k.clone());
        styles.push(format!("{k}::bigint"));
    }
    prop::sample::select(styles)
}

/// Text that looks like a mention but is not one (inside a literal, a quoted
/// identifier or an ordinary comment).
fn decoy() -> impl Strategy<Value = String> {
    (tenant(), 0..5usize).prop_map(|(k, style)| match style {
        0 => format!("name = 'tenant_id = {k}'"),
        1 => format!("name = $d$ tenant_id = '{k}' $d$"),
        2 => format!("\"tenant_id = {k}\" = 1"),
        3 => format!("name = E'\\' tenant_id = {k} '"),
        _ => format!("/* not a tenant: x = {k} */ name = 'x'"),
    })
}

/// One predicate: a real mention, a parameter, a decoy or an unrelated condition.
fn predicate(next_param: usize) -> impl Strategy<Value = Gen> {
    prop_oneof![
        (tenant(), 0..4usize).prop_flat_map(|(k, col)| {
            let column = ["tenant_id", "t.tenant_id", "\"tenant_id\"", "TENANT_ID"][col];
            literal(k.clone()).prop_map(move |l| Gen {
                sql: format!("{column} = {l}"),
                mentions: vec![(k.clone(), Source::Scan)],
                ..Default::default()
            })
        }),
        tenant().prop_flat_map(|k| literal(k.clone()).prop_map(move |l| Gen {
            sql: format!("{l} = tenant_id"),
            mentions: vec![(k.clone(), Source::Scan)],
            ..Default::default()
        })),
        prop::collection::vec(tenant(), 1..4).prop_map(|ks| Gen {
            sql: format!(
                "tenant_id IN ({})",
                ks.iter()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            mentions: ks.into_iter().map(|k| (k, Source::Scan)).collect(),
            ..Default::default()
        }),
        tenant().prop_map(move |k| Gen {
            sql: format!("tenant_id = ${next_param}"),
            params: vec![(next_param, k)],
            ..Default::default()
        }),
        decoy().prop_map(|sql| Gen {
            sql,
            ..Default::default()
        }),
        Just(Gen {
            sql: "x > 1".into(),
            ..Default::default()
        }),
    ]
}

fn select() -> impl Strategy<Value = Gen> {
    (
        prop::collection::vec((predicate(1), any::<bool>()), 0..4),
        0..3usize,
        prop::option::of(tenant()),
    )
        .prop_map(|(preds, wrap, comment)| {
            let mut g = Gen::default();
            let mut cond = String::new();
            let mut n = 1;
            for (i, (mut p, or)) in preds.into_iter().enumerate() {
                if i > 0 {
                    cond.push_str(if or { " OR " } else { " AND " });
                }
                // Renumber parameters in order.
                if let Some((_, k)) = p.params.pop() {
                    p.sql = p.sql.replace("$1", &format!("${n}"));
                    g.params.push((n, k));
                    n += 1;
                }
                cond.push_str(&p.sql);
                g.mentions.extend(p.mentions);
            }
            let mut sql = String::from("SELECT * FROM accounts");
            if !cond.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&cond);
            }
            if let Some(k) = comment {
                sql.push_str(&format!(" /* tenant_id={k} */"));
                g.mentions.push((k, Source::Comment));
            }
            g.sql = match wrap {
                0 => sql,
                1 => format!("({sql})"),
                _ => format!("WITH q AS (SELECT 1) {sql}"),
            };
            g
        })
}

fn insert() -> impl Strategy<Value = Gen> {
    prop::collection::vec((tenant(), any::<bool>()), 1..4).prop_map(|rows| {
        let mut g = Gen::default();
        let mut vals = Vec::new();
        let mut n = 1;
        for (k, param) in rows {
            if param {
                vals.push(format!("(${n}, 'x')"));
                g.params.push((n, k));
                n += 1;
            } else {
                vals.push(format!("('{k}', 'x')"));
                g.mentions.push((k, Source::Scan));
            }
        }
        g.sql = format!(
            "INSERT INTO accounts (tenant_id, name) VALUES {}",
            vals.join(", ")
        );
        g
    })
}

fn tenant_free_stmt() -> impl Strategy<Value = Gen> {
    prop::sample::select(vec![
        "SET statement_timeout = '1s'",
        "SHOW work_mem",
        "RESET ALL",
        "DISCARD ALL",
        "COMMIT",
        "SAVEPOINT s",
        "BEGIN",
        "LISTEN ch",
        "",
    ])
    .prop_map(|s| Gen {
        sql: s.to_string(),
        tenant_free: true,
        ..Default::default()
    })
}

/// A text of one or more statements (parameters only in single statements).
fn text() -> impl Strategy<Value = Gen> {
    prop_oneof![
        select(),
        insert(),
        tenant_free_stmt(),
        prop::collection::vec(prop_oneof![select(), insert(), tenant_free_stmt()], 2..4).prop_map(
            |parts| {
                let mut g = Gen {
                    tenant_free: true,
                    ..Default::default()
                };
                let mut texts = Vec::new();
                for p in parts {
                    texts.push(p.sql);
                    g.mentions.extend(p.mentions);
                    g.tenant_free &= p.tenant_free;
                }
                g.sql = texts.join("; ");
                g
            }
        ),
    ]
}

fn sessions() -> impl Strategy<Value = (Tenants, bool, Vec<Source>, Tx)> {
    (
        prop::option::of(tenant()),
        prop::option::of(tenant()),
        any::<bool>(),
        Just(ALL.to_vec()).prop_shuffle(),
        prop_oneof![
            Just(Tx::Idle),
            Just(Tx::Held { stmts: false }),
            (0..2usize).prop_map(Tx::Pinned),
        ],
    )
        .prop_map(|(startup, set, lock, sources, tx)| {
            let t = Tenants {
                startup: startup.map(|k| key(&k)),
                set: if lock { None } else { set.map(|k| key(&k)) },
                local: None,
                set_in_tx: false,
            };
            (t, lock, sources, tx)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn routing_properties(g in text(), (t, lock, sources, tx) in sessions(), extended_protocol in any::<bool>()) {
        let r = routing(&sources, lock, NoTenant::Reject);
        let mut f = Facts::default();
        analyze(g.sql.as_bytes(), b"tenant_id", true, &mut f);
        let decision = if extended_protocol || !g.params.is_empty() {
            let mut values = vec![Some(b"x".to_vec()); g.params.iter().map(|p| p.0).max().unwrap_or(0)];
            for (n, k) in &g.params {
                values[n - 1] = Some(k.as_bytes().to_vec());
            }
            let v = Values(values);
            let items = [Item::Parse(&f), Item::Bind(&f, ParamTypes::default(), &v, b""), Item::Execute(b"")];
            batch(&r, &t, tx, items)
        } else {
            decide(&r, &view(&t, tx), Unit::query(&f), &mut Vec::new())
        };
        // The scanner finds every real mention and none of the decoys.
        let mut found: Vec<String> = f.mentions.iter().map(|m| m.key.as_str().to_string()).collect();
        found.sort();
        found.dedup();
        let mut want: Vec<String> = g.mentions.iter().map(|m| m.0.clone()).collect();
        want.sort();
        want.dedup();
        prop_assert_eq!(&found, &want, "{}", g.sql);
        let named: Vec<&str> = g.mentions.iter().map(|m| m.0.as_str())
            .chain(g.params.iter().map(|p| p.1.as_str()))
            .collect();
        let shards: std::collections::BTreeSet<usize> = named.iter().map(|k| shard_of(k)).collect();
        if let Decision::Shard { shard, .. } = decision {
            // 1. Never a shard for tenants on two shards.
            prop_assert!(shards.len() <= 1, "{} routed to {} naming {:?}", g.sql, shard, named);
            if let Some(&only) = shards.iter().next() {
                prop_assert_eq!(shard, only, "{}", g.sql);
            }
            // 2. Never a shard other than the locked tenant's.
            if let (true, Some(l)) = (lock, t.startup) {
                prop_assert_eq!(shard, shard_of(l.as_str()), "{}", g.sql);
            }
            if let Tx::Pinned(p) = tx {
                prop_assert_eq!(shard, p, "{}", g.sql);
            }
        }
        // 3. Tenant-free only for allow-listed statements.
        if decision == Decision::TenantFree {
            prop_assert!(g.tenant_free, "{} is not on the allow-list", g.sql);
            // 4. And never transaction control outside a held BEGIN.
            if matches!(tx, Tx::Held { .. }) {
                prop_assert!(!f.tx_control, "{} would run outside the held BEGIN", g.sql);
            }
        }
    }

    #[test]
    fn never_panics(sql in "\\PC{0,120}", std in any::<bool>(), (t, lock, sources, tx) in sessions()) {
        let r = routing(&sources, lock, NoTenant::Default(0));
        let (mut f, mut alt) = (Facts::default(), Facts::default());
        analyze_checked(sql.as_bytes(), b"tenant_id", std, &mut f, &mut alt);
        let _ = decide(&r, &view(&t, tx), Unit::query(&f), &mut Vec::new());
        let v = Values(vec![None, Some(vec![0xff; 3])]);
        let items = [Item::Parse(&f), Item::Bind(&f, ParamTypes::default(), &v, b""), Item::BindUnknown(b"s"), Item::Execute(b"p")];
        let _ = batch(&r, &t, Tx::Failed, items);
    }
}

/// An INSERT that names tenant 1 (s0) under `standard_conforming_strings = on`,
/// and tenants 1 and 2 (s1) under `off`.
const SCS_SMUGGLE: &str = "INSERT INTO a (tenant_id, x) VALUES (1, '\\''), (2, 'x') --')";

fn analyzed(r: &Routing, sql: &[u8]) -> Facts {
    let (mut f, mut alt) = (Facts::default(), Facts::default());
    analyze_checked(sql, r.key.as_bytes(), true, &mut f, &mut alt);
    f
}

/// PgJDBC with autocommit off sends BEGIN with the Parse and Describe of a
/// batch's statement, whose tenant only the later Binds give. The BEGIN is
/// held (the rest is decided again inside it) only when it runs first and
/// alone; with anything else executed, the batch is decided as a whole.
#[test]
fn a_begin_that_runs_first_and_alone_in_a_batch_is_held() {
    let r = routing(ALL, false, NoTenant::Default(0));
    let t = Tenants::default();
    let begin = analyzed(&r, b"BEGIN");
    let ins = analyzed(&r, b"INSERT INTO a (tenant_id, x) VALUES ($1, $2)");
    let none = Values(Vec::new());
    let v = Values(vec![Some(b"2".to_vec()), Some(b"x".to_vec())]);
    let run = |tx: Tx, items: Vec<Item<'_, &Values>>| batch(&r, &t, tx, items);
    let held = Decision::Local(Local::BeginThenRest);
    let pbe = |p: &'static [u8]| {
        vec![
            Item::Parse(&begin),
            Item::Bind(&begin, ParamTypes::default(), &none, p),
            Item::Execute(p),
        ]
    };
    // BEGIN, then the statement's Parse and Describe.
    let mut jdbc = pbe(b"");
    jdbc.extend([Item::Parse(&ins), Item::Other]);
    assert_eq!(run(Tx::Idle, jdbc), held);
    // BEGIN alone, or bound to a named portal, or from a named statement.
    assert_eq!(run(Tx::Idle, pbe(b"p")), held);
    // Its portal described before its Execute (libpq's PQsendQueryParams:
    // pgbench -M extended, psycopg 3): it was pinned to the default shard.
    let described = vec![
        Item::Parse(&begin),
        Item::Bind(&begin, ParamTypes::default(), &none, b""),
        Item::DescribePortal(b""),
        Item::Execute(b""),
    ];
    assert_eq!(run(Tx::Idle, described), held);
    // Another portal described there is not the BEGIN's own.
    let other_portal = vec![
        Item::Parse(&begin),
        Item::Bind(&begin, ParamTypes::default(), &none, b""),
        Item::DescribePortal(b"q"),
        Item::Execute(b""),
    ];
    assert_ne!(run(Tx::Idle, other_portal), held);
    let named = vec![
        Item::Bind(&begin, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
        Item::Parse(&ins),
    ];
    assert_eq!(run(Tx::Idle, named), held);
    // A Bind of the statement (not executed) may follow.
    let mut bound = pbe(b"");
    bound.extend([
        Item::Parse(&ins),
        Item::Bind(&ins, ParamTypes::default(), &v, b""),
    ]);
    assert_eq!(run(Tx::Idle, bound), held);
    // Whatever runs after it: the rest is decided on its own, inside the held
    // transaction (the statement's tenant picks the shard there).
    let mut with_insert = pbe(b"");
    with_insert.extend([
        Item::Parse(&ins),
        Item::Bind(&ins, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
    ]);
    assert_eq!(run(Tx::Idle, with_insert), held);
    let mut twice = pbe(b"");
    twice.push(Item::Execute(b""));
    assert_eq!(run(Tx::Idle, twice), held);
    // Not this form: something before the BEGIN, or already in a transaction.
    let mut after_other = vec![Item::Parse(&ins), Item::Other];
    after_other.extend(pbe(b""));
    assert_ne!(run(Tx::Idle, after_other), held);
    assert_ne!(run(Tx::Held { stmts: false }, pbe(b"")), held);
    assert_ne!(run(Tx::Pinned(0), pbe(b"")), held);
    // Inside a held BEGIN, one statement it can hold (no parameter, no
    // tenant), run once, is held as in a Query; anything more is routed.
    let set_local = analyzed(&r, b"SET LOCAL statement_timeout = '5s'");
    let one = |portal: &'static [u8]| {
        vec![
            Item::Parse(&set_local),
            Item::Bind(&set_local, ParamTypes::default(), &none, b""),
            Item::DescribePortal(b""),
            Item::Execute(portal),
        ]
    };
    let hold = Decision::Local(Local::Hold);
    assert_eq!(run(Tx::Held { stmts: false }, one(b"")), hold);
    assert_eq!(run(Tx::Held { stmts: true }, one(b"")), hold);
    assert_ne!(run(Tx::Held { stmts: false }, one(b"other")), hold);
    assert_ne!(run(Tx::Idle, one(b"")), hold);
    let mut then_insert = one(b"");
    then_insert.extend([
        Item::Parse(&ins),
        Item::Bind(&ins, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
    ]);
    assert_eq!(
        shard(&run(Tx::Held { stmts: false }, then_insert)),
        Some(shard_of("2"))
    );
    let mut twice = one(b"");
    twice.push(Item::Execute(b""));
    assert_ne!(run(Tx::Held { stmts: false }, twice), hold);
    // One that names a tenant places the transaction, through either protocol
    // (route fuzz: the Query form was held, its tenant unseen).
    let named_set = analyzed(&r, b"/* tenant_id=2 */ SET LOCAL statement_timeout = '5s'");
    let items = vec![
        Item::Parse(&named_set),
        Item::Bind(&named_set, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
    ];
    assert_eq!(
        shard(&run(Tx::Held { stmts: false }, items)),
        Some(shard_of("2"))
    );
    assert_eq!(
        shard(&decide(
            &r,
            &view(&t, Tx::Held { stmts: false }),
            Unit::query(&named_set),
            &mut Vec::new()
        )),
        Some(shard_of("2"))
    );
    // A BEGIN that names its tenant in a comment goes to that tenant's shard,
    // as in a simple Query.
    let named_begin = analyzed(&r, b"/* tenant_id=2 */ BEGIN");
    let items = vec![
        Item::Parse(&named_begin),
        Item::Bind(&named_begin, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
    ];
    assert_eq!(shard(&run(Tx::Idle, items)), Some(shard_of("2")));
}

#[test]
fn a_unit_that_changes_the_lexing_half_way_is_refused() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let mut scratch = Vec::new();
    // The control: alone, it routes by the lexing of the day.
    let f = analyzed(&r, SCS_SMUGGLE.as_bytes());
    let d = decide(&r, &view(&t, Tx::Idle), Unit::query(&f), &mut scratch);
    assert_eq!(shard(&d), Some(0));
    for sql in [
        format!("SET standard_conforming_strings = off; {SCS_SMUGGLE}"),
        format!("BEGIN; SET LOCAL standard_conforming_strings = off; {SCS_SMUGGLE}; COMMIT"),
        format!(
            "BEGIN; SELECT set_config('standard_conforming_strings', 'off', true); {SCS_SMUGGLE}"
        ),
        // Bytes past ASCII after a change: client_encoding may have moved.
        "SET client_encoding = 'SJIS'; SELECT 'é' FROM a WHERE tenant_id = 1".to_string(),
        "BEGIN; SET LOCAL client_encoding = 'BIG5'; SELECT 'é' FROM a WHERE tenant_id = 1"
            .to_string(),
    ] {
        let f = analyzed(&r, sql.as_bytes());
        let d = decide(&r, &view(&t, Tx::Idle), Unit::query(&f), &mut scratch);
        assert_eq!(code(&d), "0A000", "{sql}");
    }
    // One extended batch: the change executes before the next Parse is parsed.
    let change = analyzed(
        &r,
        b"SELECT set_config('standard_conforming_strings', 'off', false) FROM a WHERE tenant_id = 1",
    );
    let local = analyzed(&r, b"SET LOCAL standard_conforming_strings = off");
    let smuggle = analyzed(&r, SCS_SMUGGLE.as_bytes());
    let none = Values(Vec::new());
    // Parse/Bind/Execute of `a`, then of `b`, one Sync.
    let two = |a: &Facts, b: &Facts| {
        let items = [
            Item::Parse(a),
            Item::Bind(a, ParamTypes::default(), &none, b""),
            Item::Execute(b""),
            Item::Parse(b),
            Item::Bind(b, ParamTypes::default(), &none, b""),
            Item::Execute(b""),
        ];
        batch(&r, &t, Tx::Idle, items)
    };
    for first in [&change, &local] {
        assert_eq!(code(&two(first, &smuggle)), "0A000");
    }
    // The same two statements the other way round change nothing that follows.
    let d = two(&smuggle, &change);
    assert_eq!(shard(&d), Some(0));
}

/// Only a change that may be `client_encoding` or
/// `standard_conforming_strings` makes the rest of a text untrustworthy: a
/// `SET search_path` or `SET statement_timeout` in front of text past ASCII
/// routes, while every way of naming one of the two (or hiding the name) is
/// still refused.
#[test]
fn a_setting_that_cannot_change_the_lexing_lets_the_rest_route() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let mut scratch = Vec::new();
    let tail = "SELECT 'Müller' FROM a WHERE tenant_id = 2";
    for head in [
        "SET search_path TO public",
        "SET statement_timeout = 5000",
        "BEGIN; SET LOCAL lock_timeout = '1s'",
        "SET SESSION application_name = 'x'",
        "RESET work_mem",
    ] {
        let sql = format!("{head}; {tail}");
        let f = analyzed(&r, sql.as_bytes());
        assert!(!f.effects.may_change_lexing(), "{sql}");
        let d = decide(&r, &view(&t, Tx::Idle), Unit::query(&f), &mut scratch);
        assert_eq!(shard(&d), Some(1), "{sql}");
    }
    for head in [
        "SET client_encoding = 'SJIS'",
        "SET CLIENT_ENCODING TO 'SJIS'",
        "SET \"client_encoding\" TO 'SJIS'",
        "SET NAMES 'SJIS'",
        "SET LOCAL names 'SJIS'",
        "SET standard_conforming_strings = off",
        "BEGIN; SET LOCAL Standard_Conforming_Strings = off",
        "RESET client_encoding",
        "RESET ALL",
        "DISCARD ALL",
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('client_enc'\n'oding', 'SJIS', false)",
        "SELECT \"set_config\"($$client_encoding$$, 'SJIS', false)",
        "SELECT set_config(E'\\x63lient_\\x65ncoding', 'SJIS', false)",
        "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_' || 'enc' || 'oding'",
        "SET search_path TO public; SET U&\"client\\005fencoding\" TO 'SJIS'",
        "SET search_path TO E'\\x70ublic'",
        "DO $$BEGIN PERFORM 1; END$$",
    ] {
        let sql = format!("{head}; {tail}");
        let f = analyzed(&r, sql.as_bytes());
        assert!(f.effects.may_change_lexing(), "{sql}");
        let d = decide(&r, &view(&t, Tx::Idle), Unit::query(&f), &mut scratch);
        assert_eq!(code(&d), "0A000", "{sql}");
    }
}

#[test]
fn under_an_encoding_that_hides_ascii_bytes_only_ascii_routes() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let sjis = SessionView {
        ascii_only: true,
        ..view(&t, Tx::Idle)
    };
    let mut scratch = Vec::new();
    let sql = b"INSERT INTO a (tenant_id, x) VALUES (1, E'\x83\\'), (2, 'x') --')";
    let f = analyzed(&r, sql);
    assert_eq!(
        code(&decide(&r, &sjis, Unit::query(&f), &mut scratch)),
        "0A000"
    );
    let f = analyzed(&r, b"SELECT x FROM a WHERE tenant_id = 2");
    assert_eq!(
        shard(&decide(&r, &sjis, Unit::query(&f), &mut scratch)),
        Some(1)
    );
    // A Bind value past ASCII is read in that encoding too.
    let f = analyzed(&r, b"SELECT x FROM a WHERE tenant_id = $1");
    let v = Values(vec![Some("acmé".as_bytes().to_vec())]);
    let items = [
        Item::Parse(&f),
        Item::Bind(&f, ParamTypes::default(), &v, b""),
        Item::Execute(b""),
    ];
    let d = decide(&r, &sjis, Unit::batch(items.into_iter()), &mut scratch);
    assert_eq!(code(&d), "0A000");
    for (name, unsafe_) in [
        ("SJIS", true),
        ("Shift_JIS", true),
        ("windows-932", true),
        ("SHIFT_JIS_2004", true),
        ("big5", true),
        ("WIN950", true),
        ("GBK", true),
        ("cp936", false), // not a Postgres name: Postgres refuses it
        ("GB18030", true),
        ("UHC", true),
        ("JOHAB", true),
        ("UTF8", false),
        ("EUC_JP", false),
        ("LATIN1", false),
        ("", false),
    ] {
        assert_eq!(super::ascii_unsafe_encoding(name), unsafe_, "{name}");
    }
}

/// Under an encoding Postgres converts, a tenant key past ASCII is another
/// tenant to Postgres: refused wherever it comes from; ASCII keys route.
#[test]
fn keys_past_ascii_are_refused_under_a_converted_encoding() {
    for (name, as_sent) in [
        ("UTF8", true),
        ("utf-8", true),
        ("Unicode", true),
        ("SQL_ASCII", true),
        ("LATIN1", false),
        ("WIN1252", false),
        ("EUC_JP", false),
        ("SJIS", false),
        ("", false),
        ("a-name-far-too-long-to-be-utf8", false),
    ] {
        assert_eq!(super::keys_read_as_sent(name), as_sent, "{name}");
    }
    let r = routing(ALL, false, NoTenant::Reject);
    fn latin1(t: &Tenants, tx: Tx) -> SessionView<'_> {
        SessionView {
            keys_ascii_only: true,
            ..view(t, tx)
        }
    }
    let d = |t: &Tenants, sql: &str| {
        let f = analyzed(&r, sql.as_bytes());
        decide(&r, &latin1(t, Tx::Idle), Unit::query(&f), &mut Vec::new())
    };
    let none = Tenants::default();
    assert_eq!(
        code(&d(&none, "SELECT * FROM a WHERE tenant_id = 'é'")),
        "0A000"
    );
    assert_eq!(code(&d(&none, "/* tenant_id=é */ SELECT 1")), "0A000");
    assert_eq!(
        shard(&d(&none, "SELECT * FROM a WHERE tenant_id = 'acme'")),
        Some(0)
    );
    assert_eq!(
        shard(&d(&none, "SELECT 'é' FROM a WHERE tenant_id = '42'")),
        Some(1)
    );
    let set = Tenants {
        set: Some(key("é")),
        ..Tenants::default()
    };
    assert_eq!(code(&d(&set, "SELECT * FROM a")), "0A000");
    // As a Bind value.
    let f = analyzed(&r, b"SELECT * FROM a WHERE tenant_id = $1");
    let vals = Values(vec![Some("é".as_bytes().to_vec())]);
    let items = [
        Item::Parse(&f),
        Item::Bind(&f, ParamTypes::default(), &vals, b""),
        Item::Execute(b""),
    ];
    let got = decide(
        &r,
        &latin1(&none, Tx::Idle),
        Unit::batch(items.into_iter()),
        &mut Vec::new(),
    );
    assert_eq!(code(&got), "0A000");
}

#[test]
fn one_tenant_bound_again_and_again_counts_once_toward_the_limit() {
    // PgJDBC's reWriteBatchedInserts: rows bound many to a statement, one
    // tenant throughout. 12,000 of its mentions got 54001 (probe); the text's
    // own analysis already counts a repeat once.
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let ins = analyzed(
        &r,
        b"INSERT INTO a (tenant_id, x) VALUES ($1, $2), ($3, $4)",
    );
    let v = Values(vec![
        Some(b"2".to_vec()),
        Some(b"x".to_vec()),
        Some(b"2".to_vec()),
        Some(b"y".to_vec()),
    ]);
    let mut items = vec![Item::Parse(&ins)];
    for _ in 0..6_000 {
        items.push(Item::Bind(&ins, ParamTypes::default(), &v, b""));
        items.push(Item::Execute(b""));
    }
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(shard(&d), Some(shard_of("2")));
    // Many distinct tenants are still bounded.
    let many: Vec<Values> = (0..6_000)
        .map(|i| {
            Values(vec![
                Some(format!("{}", 2 * i).into_bytes()),
                Some(b"x".to_vec()),
                Some(format!("{}", 2 * i + 1).into_bytes()),
                Some(b"y".to_vec()),
            ])
        })
        .collect();
    let mut items = vec![Item::Parse(&ins)];
    for v in &many {
        items.push(Item::Bind(&ins, ParamTypes::default(), v, b""));
        items.push(Item::Execute(b""));
    }
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(code(&d), "54001");
}

#[test]
fn rollback_to_after_a_held_set_local_tenant_is_refused() {
    // SET LOCAL a, SAVEPOINT, SET LOCAL b, ROLLBACK TO, then work: all held,
    // the work ran by b on b's shard, where a setting would be a again
    // (probe). Once a statement placed the transaction, it stays on its shard.
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants {
        local: Some(key("2")),
        ..Default::default()
    };
    let held = Tx::Held { stmts: true };
    assert_eq!(
        code(&query(&r, &t, held, "ROLLBACK TO SAVEPOINT s")),
        "0A000"
    );
    assert_eq!(code(&extended(&r, &t, held, "ROLLBACK TO s", &[])), "0A000");
    assert_ne!(
        query(&r, &t, Tx::Pinned(shard_of("2")), "ROLLBACK TO SAVEPOINT s"),
        query(&r, &t, held, "ROLLBACK TO SAVEPOINT s")
    );
    assert_eq!(
        query(&r, &t, held, "SAVEPOINT s"),
        Decision::Local(Local::Hold)
    );
}

#[test]
fn a_batch_that_begins_and_ends_a_transaction_is_judged_whole() {
    // BEGIN, COMMIT, then a tenant's INSERT in one batch: the INSERT runs
    // after the transaction, and the batch goes to its tenant's shard as
    // before (held, the rest refused the INSERT as work after a COMMIT).
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let begin = analyzed(&r, b"BEGIN");
    let commit = analyzed(&r, b"COMMIT");
    let ins = analyzed(&r, b"INSERT INTO a (tenant_id, x) VALUES (2, 'x')");
    let none = Values(Vec::new());
    let items = vec![
        Item::Parse(&begin),
        Item::Bind(&begin, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
        Item::Parse(&commit),
        Item::Bind(&commit, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
        Item::Parse(&ins),
        Item::Bind(&ins, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
    ];
    let d = batch(&r, &t, Tx::Idle, items);
    assert_eq!(shard(&d), Some(shard_of("2")));
}

/// The COMMIT of a held transaction with held statements runs them on the
/// home shard, unless it names a tenant: then on that tenant's shard, as
/// every mention counts (route fuzz: it ran on the home shard).
#[test]
fn a_commit_of_held_statements_that_names_a_tenant_runs_on_its_shard() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let held = Tx::Held { stmts: true };
    assert_eq!(
        shard(&query(&r, &t, held, "COMMIT")),
        Some(r.home_shard(&t))
    );
    assert_eq!(
        shard(&query(&r, &t, held, "/* tenant_id=42 */ COMMIT")),
        Some(1)
    );
    assert_eq!(
        shard(&query(&r, &t, held, "COMMIT -- tenant_id=globex")),
        Some(1)
    );
    assert_eq!(
        shard(&query(&r, &t, held, "/* tenant_id=acme */ END")),
        Some(0)
    );
}

#[test]
fn a_session_server_its_tenant_no_longer_lives_on_runs_nothing() {
    // 42 lives on s1. A session-mode server 42 placed on s0 (the map changed
    // since) runs nothing more, naming a tenant or not; on s1 it runs on.
    let r = routing(ALL, false, NoTenant::Default(0));
    let t = Tenants::default();
    let on = |shard: usize, owns: bool| SessionView {
        pinned_by: Some((key("42"), Source::Comment)),
        owns_server: owns,
        ..view(&t, Tx::Pinned(shard))
    };
    for sql in [
        "UPDATE a SET x = 1",
        "SELECT 1",
        "COMMIT",
        "SELECT * FROM a WHERE tenant_id = 42",
    ] {
        let f = analyzed(&r, sql.as_bytes());
        let d = decide(&r, &on(0, true), Unit::query(&f), &mut Vec::new());
        assert_eq!(code(&d), "0A000", "{sql}");
        let d = decide(&r, &on(1, true), Unit::query(&f), &mut Vec::new());
        assert!(!matches!(d, Decision::Refuse(_)), "{sql}: {d:?}");
    }
    // Transaction mode: the gate, not this check, sends such work back (55000).
    let f = analyzed(&r, b"UPDATE a SET x = 1");
    let d = decide(&r, &on(0, false), Unit::query(&f), &mut Vec::new());
    assert_eq!(shard(&d), Some(0));
}

#[test]
fn a_session_server_runs_work_after_a_commit_in_the_same_query() {
    // Session mode: the server stays the session's across the COMMIT, so
    // what follows it runs there; a mention of another shard's tenant is
    // still refused. In transaction mode the transaction's placement ends
    // with it, so such work is refused (0A000).
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let on_s1 = |owns: bool| SessionView {
        pinned_by: Some((key("2"), Source::Comment)),
        owns_server: owns,
        ..view(&t, Tx::Pinned(1))
    };
    let d = |v: &SessionView, sql: &str| {
        let f = analyzed(&r, sql.as_bytes());
        decide(&r, v, Unit::query(&f), &mut Vec::new())
    };
    let sql = "BEGIN; UPDATE a SET x = 1 WHERE tenant_id = 2; COMMIT; SELECT * FROM a";
    assert_eq!(shard(&d(&on_s1(true), sql)), Some(1));
    assert_eq!(code(&d(&on_s1(false), sql)), "0A000");
    let other = "COMMIT; SELECT * FROM a WHERE tenant_id = 1";
    assert_eq!(code(&d(&on_s1(true), other)), "0A000");
}

#[test]
fn an_sql_execute_is_refused_where_it_may_run_a_copy_the_client_prepared() {
    // Session mode, once the client prepared a COPY FROM STDIN through the
    // protocol (probe CN F2): an SQL EXECUTE anywhere in a text would run
    // it as a statement the router reads as no COPY. A trigger's EXECUTE
    // FUNCTION and GRANT EXECUTE are no such EXECUTE.
    let r = routing(ALL, false, NoTenant::Default(0));
    let t = Tenants::default();
    let v = |copies: bool| SessionView {
        pinned_by: Some((key("2"), Source::Comment)),
        owns_server: true,
        server_copies: copies,
        ..view(&t, Tx::Pinned(shard_of("2")))
    };
    for sql in [
        "EXECUTE s",
        "SELECT 1; execute s(1)",
        "EXPLAIN ANALYZE EXECUTE s",
        "CREATE TABLE x AS EXECUTE s",
    ] {
        let f = analyzed(&r, sql.as_bytes());
        assert!(f.executes, "{sql}");
        let d = decide(&r, &v(true), Unit::query(&f), &mut Vec::new());
        assert_eq!(code(&d), "0A000", "{sql}");
        let d = decide(&r, &v(false), Unit::query(&f), &mut Vec::new());
        // (A CREATE may create a type: refused then for the cast it may run.)
        assert!(
            !matches!(d, Decision::Refuse(_)) || sql.starts_with("CREATE"),
            "{sql}: {d:?}"
        );
    }
    for sql in [
        "CREATE TRIGGER t BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION f()",
        "GRANT EXECUTE ON FUNCTION f() TO r",
    ] {
        assert!(!analyzed(&r, sql.as_bytes()).executes, "{sql}");
    }
    // In a batch: a COPY parsed ahead of the EXECUTE counts too.
    let copy = analyzed(&r, b"COPY a (tenant_id, x) FROM STDIN");
    let exec = analyzed(&r, b"EXECUTE s");
    let none = Values(Vec::new());
    let items = [
        Item::Parse(&copy),
        Item::Parse(&exec),
        Item::Bind(&exec, ParamTypes::default(), &none, b""),
        Item::Execute(b""),
    ];
    let d = decide(
        &r,
        &v(false),
        Unit::batch(items.into_iter()),
        &mut Vec::new(),
    );
    assert_eq!(code(&d), "0A000");
}

#[test]
fn a_bind_of_a_name_without_text_is_refused_in_session_mode() {
    // Session mode: the server may hold the name (an SQL PREPARE): its
    // Bind would run unchecked. Elsewhere the name is the client's alone
    // (26000 where no tenant places it).
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let items = || [Item::BindUnknown(&b"p1"[..]), Item::<&Values>::Execute(b"")];
    let owns = SessionView {
        pinned_by: Some((key("2"), Source::Comment)),
        owns_server: true,
        ..view(&t, Tx::Pinned(shard_of("2")))
    };
    let d = decide(&r, &owns, Unit::batch(items().into_iter()), &mut Vec::new());
    assert_eq!(code(&d), "0A000");
    let d = decide(
        &r,
        &view(&t, Tx::Idle),
        Unit::batch(items().into_iter()),
        &mut Vec::new(),
    );
    assert_eq!(code(&d), "26000");
}

/// A COPY's rows ([`copy_rows`]): each must be a tenant of the COPY's
/// shard, the locked tenant under the lock; NULL names none; a binary key
/// needs the map's key type; the first refusal ends the reading.
#[test]
fn copy_rows_must_live_on_the_copys_shard() {
    use super::copy::{copy_in, CopyIn, CopyReader};
    let rows = |r: &Routing, t: &Tenants, shard: usize, sql: &str, data: &[&[u8]]| {
        let CopyIn::Rows(f) = copy_in(sql.as_bytes(), b"tenant_id", true) else {
            panic!("{sql}");
        };
        let mut reader = CopyReader::new(&f);
        let mut last = None;
        let v = view(t, Tx::Idle);
        for d in data {
            copy_rows(r, &v, shard, &mut reader, Some(d), &mut last)?;
        }
        copy_rows(r, &v, shard, &mut reader, None, &mut last)
    };
    let text = "COPY t (tenant_id, a) FROM STDIN";
    let r = routing(ALL, false, NoTenant::Reject);
    let none = Tenants::default();
    // Tenants 1 and 3 live on s0, 42 on s1.
    assert!(rows(&r, &none, 0, text, &[b"1\tx\n3\ty\n\\N\tz\n"]).is_ok());
    let e = rows(&r, &none, 0, text, &[b"1\tx\n4", b"2\ty\n1\tz\n"]).unwrap_err();
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("row 2"), "{}", e.message);
    // The last row needs no line end.
    assert_eq!(
        rows(&r, &none, 0, text, &[b"1\tx\n42\ty"])
            .unwrap_err()
            .code,
        "0A000"
    );
    assert_eq!(
        rows(&r, &none, 0, text, &[b"\tempty\n"]).unwrap_err().code,
        "22023"
    );
    // Under the lock: another tenant of the same shard is 42501.
    let locked = routing(ALL, true, NoTenant::Reject);
    let one = Tenants {
        startup: Some(key("1")),
        ..Default::default()
    };
    assert!(rows(&locked, &one, 0, text, &[b"1\tx\n"]).is_ok());
    assert_eq!(
        rows(&locked, &one, 0, text, &[b"3\tx\n"]).unwrap_err().code,
        "42501"
    );
    assert_eq!(
        rows(&locked, &one, 0, text, &[b"42\tx\n"])
            .unwrap_err()
            .code,
        "0A000"
    );
    // Binary keys need the map's key type: this map's is `auto`.
    let mut bin = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
    bin.extend_from_slice(&1i16.to_be_bytes());
    bin.extend_from_slice(&8i32.to_be_bytes());
    bin.extend_from_slice(&1i64.to_be_bytes());
    let e = rows(
        &r,
        &none,
        0,
        "COPY t (tenant_id) FROM STDIN (FORMAT binary)",
        &[&bin],
    );
    assert_eq!(e.unwrap_err().code, "22023");
}

/// A catalog read (router::catalog) runs on any shard. One that names a
/// relation, function or type without its schema does only while the
/// session may have no object of that name ahead of `pg_catalog`'s: a
/// `search_path` naming another schema first would read that schema's
/// `pg_type`, which may be a table of the application's.
#[test]
fn a_catalog_read_by_name_runs_anywhere_only_while_names_are_trusted() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let distrust = untrusted(&t);
    let run = |v: &SessionView<'_>, sql: &str| query_in(&r, v, sql);
    // psycopg2's and SQLAlchemy's (catalog reads are of captured forms).
    let by_name = "SELECT t.oid, typarray FROM pg_type t WHERE t.typname = 'mood'";
    let qualified = "SELECT pg_catalog.pg_opclass.oid, pg_catalog.pg_opclass.opcname \
                     FROM pg_catalog.pg_opclass WHERE NOT pg_catalog.pg_opclass.opcdefault";
    assert_eq!(run(&view(&t, Tx::Idle), by_name), Decision::TenantFree);
    assert_eq!(code(&run(&distrust, by_name)), "42P17");
    assert_eq!(run(&distrust, qualified), Decision::TenantFree);
    for before in [
        "SET search_path = evil, pg_catalog",
        "SELECT set_config('search_path', 'evil, pg_catalog', false)",
    ] {
        let both = format!("{before}; {by_name}");
        assert_eq!(code(&run(&view(&t, Tx::Idle), &both)), "42P17", "{both}");
        let both = format!("{before}; {qualified}");
        assert_eq!(
            run(&view(&t, Tx::Idle), &both),
            Decision::TenantFree,
            "{both}"
        );
    }
    // With a tenant, it goes where the tenant's work goes.
    let t42 = Tenants {
        startup: Some(key("42")),
        ..Default::default()
    };
    assert_eq!(shard(&run(&untrusted(&t42), by_name)), Some(1));
}

/// A Bind that gives a parameter a type of the database's own (its OID
/// past the built-in ones) may run the application's code (a domain's
/// CHECK): the statement is then not tenant-free.
#[test]
fn a_parameter_of_a_type_of_the_databases_own_is_not_tenant_free() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let mut f = Facts::default();
    // psycopg 3's `TypeInfo.fetch`.
    let sql = "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, \
               typdelim AS delimiter FROM pg_type t WHERE t.oid = to_regtype($1) ORDER BY t.oid";
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    let v = Values(vec![Some(b"mood".to_vec())]);
    let run = |oid: u32| {
        let declared = oid.to_be_bytes();
        let types = ParamTypes {
            declared: &declared,
            described: &[],
        };
        batch(
            &r,
            &t,
            Tx::Idle,
            [
                Item::Parse(&f),
                Item::Bind(&f, types, &v, b""),
                Item::Execute(b""),
            ],
        )
    };
    assert_eq!(run(0), Decision::TenantFree);
    assert_eq!(run(19), Decision::TenantFree); // name
    assert_eq!(code(&run(16_384)), "42P17");
    // Described, not declared: the same.
    let described = [16_500u32];
    let types = ParamTypes {
        declared: &[],
        described: &described,
    };
    let d = batch(
        &r,
        &t,
        Tx::Idle,
        [Item::Bind(&f, types, &v, b""), Item::Execute(b"")],
    );
    assert_eq!(code(&d), "42P17");
    // A Bind runs code with no Execute after it (the type's input; the
    // statement's planning folds its immutable calls): probe CR F3.
    let declared = 16_384u32.to_be_bytes();
    let types = ParamTypes {
        declared: &declared,
        described: &[],
    };
    let d = batch(
        &r,
        &t,
        Tx::Idle,
        [Item::Parse(&f), Item::Bind(&f, types, &v, b"")],
    );
    assert_eq!(code(&d), "42P17");
}

/// A Bind of a statement that is not tenant-free, with no Execute, is
/// routed as if it ran: Postgres plans the statement at its Bind, and the
/// plan may call the application's functions (probe CR F3). Parse and
/// Describe alone still run anywhere.
#[test]
fn a_bind_without_an_execute_needs_the_tenant_its_statement_needs() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let mut f = Facts::default();
    let sql = "SELECT * FROM a WHERE tenant_id = $1 AND f(x)";
    analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
    let no_values = Values(vec![]);
    let parse_only = batch(&r, &t, Tx::Idle, [Item::<&Values>::Parse(&f), Item::Other]);
    assert_eq!(parse_only, Decision::TenantFree);
    let v42 = Values(vec![Some(b"42".to_vec())]);
    let d = batch(
        &r,
        &t,
        Tx::Idle,
        [
            Item::Parse(&f),
            Item::Bind(&f, ParamTypes::default(), &v42, b""),
        ],
    );
    assert_eq!(shard(&d), Some(1));
    let mut g = Facts::default();
    analyze(b"SELECT f(x) FROM a", r.key.as_bytes(), true, &mut g);
    let d = batch(
        &r,
        &t,
        Tx::Idle,
        [
            Item::Parse(&g),
            Item::Bind(&g, ParamTypes::default(), &no_values, b""),
        ],
    );
    assert_eq!(code(&d), "42P17");
}

/// Postgres reads a text's constants through their types' input at Parse:
/// an array (or composite) of a domain checks the domain's CHECK, the
/// application's code. A Parse of such a text needs what its statement
/// needs; other Parses (and Describes) still run anywhere (probe CW F5).
#[test]
fn a_parse_that_reads_a_constant_of_the_applications_type_needs_a_tenant() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let parse_only = |sql: &str| {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
        batch(&r, &t, Tx::Idle, [Item::<&Values>::Parse(&f)])
    };
    for sql in [
        "SELECT '{x}'::tdom[]",
        "SELECT '{x}'::public.tdom[]",
        "SELECT CAST('{x}' AS tdom[])",
        "SELECT _tdom '{x}'",
        "SELECT \"_tdom\" '{x}'",
        "SELECT * FROM a WHERE c = '(x)'::comp",
        "SELECT $$(x)$$::comp",
        // Probe CX F1: through parentheses and `ARRAY[..]`, by another
        // branch's type, and after a word Postgres may take for a type.
        "SELECT ('{x}')::tdom[]",
        "SELECT CAST(('{x}') AS tdom[])",
        "SELECT ARRAY['(x)']::ctype[]",
        "SELECT CASE WHEN true THEN '{x}' ELSE NULL::tdom[] END",
        "SELECT '(x)' UNION ALL SELECT NULL::ctype",
        "SELECT location '(x)'",
        "SELECT like '(x)'",
        // Probe CY: a cast written as a call, and a built-in type's name
        // in another schema.
        "SELECT _tdom('{x}')",
        "SELECT public._tdom(E'{x}')",
        "SELECT \"_tdom\"($$ {x} $$)",
        "SELECT * FROM a WHERE v <> ALL(_tdom /* c */ ( '{x}' ))",
        "SELECT app2.text '(x)'",
        // Probe DI F1-F3: a literal anywhere in the arguments of a call of
        // the application's (or a type's) name, however spelled.
        "SELECT _tdom(('{x}'))",
        "SELECT _tdom(ALL '{x}')",
        "SELECT _tdom(U&'{x}' UESCAPE '!')",
        "SELECT _tdom(/*c*/('{x}'/*c*/)/*c*/)",
        "SELECT trange(('[a,b]')), tmultirange('{[a,b]}')",
        "SELECT * FROM unnest(_tdom(('{x}')))",
        "SELECT f1(a => '{x}'), f1(a := '{x}')",
        "CALL p1(('{x}'))",
        "SELECT agg1(DISTINCT '{x}'), agg1('{x}' ORDER BY 1)",
        "SELECT f2('{x}', 1)",
        // Probe DK F2: `double` alone is no keyword type.
        "SELECT '(x)'::double",
        "SELECT double '(x)'",
        "SELECT CAST('(x)' AS double)",
        // Probe DK F3: a literal beside a parameter cast to the
        // application's type takes that type.
        "SELECT '{x}' = $1::_tdom",
        "SELECT COALESCE($1::tdom[], '{x}')",
        "SELECT CASE WHEN $2 THEN $1::tdom[] ELSE '{x}' END",
        "SELECT 1 FROM pg_catalog.pg_class WHERE '{x}' = $1::_tdom",
        // Probe DL F1, F2: at any level, and a parameter an application's
        // function gives its type (so asyncpg's `ANY($2::grade[])` with a
        // literal elsewhere is refused too, but in a built-in's call).
        "SELECT ('{x}') = $1::_tdom",
        "SELECT $1::_tdom IN ('{x}')",
        "VALUES ('{x}'), ($1::_tdom)",
        "SELECT '{x}' UNION (SELECT $1::_tdom)",
        "SELECT ('{x}', 1) = ($1::_tdom, 1)",
        "SELECT '{x}' = (SELECT $1::_tdom)",
        "SELECT f1($1), '{x}' = $1",
        // Probe DM F1: a polymorphic built-in unifies its literal with the
        // parameter beside it; F2: an operator of the application's types
        // the parameter as a call does.
        "SELECT array_cat($1::_tdom, '{x}')",
        "SELECT array_cat('{x}', $1::_tdom)",
        "SELECT f1($1), array_cat($1, '{x}')",
        "SELECT 1 FROM pg_catalog.pg_class WHERE width_bucket($1::tdom, '{x}') > 0",
        "SELECT $1 === 1, $1 = '{x}'",
        "SELECT * FROM a WHERE t = $1 AND g = ANY($2::grade[]) AND s = 'x'",
        "SELECT lower(f2(x, '{x}')) FROM a",
        "SELECT app2.int4('(x)'), public.lower('x')",
        // (Fails closed: the literal is a date, but a text with a literal
        // and a cast to the application's type is taken as one.)
        "SELECT * FROM a WHERE t::date = '2020-01-01' AND u = c::tdom",
        // Probe DN F1: an operator of the application's anywhere, not only
        // right beside the parameter; one qualified by another schema.
        "SELECT ($1) === 1, $1 = '{x}'",
        "SELECT $1 COLLATE \"C\" === 1, $1 = '{x}'",
        "SELECT $1 OPERATOR(public.===) 1, $1 = '{x}'",
        "SELECT $1 OPERATOR(public.=) 1, $1 = '{x}'",
        "SELECT !!! ($1), $1 = '{x}'",
        "SELECT CASE WHEN ($1) === 1 THEN 1 END, array_cat($1, '{x}')",
        // Probe DN F5: through a column of the statement's own into a
        // polymorphic built-in.
        "WITH c AS (SELECT $1::_tdom a) SELECT array_cat(a, '{x}') FROM c",
        "SELECT array_cat(a, '{x}') FROM (SELECT $1::_tdom) s(a)",
        "SELECT pg_catalog.array_cat(a, '{x}') FROM (VALUES ($1::_tdom)) s(a)",
    ] {
        let d = parse_only(sql);
        assert!(matches!(d, Decision::Refuse(_)), "{sql}: {d:?}");
        assert_eq!(code(&d), "42P17", "{sql}");
    }
    for sql in [
        "SELECT * FROM a WHERE s = 'x' AND d > DATE '2020-01-01' AND t LIKE 'a%' ESCAPE '!'",
        "SELECT '{1}'::int8[], CAST('x' AS pg_catalog.text), 'x'::character varying",
        "SELECT * FROM a WHERE ts AT TIME ZONE 'UTC' > now() - INTERVAL '1 day'",
        "SELECT * FROM a WHERE b = $1::tdom",
        "UPDATE a SET s = 'x' WHERE id = $1 RETURNING 'done'",
        "SELECT CAST(a.b AS text) AS c, 'x' AS d FROM a WHERE s NOT LIKE 'y' AND t IS NULL",
        "SELECT 'a' UNION SELECT 'b' FROM a",
        "SELECT * FROM a WHERE u = $1::tdom",
        "SELECT lower('X'), pg_catalog.length('x'), coalesce(a, 'y'), f(a, b) FROM a",
        // `pg_catalog`'s functions, grammar and keyword types.
        "SELECT date_trunc('day', t), to_char(t, 'YYYY'), jsonb_build_object('k', v) FROM a",
        "SELECT count(*) FILTER (WHERE s = 'x'), nullif(s, ''), s IN ('a', 'b') FROM a",
        "SELECT substring(s FROM 'x'), trim(both 'x' from s), numeric(10, 2) 'x' FROM a",
        "INSERT INTO a (s, t) VALUES ('x', $1)",
        "SELECT pg_catalog.format('%s', 'x'), extract(epoch FROM t) FROM a",
        "SELECT '1'::double precision, double precision '2', CAST('3' AS double precision)",
        // asyncpg's (a parameter's cast reads no constant).
        "SELECT g, current_setting('port') FROM a WHERE t = $1 AND g = ANY($2::grade[])",
        // Built-in operators and named arguments, beside a parameter; a
        // polymorphic built-in's literal with no parameter of the
        // application's type in the text.
        "SELECT * FROM a WHERE t = $1 AND s || 'x' <> 'y' AND j ->> 'k' = $2",
        "SELECT make_interval(days => $1), 'x' FROM a",
        "SELECT array_cat(a, '{1}'), lower('X') FROM a WHERE t = $1",
    ] {
        assert_eq!(parse_only(sql), Decision::TenantFree, "{sql}");
    }
}

/// A Parse that declares a parameter of the database's own type reads a
/// literal Postgres coerces to it through that type's input (probe DI F4:
/// `'{x}' = $1` with `$1` declared as a domain's array type ran its
/// `CHECK`): it needs what its statement needs, as its Bind does.
#[test]
fn a_parse_declaring_a_type_of_the_databases_own_needs_a_tenant_for_its_literals() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let typed = |sql: &str| {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
        let d = batch(&r, &t, Tx::Idle, [Item::<&Values>::ParseTyped(&f)]);
        let plain = batch(&r, &t, Tx::Idle, [Item::<&Values>::Parse(&f)]);
        (d, plain)
    };
    for sql in [
        "SELECT '{x}' = $1",
        "SELECT COALESCE($1, '{x}')",
        "SELECT 1 FROM pg_catalog.pg_class WHERE $1 = $$ {x} $$",
    ] {
        let (d, plain) = typed(sql);
        assert_eq!(code(&d), "42P17", "{sql}");
        assert_eq!(plain, Decision::TenantFree, "{sql}");
    }
    // No literal: nothing is read through the type at the Parse.
    assert_eq!(typed("SELECT $1 IS NULL").0, Decision::TenantFree);
    let types = |oids: &[u32]| {
        oids.iter()
            .flat_map(|o| o.to_be_bytes())
            .collect::<Vec<u8>>()
    };
    let own = types(&[25, 16411]);
    let builtin = types(&[25, 1007]);
    fn declares_own(d: &[u8]) -> bool {
        crate::router::bind::ParamTypes {
            declared: d,
            described: &[],
        }
        .declares_own_type()
    }
    assert!(declares_own(&own));
    assert!(!declares_own(&builtin));
    assert!(!declares_own(&[]));
}

/// A built-in type's name without its schema is what `search_path` finds:
/// while the session's names are not trusted, a Parse that reads a literal
/// through one needs what its statement needs (probe CY F2: an application
/// composite `text` in a schema ahead of `pg_catalog`).
#[test]
fn a_parse_through_a_type_found_by_name_needs_a_tenant_where_names_are_untrusted() {
    let r = routing(ALL, false, NoTenant::Reject);
    let t = Tenants::default();
    let parse_only = |v: &SessionView<'_>, sql: &str| {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), r.key.as_bytes(), true, &mut f);
        decide(
            &r,
            v,
            Unit::batch([Item::<&Values>::Parse(&f)].into_iter()),
            &mut Vec::new(),
        )
    };
    let distrust = untrusted(&t);
    for sql in [
        "SELECT '(x)'::text",
        "SELECT CAST('(x)' AS json)",
        "SELECT text '(x)'",
        "SELECT json('(x)')",
        // Probe DI F3: other spellings of a call; a function's name is
        // found by `search_path` as a type's is.
        "SELECT int4(('(x)'))",
        "SELECT int4(ALL '(x)')",
        "SELECT lower('x')",
        "SELECT date_trunc('day', t) FROM a",
    ] {
        assert_eq!(
            parse_only(&view(&t, Tx::Idle), sql),
            Decision::TenantFree,
            "{sql}"
        );
        assert_eq!(code(&parse_only(&distrust, sql)), "42P17", "{sql}");
    }
    // Keyword types and `pg_catalog.` are `pg_catalog`'s whatever the path.
    for sql in [
        "SELECT '1'::integer, CAST('x' AS pg_catalog.text), varchar 'y'",
        "SELECT * FROM a WHERE b = $1::text",
        "SELECT pg_catalog.int4('1'), pg_catalog.lower('x'), numeric(10, 2) '1'",
    ] {
        assert_eq!(parse_only(&distrust, sql), Decision::TenantFree, "{sql}");
    }
}
