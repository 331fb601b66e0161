//! A keyed hash for the maps a transaction looks tenants up in.
//!
//! A routed transaction looked its tenant up in a dozen maps (the pool's
//! lanes and active counts, the tenant gate, the statistics), and std's
//! SipHash cost about 270 instructions a lookup: 2,800 of the pooler's
//! instructions per routed `pgbench` transaction (callgrind). Tenant keys
//! come from clients, so the maps still need a hash an attacker cannot aim
//! collisions at: this one is keyed with random values per process (from
//! std's `RandomState`), in the manner of aHash's fallback hash: each 16
//! bytes are mixed by a folded 64x64->128-bit multiply with two secret
//! keys, and the result by one more. It is not a cryptographic MAC, and
//! nothing here needs one: only the spread over a table's buckets.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The odd constant of PCG's multiplier, as aHash's fallback uses it.
const MULTIPLE: u64 = 6364136223846793005;

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// This process's four secret keys, drawn once.
fn keys() -> &'static [u64; 4] {
    static KEYS: OnceLock<[u64; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        // `RandomState::new` is seeded from the OS once per thread and
        // stepped per call; hashing distinct values with it gives four
        // independent draws.
        let s = std::collections::hash_map::RandomState::new();
        std::array::from_fn(|i| s.hash_one(i as u64 ^ 0x5eed_0000))
    })
}

/// A [`BuildHasher`] of [`KeyedHasher`]s: every map built with it hashes
/// with this process's keys.
#[derive(Clone, Copy, Debug)]
pub struct KeyedState {
    keys: &'static [u64; 4],
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState { keys: keys() }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    #[inline]
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            buffer: self.keys[0],
            pad: self.keys[1],
            extra: [self.keys[2], self.keys[3]],
        }
    }
}

/// A `HashMap` with [`KeyedState`].
pub type KeyedMap<K, V> = std::collections::HashMap<K, V, KeyedState>;

/// See the [module](self).
#[derive(Clone, Debug)]
pub struct KeyedHasher {
    buffer: u64,
    pad: u64,
    extra: [u64; 2],
}

impl KeyedHasher {
    #[inline]
    fn update(&mut self, x: u64) {
        self.buffer = folded_multiply(x ^ self.buffer, MULTIPLE);
    }

    #[inline]
    fn large_update(&mut self, a: u64, b: u64) {
        let combined = folded_multiply(a ^ self.extra[0], b ^ self.extra[1]);
        self.buffer = (self.buffer.wrapping_add(self.pad) ^ combined).rotate_left(23);
    }
}

/// Up to 8 bytes as a number, different for any two runs of the same
/// length (the length is hashed apart), as aHash reads them: overlapping
/// reads, no copy (a copy of a variable length is a `memcpy` call).
#[inline]
fn read_small(b: &[u8]) -> u64 {
    let n = b.len();
    match n {
        0 => 0,
        1..=3 => (b[0] as u64) | ((b[n / 2] as u64) << 8) | ((b[n - 1] as u64) << 16),
        4..=7 => {
            let lo = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
            let hi = u32::from_le_bytes(b[n - 4..].try_into().expect("4 bytes"));
            (lo as u64) | ((hi as u64) << 32)
        }
        _ => u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first, so that "ab" + "c" and "a" + "bc" differ.
        self.buffer = self
            .buffer
            .wrapping_add(bytes.len() as u64)
            .wrapping_mul(MULTIPLE);
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let a = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
            self.large_update(a, b);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let (a, b) = rest.split_at(rest.len().min(8));
            self.large_update(read_small(a), read_small(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.update(i as u64);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.update(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.update(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.update(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.update(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let rot = (self.buffer & 63) as u32;
        folded_multiply(self.buffer, self.pad).rotate_left(rot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::TenantKey;
    use std::collections::HashSet;

    fn hash<T: std::hash::Hash>(s: &KeyedState, v: T) -> u64 {
        s.hash_one(v)
    }

    /// Equal values hash alike; what Eq tells apart (order, length, one byte,
    /// the split of a string into pieces) hashes apart; and the hashes of many
    /// similar tenant keys spread over a table's low bits.
    #[test]
    fn the_hash_tells_apart_what_eq_does_and_spreads_similar_keys() {
        let s = KeyedState::default();
        let k = |v: &str| TenantKey::new(v.as_bytes()).unwrap();
        assert_eq!(hash(&s, k("acme")), hash(&s, k("acme")));
        assert_eq!(hash(&s, "acme"), KeyedState::default().hash_one("acme"));
        assert_ne!(hash(&s, k("acme")), hash(&s, k("acmf")));
        assert_ne!(hash(&s, ("ab", "c")), hash(&s, ("a", "bc")));
        assert_ne!(hash(&s, Some(k("1"))), hash(&s, None::<TenantKey>));
        let long = "x".repeat(63);
        assert_ne!(hash(&s, k(&long)), hash(&s, k(&long[..62])));
        // 100,000 keys like a SaaS's tenant ids, in 4,096 buckets by their
        // low bits, as hashbrown uses them: none far above the mean of 24.
        let mut buckets = vec![0u32; 4096];
        let mut all = HashSet::new();
        for i in 0..100_000u32 {
            let h = hash(&s, k(&i.to_string()));
            all.insert(h);
            buckets[(h & 4095) as usize] += 1;
        }
        assert_eq!(all.len(), 100_000, "no full collision");
        let most = *buckets.iter().max().unwrap();
        assert!(most < 60, "a bucket holds {most}");
        // hashbrown also reads the top 7 bits as a tag.
        let mut tags = [0u32; 128];
        for i in 0..100_000u32 {
            tags[(hash(&s, k(&i.to_string())) >> 57) as usize] += 1;
        }
        assert!(tags.iter().all(|&n| n > 600), "{tags:?}");
    }

    /// Two runs of bytes of the same length read differently.
    #[test]
    fn small_reads_tell_every_byte_apart() {
        for n in 1..=8usize {
            let base: Vec<u8> = (1..=n as u8).collect();
            let mut seen = HashSet::new();
            seen.insert(read_small(&base));
            for i in 0..n {
                let mut b = base.clone();
                b[i] ^= 0x80;
                assert!(seen.insert(read_small(&b)), "byte {i} of {n}");
            }
        }
    }

    /// The keys are drawn per process: not a constant a client could
    /// compute collisions for offline.
    #[test]
    fn the_keys_are_random() {
        let k = keys();
        assert!(k.iter().collect::<HashSet<_>>().len() == 4);
        assert!(!k.contains(&0));
    }
}
