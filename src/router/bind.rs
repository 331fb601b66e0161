//! Bind parameter values read as tenant keys (text, or binary int2/int4/int8,
//! text-like and uuid), the way Postgres would read them for the key column.

use super::key::TenantKey;

/// Well-known type OIDs a binary tenant value may have.
mod oid {
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const NAME: u32 = 19;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const UUID: u32 = 2950;
}

/// Parameter types of a statement: declared in its Parse (raw big-endian OIDs,
/// 0 = unspecified) and, where the server described them, inferred.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamTypes<'a> {
    /// The Parse's parameter-type array, 4 bytes per OID.
    pub declared: &'a [u8],
    /// ParameterDescription OIDs, if the statement was described.
    pub described: &'a [u32],
}

impl ParamTypes<'_> {
    /// Declared, else described, type of parameter `i` (0-based); 0 when unknown.
    pub fn get(&self, i: usize) -> u32 {
        let declared = i
            .checked_mul(4)
            .and_then(|at| self.declared.get(at..at + 4))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        if declared != 0 {
            return declared;
        }
        self.described.get(i).copied().unwrap_or(0)
    }
}

/// Access to a Bind message's parameter values (implemented by the protocol's
/// Bind view; routing stays independent of the wire format).
pub trait ParamValues {
    /// Number of parameter values.
    fn count(&self) -> usize;
    /// Format code of parameter `i` (0 text, 1 binary).
    fn format(&self, i: usize) -> i16;
    /// Calls `f(i, value)` for each parameter in order (`None` = SQL NULL), in one
    /// pass over the message; stops early at a malformed value.
    fn each(&self, f: &mut dyn FnMut(usize, Option<&[u8]>));
}

/// Decode a parameter value (`None`: NULL) with format code `format` and type
/// `oid` as a tenant key. The error says what is wrong, for a 22023 message.
pub fn param_key(value: Option<&[u8]>, format: i16, oid: u32) -> Result<TenantKey, &'static str> {
    let Some(v) = value else {
        return Err("is NULL");
    };
    if format == 0 {
        return TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8");
    }
    // Binary: the type decides the width; an unknown type (0) is read by width,
    // which is how drivers that do not declare types send integers and uuids.
    let int = |n: i64| {
        use std::io::Write;
        let mut buf = [0u8; 24];
        let mut w = &mut buf[..];
        let _ = write!(w, "{n}");
        let len = 24 - w.len();
        TenantKey::new(&buf[..len]).ok_or("is not a valid key")
    };
    match (oid, v.len()) {
        (oid::INT8, 8) | (0, 8) => int(i64::from_be_bytes(v.try_into().unwrap_or([0; 8]))),
        (oid::INT4, 4) | (0, 4) => int(i32::from_be_bytes(v.try_into().unwrap_or([0; 4])) as i64),
        (oid::INT2, 2) | (0, 2) => int(i16::from_be_bytes(v.try_into().unwrap_or([0; 2])) as i64),
        (oid::UUID, 16) | (0, 16) => {
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
        (oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME, _) => {
            TenantKey::new(v).ok_or("is not 1 to 63 bytes of UTF-8")
        }
        _ => Err("has a binary format of a type that cannot be a tenant key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_params_decode() {
        let k = |v: &[u8], oid| param_key(Some(v), 1, oid).map(|k| k.as_str().to_string());
        assert_eq!(k(&(-42i64).to_be_bytes(), 20).unwrap(), "-42");
        assert_eq!(k(&7i32.to_be_bytes(), 0).unwrap(), "7");
        assert_eq!(k(&(-3i16).to_be_bytes(), 21).unwrap(), "-3");
        assert_eq!(
            k(&[0x12; 16], 2950).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
        assert_eq!(param_key(None, 1, 0), Err("is NULL"));
        assert!(k(&7i32.to_be_bytes(), 700).is_err()); // float4 cannot be a key
        assert!(k(b"abc", 0).is_err()); // binary of unknown type and odd width
        assert_eq!(k(b"abc", 25).unwrap(), "abc");
        assert_eq!(param_key(Some(b"42"), 0, 20).unwrap().as_str(), "42");
        assert!(param_key(Some(b""), 0, 25).is_err());
    }

    #[test]
    fn types_prefer_declared() {
        let declared = [0, 0, 0, 0, 0, 0, 0, 23];
        let t = ParamTypes {
            declared: &declared,
            described: &[20, 25, 16],
        };
        assert_eq!((t.get(0), t.get(1), t.get(2), t.get(3)), (20, 23, 16, 0));
        assert_eq!(t.get(usize::MAX), 0);
    }
}
