//! Fuzz shard-map parsing and routing on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::router::{ShardMap, TenantKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names: Vec<String> = ["s0", "s1", "s2"].iter().map(|s| s.to_string()).collect();
    if let Ok(map) = ShardMap::parse(text, &names) {
        for k in [
            "0",
            "42",
            "-7",
            "9223372036854775807",
            "acme",
            "042",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            let key = TenantKey::new(k.as_bytes()).unwrap();
            if let Ok(r) = map.route(&key) {
                assert!(r.shard < names.len());
            }
        }
        for s in 0..4 {
            let _ = map.overrides_for(s);
        }
        let _ = (map.overrides_len(), map.ranges_len());
    }
});
