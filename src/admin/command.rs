//! Parsing of console commands.
//!
//! The grammar follows PgBouncer's: `WORD [WORD] [;]` or `SET key (=|TO) value [;]`,
//! case-insensitive, `SELECT x` an alias of `SHOW x`. shardbouncer adds a few router
//! commands with a quoted argument (`SHOW ROUTE [db] 'key'`, `SHOW TENANTS [n]`).

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW what [args...]` (lowercased `what`; args as given, unquoted).
    Show(String, Vec<String>),
    /// `PAUSE [db]`
    Pause(Option<String>),
    /// `RESUME [db]`
    Resume(Option<String>),
    /// `RECONNECT [db]`
    Reconnect(Option<String>),
    /// `DISABLE db`
    Disable(String),
    /// `ENABLE db`
    Enable(String),
    /// `KILL [db]`
    Kill(Option<String>),
    /// `KILL_CLIENT id`
    KillClient(String),
    /// `RELOAD`
    Reload,
    /// `SHUTDOWN [WAIT_FOR_CLIENTS | WAIT_FOR_SERVERS]`
    Shutdown(ShutdownMode),
    /// `SET key = value`
    Set(String, String),
    /// `PAUSE TENANT key [timeout_seconds]`: hold the tenant's new transactions
    /// and wait for its running ones to end.
    PauseTenant(String, Option<u64>),
    /// `RESUME TENANT key`: release the tenant's held transactions.
    ResumeTenant(String),
    /// `MOVE TENANT [db] key TO shard`: place a paused tenant on another
    /// shard (the shard map is rewritten and reloaded); with `db`, only in
    /// the map of that database (and the databases that share its file).
    MoveTenant(String, String, Option<String>),
    /// An empty query string.
    Empty,
}

/// How SHUTDOWN ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Stop now; running transactions get `shutdown_timeout` to finish.
    Immediate,
    /// Stop accepting; exit when every client has disconnected.
    WaitForClients,
    /// Stop accepting; exit once running transactions are done (same as SIGINT).
    WaitForServers,
}

impl Command {
    /// Whether a stats user may run it (only the read-only SHOW commands).
    pub fn read_only(&self) -> bool {
        matches!(self, Command::Show(..) | Command::Empty)
    }
}

/// A parse failure: the message for an ERROR 42601 (never a panic: the parser
/// runs before the role check, so any console user can reach it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word (lowercased) or a "quoted identifier" (as written, never empty).
    Word(String),
    /// A 'string literal' (unescaped, may be empty).
    Str(String),
    /// `=`
    Eq,
}

fn tokenize(q: &str) -> Result<Vec<Tok>, ParseError> {
    let mut out = Vec::new();
    let mut it = q.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '=' {
            it.next();
            out.push(Tok::Eq);
        } else if c == '\'' || c == '"' {
            it.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, d)) = it.next() {
                if d == c {
                    // A doubled quote stands for itself.
                    if it.peek().map(|&(_, e)| e) == Some(c) {
                        it.next();
                        s.push(c);
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    s.push(d);
                }
            }
            if !closed {
                return Err(ParseError(format!(
                    "unterminated quoted string at character {}",
                    char_pos(q, i)
                )));
            }
            if c == '"' && s.is_empty() {
                // As in Postgres: `""` names nothing.
                return Err(ParseError(format!(
                    "zero-length delimited identifier at character {}",
                    char_pos(q, i)
                )));
            }
            out.push(if c == '\'' { Tok::Str(s) } else { Tok::Word(s) });
        } else {
            let mut s = String::new();
            while let Some(&(_, d)) = it.peek() {
                if d.is_whitespace() || d == '=' || d == '\'' || d == '"' {
                    break;
                }
                s.push(d.to_ascii_lowercase());
                it.next();
            }
            out.push(Tok::Word(s));
        }
    }
    Ok(out)
}

/// 1-based character (not byte) position of byte offset `at` in `q`, for messages.
fn char_pos(q: &str, at: usize) -> usize {
    q.char_indices().take_while(|&(i, _)| i < at).count() + 1
}

fn text(t: &Tok) -> Option<&str> {
    match t {
        Tok::Word(s) | Tok::Str(s) => Some(s),
        Tok::Eq => None,
    }
}

/// Parse one console query.
///
/// Never panics: every malformed input is a [`ParseError`] (fuzzed by
/// `fuzz/fuzz_targets/console.rs`).
pub fn parse(query: &str) -> Result<Command, ParseError> {
    let q = query.trim();
    let q = q.strip_suffix(';').unwrap_or(q).trim_end();
    if q.is_empty() {
        return Ok(Command::Empty);
    }
    let toks = tokenize(q)?;
    let (cmd, args) = match toks.split_first() {
        Some((Tok::Word(w), rest)) => (w.as_str(), rest),
        _ => return Err(syntax(q)),
    };
    let opt_arg = || -> Result<Option<String>, ParseError> {
        match args {
            [] => Ok(None),
            [t] => text(t)
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| syntax(q)),
            _ => Err(syntax(q)),
        }
    };
    let req_arg = |what: &str| -> Result<String, ParseError> {
        opt_arg()?.ok_or_else(|| ParseError(format!("{} requires {what}", cmd.to_uppercase())))
    };
    let tenant_cmd = matches!(args, [Tok::Word(w), _, ..] if w == "tenant");
    Ok(match cmd {
        "pause" | "resume" | "move" if tenant_cmd => tenant_command(q, cmd, &args[1..])?,
        "show" | "select" => {
            let Some((Tok::Word(what), rest)) = args.split_first() else {
                return Err(ParseError(format!(
                    "{} needs a subcommand, e.g. SHOW HELP",
                    cmd.to_uppercase()
                )));
            };
            let rest = rest
                .iter()
                .map(|t| text(t).map(str::to_string).ok_or_else(|| syntax(q)))
                .collect::<Result<Vec<_>, _>>()?;
            Command::Show(what.clone(), rest)
        }
        "pause" => Command::Pause(opt_arg()?),
        "resume" => Command::Resume(opt_arg()?),
        "reconnect" => Command::Reconnect(opt_arg()?),
        "kill" => Command::Kill(opt_arg()?),
        "disable" => Command::Disable(req_arg("a database name")?),
        "enable" => Command::Enable(req_arg("a database name")?),
        "kill_client" => Command::KillClient(req_arg("a client id")?),
        "reload" => {
            if !args.is_empty() {
                return Err(syntax(q));
            }
            Command::Reload
        }
        "shutdown" => match opt_arg()?.as_deref() {
            None => Command::Shutdown(ShutdownMode::Immediate),
            Some(m) if m.eq_ignore_ascii_case("wait_for_clients") => {
                Command::Shutdown(ShutdownMode::WaitForClients)
            }
            Some(m) if m.eq_ignore_ascii_case("wait_for_servers") => {
                Command::Shutdown(ShutdownMode::WaitForServers)
            }
            Some(_) => return Err(syntax(q)),
        },
        "set" => {
            // `SET key = value` or `SET key TO value`; the value is a word or a
            // 'string' (never `=`: `SET x = =` is a syntax error, not a panic).
            let (key, value) = match args {
                [Tok::Word(k), Tok::Eq, v] => (k, v),
                [Tok::Word(k), Tok::Word(to), v] if to == "to" => (k, v),
                _ => return Err(set_usage()),
            };
            let Some(value) = text(value) else {
                return Err(set_usage());
            };
            Command::Set(key.clone(), value.to_string())
        }
        other => {
            return Err(ParseError(format!(
                "unknown command \"{}\" (see SHOW HELP)",
                other.to_uppercase()
            )))
        }
    })
}

/// `PAUSE TENANT key [seconds]`, `RESUME TENANT key`, `MOVE TENANT [db] key TO shard`
/// (`args` after TENANT). A key is best quoted ('Acme'): bare words are folded
/// to lower case, as identifiers are.
fn tenant_command(q: &str, cmd: &str, args: &[Tok]) -> Result<Command, ParseError> {
    let usage = || {
        ParseError(format!(
            "syntax error in admin command: {q} (expected {})",
            match cmd {
                "pause" => "PAUSE TENANT 'key' [timeout_seconds]",
                "resume" => "RESUME TENANT 'key'",
                _ => "MOVE TENANT [database] 'key' TO shard",
            }
        ))
    };
    let key = |t: &Tok| text(t).map(str::to_string).ok_or_else(usage);
    Ok(match (cmd, args) {
        ("pause", [k]) => Command::PauseTenant(key(k)?, None),
        ("pause", [k, Tok::Word(n)]) => {
            let secs = n.parse::<u64>().ok().filter(|&s| s > 0).ok_or_else(usage)?;
            Command::PauseTenant(key(k)?, Some(secs))
        }
        ("resume", [k]) => Command::ResumeTenant(key(k)?),
        ("move", [k, Tok::Word(to), shard]) if to == "to" => {
            Command::MoveTenant(key(k)?, key(shard)?, None)
        }
        ("move", [db, k, Tok::Word(to), shard]) if to == "to" => {
            Command::MoveTenant(key(k)?, key(shard)?, Some(key(db)?))
        }
        _ => return Err(usage()),
    })
}

fn syntax(q: &str) -> ParseError {
    ParseError(format!("syntax error in admin command: {q}"))
}

fn set_usage() -> ParseError {
    ParseError("syntax error: expected SET key = value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_commands() {
        assert_eq!(
            parse("PAUSE TENANT '42'").unwrap(),
            Command::PauseTenant("42".into(), None)
        );
        assert_eq!(
            parse("pause tenant 'Acme' 10;").unwrap(),
            Command::PauseTenant("Acme".into(), Some(10))
        );
        assert_eq!(
            parse("RESUME TENANT 42").unwrap(),
            Command::ResumeTenant("42".into())
        );
        assert_eq!(
            parse("MOVE TENANT '42' TO s2").unwrap(),
            Command::MoveTenant("42".into(), "s2".into(), None)
        );
        assert_eq!(
            parse("MOVE TENANT app '42' TO s2").unwrap(),
            Command::MoveTenant("42".into(), "s2".into(), Some("app".into()))
        );
        assert_eq!(
            parse("MOVE TENANT '42' TO \"S2\"").unwrap(),
            Command::MoveTenant("42".into(), "S2".into(), None)
        );
        // One argument is still a database named "tenant".
        assert_eq!(
            parse("PAUSE tenant").unwrap(),
            Command::Pause(Some("tenant".into()))
        );
        for bad in [
            "PAUSE TENANT '42' x",
            "PAUSE TENANT '42' 0",
            "PAUSE TENANT '42' 1 2",
            "RESUME TENANT '42' 5",
            "MOVE TENANT '42' s2",
            "MOVE TENANT '42' TO",
            "MOVE TENANT '42' INTO s2",
            "MOVE TENANT = TO s2",
            "MOVE '42'",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(!parse("MOVE TENANT '42' TO s2").unwrap().read_only());
    }

    #[test]
    fn show_and_select_are_case_insensitive_with_optional_semicolon() {
        let want = Command::Show("pools".into(), vec![]);
        for q in [
            "SHOW POOLS",
            "show pools;",
            "  Select Pools ; ",
            "SHOW\tpools",
        ] {
            assert_eq!(parse(q).unwrap(), want, "{q}");
        }
    }

    #[test]
    fn router_commands_take_quoted_arguments() {
        assert_eq!(
            parse("SHOW ROUTE 'acme''s'").unwrap(),
            Command::Show("route".into(), vec!["acme's".into()])
        );
        assert_eq!(
            parse("show route app '42';").unwrap(),
            Command::Show("route".into(), vec!["app".into(), "42".into()])
        );
        assert_eq!(
            parse("SHOW TENANTS 5").unwrap(),
            Command::Show("tenants".into(), vec!["5".into()])
        );
    }

    #[test]
    fn control_commands() {
        assert_eq!(parse("PAUSE").unwrap(), Command::Pause(None));
        assert_eq!(
            parse("pause app;").unwrap(),
            Command::Pause(Some("app".into()))
        );
        assert_eq!(
            parse("PAUSE \"MyDb\"").unwrap(),
            Command::Pause(Some("MyDb".into()))
        );
        assert_eq!(
            parse("KILL_CLIENT 17").unwrap(),
            Command::KillClient("17".into())
        );
        assert_eq!(
            parse("shutdown wait_for_clients").unwrap(),
            Command::Shutdown(ShutdownMode::WaitForClients)
        );
        assert_eq!(parse("RELOAD;").unwrap(), Command::Reload);
        assert!(parse("RELOAD now").is_err());
        assert!(parse("DISABLE").unwrap_err().0.contains("database"));
        assert!(parse("PAUSE a b").is_err());
    }

    #[test]
    fn set_forms() {
        let want = Command::Set("default_pool_size".into(), "7".into());
        for q in [
            "SET default_pool_size = 7",
            "set default_pool_size=7;",
            "SET default_pool_size TO '7'",
        ] {
            assert_eq!(parse(q).unwrap(), want, "{q}");
        }
        assert!(parse("SET default_pool_size").is_err());
    }

    #[test]
    fn unknown_and_empty() {
        assert!(parse("FROBNICATE").unwrap_err().0.contains("FROBNICATE"));
        assert_eq!(parse("  ;").unwrap(), Command::Empty);
        assert!(parse("SHOW").is_err());
        assert!(parse("SHOW 'x").is_err());
        assert!(!parse("PAUSE").unwrap().read_only());
        assert!(parse("SHOW STATS").unwrap().read_only());
    }

    /// Every malformed query is a ParseError (the console's 42601), never a panic:
    /// the parser runs before the role check, so a stats user can send any of these.
    #[test]
    fn malformed_queries_are_errors_not_panics() {
        for q in [
            // The reported crash: `=` where the value goes.
            "SET x = =",
            "SET x = =;",
            "set x==",
            "SET x TO =",
            "SET = 1",
            "SET = =",
            "SET x =",
            "SET x TO",
            "SET x = 1 2",
            "SET 'x' = 1",
            "SET",
            "SET =",
            "SET x",
            // `=` in other positions.
            "=",
            "= ;",
            "==",
            "=SHOW POOLS",
            "SHOW =",
            "SHOW = pools",
            "SHOW ROUTE =",
            "SHOW ROUTE 'a' =",
            "SELECT =",
            "PAUSE =",
            "DISABLE =",
            "KILL_CLIENT =",
            "SHUTDOWN =",
            "RELOAD =",
            // Quotes.
            "'",
            "\"",
            "''",
            "\"\"",
            "'x'",
            "SHOW 'pools'",
            "SHOW \"pools",
            "SHOW ROUTE 'unterminated",
            "SHOW ROUTE 'a''",
            "SET x = 'unterminated",
            "SET \"\" = 1",
            "PAUSE \"\"",
            "SHOW \"\"",
            // Multi-byte UTF-8 everywhere, including right after a quote and at
            // the start of the error offset.
            "é",
            "'é",
            "\"日本",
            "SHOW ROUTE '日本語",
            "SET ключ = =",
            "SET = 'значение'",
            "😀 😀",
            "SHOW",
            "SHOW;",
            "\u{85}=",
            "\u{a0}'",
        ] {
            match parse(q) {
                Err(ParseError(msg)) => assert!(!msg.is_empty(), "{q:?}"),
                Ok(c) => panic!("{q:?} parsed as {c:?}"),
            }
        }
    }

    #[test]
    fn set_value_must_be_a_word_or_string() {
        assert_eq!(
            parse("SET x = =").unwrap_err().0,
            "syntax error: expected SET key = value"
        );
        assert_eq!(
            parse("SET x TO =").unwrap_err().0,
            "syntax error: expected SET key = value"
        );
        // Quoted keys keep their case; an empty string literal is a valid value
        // (e.g. to clear server_reset_query); a key is never empty.
        assert_eq!(
            parse("SET \"Key\" = ''").unwrap(),
            Command::Set("Key".into(), String::new())
        );
        assert_eq!(
            parse("SET server_reset_query TO 'DISCARD ALL;'").unwrap(),
            Command::Set("server_reset_query".into(), "DISCARD ALL;".into())
        );
        assert!(parse("SET \"\" = 1").unwrap_err().0.contains("zero-length"));
    }

    #[test]
    fn multibyte_utf8_is_handled_by_character() {
        assert_eq!(
            parse("SHOW ROUTE '日本語'").unwrap(),
            Command::Show("route".into(), vec!["日本語".into()])
        );
        assert_eq!(
            parse("SHOW ROUTE \"Ünïcödé\" 'k😀'").unwrap(),
            Command::Show("route".into(), vec!["Ünïcödé".into(), "k😀".into()])
        );
        // Bare words are lowercased in ASCII only.
        assert_eq!(
            parse("PAUSE ÄbC").unwrap(),
            Command::Pause(Some("Äbc".into()))
        );
        // Positions in messages count characters, not bytes.
        assert_eq!(
            parse("SHOW ROUTE 'é' 'x").unwrap_err().0,
            "unterminated quoted string at character 16"
        );
        assert!(parse("ÉTAT").unwrap_err().0.contains("ÉTAT"));
    }

    #[test]
    fn trailing_semicolon_is_optional() {
        for q in [
            "SHOW POOLS",
            "SET x = =",
            "SHOW ROUTE 'a",
            "=",
            "PAUSE app",
            "  ",
        ] {
            assert_eq!(parse(&format!("{q};")), parse(q), "{q:?}");
        }
    }
}
