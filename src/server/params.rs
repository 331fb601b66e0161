//! Session parameters that follow a client from server to server.

/// Reported parameters a client may set that must follow it onto every server
/// (search_path is handled separately: Postgres 15 does not report it).
pub const TRACKED_PARAMS: &[&str] = &[
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// The place of `name` in [`TRACKED_PARAMS`] (exact name). The six names
/// differ in length, so the length picks the one candidate to compare.
fn tracked_index(name: &str) -> Option<usize> {
    let i = match name.len() {
        15 => 0,
        9 => 1,
        8 => 2,
        13 => 3,
        27 => 4,
        16 => 5,
        _ => return None,
    };
    let want = TRACKED_PARAMS[i];
    // Most names in a set are the very strings of TRACKED_PARAMS.
    (std::ptr::eq(name, want) || name == want).then_some(i)
}

/// Canonical spelling of a tracked parameter name, case-insensitively (`datestyle`
/// becomes `DateStyle`), or `None` if it is not tracked.
pub fn canonical(name: &str) -> Option<&'static str> {
    TRACKED_PARAMS
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(name))
}

/// Postgres's encoding aliases (`pg_encname_tbl` in `src/common/encnames.c`) with
/// the canonical name each stands for, keyed by the alias reduced to lowercase
/// letters and digits, as Postgres reduces it before looking it up.
const ENCODINGS: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

/// The canonical name of a client encoding (`utf-8` → `UTF8`, `eucjp` → `EUC_JP`),
/// or `None` when Postgres would refuse it.
pub fn canonical_encoding(name: &str) -> Option<&'static str> {
    // Postgres keeps only ASCII letters and digits and refuses names of 64 bytes or more.
    if name.is_empty() || name.len() >= 64 {
        return None;
    }
    let key: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ENCODINGS
        .binary_search_by(|(alias, _)| alias.cmp(&key.as_str()))
        .ok()
        .map(|i| ENCODINGS[i].1)
}

/// The canonical spelling of a DateStyle (`iso` → `ISO, MDY`), as Postgres's
/// `check_datestyle` forms it: parts not given come from `current` (the server's
/// value at login). `None` when Postgres would refuse it.
pub fn canonical_datestyle(value: &str, current: &str) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Style {
        Iso,
        Sql,
        Postgres,
        German,
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Order {
        Ymd,
        Dmy,
        Mdy,
    }
    fn parse(
        value: &str,
        mut style: Style,
        mut order: Order,
        dflt: (Style, Order),
    ) -> Option<(Style, Order)> {
        let (mut have_style, mut have_order) = (false, false);
        if value
            .trim_matches(|c: char| c.is_ascii_whitespace())
            .is_empty()
        {
            return Some((style, order)); // Postgres takes an empty list as "no change"
        }
        for raw in value.split(',') {
            let tok = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            let tok = tok
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tok);
            let starts = |p: &str| {
                tok.len() >= p.len() && tok.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            };
            let is = |w: &str| tok.eq_ignore_ascii_case(w);
            let (s, o) = if is("ISO") {
                (Some(Style::Iso), None)
            } else if is("SQL") {
                (Some(Style::Sql), None)
            } else if starts("POSTGRES") {
                (Some(Style::Postgres), None)
            } else if is("GERMAN") {
                if !have_order {
                    order = Order::Dmy;
                }
                (Some(Style::German), None)
            } else if is("YMD") {
                (None, Some(Order::Ymd))
            } else if is("DMY") || starts("EURO") {
                (None, Some(Order::Dmy))
            } else if is("MDY") || is("US") || starts("NONEURO") {
                (None, Some(Order::Mdy))
            } else if is("DEFAULT") {
                if !have_style {
                    style = dflt.0;
                }
                if !have_order {
                    order = dflt.1;
                }
                (None, None)
            } else {
                return None;
            };
            if let Some(s) = s {
                if have_style && style != s {
                    return None; // conflicting styles
                }
                style = s;
                have_style = true;
            }
            if let Some(o) = o {
                if have_order && order != o {
                    return None; // conflicting orders
                }
                order = o;
                have_order = true;
            }
        }
        Some((style, order))
    }
    let boot = (Style::Iso, Order::Mdy);
    let cur = parse(current, boot.0, boot.1, boot).unwrap_or(boot);
    let (style, order) = parse(value, cur.0, cur.1, cur)?;
    let style = match style {
        Style::Iso => "ISO",
        Style::Sql => "SQL",
        Style::Postgres => "Postgres",
        Style::German => "German",
    };
    let order = match order {
        Order::Ymd => "YMD",
        Order::Dmy => "DMY",
        Order::Mdy => "MDY",
    };
    Some(format!("{style}, {order}"))
}

