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

/// Canonical spelling of a tracked parameter name, case-insensitively (`datestyle`
/// becomes `DateStyle`), or `None` if it is not tracked.
pub fn canonical(name: &str) -> Option<&'static str> {
    TRACKED_PARAMS
        .iter()
        .copied()
        .find(|p| p.eq_ignore_ascii_case(name))
}

/// A small name → value map. Linear search: it holds about a dozen entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet(Vec<(String, String)>);

impl ParamSet {
    /// Value of `key` (exact name).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Insert or replace, reusing the existing allocation when the value is unchanged.
    pub fn set(&mut self, key: &str, value: &str) {
        if let Some((_, v)) = self.0.iter_mut().find(|(k, _)| k == key) {
            if v != value {
                v.clear();
                v.push_str(value);
            }
        } else {
            self.0.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// Iterate in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("datestyle"), Some("DateStyle"));
        assert_eq!(canonical("TIMEZONE"), Some("TimeZone"));
        assert_eq!(canonical("work_mem"), None);
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
