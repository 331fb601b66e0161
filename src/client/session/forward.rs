//! Client → server: forwarding Queries and extended-protocol messages, named
//! prepared statements (client names → content-addressed server statements), and
//! errors raised through the server so transaction state stays exact.
//!
//! Two rules keep one client's statements from ever running another's SQL:
//! * Server statement names (`sb_...`) are shardbouncer's: SQL that names them is
//!   refused before it reaches a server ([`crate::router::statement`]).
//! * Once work on the attached server may have touched its prepared statements by
//!   SQL (`PREPARE`, `DEALLOCATE`, `DISCARD ALL`, `DO`, ...), the cache of what the
//!   server holds is no longer trusted: until the server is reset at release, the
//!   client's statements run through the unnamed statement, re-parsed each time.

use super::*;
use crate::router::statement::Violation;

impl Session {
    /// Extended-protocol message for a database without routing.
    pub(super) async fn plain_ext(&mut self, tag: u8, frame: Bytes) {
        if self.server.is_none() {
            // Named Parses followed by Sync are answered without a server (see
            // `parse_locally`); hold them until we see what follows.
            if tag == b'P' && is_named_parse(&frame) && self.batch.iter().all(|(t, _)| *t == b'P') {
                self.batch.push((tag, frame));
                return;
            }
            if tag == b'S' && !self.batch.is_empty() {
                let held = std::mem::take(&mut self.batch);
                return self.parse_locally(held);
            }
            if !self.batch.is_empty() {
                let held = std::mem::take(&mut self.batch);
                if !self.attach_or_fail(0, held[0].0).await {
                    return;
                }
                for (t, f) in held {
                    self.forward_ext(t, f, None);
                }
                return self.forward_ext(tag, frame, None);
            }
            match tag {
                // Nothing is in flight: answer without taking a server.
                b'S' => return self.emit_rfq(),
                b'H' => return,
                b'C' if is_named_statement_close(&frame) => {
                    self.close_statement(&frame);
                    return;
                }
                _ => {}
            }
            if !self.attach_or_fail(0, tag).await {
                return;
            }
        }
        self.forward_ext(tag, frame, None);
    }

    /// What a statement's server-side identity depends on besides its text: the
    /// client's search_path, and (once this transaction changed settings, which
    /// are read back only at its end) the client itself.
    fn statement_context(&self) -> String {
        let mut ctx = self
            .login
            .unreported
            .get("search_path")
            .unwrap_or("")
            .to_string();
        if self
            .server
            .as_ref()
            .is_some_and(|a| a.effects.any(Effects::SETTINGS.union(Effects::DYNAMIC)))
        {
            ctx.push_str(&format!("\0client {}", self.handle.id));
        }
        ctx
    }

