//! Durations written as strings: `"250ms"`, `"5s"`, `"10m"`, `"1h"`, `"0"`.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A duration parsed from the config's string form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// Zero: "off" for timeouts that allow it.
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// Whole seconds.
    pub const fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }

    /// The std value.
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// True for zero, which means "off" for most timeouts.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `None` when zero (off), otherwise the std duration.
    pub fn non_zero(self) -> Option<std::time::Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Parse `"<number><unit>"` with unit one of us, ms, s, m, h, d; a bare `0` is allowed.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected e.g. \"250ms\", \"5s\", \"10m\"")
        })?;
        let mult = match unit.trim() {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" if n == 0.0 => 0.0,
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use us, ms, s, m, h, d)"
                ))
            }
        };
        let secs = n * mult;
        if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
            return Err(format!("invalid duration {s:?}: out of range"));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(secs)))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            write!(f, "0s")
        } else if ms % 3_600_000 == 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Duration;

    #[test]
    fn parses_units() {
        assert_eq!(Duration::parse("250ms").unwrap().as_std().as_millis(), 250);
        assert_eq!(Duration::parse("5s").unwrap().as_std().as_secs(), 5);
        assert_eq!(Duration::parse("10m").unwrap().as_std().as_secs(), 600);
        assert_eq!(Duration::parse("1h").unwrap().as_std().as_secs(), 3600);
        assert_eq!(Duration::parse("1.5s").unwrap().as_std().as_millis(), 1500);
        assert!(Duration::parse("0").unwrap().is_zero());
        assert!(Duration::parse("0s").unwrap().is_zero());
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "5", "s", "5 parsecs", "-1s", "1e400s", "abc"] {
            assert!(Duration::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(Duration::parse("600s").unwrap().to_string(), "10m");
        assert_eq!(Duration::parse("250ms").unwrap().to_string(), "250ms");
    }
}
