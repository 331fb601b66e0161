//! The client's session settings: what it set at login or with SET, kept here so
//! they follow the client from server to server and never reach another client.

use super::budget::Budget;
use crate::server::{params, ParamSet};
use crate::sqlstate::{self, PgError};

/// Most custom setting names tracked per client.
const MAX_CUSTOM_SETTINGS: usize = 64;

/// Most bytes of read-back session settings all clients together keep, so
/// that many clients cannot do what one may not
/// ([`crate::server::MAX_SESSION_SETTINGS_BYTES`] each).
const MAX_ALL_SETTINGS_BYTES: usize = 256 << 20;

/// Bytes of read-back settings every client's [`Settings`] keep now.
static HELD_BYTES: Budget = Budget::new(MAX_ALL_SETTINGS_BYTES);

/// The settings a client's servers must have while it uses them.
pub(super) struct Settings {
    /// Reported parameters (TimeZone, DateStyle, ...) the client set, as it
    /// last saw them.
    reported: ParamSet,
    /// The parameters announced at login, before the client's own: what its
    /// servers are given for a reported parameter it did not set (shared by
    /// the pool's clients; see `ServerState::sync_statement`).
    told: Option<std::sync::Arc<ParamSet>>,
    /// Every other non-default setting, role and session authorization included.
    unreported: ParamSet,
    /// `standard_conforming_strings`: how the client's literals are lexed.
    std_strings: bool,
    /// `client_encoding` is one whose characters may contain ASCII bytes
    /// ([`crate::router::ascii_unsafe_encoding`]): only ASCII text can be routed.
    ascii_only: bool,
    /// `client_encoding` is converted by Postgres
    /// ([`crate::router::keys_read_as_sent`] is false): a tenant key past
    /// ASCII is another tenant to it.
    keys_ascii_only: bool,
    /// The client's `search_path` names `pg_catalog` after another schema
    /// ([`crate::router::search_path::shadows_catalog`]): a type found by
    /// name may not be `pg_catalog`'s.
    path_shadows: bool,
    /// Custom (dotted) settings the client set: Postgres lists no placeholder
    /// settings in `pg_settings`, so they are read back by name.
    custom: Vec<String>,
    /// Bytes of `unreported` counted in [`HELD_BYTES`].
    held: usize,
    /// What the client gave at connect, if anything: the values `RESET ALL`
    /// and `DISCARD ALL` go back to.
    at_login: Option<AtLogin>,
    /// The transaction being released ran `RESET ALL` or `DISCARD ALL`
    /// ([`crate::router::Effects::RESETS`]): its read back gives the
    /// settings it finds at the server's default the values given at
    /// connect.
    reset_pending: bool,
}

/// Whether `set`'s `search_path` (any spelling of the name: a startup
/// parameter is taken as given) names `pg_catalog` after another schema.
fn path_shadows(set: &ParamSet) -> bool {
    set.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("search_path") && crate::router::search_path::shadows_catalog(v)
    })
}

/// The settings a client gave at connect. Postgres makes them a session's
/// reset values; a pooled server got them by `SET`, so its own reset values
/// are the pool's, and what reset a setting is given the client's again
/// (probe DD: asyncpg's pool, which runs `RESET ALL` on every release, lost
/// the `search_path` and `statement_timeout` it connected with after the
/// first use, reading another schema's tables).
///
/// Kept in one allocation (every idle client that gave `application_name`
/// has one): each setting is a kind byte (`r` reported, `u` other), its
/// name, a NUL, its value and a NUL. Names and values hold no NUL (the
/// startup packet's own separator).
struct AtLogin(Box<[u8]>);

impl AtLogin {
    fn new(reported: &ParamSet, unreported: &ParamSet) -> AtLogin {
        let mut b = Vec::new();
        for (kind, set) in [(b'r', reported), (b'u', unreported)] {
            for (k, v) in set.iter() {
                b.push(kind);
                for part in [k.as_bytes(), v.as_bytes()] {
                    b.extend_from_slice(part);
                    b.push(0);
                }
            }
        }
        AtLogin(b.into_boxed_slice())
    }

    /// The settings of one kind (`r` or `u`), as `(name, value)`.
    fn of(&self, kind: u8) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split(|&c| c == 0);
        std::iter::from_fn(move || {
            let name = parts.next()?;
            let value = parts.next()?;
            Some((name, value))
        })
        .filter_map(move |(name, value)| {
            let (&k, name) = name.split_first()?;
            (k == kind).then_some(())?;
            Some((
                std::str::from_utf8(name).ok()?,
                std::str::from_utf8(value).ok()?,
            ))
        })
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        HELD_BYTES.release(self.held);
    }
}