    /// Record a client's named Parse under its name (Postgres's rules: a name in use
    /// is 42P05), with the facts of its text.
    pub(super) fn register_statement(
        &mut self,
        p: &Parse<'_>,
        facts: Facts,
    ) -> Result<Arc<StmtDef>, (&'static str, String)> {
        if facts.violation == Some(Violation::ReservedName) {
            return Err((
                sqlstate::RESERVED_NAME,
                format!(
                    "prepared statement names starting with \"{}\" are reserved by shardbouncer",
                    crate::router::statement::RESERVED_PREFIX
                ),
            ));
        }
        if self.stmts.contains_key(p.name) {
            let msg = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(p.name)
            );
            return Err((sqlstate::DUPLICATE_PSTATEMENT, msg));
        }
        if self.stmts.len() >= MAX_CLIENT_STATEMENTS {
            return Err((
                sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                "too many prepared statements on this connection".to_string(),
            ));
        }
        let def = Arc::new(StmtDef::new(p, facts, &self.statement_context()));
        self.stmts
            .insert(Bytes::copy_from_slice(p.name), def.clone());
        Ok(def)
    }

    /// The facts of a Parse's text: from the routed batch, or analyzed now.
    fn parse_facts(&self, query: &[u8], routed: Option<Facts>) -> Facts {
        routed.unwrap_or_else(|| {
            let mut f = Facts::default();
            let mut alt = Facts::default();
            crate::router::analyze_checked(
                query,
                self.routing_key(),
                self.std_strings,
                &mut f,
                &mut alt,
            );
            f
        })
    }

    /// Answer named Parses + Sync without a server: register the statements and
    /// reply ParseComplete + ReadyForQuery. The statement is prepared (and so
    /// validated) lazily on the server that first executes or describes it; a syntax
    /// error then surfaces at that Bind/Describe. Without this, a client that blocks
    /// on a Parse while its other connections hold every server in a transaction
    /// (pgbench -M prepared does exactly that) deadlocks on any transaction pooler.
    pub(super) fn parse_locally(&mut self, msgs: Vec<(u8, Bytes)>) {
        let mut n = 0;
        for (_, frame) in &msgs {
            let Some(p) = Parse::parse(&frame[5..]) else {
                return self.fail_unattached(
                    b'S',
                    sqlstate::PROTOCOL_VIOLATION,
                    "malformed Parse message",
                );
            };
            let routed = if self.db.routing.is_some() {
                n += 1;
                self.batch_facts.get_mut(n - 1).map(std::mem::take)
            } else {
                None
            };
            let facts = self.parse_facts(p.query, routed);
            self.client_parses += 1;
            if let Err((code, msg)) = self.register_statement(&p, facts) {
                return self.fail_unattached(b'S', code, &msg);
            }
            self.scratch.extend_from_slice(replies::PARSE_COMPLETE);
            self.emit();
        }
        self.emit_rfq();
    }

    /// Attach a server for `shard`; on failure tell the client and return false.
    pub(super) async fn attach_or_fail(&mut self, shard: usize, tag: u8) -> bool {
        match self.attach(shard).await {
            Ok(()) => true,
            Err((code, msg)) => {
                self.fail_unattached(tag, code, &msg);
                false
            }
        }
    }

    /// Report an error for work that has no server: a Query gets ReadyForQuery at
    /// once; an extended batch is skipped up to its Sync.
    pub(super) fn fail_unattached(&mut self, last_tag: u8, code: &str, msg: &str) {
        self.emit_error(code, msg);
        match last_tag {
            b'Q' | b'F' | b'S' => self.emit_rfq(),
            _ => self.skip_until_sync = true,
        }
    }

    /// Forward a simple Query / FunctionCall to the attached server.
    pub(super) fn forward_simple(&mut self, tag: u8, frame: Bytes) {
        let mut drops = false;
        if tag == b'Q' {
            // `self.facts` is this Query's analysis (route_unit made it).
            let effects = self.facts.effects;
            drops = self.facts.drops_statements;
            if self.facts.resets_all {
                // RESET ALL / DISCARD ALL reset a SET tenant as they reset settings.
                self.tenants.set = None;
                self.tenants.local = None;
            }
            let customs = std::mem::take(&mut self.facts.custom_settings);
            self.note_custom_settings(&customs);
            self.facts.custom_settings = customs;
            if let Some(att) = self.server.as_mut() {
                att.effects.add(effects);
            }
            // A simple Query destroys the unnamed statement (Postgres's rule).
            self.unnamed.parse = None;
            self.unnamed.on_server = false;
        } else if let Some(att) = self.server.as_mut() {
            // A FunctionCall runs server-side code that may do anything.
            att.effects.add(Effects::DYNAMIC);
        }
        if self.expect.ready_owed() == 0 {
            self.query_start = Some(Instant::now());
        }
        let mut e = Entry::forward(tag);
        e.drops_statements = drops;
        self.expect.push(e);
        self.to_server.push(frame);
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` act on the client's own names.
    pub(super) fn deallocate(&mut self, sql: &[u8]) {
        let text = String::from_utf8_lossy(sql);
        let mut words = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .skip(1)
            .peekable();
        if words
            .peek()
            .is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
        {
            words.next();
        }
        let name = words.next().unwrap_or("");
        if name.eq_ignore_ascii_case("all") {
            self.stmts.clear();
            self.simple_reply("DEALLOCATE ALL");
            return;
        }
        let name = if name.len() >= 2 && name.starts_with('"') && name.ends_with('"') {
            name[1..name.len() - 1].replace("\"\"", "\"")
        } else {
            name.to_ascii_lowercase()
        };
        if self.stmts.remove(name.as_bytes()).is_some() {
            self.simple_reply("DEALLOCATE");
        } else {
            let msg = format!("prepared statement \"{name}\" does not exist");
            self.unit_error(
                Unit::Simple(b'Q', Bytes::new()),
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &msg,
            );
        }
    }

    /// Whether the attached server's prepared statements can no longer be trusted
    /// to be the ones shardbouncer prepared (see the module documentation).
    fn statements_untrusted(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|a| a.effects.any(Effects::PREPARED.union(Effects::DYNAMIC)))
    }

    /// Forward one extended-protocol message, translating statement names.
    /// `facts`: for a Parse, its text's analysis when the batch was routed.
    pub(super) fn forward_ext(&mut self, tag: u8, frame: Bytes, facts: Option<Facts>) {
        if self.server_skipping && tag != b'S' {
            // Postgres skips everything up to Sync after an error: nothing is
            // answered, so nothing is sent or owed (a Parse registers no name).
            return;
        }
        let body = &frame[5..];
        match tag {
            b'P' => {
                let Some(p) = Parse::parse(body) else {
                    return self
                        .inject_error_ext(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message");
                };
                let facts = self.parse_facts(p.query, facts);
                self.client_parses += 1;
                if p.name.is_empty() {
                    if facts.violation == Some(Violation::ReservedName) {
                        return self.inject_error_ext(
                            sqlstate::RESERVED_NAME,
                            "prepared statement names starting with \"sb_\" are reserved by shardbouncer",
                        );
                    }
                    self.server_parses += 1;
                    self.unnamed.facts = facts;
                    self.unnamed.declared = frame.slice_ref(p.param_types);
                    self.unnamed.described.clear();
                    self.unnamed.parse = Some(frame.clone());
                    self.unnamed.on_server = true;
                    self.send_ext(tag, frame);
                    return;
                }
                let def = match self.register_statement(&p, facts) {
                    Ok(def) => def,
                    Err((code, msg)) => return self.inject_error_ext(code, &msg),
                };
                if self.statements_untrusted() {
                    // Validate it through the unnamed statement; it is re-parsed
                    // there whenever it runs in this transaction.
                    let msg = def.parse_as(&mut self.scratch, b"");
                    self.unnamed.on_server = false;
                    self.server_parses += 1;
                    self.expect.push(Entry::forward(b'P').with_stmt(def));
                    self.to_server.push(msg);
                    self.ext_open = true;
                    return;
                }
                let conn = &mut self.server.as_mut().expect("attached").co.conn;
                if conn.prepared.touch(&def) {
                    self.expect.push(Entry::synthetic(
                        b'P',
                        Bytes::from_static(replies::PARSE_COMPLETE),
                    ));
                } else {
                    conn.prepared.insert(def.clone());
                    let msg = def.parse_message(&mut self.scratch);
                    self.server_parses += 1;
                    self.expect.push(Entry::forward(b'P').with_stmt(def));
                    self.to_server.push(msg);
                    self.ext_open = true;
                }
            }
            b'B' | b'D' => {
                if tag == b'B' {
                    self.binds += 1;
                }
                let named = match tag {
                    b'B' => Bind::parse(body).map(|b| b.statement),
                    _ => describe_statement_name(body),
                };
                let Some(name) = named else {
                    if tag == b'B' {
                        return self.inject_error_ext(
                            sqlstate::PROTOCOL_VIOLATION,
                            "malformed Bind message",
                        );
                    }
                    // Describe of a portal: the server judges it.
                    return self.send_ext(tag, frame);
                };
                if name.is_empty() {
                    if tag == b'B' {
                        let effects = self.unnamed.facts.effects;
                        self.note_bound(effects, None);
                    }
                    self.ensure_unnamed();
                    let mut e = Entry::forward(tag);
                    e.describes_unnamed = tag == b'D';
                    self.expect.push(e);
                    self.to_server.push(frame);
                    self.ext_open = true;
                    return;
                }
                let Some(def) = self.stmts.get(name).cloned() else {
                    let msg = format!(
                        "prepared statement \"{}\" does not exist",
                        String::from_utf8_lossy(name)
                    );
                    return self.inject_error_ext(sqlstate::INVALID_SQL_STATEMENT_NAME, &msg);
                };
                if tag == b'B' {
                    self.note_bound(def.facts.effects, Some(&def));
                }
                let server_name = self.ensure_prepared(&def);
                let Some(msg) = prepared::rewrite_name(&mut self.scratch, &frame, server_name)
                else {
                    return self
                        .inject_error_ext(sqlstate::PROTOCOL_VIOLATION, "malformed message");
                };
                let e = if tag == b'D' {
                    Entry::forward(tag).with_stmt(def)
                } else {
                    Entry::forward(tag)
                };
                self.expect.push(e);
                self.to_server.push(msg);
                self.ext_open = true;
            }
            b'C' if is_named_statement_close(&frame) => self.close_statement(&frame),
            b'C' => {
                if describe_statement_name(body).is_some_and(|n| n.is_empty()) {
                    // Closing the unnamed statement: there is nothing to re-create.
                    self.unnamed.parse = None;
                }
                self.send_ext(tag, frame)
            }
            b'E' => {
                self.batch_executed = true;
                self.send_ext(tag, frame)
            }
            _ => self.send_ext(tag, frame),
        }
    }

    /// A Bind of a statement with these effects: they apply to the server, and
    /// its custom settings are read back by name.
    fn note_bound(&mut self, effects: Effects, def: Option<&Arc<StmtDef>>) {
        if let Some(att) = self.server.as_mut() {
            att.effects.add(effects);
        }
        if let Some(def) = def {
            if !def.facts.custom_settings.is_empty() {
                let names = def.facts.custom_settings.clone();
                self.note_custom_settings(&names);
            }
        }
    }

    /// Make sure the server holds the client's unnamed statement before a Bind or
    /// Describe of it: re-create it from the client's Parse when this server does
    /// not (the client moved shards, or shardbouncer used the unnamed statement).
    fn ensure_unnamed(&mut self) {
        if self.unnamed.on_server {
            return;
        }
        if let Some(p) = self.unnamed.parse.clone() {
            let mut e = Entry::forward(b'P');
            e.mode = Mode::SwallowOk;
            self.expect.push(e);
            self.to_server.push(p);
            self.server_parses += 1;
            self.unnamed.on_server = true;
        }
    }

    /// Queue an extended message unchanged, with its expectation.
    pub(super) fn send_ext(&mut self, tag: u8, frame: Bytes) {
        match tag {
            b'H' => {}
            b'S' => {
                if self.expect.ready_owed() == 0 {
                    self.query_start = Some(Instant::now());
                }
                self.expect.push(Entry::forward(tag));
                self.ext_open = false;
                self.batch_pinned = false;
                self.batch_executed = false;
                self.server_skipping = false;
            }
            _ => {
                self.expect.push(Entry::forward(tag));
                self.ext_open = true;
            }
        }
        self.to_server.push(frame);
    }

    /// Close of a named statement: the client's name goes, the server keeps the
    /// statement for others; answered locally, in order.
    pub(super) fn close_statement(&mut self, frame: &[u8]) {
        if let Some(name) = describe_statement_name(&frame[5..]) {
            self.stmts.remove(name);
        }
        self.scratch.extend_from_slice(replies::CLOSE_COMPLETE);
        self.reply(b'C');
    }

    /// Make sure the attached server can run `def`, and return the name it has
    /// there. Normally the content-addressed name, prepared lazily if this server
    /// lacks it (the ParseComplete is swallowed; an error stands for the client's
    /// Bind/Describe). When the server's statements cannot be trusted, the unnamed
    /// statement, re-parsed now.
    pub(super) fn ensure_prepared<'d>(&mut self, def: &'d Arc<StmtDef>) -> &'d str {
        if self.statements_untrusted() {
            let msg = def.parse_as(&mut self.scratch, b"");
            self.server_parses += 1;
            let mut e = Entry::forward(b'P').with_stmt(def.clone());
            e.mode = Mode::SwallowOk;
            self.expect.push(e);
            self.to_server.push(msg);
            self.unnamed.on_server = false;
            return "";
        }
        let conn = &mut self.server.as_mut().expect("attached").co.conn;
        if conn.prepared.touch(def) {
            return &def.server_name;
        }
        conn.prepared.insert(def.clone());
        let msg = def.parse_message(&mut self.scratch);
        self.server_parses += 1;
        let mut e = Entry::forward(b'P').with_stmt(def.clone());
        e.mode = Mode::SwallowOk;
        self.expect.push(e);
        self.to_server.push(msg);
        &def.server_name
    }

    /// Make the server raise `code`/`msg` in an extended batch: the client sees the
    /// error where its message stood, and Postgres skips to Sync and fails the
    /// transaction exactly as for its own errors.
    pub(super) fn inject_error_ext(&mut self, code: &str, msg: &str) {
        if self.server_skipping {
            // The server already skips to Sync: it would not answer this either.
            return;
        }
        let Some(sql) = raise_sql(code, msg) else {
            return;
        };
        let mut parse = BytesMut::new();
        {
            use bytes::BufMut;
            parse.put_u8(b'P');
            parse.put_i32((4 + 1 + sql.len() + 1 + 2) as i32);
            parse.put_u8(0);
            parse.put_slice(sql.as_bytes());
            parse.put_u8(0);
            parse.put_i16(0);
            // Bind "" "" with no params and no result formats.
            parse.put_slice(b"B\0\0\0\x0c\0\0\0\0\0\0\0\0");
            parse.put_slice(b"E\0\0\0\x09\0\0\0\0\0");
        }
        self.unnamed.on_server = false;
        self.expect.push(Entry::swallow(b'P'));
        self.expect.push(Entry::swallow(b'B'));
        let mut e = Entry::forward(b'E');
        e.mode = Mode::SwallowOk;
        self.expect.push(e);
        self.to_server.push(parse.freeze());
        self.ext_open = true;
    }

    /// Same for a simple Query: the server raises the error, then ReadyForQuery.
    pub(super) fn inject_error_simple(&mut self, code: &str, msg: &str) {
        let Some(sql) = raise_sql(code, msg) else {
            return;
        };
        let mut b = BytesMut::new();
        protocol::query(&mut b, &sql);
        if self.expect.ready_owed() == 0 {
            self.query_start = Some(Instant::now());
        }
        self.unnamed.on_server = false;
        self.expect.push(Entry::forward(b'Q'));
        self.to_server.push(b.freeze());
    }

    /// Emit synthetic replies that have reached the head of the queue.
    pub(super) fn drain_synthetic(&mut self) {
        while let Some(e) = self.expect.front() {
            if e.synthetic.is_none() {
                break;
            }
            if let Some(b) = self.expect.pop().and_then(|e| e.synthetic) {
                self.to_client.push(b);
            }
        }
    }
}