/// The value Postgres would report for a tracked parameter set to `value` at login,
/// with `current` the server's own value; `None` when Postgres would refuse it.
/// Parameters Postgres reports as given come back unchanged.
pub fn canonical_value(name: &str, value: &str, current: &str) -> Option<String> {
    match name {
        "client_encoding" => canonical_encoding(value).map(str::to_string),
        "DateStyle" => canonical_datestyle(value, current),
        _ => Some(value.to_string()),
    }
}

/// Parameter names a [`ParamSet`] keeps as static strings instead of copies,
/// besides [`TRACKED_PARAMS`]: the rest of what Postgres 15 reports.
const OTHER_REPORTED: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "default_transaction_read_only",
    "in_hot_standby",
    "search_path",
];

/// A small name → value map. Linear search: it holds about a dozen entries.
/// Well-known names are not copied (every client's set holds them).
///
/// The place of each of [`TRACKED_PARAMS`] is kept beside the entries: every
/// transaction compares those six on the server it gets (see
/// `ServerState::sync_statement`), and finding them by a pass over the
/// entries was about 700 of the pooler's 17,300 instructions per
/// `pgbench -S` transaction (callgrind, three sets per transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSet {
    entries: Vec<(std::borrow::Cow<'static, str>, String)>,
    /// Index in `entries` of each tracked name, `NOT_HERE` when absent,
    /// `FAR` when past what a byte holds (found by a pass then). A function
    /// of `entries` (so the derived equality means the same). Bytes: every
    /// client keeps two sets while idle, and four-byte places made an idle
    /// client about 50 bytes larger (the idle bench).
    tracked_at: [u8; TRACKED_PARAMS.len()],
}

/// `ParamSet::tracked_at` of a tracked name the set does not hold.
const NOT_HERE: u8 = u8::MAX;

/// `ParamSet::tracked_at` of a tracked name held past index `FAR - 1`.
const FAR: u8 = u8::MAX - 1;

/// What `tracked_at` keeps for a name at index `at`.
fn place(at: usize) -> u8 {
    u8::try_from(at).ok().filter(|&a| a < FAR).unwrap_or(FAR)
}

impl Default for ParamSet {
    fn default() -> Self {
        ParamSet {
            entries: Vec::new(),
            tracked_at: [NOT_HERE; TRACKED_PARAMS.len()],
        }
    }
}