impl Settings {
    /// The settings a client asked for at login.
    pub(super) fn new(reported: ParamSet, unreported: ParamSet) -> Settings {
        let custom = unreported
            .iter()
            .filter(|(k, _)| k.contains('.'))
            .map(|(k, _)| k.to_string())
            .take(MAX_CUSTOM_SETTINGS)
            .collect();
        // Login parameters are small (the startup packet's limit): counted,
        // never refused.
        let held = unreported.bytes();
        HELD_BYTES.add(held);
        Settings {
            path_shadows: path_shadows(&unreported),
            reported,
            told: None,
            unreported,
            std_strings: true,
            ascii_only: false,
            keys_ascii_only: false,
            custom,
            held,
            at_login: None,
            reset_pending: false,
        }
    }

    /// Give back unused capacity: the settings of a client that sleeps
    /// ([`super::Parked::compact`]) stay as long as it does.
    pub(super) fn shrink_to_fit(&mut self) {
        self.reported.shrink_to_fit();
        self.unreported.shrink_to_fit();
        self.custom.shrink_to_fit();
    }

    /// Reported parameters.
    pub(super) fn reported(&self) -> &ParamSet {
        &self.reported
    }

    /// The parameters announced at login, before the client's own
    /// ([`Settings::greeted`]); empty before the login's greeting.
    pub(super) fn told(&self) -> &ParamSet {
        static NOTHING: std::sync::LazyLock<ParamSet> = std::sync::LazyLock::new(ParamSet::default);
        self.told.as_deref().unwrap_or(&NOTHING)
    }

    /// Other settings.
    pub(super) fn unreported(&self) -> &ParamSet {
        &self.unreported
    }

    /// How to lex the client's string literals.
    pub(super) fn std_strings(&self) -> bool {
        self.std_strings
    }

    /// Whether only ASCII text can be lexed as Postgres will (the client's
    /// encoding may hide ASCII bytes inside its characters).
    pub(super) fn ascii_only(&self) -> bool {
        self.ascii_only
    }

    /// Whether only ASCII tenant keys read the same to Postgres (the client's
    /// encoding is converted).
    pub(super) fn keys_ascii_only(&self) -> bool {
        self.keys_ascii_only
    }

    /// Whether the client's `search_path` may find a type named like a
    /// built-in one before `pg_catalog`'s.
    pub(super) fn path_shadows(&self) -> bool {
        self.path_shadows
    }

    /// Custom setting names to read back.
    pub(super) fn custom(&self) -> &[String] {
        &self.custom
    }

    /// The parameters announced at login (they fix the lexing mode too), and
    /// `told`, the defaults among them: the values its servers are given for
    /// what the client did not set.
    pub(super) fn greeted(&mut self, announced: &ParamSet, told: std::sync::Arc<ParamSet>) {
        self.told = Some(told);
        self.std_strings = announced.get("standard_conforming_strings") != Some("off");
        // What the client asked for counts too, in whatever spelling: the
        // server's canonical name arrives only once a server has it.
        let encodings = [
            announced.get("client_encoding"),
            self.reported.get("client_encoding"),
        ];
        (self.ascii_only, self.keys_ascii_only) = (
            encodings
                .iter()
                .flatten()
                .any(|e| crate::router::ascii_unsafe_encoding(e)),
            encodings
                .iter()
                .flatten()
                .any(|e| !crate::router::keys_read_as_sent(e)),
        );
        // What the client set, in the spelling it was announced in, so that its
        // servers are compared against (and set to) what the client was told.
        let keys: Vec<String> = self.reported.iter().map(|(k, _)| k.to_string()).collect();
        for k in keys {
            if let Some(v) = announced.get(&k) {
                self.reported.set(&k, v);
            }
        }
        if !self.reported.is_empty() || !self.unreported.is_empty() {
            self.at_login = Some(AtLogin::new(&self.reported, &self.unreported));
        }
    }

    /// A ParameterStatus from the client's server: the client's view follows it.
    pub(super) fn reported_by_server(&mut self, name: &str, value: &str) {
        if let Some(c) = params::canonical(name) {
            self.reported.set(c, value);
        }
        if name == "standard_conforming_strings" {
            self.std_strings = value != "off";
        }
        if name == "client_encoding" {
            self.ascii_only = crate::router::ascii_unsafe_encoding(value);
            self.keys_ascii_only = !crate::router::keys_read_as_sent(value);
        }
    }

