//! Fuzz the routing decision with arbitrary texts, Bind values and session states.
//!
//! Invariants (the isolation guarantees, checked on every input):
//! * a shard is returned only if every tenant the unit names (its mentions and
//!   its key parameters' values) lives on that shard;
//! * with the lock on, only the locked tenant's shard is ever returned;
//! * "tenant-free" is returned only when every statement is on the allow-list;
//! * inside a pinned transaction, only the pinned shard is returned;
//! * a failed transaction gets nothing but 25P02, its end, a ROLLBACK TO, or an
//!   empty query;
//! * a session-mode server whose placing tenant the map now puts elsewhere runs
//!   nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::bind::{param_key, ParamTypes, ParamValues};
use shardbouncer::router::statement::{analyze_checked, kinds, Facts, Kind};
use shardbouncer::router::{
    decide, Decision, Item, Local, NoTenant, Routing, SessionView, ShardMap, Source, TenantKey,
    Tenants, Tx, Unit,
};
use std::sync::Arc;

const KEYS: &[&str] = &["1", "2", "3", "42", "acme", "globex", "x y", "-7"];

fn routing(sel: u8) -> Routing {
    let names: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    let map = ShardMap::parse(
        "version = 1\nmethod = \"citus\"\n[tenants]\n\"42\" = \"s2\"\nacme = \"s1\"\n",
        &names,
    )
    .expect("test map");
    let mut sources = vec![Source::Startup, Source::Comment, Source::Set, Source::Scan];
    sources.rotate_left((sel & 3) as usize);
    if sel & 0x40 != 0 {
        sources.pop();
    }
    Routing {
        key: "tenant_id".into(),
        sources,
        no_tenant: if sel & 4 != 0 {
            NoTenant::Default(1)
        } else {
            NoTenant::Reject
        },
        default_shard: (sel & 4 != 0).then_some(1),
        lock_startup_tenant: sel & 8 != 0,
        user_suffix: None,
        map: Arc::new(map),
        map_source: None,
        loaded_at: std::time::SystemTime::UNIX_EPOCH,
    }
}

struct Values<'a>(Vec<Option<&'a [u8]>>, i16);

