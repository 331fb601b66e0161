//! PostgreSQL MD5 password authentication (`AuthenticationMD5Password`). Pure, no I/O.
//!
//! The stored form is `"md5" + hex(md5(password ++ user))`; on the wire the client
//! answers a 4-byte salt with `"md5" + hex(md5(hex_part_of(stored) ++ salt))`.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Length of an `"md5..."` hash string: the prefix plus 32 hex digits.
pub const MD5_HASH_LEN: usize = 35;

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(MD5_HASH_LEN);
    out.push_str("md5");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// True if `s` has the pg_authid MD5 form: `"md5"` followed by exactly 32 hex
/// digits (PostgreSQL itself only checks the prefix and the length).
pub fn is_md5_hash(s: &str) -> bool {
    s.len() == MD5_HASH_LEN
        && s.starts_with("md5")
        && s.bytes().skip(3).all(|b| b.is_ascii_hexdigit())
}

/// `"md5" + hex(md5(password ++ user))` — the pg_authid form.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    md5_hex(&[password.as_bytes(), user.as_bytes()])
}

/// What a client sends for AuthenticationMD5Password:
/// `"md5" + hex(md5(hex_part_of(stored) ++ salt))`, where `stored` is the
/// `"md5..."` hash from [`md5_password_hash`]. Returns `None` if `stored_md5` is
/// not of that form. Upper-case hex digits are accepted and treated as lower
/// case (clients always hash the lower-case form).
pub fn md5_salted_from_hash(stored_md5: &str, salt: [u8; 4]) -> Option<String> {
    if !is_md5_hash(stored_md5) {
        return None;
    }
    let hex_part = stored_md5.get(3..)?.to_ascii_lowercase();
    Some(md5_hex(&[hex_part.as_bytes(), &salt]))
}

/// Convenience: the salted response computed from a plaintext password.
pub fn md5_salted_from_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let stored = md5_password_hash(user, password);
    // `stored` is always well-formed, so this cannot take the fallback; the
    // fallback keeps the function panic-free regardless.
    md5_salted_from_hash(&stored, salt).unwrap_or_default()
}

/// Constant-time check of a client's md5 response against the stored hash (or
/// plaintext password).
///
/// `stored` is either an `"md5..."` hash (as [`md5_password_hash`] produces) or
/// a plaintext password; like PostgreSQL, anything that looks like an md5 hash is
/// treated as one. A SCRAM verifier cannot be used for MD5 authentication, so
/// `stored` in SCRAM form always yields `false`. `client_response` is the
/// PasswordMessage payload; a single trailing NUL terminator is tolerated.
pub fn md5_verify(user: &str, stored: &str, salt: [u8; 4], client_response: &[u8]) -> bool {
    if super::scram::is_scram_verifier(stored) {
        return false;
    }
    let expected = if is_md5_hash(stored) {
        md5_salted_from_hash(stored, salt)
    } else {
        Some(md5_salted_from_password(user, stored, salt))
    };
    let Some(expected) = expected else {
        return false;
    };
    let response = client_response
        .strip_suffix(&[0u8])
        .unwrap_or(client_response);
    bool::from(expected.as_bytes().ct_eq(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_hash() {
        assert_eq!(
            md5_password_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        // Written by PostgreSQL 15 (password_encryption = md5) for
        // CREATE ROLE m1 PASSWORD 'postgres'.
        assert_eq!(
            md5_password_hash("m1", "postgres"),
            "md57cd6510aff92e2f9951fe543d74ca816"
        );
        assert!(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9"));
        assert!(!is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9z"));
        assert!(!is_md5_hash("postgres"));
    }

    #[test]
    fn known_salted() {
        // md5(hex ++ salt) computed independently:
        // python3 -c "import hashlib;print(hashlib.md5(b'3175bce1d3201d16594cebf9d7eb3f9d'+bytes([1,2,3,4])).hexdigest())"
        assert_eq!(
            md5_salted_from_password("postgres", "postgres", [1, 2, 3, 4]),
            "md568be9ed08db75f318087ab337aaea044"
        );
    }

    #[test]
    fn salted_round_trip() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let stored = md5_password_hash("alice", "wonderland");
        let resp = md5_salted_from_hash(&stored, salt).unwrap();
        assert_eq!(resp, md5_salted_from_password("alice", "wonderland", salt));
        assert_eq!(resp.len(), MD5_HASH_LEN);

        // Against the stored hash and against the plaintext.
        assert!(md5_verify("alice", &stored, salt, resp.as_bytes()));
        assert!(md5_verify("alice", "wonderland", salt, resp.as_bytes()));
        // Trailing NUL from the wire is fine.
        let mut with_nul = resp.clone().into_bytes();
        with_nul.push(0);
        assert!(md5_verify("alice", &stored, salt, &with_nul));
        // Upper-case stored hash still matches.
        let upper = format!("md5{}", stored[3..].to_ascii_uppercase());
        assert!(md5_verify("alice", &upper, salt, resp.as_bytes()));
    }

    #[test]
    fn verify_rejects_wrong() {
        let salt = [1, 2, 3, 4];
        let stored = md5_password_hash("alice", "wonderland");
        let wrong_pw = md5_salted_from_password("alice", "wrong", salt);
        assert!(!md5_verify("alice", &stored, salt, wrong_pw.as_bytes()));
        let wrong_salt = md5_salted_from_hash(&stored, [4, 3, 2, 1]).unwrap();
        assert!(!md5_verify("alice", &stored, salt, wrong_salt.as_bytes()));
        // Same password, other user: different hash.
        let other_user = md5_salted_from_password("bob", "wonderland", salt);
        assert!(!md5_verify("alice", &stored, salt, other_user.as_bytes()));
        assert!(!md5_verify("alice", &stored, salt, b""));
        assert!(!md5_verify("alice", &stored, salt, stored.as_bytes()));
        assert!(md5_salted_from_hash("wonderland", salt).is_none());
        // SCRAM verifiers never match MD5.
        let scram =
            super::super::scram::ScramVerifier::from_password("x", b"salt", 1).to_string_form();
        let resp = md5_salted_from_password("alice", &scram, salt);
        assert!(!md5_verify("alice", &scram, salt, resp.as_bytes()));
    }

    proptest! {
        #[test]
        fn verify_never_panics(user in any::<String>(), stored in any::<String>(),
                               salt in any::<[u8; 4]>(),
                               resp in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = md5_verify(&user, &stored, salt, &resp);
            let _ = md5_salted_from_hash(&stored, salt);
        }

        #[test]
        fn round_trip(user in any::<String>(), pw in any::<String>(), salt in any::<[u8; 4]>()) {
            let resp = md5_salted_from_password(&user, &pw, salt);
            prop_assert!(md5_verify(&user, &pw, salt, resp.as_bytes())
                || super::super::scram::is_scram_verifier(&pw) || is_md5_hash(&pw));
            prop_assert!(md5_verify(&user, &md5_password_hash(&user, &pw), salt, resp.as_bytes()));
        }
    }
}