    /// Settings read back from a server after the client's transaction, or
    /// 53400 when keeping them would pass [`MAX_ALL_SETTINGS_BYTES`] for all
    /// clients (the old settings are kept then; the caller ends the session).
    ///
    /// After a transaction that ran `RESET ALL` or `DISCARD ALL`
    /// ([`Settings::expect_reset`]), a setting the client gave at connect
    /// that the read back finds at the server's value (not set in the
    /// session: `reported_set` lists the reported parameters that are) is
    /// the value given at connect again, as Postgres would have it. After
    /// any other transaction it stays as read: `SET statement_timeout = 0`
    /// is the server's default too (probe FF). The reported settings that
    /// change are returned: the client was told the server's value, and
    /// must be told its own.
    pub(super) fn read_back(
        &mut self,
        mut set: ParamSet,
        reported_set: &[&str],
    ) -> Result<Vec<(String, String)>, PgError> {
        let mut told = Vec::new();
        let reset = std::mem::take(&mut self.reset_pending);
        if let Some(login) = self.at_login.as_ref().filter(|_| reset) {
            for (k, v) in login.of(b'u') {
                if set.get(k).is_none_or(|now| at_reset(k, now)) {
                    set.set(k, v);
                    if REPORTED_UNTRACKED.contains(&k) {
                        // Postgres reported the server's value at the reset.
                        told.push((k.to_string(), reported_bool(v)));
                    }
                }
            }
            for (k, v) in login.of(b'r') {
                let set_here = reported_set.iter().any(|r| params::canonical(k) == Some(r));
                if !set_here && self.reported.get(k) != Some(v) {
                    told.push((k.to_string(), v.to_string()));
                }
            }
        }
        for (k, v) in &told {
            self.reported_by_server(k, v);
        }
        let n = set.bytes();
        if n > self.held {
            let more = n - self.held;
            if !HELD_BYTES.hold(more) {
                return Err(PgError::fatal(
                    sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                    format!(
                        "the session settings of all clients would take more than {} MiB",
                        MAX_ALL_SETTINGS_BYTES >> 20
                    ),
                ));
            }
        } else {
            HELD_BYTES.release(self.held - n);
        }
        self.held = n;
        self.path_shadows = path_shadows(&set);
        self.unreported = set;
        Ok(told)
    }

    /// Put into `announced` (the ParameterStatus of the login) the values the
    /// client gave at connect of the settings Postgres reports that the
    /// pooler does not track: it announced the pool's server's
    /// `default_transaction_read_only`, not the client's own (probe FF).
    pub(super) fn announce_untracked(&self, announced: &mut ParamSet) {
        for &name in REPORTED_UNTRACKED {
            if let Some(v) = self.unreported.get(name) {
                announced.set(name, &reported_bool(v));
            }
        }
    }

    /// Whether the transaction being released ran `RESET ALL` or `DISCARD
    /// ALL` (see [`Settings::read_back`]); cleared by the read back.
    pub(super) fn expect_reset(&mut self, reset: bool) {
        self.reset_pending = reset;
    }

    /// Remember custom setting names the client set.
    /// False when some name could not be kept (past the cap): what it set
    /// cannot be read back, and must be cleared with `RESET ALL` instead.
    #[must_use]
    pub(super) fn note_custom(&mut self, names: &[String]) -> bool {
        let mut all = true;
        for n in names {
            if self.custom.contains(n) {
                continue;
            }
            if self.custom.len() < MAX_CUSTOM_SETTINGS {
                self.custom.push(n.clone());
            } else {
                all = false;
            }
        }
        all
    }
}

/// Settings a client may give at connect that Postgres reports by
/// ParameterStatus, besides the tracked ones (`crate::server::TRACKED_PARAMS`).
const REPORTED_UNTRACKED: &[&str] = &["default_transaction_read_only"];

/// A boolean setting's value as Postgres reports it (`on`/`off`) from any
/// spelling it takes (`true`, `yes`, `1`, a unique prefix); anything else
/// as given.
fn reported_bool(v: &str) -> String {
    let l = v.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !l.is_empty() && word.starts_with(l.as_str());
    if l == "on" || l == "1" || prefix_of("true") || prefix_of("yes") {
        "on".to_string()
    } else if l == "0" || l.len() >= 2 && prefix_of("off") || prefix_of("false") || prefix_of("no")
    {
        "off".to_string()
    } else {
        v.to_string()
    }
}

