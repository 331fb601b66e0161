//! Fuzz the admin console's command parser (`admin::command::parse`).
//!
//! Any console user, stats-only ones included, reaches the parser before the role
//! check, so it must turn every input into a command or a ParseError (an ERROR
//! 42601), never a panic. Beyond "no panic" this checks properties the grammar
//! guarantees:
//!
//! - parsing is deterministic;
//! - `read_only()` (what a stats user may run) is exactly Show/Empty; Empty is
//!   exactly a blank query or a lone `;`, and a Show always starts with the word
//!   SHOW or SELECT (bare or "quoted"), so nothing else can pass the role check;
//! - a Set has a non-empty key, a Show a non-empty subcommand, errors a message;
//! - a trailing `;` (and whitespace around it) changes nothing;
//! - without quotes, ASCII case and spaces around `=` change nothing;
//! - a parsed command, printed back with quoted arguments, parses to itself
//!   (quoting is the exact inverse of the tokenizer's unquoting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::admin::command::{parse, Command, ShutdownMode};

/// Prefixes the first byte may pick, so the fuzzer spends its time past the
/// command word too (the rest of the input follows the prefix).
const PREFIXES: &[&str] = &[
    "SET x = ",
    "SET x TO ",
    "SET ",
    "SHOW ",
    "SHOW ROUTE ",
    "SELECT ",
    "PAUSE ",
    "KILL_CLIENT ",
    "SHUTDOWN ",
    "DISABLE ",
    "RELOAD ",
];

fuzz_target!(|data: &[u8]| {
    let (prefix, rest) = match data.split_first() {
        Some((&b, rest)) if (b as usize) < PREFIXES.len() => (PREFIXES[b as usize], rest),
        _ => ("", data),
    };
    // The console decodes a Query lossily; valid UTF-8 comes through unchanged.
    let text = String::from_utf8_lossy(rest);
    check(&format!("{prefix}{text}"));
    if prefix.is_empty() {
        if let Ok(s) = std::str::from_utf8(data) {
            check(s);
        }
    }
});

