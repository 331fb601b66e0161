//! Whether a `search_path` lets a type named like a built-in one be found
//! before `pg_catalog`'s.
//!
//! Postgres searches `pg_catalog` before the path unless the path names it;
//! named, it is searched where it stands. A domain `text` or `int8` in a
//! schema ahead of it is then what `'gamma'::text` casts to, and the value
//! Postgres reads is not the one the router read (probe FF: a permanent
//! domain `text AS varchar(1)` in a schema `SET search_path = evil,
//! pg_catalog` puts first stored tenant `g` on `gamma`'s shard). A value cast
//! to a type found by name is refused while that may be so
//! ([`super::Effects::TYPE_PATH`], [`super::SessionView::types_untrusted`]).

/// Whether `path`, a `search_path` as `set_config` takes it and
/// `current_setting` gives it (names separated by commas, each plain, folded
/// to lower case, or double-quoted), names `pg_catalog` after another schema.
/// What this cannot read counts as so: a value Postgres refuses sets nothing,
/// and a refusal here costs one statement an error.
pub fn shadows_catalog(path: &str) -> bool {
    let mut first = true;
    let mut rest = path.as_bytes();
    loop {
        rest = rest.trim_ascii_start();
        let (catalog, after) = match rest.first() {
            // An empty path (or nothing after a comma: Postgres refuses it).
            None => return !first,
            Some(b'"') => {
                // A quoted name: `""` is a quote; `"PG_CATALOG"` is another
                // schema than pg_catalog.
                let mut name = Vec::new();
                let mut i = 1;
                loop {
                    match rest.get(i) {
                        None => return true,
                        Some(b'"') if rest.get(i + 1) == Some(&b'"') => {
                            name.push(b'"');
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(&c) => {
                            name.push(c);
                            i += 1;
                        }
                    }
                }
                (name == b"pg_catalog", &rest[i + 1..])
            }
            Some(_) => {
                let end = rest
                    .iter()
                    .position(|&c| c == b',' || c.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                if name.is_empty() || name.contains(&b'"') {
                    return true;
                }
                (name.eq_ignore_ascii_case(b"pg_catalog"), &rest[end..])
            }
        };
        if catalog {
            return !first;
        }
        first = false;
        rest = after.trim_ascii_start();
        match rest.split_first() {
            None => return false,
            Some((b',', after)) => rest = after,
            Some(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shadows_catalog;

    #[test]
    fn a_path_shadows_the_catalog_when_it_names_it_after_another_schema() {
        for path in [
            "evil, pg_catalog",
            "evil,pg_catalog",
            "\"$user\", pg_catalog",
            "pg_temp, pg_catalog",
            "evil, PG_CATALOG",
            "\"evil\", \"pg_catalog\"",
            "\"a\"\"b\", pg_catalog",
            "a, b, c, pg_catalog, d",
            // Unreadable: counted as shadowing.
            "evil, \"pg_catalog",
            "evil pg_catalog",
            "ev\"il, pg_catalog",
            "a,",
            ",a",
        ] {
            assert!(shadows_catalog(path), "{path}");
        }
        for path in [
            "",
            "   ",
            "public",
            "\"$user\", public",
            "pg_catalog, evil",
            " PG_CATALOG ,evil",
            "\"pg_catalog\", evil",
            "evil, \"PG_CATALOG\"",
            "evil, \"pg_catalog, x\"",
            "evil, pg_catalog_x",
            "evil, x_pg_catalog",
        ] {
            assert!(!shadows_catalog(path), "{path}");
        }
    }
}