/// Whether `value`, read back for `name`, is the setting's reset value on a
/// pooled server: a custom setting's placeholder is read back empty once
/// reset (Postgres cannot drop it).
fn at_reset(name: &str, value: &str) -> bool {
    name.contains('.') && value.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> ParamSet {
        let mut s = ParamSet::default();
        for (k, v) in pairs {
            s.set(k, v);
        }
        s
    }

    /// The client's `search_path` says whether a type found by name may be
    /// another than `pg_catalog`'s: given at connect, and as read back.
    #[test]
    fn a_path_ahead_of_the_catalog_is_known_from_connect_and_read_back() {
        let mut s = Settings::new(set(&[]), set(&[("SEARCH_PATH", "evil, pg_catalog")]));
        assert!(s.path_shadows());
        s.read_back(set(&[("search_path", "public")]), &[]).unwrap();
        assert!(!s.path_shadows());
        s.read_back(set(&[("search_path", "\"$user\", pg_catalog")]), &[])
            .unwrap();
        assert!(s.path_shadows());
        s.read_back(set(&[]), &[]).unwrap();
        assert!(!s.path_shadows());
    }

    /// What a read back finds at its reset value is what the client gave at
    /// connect; what the client set since is kept; the reported parameters
    /// that change are returned, to be told to the client.
    #[test]
    fn a_reset_setting_goes_back_to_the_value_given_at_connect() {
        let mut s = Settings::new(
            set(&[("application_name", "mine"), ("DateStyle", "German, DMY")]),
            set(&[
                ("search_path", "s_mine"),
                ("role", "other"),
                ("app.tenant", "acme"),
                ("work_mem", "8MB"),
            ]),
        );
        s.greeted(&set(&[("DateStyle", "German, DMY")]), Default::default());
        // RESET ALL: the server reported its own values, and only the
        // client's later SET of work_mem is in the session.
        s.reported_by_server("application_name", "");
        s.reported_by_server("DateStyle", "ISO, MDY");
        s.expect_reset(true);
        let told = s
            .read_back(set(&[("work_mem", "1MB"), ("app.tenant", "")]), &[])
            .unwrap();
        assert_eq!(
            told,
            [
                ("application_name".to_string(), "mine".to_string()),
                ("DateStyle".to_string(), "German, DMY".to_string())
            ]
        );
        assert_eq!(s.reported().get("DateStyle"), Some("German, DMY"));
        let u = s.unreported();
        assert_eq!(u.get("search_path"), Some("s_mine"));
        assert_eq!(u.get("role"), Some("other"));
        assert_eq!(u.get("app.tenant"), Some("acme"));
        assert_eq!(u.get("work_mem"), Some("1MB"), "set since: kept");
        // Set in the session since: kept, and nothing to tell.
        s.reported_by_server("DateStyle", "SQL, DMY");
        s.expect_reset(true);
        let told = s
            .read_back(set(&[("search_path", "s_later")]), &["DateStyle"])
            .unwrap();
        assert!(told.is_empty(), "{told:?}");
        assert_eq!(s.unreported().get("search_path"), Some("s_later"));
        assert_eq!(s.reported().get("DateStyle"), Some("SQL, DMY"));
    }

    /// Without a statement that sends settings back to their reset values,
    /// a setting read back at the server's default was set so (`SET
    /// statement_timeout = 0`, `SET ROLE NONE`, `SET app.x = ''`): it stays.
    #[test]
    fn a_setting_set_to_the_servers_default_stays() {
        let mut s = Settings::new(
            ParamSet::default(),
            set(&[
                ("statement_timeout", "5s"),
                ("role", "other"),
                ("app.x", "v"),
            ]),
        );
        s.greeted(&ParamSet::default(), Default::default());
        let told = s.read_back(set(&[("app.x", "")]), &[]).unwrap();
        assert!(told.is_empty());
        let u = s.unreported();
        assert_eq!(u.get("statement_timeout"), None);
        assert_eq!(u.get("role"), None);
        assert_eq!(u.get("app.x"), Some(""));
    }

    #[test]
    fn booleans_are_reported_as_postgres_spells_them() {
        for v in ["on", "ON", "true", "t", "yes", "y", "1", " tru "] {
            assert_eq!(reported_bool(v), "on", "{v}");
        }
        for v in ["off", "OFF", "false", "f", "no", "n", "0", "of"] {
            assert_eq!(reported_bool(v), "off", "{v}");
        }
        for v in ["o", "maybe", ""] {
            assert_eq!(reported_bool(v), v, "{v}");
        }
    }

    /// A client that gave nothing at connect keeps no record of it.
    #[test]
    fn nothing_given_at_connect_keeps_nothing() {
        let mut s = Settings::new(ParamSet::default(), ParamSet::default());
        s.greeted(&set(&[("DateStyle", "ISO, MDY")]), Default::default());
        assert!(s.at_login.is_none());
        let told = s.read_back(set(&[("work_mem", "1MB")]), &[]).unwrap();
        assert!(told.is_empty());
        assert_eq!(s.unreported().get("work_mem"), Some("1MB"));
    }
}
