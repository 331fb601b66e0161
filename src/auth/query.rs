//! Running `auth_query` on a server: the user name goes in as a bound parameter of
//! the extended protocol, never spliced into SQL.

use crate::protocol;
use crate::server::{decode_data_row, ServerConn, ServerError};
use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

/// Parse/Bind/Execute/Sync for `sql` with one text parameter.
fn encode(sql: &str, param: &str) -> Result<BytesMut, String> {
    if sql.contains('\0') || param.contains('\0') {
        return Err("auth_query or user name contains a NUL byte".into());
    }
    let mut b = BytesMut::with_capacity(sql.len() + param.len() + 64);
    // Parse: unnamed statement, no parameter types (the server infers text).
    b.put_u8(b'P');
    b.put_i32((4 + 1 + sql.len() + 1 + 2) as i32);
    b.put_u8(0);
    b.put_slice(sql.as_bytes());
    b.put_u8(0);
    b.put_i16(0);
    // Bind: unnamed portal and statement, text formats, one parameter.
    b.put_u8(b'B');
    b.put_i32((4 + 1 + 1 + 2 + 2 + 4 + param.len() + 2) as i32);
    b.put_u8(0);
    b.put_u8(0);
    b.put_i16(0);
    b.put_i16(1);
    b.put_i32(param.len() as i32);
    b.put_slice(param.as_bytes());
    b.put_i16(0);
    // Execute: all rows.
    b.put_u8(b'E');
    b.put_i32(4 + 1 + 4);
    b.put_u8(0);
    b.put_i32(0);
    protocol::sync(&mut b);
    Ok(b)
}

/// Run `sql` with `$1 = user` and return the first row's values (empty if no row).
pub async fn run(
    conn: &mut ServerConn,
    sql: &str,
    user: &str,
) -> Result<Vec<Option<String>>, ServerError> {
    let out = encode(sql, user).map_err(ServerError::Io)?;
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let mut first = None;
    let mut err = None;
    loop {
        let (tag, body) = conn.read_message().await?;
        match tag {
            b'D' if first.is_none() => first = Some(decode_data_row(&body)),
            b'E' => err = Some(protocol::parse_error(&body)),
            b'Z' => break,
            _ => {}
        }
    }
    match err {
        Some(e) => Err(ServerError::Refused(e)),
        None => Ok(first.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use crate::protocol::frame_header;

    #[test]
    fn frames_are_well_formed() {
        let b = encode("SELECT $1", "o'brien").unwrap();
        let mut rest = &b[..];
        let mut tags = Vec::new();
        while !rest.is_empty() {
            let (tag, len) = frame_header(rest, 1 << 20).unwrap().unwrap();
            tags.push(tag);
            rest = &rest[len..];
        }
        assert_eq!(tags, b"PBES");
        assert!(encode("SELECT $1", "a\0b").is_err());
    }
}
