//! PgBouncer's `userlist.txt`: one `"user" "secret"` pair per line.
//!
//! Each field is a double-quoted string in which `""` stands for one `"`. The secret
//! is a plaintext password, an `md5...` hash or a `SCRAM-SHA-256$...` verifier, as in
//! `[[users]]`. Anything after the second field is ignored (PgBouncer does the same).
//! Blank lines and lines starting with `;` or `#` are comments. Any other line is an
//! error naming its number, so a typo fails the (re)load instead of silently locking a
//! user out.

use std::collections::HashMap;
use std::path::Path;

/// Read and parse an auth file: user name → secret (`None` for an empty secret).
pub fn load(path: &Path) -> Result<HashMap<String, Option<String>>, String> {
    let text = super::read_regular(path)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .map_err(|e| format!("[auth] auth_file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("[auth] auth_file {}: {e}", path.display()))
}

/// Parse auth file text.
pub fn parse(text: &str) -> Result<HashMap<String, Option<String>>, String> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let lineno = i + 1;
        let (user, rest) =
            quoted(line).ok_or_else(|| format!("line {lineno}: expected \"user\" \"password\""))?;
        let (secret, _) = quoted(rest.trim_start()).ok_or_else(|| {
            format!("line {lineno}: expected a double-quoted password after the user name")
        })?;
        if user.is_empty() {
            return Err(format!("line {lineno}: empty user name"));
        }
        let secret = (!secret.is_empty()).then_some(secret);
        if out.insert(user.clone(), secret).is_some() {
            return Err(format!("line {lineno}: user {user:?} is listed twice"));
        }
    }
    Ok(out)
}

/// One `"..."` field with `""` escapes; returns the value and the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('"')?;
    let mut value = String::new();
    loop {
        let end = rest.find('"')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix('"') {
            value.push('"');
            rest = r;
        } else {
            return Some((value, rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_pairs_comments_and_escapes() {
        let m = parse(
            "; comment\n# another\n\n\"app\" \"secret\"\n  \"q\"\"uote\" \"pa\"\"ss\" extra\n\"nopw\" \"\"\n",
        )
        .unwrap();
        assert_eq!(m["app"].as_deref(), Some("secret"));
        assert_eq!(m["q\"uote"].as_deref(), Some("pa\"ss"));
        assert_eq!(m["nopw"], None);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn rejects_malformed_lines_with_line_number() {
        for (text, needle) in [
            ("app secret\n", "line 1"),
            ("\"app\" \"secret\n", "line 1"),
            ("\n\"app\"\n", "line 2"),
            ("\"\" \"x\"\n", "empty user"),
            ("\"a\" \"x\"\n\"a\" \"y\"\n", "twice"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