impl ParamSet {
    /// Give back unused capacity (a set kept for long, by an idle client).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        for (k, v) in &mut self.entries {
            if let std::borrow::Cow::Owned(k) = k {
                k.shrink_to_fit();
            }
            v.shrink_to_fit();
        }
    }

    /// Value of `key` (exact name).
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(i) = tracked_index(key) {
            return self.tracked_value(i);
        }
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `TRACKED_PARAMS[i]`.
    pub fn tracked_value(&self, i: usize) -> Option<&str> {
        match self.tracked_at[i] {
            NOT_HERE => None,
            FAR => self
                .entries
                .iter()
                .find(|(k, _)| k == TRACKED_PARAMS[i])
                .map(|(_, v)| v.as_str()),
            at => Some(self.entries[at as usize].1.as_str()),
        }
    }

    /// The value of each of [`TRACKED_PARAMS`], in its order.
    pub fn tracked(&self) -> [Option<&str>; TRACKED_PARAMS.len()] {
        std::array::from_fn(|i| self.tracked_value(i))
    }

    /// Insert or replace, reusing the existing allocation when the value is unchanged.
    pub fn set(&mut self, key: &str, value: &str) {
        if let Some((_, v)) = self.entries.iter_mut().find(|(k, _)| k == key) {
            if v != value {
                v.clear();
                v.push_str(value);
            }
        } else {
            let mut known = TRACKED_PARAMS.iter().chain(OTHER_REPORTED);
            let key = match known.find(|n| **n == key) {
                Some(n) => std::borrow::Cow::Borrowed(*n),
                None => std::borrow::Cow::Owned(key.to_owned()),
            };
            if let Some(i) = tracked_index(&key) {
                self.tracked_at[i] = place(self.entries.len());
            }
            self.entries.push((key, value.to_owned()));
        }
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: &str) {
        self.retain(|k| k != key);
    }

    /// Keep only the names `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|(k, _)| keep(k));
        self.tracked_at = [NOT_HERE; TRACKED_PARAMS.len()];
        for (at, (k, _)) in self.entries.iter().enumerate() {
            if let Some(i) = tracked_index(k) {
                self.tracked_at[i] = place(at);
            }
        }
    }

    /// Iterate in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of names and values (what keeping the set costs, roughly).
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_param_set_keeps_known_and_unknown_names_alike() {
        let mut p = ParamSet::default();
        p.set("application_name", "a");
        p.set("my.custom", "b");
        p.set("application_name", "longer value");
        p.shrink_to_fit();
        assert_eq!(p.get("application_name"), Some("longer value"));
        assert_eq!(p.get("my.custom"), Some("b"));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("application_name", "longer value"), ("my.custom", "b")]
        );
        assert!(
            matches!(p.entries[0].0, std::borrow::Cow::Borrowed(_)),
            "not copied"
        );
        assert!(matches!(p.entries[1].0, std::borrow::Cow::Owned(_)));
    }

    #[test]
    fn tracked_values_are_what_get_finds() {
        for (i, n) in TRACKED_PARAMS.iter().enumerate() {
            // A copy too, not only the very static string.
            let copy = String::from(*n);
            assert_eq!(tracked_index(n), Some(i));
            assert_eq!(tracked_index(&copy), Some(i));
        }
        for other in OTHER_REPORTED
            .iter()
            .chain(&["datestyle", "timezone", "x", ""])
        {
            assert_eq!(tracked_index(other), None, "{other}");
        }
        let mut p = ParamSet::default();
        p.set("server_encoding", "UTF8");
        p.set("TimeZone", "UTC");
        p.set("my.custom_setting", "v");
        p.set("application_name", "app");
        p.set("is_superuser", "off");
        let t = p.tracked();
        for (i, n) in TRACKED_PARAMS.iter().enumerate() {
            assert_eq!(t[i], p.get(n), "{n}");
        }
        assert_eq!(t[2], Some("UTC"));
        assert_eq!(t[5], Some("app"));
        assert_eq!(t[0], None, "server_encoding is not client_encoding");
    }

    /// The kept places of the tracked names follow every change: compared
    /// with a pass over the entries after each step of a mixed sequence.
    #[test]
    fn tracked_places_follow_sets_removes_and_retains() {
        let names = ["TimeZone", "x.a", "DateStyle", "application_name", "y.b"];
        let mut p = ParamSet::default();
        let check = |p: &ParamSet| {
            for (i, n) in TRACKED_PARAMS.iter().enumerate() {
                let by_pass = p.iter().find(|(k, _)| k == n).map(|(_, v)| v);
                assert_eq!(p.tracked()[i], by_pass, "{n}");
                assert_eq!(p.get(n), by_pass, "{n}");
            }
        };
        for step in 0..200usize {
            let name = names[step * 7 % names.len()];
            match step % 5 {
                0..=2 => p.set(name, &step.to_string()),
                3 => p.remove(name),
                _ => p.retain(|k| k.len() % 2 == step % 2),
            }
            check(&p);
        }
        p.set("TimeZone", "UTC");
        p.remove("x.a");
        check(&p);
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        // Past what a byte places: found by a pass.
        let mut p = ParamSet::default();
        for n in 0..300 {
            p.set(&format!("x.n{n}"), "v");
        }
        p.set("application_name", "far");
        p.set("DateStyle", "ISO");
        check(&p);
        p.retain(|k| k != "x.n0");
        check(&p);
        assert_eq!(p.get("application_name"), Some("far"));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("datestyle"), Some("DateStyle"));
        assert_eq!(canonical("TIMEZONE"), Some("TimeZone"));
        assert_eq!(canonical("work_mem"), None);
    }

    #[test]
    fn encodings_are_spelled_as_postgres_reports_them() {
        assert!(
            ENCODINGS.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted for binary search"
        );
        for (given, want) in [
            ("utf-8", "UTF8"),
            ("UTF8", "UTF8"),
            ("unicode", "UTF8"),
            ("eucjp", "EUC_JP"),
            ("EUC_JP", "EUC_JP"),
            ("iso-8859-1", "LATIN1"),
            ("ISO_8859_5", "ISO_8859_5"),
            ("sql_ascii", "SQL_ASCII"),
            ("Windows-1252", "WIN1252"),
            ("shift_jis_2004", "SHIFT_JIS_2004"),
        ] {
            assert_eq!(canonical_encoding(given), Some(want), "{given}");
        }
        // Every canonical name maps to itself.
        for (_, c) in ENCODINGS {
            assert_eq!(canonical_encoding(c), Some(*c));
        }
        for bad in ["", "utf-9", "auto", "x", &"u".repeat(64)] {
            assert_eq!(canonical_encoding(bad), None, "{bad}");
        }
    }

    #[test]
    fn datestyles_are_spelled_as_postgres_reports_them() {
        for (given, current, want) in [
            ("ISO", "ISO, MDY", "ISO, MDY"),
            ("iso", "ISO, DMY", "ISO, DMY"),
            ("iso, dmy", "ISO, MDY", "ISO, DMY"),
            ("German", "ISO, MDY", "German, DMY"),
            ("German, MDY", "ISO, MDY", "German, MDY"),
            ("MDY, German", "ISO, YMD", "German, MDY"),
            ("postgresql", "ISO, MDY", "Postgres, MDY"),
            ("SQL, european", "ISO, MDY", "SQL, DMY"),
            ("sql, noneuropean", "ISO, DMY", "SQL, MDY"),
            ("US", "SQL, DMY", "SQL, MDY"),
            ("default", "SQL, DMY", "SQL, DMY"),
            ("", "SQL, DMY", "SQL, DMY"),
            (" \"ISO\" , YMD ", "SQL, MDY", "ISO, YMD"),
        ] {
            assert_eq!(
                canonical_datestyle(given, current).as_deref(),
                Some(want),
                "{given}"
            );
        }
        for bad in ["ISO, SQL", "DMY, MDY", "bogus", "ISO,", ", ISO"] {
            assert_eq!(canonical_datestyle(bad, "ISO, MDY"), None, "{bad}");
        }
    }

    #[test]
    fn set_replaces() {
        let mut p = ParamSet::default();
        p.set("a", "1");
        p.set("a", "2");
        assert_eq!(p.get("a"), Some("2"));
        assert_eq!(p.len(), 1);
        p.remove("a");
        assert!(p.is_empty());
    }
}