impl ParamValues for &Values<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn format(&self, _: usize) -> i16 {
        self.1
    }
    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>)) {
        for (i, v) in self.0.iter().enumerate() {
            f(i, *v);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (head, rest) = data.split_at(5);
    let r = routing(head[0]);
    let pick =
        |b: u8| (b & 0x80 != 0).then(|| TenantKey::new(KEYS[(b & 7) as usize].as_bytes()).unwrap());
    let tenants = Tenants {
        startup: pick(head[1]),
        set: pick(head[2]),
        local: pick(head[2].rotate_left(4)),
        set_in_tx: head[3] & 0x80 != 0,
    };
    let tx = match head[3] % 6 {
        0 => Tx::Idle,
        1 => Tx::Held {
            stmts: head[3] & 0x40 != 0,
        },
        2 => Tx::Pinned((head[3] >> 4) as usize % 3),
        3 => Tx::Unsettled((head[3] >> 4) as usize % 3),
        4 => Tx::Failed,
        _ => Tx::Idle,
    };
    let std = head[4] & 1 == 0;
    let extended = head[4] & 2 != 0;
    let ascii_only = head[4] & 8 != 0;
    let keys_ascii_only = head[4] & 32 != 0;
    // A transaction a tenant placed, or one tenant-free work opened.
    let pinned_by = (head[4] & 64 != 0).then(|| {
        (
            TenantKey::new(KEYS[(head[1] >> 4 & 7) as usize].as_bytes()).unwrap(),
            Source::Scan,
        )
    });
    // Session mode: the server is the session's, on the shard `pinned_by` placed.
    let owns_server = head[4] & 128 != 0;
    // The text, then Bind values separated by 0xff.
    let mut parts = rest.split(|&b| b == 0xff);
    let sql = parts.next().unwrap_or_default();
    let values = Values(
        parts
            .map(|p| if p == b"\xfe" { None } else { Some(p) })
            .collect(),
        (head[4] >> 2 & 1) as i16,
    );
    let (mut f, mut alt) = (Facts::default(), Facts::default());
    analyze_checked(sql, b"tenant_id", std, &mut f, &mut alt);
    let view = SessionView {
        tenants: &tenants,
        tx,
        pinned_by,
        std_strings: std,
        ascii_only,
        keys_ascii_only,
        lexing_unsure: head[4] & 16 != 0,
        owns_server,
        server_failed: head[0] & 0x80 != 0,
        types_untrusted: head[1] & 8 != 0,
        runs_rollback_to: false,
        // (Bit 0x20 of head[3] places only Pinned and Unsettled.)
        held_state: matches!(tx, Tx::Held { .. }) && head[3] & 0x20 != 0,
        server_copies: owns_server && head[2] & 0x40 != 0,
    };
    let mut scratch = Vec::new();
    let d = if extended {
        let items = [
            Item::Parse(&f),
            Item::Bind(&f, ParamTypes::default(), &values, b""),
            Item::Execute(b""),
        ];
        decide(&r, &view, Unit::batch(items.into_iter()), &mut scratch)
    } else {
        decide(&r, &view, Unit::query(&f), &mut scratch)
    };
    // The oracle: every tenant the unit names, found independently of decide.
    let mut named: Vec<TenantKey> = f
        .mentions
        .iter()
        .filter(|m| r.has(m.source))
        .map(|m| m.key)
        .collect();
    if extended && r.has(Source::Scan) {
        for &n in &f.params {
            let i = n as usize - 1;
            if let Some(Some(v)) = values.0.get(i) {
                if let Ok(k) = param_key(Some(v), values.1, 0) {
                    named.push(k);
                }
            }
        }
        // A parameter read by a cast names the value the cast makes.
        for &(n, c, array) in &f.conv_params {
            let i = n as usize - 1;
            if let (false, Some(Some(v))) = (array, values.0.get(i)) {
                if let Ok(k) = param_key(Some(v), values.1, 0).and_then(|k| c.apply(&k)) {
                    named.push(k);
                }
            }
        }
    }
    // A value read through a cast to a type found by name never places work
    // where the session may have a type of that name of its own.
    if view.types_untrusted && f.casts_by_name && tx != Tx::Failed {
        assert!(
            !matches!(d, Decision::Shard { .. } | Decision::TenantFree),
            "{d:?} with a cast by name after types may have been created"
        );
    }
    // Under an encoding Postgres converts, no key past ASCII places work.
    if keys_ascii_only {
        if let Decision::Shard { .. } = d {
            assert!(
                named.iter().all(|k| k.as_bytes().is_ascii()),
                "{named:?} under a converted encoding"
            );
        }
    }
    // Under an encoding that hides ASCII bytes, text past ASCII never runs.
    if ascii_only && !sql.is_ascii() && tx != Tx::Failed {
        assert!(matches!(d, Decision::Refuse(_)), "{d:?} under ascii_only");
    }
    // A text that changes client_encoding or standard_conforming_strings by
    // name, with more after it and bytes past ASCII: no single lexing of the
    // rest can be trusted, so it never runs (found without the analysis'
    // effects: the statement kinds and the names in the text).
    if f.count > 1 && !sql.is_ascii() && tx != Tx::Failed {
        let mut sets = false;
        kinds(sql, b"tenant_id", std, |k| {
            sets |= matches!(
                k,
                Kind::Set | Kind::Reset | Kind::ResetAll | Kind::TxScoped("SET")
            )
        });
        let lower = sql.to_ascii_lowercase();
        let has = |w: &[u8]| lower.windows(w.len()).any(|x| x == w);
        let names = has(b"client_encoding") || has(b"names") || has(b"standard_conforming_strings");
        if names && (sets || has(b"set_config")) {
            assert!(
                !matches!(d, Decision::Shard { .. } | Decision::TenantFree),
                "{d:?} after a lexing change: {:?}",
                String::from_utf8_lossy(sql)
            );
        }
    }
    let locked = tenants.locked(&r);
    match &d {
        Decision::Shard { shard, .. } => {
            for k in &named {
                assert_eq!(
                    r.shard_of(k).ok(),
                    Some(*shard),
                    "{k} named, routed to {shard}"
                );
            }
            if let Some(l) = locked {
                assert_eq!(r.shard_of(&l).ok(), Some(*shard), "locked to {l}");
            }
            if let Tx::Pinned(p) = tx {
                assert_eq!(*shard, p);
            }
            assert!(tx != Tx::Failed);
        }
        Decision::TenantFree => {
            let mut all_free = true;
            kinds(sql, b"tenant_id", std, |k| all_free &= k.tenant_free());
            let plain_set = !r.has(Source::Set)
                && f.count == 1
                && matches!(f.first, Kind::SetTenant { .. } | Kind::ResetTenant);
            assert!(
                all_free || plain_set,
                "tenant-free: {:?}",
                String::from_utf8_lossy(sql)
            );
            assert!(named.is_empty(), "tenant-free naming {named:?}");
        }
        Decision::Local(Local::SetTenant { key: Some(k), .. }) => {
            if let Some(l) = locked {
                assert_eq!(*k, l);
            }
        }
        Decision::Local(_) | Decision::Wait | Decision::Refuse(_) => {}
    }
    // With `no_tenant = "reject"`, a unit placed by no tenant (on the home
    // shard, or in a transaction no tenant placed) is tenant-free: nothing
    // that needs a tenant runs for want of one (probes: `UPDATE ..; COMMIT` in
    // a held BEGIN; a SELECT in a transaction `BEGIN; SET ..` opened).
    if let (Decision::Shard { tenant: None, .. }, NoTenant::Reject) = (&d, r.no_tenant) {
        let placed = matches!(tx, Tx::Pinned(_)) && pinned_by.is_some();
        if !placed && !matches!(tx, Tx::Unsettled(_)) && locked.is_none() {
            let mut all_free = true;
            kinds(sql, b"tenant_id", std, |k| all_free &= k.tenant_free());
            assert!(
                all_free,
                "placed with no tenant: {:?} in {tx:?}",
                String::from_utf8_lossy(sql)
            );
        }
    }
    // Answered here without a server: only what names no tenant, where the
    // transaction is held or not yet begun.
    match &d {
        Decision::Local(Local::Hold) => {
            assert!(
                matches!(tx, Tx::Held { .. }),
                "held outside a held BEGIN: {tx:?}"
            );
            assert!(named.is_empty(), "held, naming {named:?}");
        }
        Decision::Local(Local::BeginThenRest) => {
            assert!(extended && tx == Tx::Idle, "{tx:?}");
            assert!(
                f.is_only(Kind::Begin) && named.is_empty(),
                "{:?}",
                String::from_utf8_lossy(sql)
            );
        }
        _ => {}
    }
    // In a transaction its server failed, a SET of the tenant is refused as
    // Postgres refuses it, never answered here.
    if head[0] & 0x80 != 0 {
        assert!(
            !matches!(
                d,
                Decision::Local(Local::SetTenant { .. } | Local::SetLocalOutsideTx)
            ),
            "{d:?} in a failed transaction"
        );
    }
    // A session-mode server its tenant no longer lives on runs nothing more,
    // whatever the unit names.
    if let (true, Tx::Pinned(p), Some((pin, _))) = (owns_server, tx, pinned_by) {
        if r.shard_of(&pin).ok() != Some(p) {
            assert!(
                matches!(&d, Decision::Refuse(rf) if rf.code == "0A000"),
                "{d:?} on a session server {pin} no longer places"
            );
        }
    }
    if tx == Tx::Failed {
        // A ROLLBACK TO alone may go back to a savepoint the session holds
        // (or be refused, 0A000, after a change of the SET tenant).
        let rollback_to = f.count == 1 && f.first == Kind::TxScoped("ROLLBACK");
        let ok = match &d {
            Decision::Refuse(rf) => rf.code == "25P02" || (rollback_to && rf.code == "0A000"),
            Decision::Local(Local::EndHeld { commit: false }) | Decision::TenantFree => true,
            Decision::Local(Local::RollbackToHeld) => rollback_to,
            // (A batch of Closes alone: not one this target builds.)
            Decision::Local(Local::CloseOnly) => false,
            _ => false,
        };
        assert!(ok, "failed transaction got {d:?}");
    }
});
