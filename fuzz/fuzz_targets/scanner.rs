//! Fuzz the SQL analysis (statement forms, tenant mentions, effects): arbitrary
//! statement bytes and key names, under both `standard_conforming_strings`.
//!
//! Invariants beyond "no panic":
//! * the facts are self-consistent (an empty text is tenant-free, parameters are
//!   sorted and in range, a valid `SET key` carries its value, mentions are
//!   bounded and valid keys);
//! * `analyze` reports exactly the mentions `scanner::mentions` finds;
//! * a comment in front of a text changes nothing about it;
//! * facts a session keeps for a text's shape ([`shape_invariant`]) are the
//!   facts of the same text with other integer literals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::statement::{analyze, Facts, Kind, MAX_MENTIONS};
use shardbouncer::router::{int_spans, mentions, same_shape, shape_invariant, TenantToken};

fuzz_target!(|data: &[u8]| {
    // First byte picks how much of the rest is the key name, so key names
    // are fuzzed too (including empty, dotted and non-UTF-8 ones); its top bit
    // picks standard_conforming_strings.
    let (std, key, sql): (bool, &[u8], &[u8]) = match data.split_first() {
        Some((&n, rest)) if n & 0x7f < 0x20 => {
            let k = ((n & 0x7f) as usize).min(rest.len());
            (n & 0x80 == 0, &rest[..k], &rest[k..])
        }
        _ => (true, b"tenant_id", data),
    };
    let mut f = Facts::default();
    analyze(sql, key, std, &mut f);
    if f.count == 0 {
        assert_eq!(f.first, Kind::Empty);
        assert!(f.tenant_free);
    }
    assert!(f.params.windows(2).all(|w| w[0] < w[1]), "{:?}", f.params);
    assert!(f.params.iter().all(|&p| p >= 1));
    assert!(f.conv_params.iter().all(|p| p.0 >= 1));
    assert!(f.mentions.len() <= MAX_MENTIONS);
    for m in &f.mentions {
        assert!(!m.key.as_str().is_empty() && m.key.as_bytes().len() <= 63);
    }
    if matches!(f.first, Kind::SetTenant { .. }) && f.violation.is_none() {
        assert!(f.set_value.is_some());
    }
    if key.is_empty() {
        assert!(f.mentions.is_empty() && !f.has_key_params());
    }
    // The same mentions as the scanner reports on its own.
    if f.violation.is_none() {
        let mut direct = Vec::new();
        let mut params = Vec::new();
        let mut arrays = Vec::new();
        let mut convs = Vec::new();
        mentions(sql, key, std, |_, t| match t {
            TenantToken::Param(n) => params.push(n),
            TenantToken::ParamArray(n) => arrays.push(n),
            TenantToken::ParamAs(n, c) => convs.push((n, c, false)),
            TenantToken::ParamArrayAs(n, c) => convs.push((n, c, true)),
            t => direct.push(t.to_key().expect("valid when no violation")),
        });
        arrays.sort_unstable();
        arrays.dedup();
        assert_eq!(arrays, f.array_params);
        // Per statement, deduplicated: the same set.
        let mut want = f.conv_params.clone();
        want.sort_by_key(|p| (p.0, p.2, p.1 as u8));
        convs.sort_by_key(|p| (p.0, p.2, p.1 as u8));
        convs.dedup();
        assert_eq!(convs, want);
        let mut seen: Vec<_> = f.mentions.iter().map(|m| m.key).collect();
        seen.dedup();
        direct.dedup();
        // `analyze` works per statement; a key repeated across a statement
        // boundary is folded by neither, so compare as sets.
        seen.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        seen.dedup();
        direct.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        direct.dedup();
        assert_eq!(seen, direct);
        params.sort_unstable();
        params.dedup();
        assert_eq!(params, f.params);
    }
    // A leading comment is neutral.
    let mut prefixed = b"/* c */ ".to_vec();
    prefixed.extend_from_slice(sql);
    let mut g = Facts::default();
    analyze(&prefixed, key, std, &mut g);
    assert_eq!(f.count, g.count);
    assert_eq!(f.first, g.first);
    assert_eq!(f.mentions, g.mentions);
    assert_eq!(f.params, g.params);
    assert_eq!(f.conv_params, g.conv_params);
    assert_eq!(f.effects, g.effects);
    assert_eq!(f.violation, g.violation);
    // Facts a session keeps for a shape are those of every text of it: the
    // same text with other integer literals, of other lengths.
    if shape_invariant(&f, key, sql) {
        let mut ints = Vec::new();
        int_spans(sql, std, &mut ints);
        let mut other = Vec::with_capacity(sql.len() + 4 * ints.len());
        let mut at = 0;
        for (i, &(s, e)) in ints.iter().enumerate() {
            other.extend_from_slice(&sql[at..s as usize]);
            let seed = sql.len() + 7 * i;
            for d in 0..=seed % 4 {
                other.push(b'0' + ((seed + 3 * d) % 10) as u8);
            }
            at = e as usize;
        }
        other.extend_from_slice(&sql[at..]);
        assert!(same_shape(sql, &ints, &other));
        let mut g = Facts::default();
        analyze(&other, key, std, &mut g);
        assert_eq!(f, g, "{:?}", String::from_utf8_lossy(&other));
        // And a text that differs elsewhere is not of the shape.
        if let Some(p) = sql.iter().position(|c| c.is_ascii_alphabetic()) {
            let mut changed = sql.to_vec();
            changed[p] ^= 0x01;
            assert!(!same_shape(sql, &ints, &changed));
        }
    }
});
