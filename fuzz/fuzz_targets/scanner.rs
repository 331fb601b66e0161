//! Fuzz the SQL tenant scanner: arbitrary statement bytes and key names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::scanner::{scan, scan_all_tenants, Statement};

fuzz_target!(|data: &[u8]| {
    // First byte picks how much of the rest is the key name, so key names
    // are fuzzed too (including empty, dotted and non-UTF-8 ones).
    let (key, sql): (&[u8], &[u8]) = match data.split_first() {
        Some((&n, rest)) if n < 0x20 => {
            let n = (n as usize).min(rest.len());
            (&rest[..n], &rest[n..])
        }
        _ => (b"tenant_id", data),
    };
    match scan(sql, key) {
        Statement::SetTenant { value, .. } => {
            let _ = value.to_key();
        }
        Statement::Other { comment, scan } => {
            if let Some(k) = comment.and_then(|t| t.to_key()) {
                let _ = (k.as_str(), k.as_i64(), k.is_ambiguous_integer());
            }
            if let Some(k) = scan.and_then(|t| t.to_key()) {
                let _ = (k.as_str(), k.as_i64(), k.parse_pg_int8());
            }
        }
        Statement::ResetTenant | Statement::Begin => {}
    }
    scan_all_tenants(sql, key, |t| {
        let _ = t.to_key();
    });
});
