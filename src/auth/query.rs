//! Running `auth_query` on a server: the user name goes in as a bound parameter of
//! the extended protocol, never spliced into SQL.

use crate::protocol;
use crate::protocol::tag::backend as be;
use crate::server::{ServerConn, ServerError};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// Parse/Bind/Execute/Sync for `sql` with one text parameter.
fn encode(sql: &str, param: &str) -> Result<BytesMut, String> {
    if sql.contains('\0') || param.contains('\0') {
        return Err("auth_query or user name contains a NUL byte".into());
    }
    let mut b = BytesMut::with_capacity(sql.len() + param.len() + 64);
    // Unnamed statement, no parameter types (the server infers text).
    protocol::parse(&mut b, b"", sql.as_bytes(), &[0, 0]);
    protocol::bind_text(&mut b, b"", &[param.as_bytes()]);
    protocol::execute(&mut b, b"", 0);
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
            be::DATA_ROW if first.is_none() => first = Some(protocol::parse_data_row(&body)),
            be::ERROR_RESPONSE => err = Some(protocol::parse_error(&body)),
            be::READY_FOR_QUERY => break,
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