fn check(q: &str) {
    let got = parse(q);
    assert_eq!(got, parse(q), "not deterministic: {q:?}");

    // Trailing `;`: optional, and whitespace around it does not matter.
    if !q.trim_end().ends_with(';') {
        assert_eq!(parse(&format!("{q};")), got, "{q:?} vs {q:?};");
        assert_eq!(parse(&format!("{q} ;\t")), got, "{q:?} vs {q:?} ;");
    }

    if !q.contains(['\'', '"']) {
        // Outside quotes, words are case-insensitive (ASCII) ...
        let lower = parse(&q.to_ascii_lowercase());
        let upper = parse(&q.to_ascii_uppercase());
        assert_eq!(lower.is_ok(), got.is_ok(), "{q:?}");
        assert_eq!(upper.is_ok(), got.is_ok(), "{q:?}");
        assert_eq!(lower.as_ref().ok(), upper.as_ref().ok(), "{q:?}");
        if let Ok(c) = &got {
            assert_eq!(lower.as_ref().ok(), Some(c), "{q:?}");
        }
        // ... and `=` is its own token however it is spaced.
        let spaced = parse(&q.replace('=', " = "));
        assert_eq!(spaced.as_ref().ok(), got.as_ref().ok(), "{q:?}");
        assert_eq!(spaced.is_ok(), got.is_ok(), "{q:?}");
    }

    let cmd = match got {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.0.is_empty(), "empty error message for {q:?}");
            return;
        }
    };

    // What the role check lets a stats user run.
    assert_eq!(
        cmd.read_only(),
        matches!(cmd, Command::Show(..) | Command::Empty),
        "{q:?} -> {cmd:?}"
    );
    let t = q.trim();
    assert_eq!(
        cmd == Command::Empty,
        t.is_empty() || t == ";",
        "{q:?} -> {cmd:?}"
    );
    if let Command::Show(what, _) = &cmd {
        assert!(!what.is_empty(), "{q:?} -> {cmd:?}");
        let head = t.to_ascii_lowercase();
        assert!(
            ["show", "select", "\"show\"", "\"select\""]
                .iter()
                .any(|w| head.starts_with(w)),
            "a SHOW not spelled SHOW/SELECT: {q:?} -> {cmd:?}"
        );
    }
    if let Command::Set(key, _) = &cmd {
        assert!(!key.is_empty(), "{q:?} -> {cmd:?}");
    }

    // Printing the command back with every argument quoted gives the same command.
    for printed in render(&cmd) {
        assert_eq!(
            parse(&printed).as_ref(),
            Ok(&cmd),
            "{q:?} -> {cmd:?} printed as {printed:?}"
        );
    }
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Ways of writing `cmd` with quoted arguments.
fn render(cmd: &Command) -> Vec<String> {
    let opt = |name: &str, a: &Option<String>| match a {
        None => vec![name.to_string(), format!("{name};")],
        // An identifier cannot be empty; a string literal can.
        Some(a) if a.is_empty() => vec![format!("{name} {}", lit(a))],
        Some(a) => vec![
            format!("{name} {}", lit(a)),
            format!("{name} {};", ident(a)),
        ],
    };
    let req = |name: &str, a: &str| opt(name, &Some(a.to_string()));
    match cmd {
        Command::Empty => vec![String::new(), ";".into()],
        Command::Show(what, args) => {
            let args: String = args.iter().map(|a| format!(" {}", lit(a))).collect();
            vec![
                format!("SHOW {}{args}", ident(what)),
                format!("select {}{args};", ident(what)),
            ]
        }
        Command::Pause(a) => opt("PAUSE", a),
        Command::Resume(a) => opt("RESUME", a),
        Command::Reconnect(a) => opt("RECONNECT", a),
        Command::Kill(a) => opt("KILL", a),
        Command::Disable(a) => req("DISABLE", a),
        Command::Enable(a) => req("ENABLE", a),
        Command::KillClient(a) => req("KILL_CLIENT", a),
        Command::Reload => vec!["RELOAD".into(), "reload;".into()],
        Command::Shutdown(m) => vec![match m {
            ShutdownMode::Immediate => "SHUTDOWN".into(),
            ShutdownMode::WaitForClients => "SHUTDOWN WAIT_FOR_CLIENTS".into(),
            ShutdownMode::WaitForServers => "shutdown 'wait_for_servers';".into(),
        }],
        Command::Set(k, v) => vec![
            format!("SET {} = {}", ident(k), lit(v)),
            format!("set {} to {};", ident(k), lit(v)),
        ],
        Command::PauseTenant(k, None) => vec![
            format!("PAUSE TENANT {}", lit(k)),
            format!("pause tenant {};", lit(k)),
        ],
        Command::PauseTenant(k, Some(n)) => vec![format!("PAUSE TENANT {} {n}", lit(k))],
        Command::ResumeTenant(k) => vec![
            format!("RESUME TENANT {}", lit(k)),
            format!("resume \"tenant\" {};", lit(k)),
        ],
        Command::MoveTenant(k, s, None) if s.is_empty() => {
            vec![format!("MOVE TENANT {} TO {}", lit(k), lit(s))]
        }
        Command::MoveTenant(k, s, None) => vec![
            format!("MOVE TENANT {} TO {}", lit(k), lit(s)),
            format!("move tenant {} to {};", lit(k), ident(s)),
        ],
        Command::MoveTenant(k, s, Some(db)) if s.is_empty() || db.is_empty() => {
            vec![format!("MOVE TENANT {} {} TO {}", lit(db), lit(k), lit(s))]
        }
        Command::MoveTenant(k, s, Some(db)) => vec![
            format!("MOVE TENANT {} {} TO {}", lit(db), lit(k), lit(s)),
            format!("move tenant {} {} to {};", ident(db), lit(k), ident(s)),
        ],
    }
}
