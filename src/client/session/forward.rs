//! Client → server: forwarding Queries and extended-protocol messages, named
//! prepared statements (client names → content-addressed server statements), and
//! errors raised through the server so transaction state stays exact.

use super::*;

impl Session {
    /// Extended-protocol message for a single-shard database.
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
                    self.forward_ext(t, f);
                }
                return self.forward_ext(tag, frame);
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
        self.forward_ext(tag, frame);
    }

    /// Record a client's named Parse under its name (Postgres's rules: a name in use
    /// is 42P05), with the routing facts of its text.
    pub(super) fn register_statement(
        &mut self,
        p: &Parse<'_>,
    ) -> Result<Arc<StmtDef>, (&'static str, String)> {
        if self.stmts.contains_key(p.name) {
            let msg = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(p.name)
            );
            return Err(("42P05", msg));
        }
        if self.stmts.len() >= MAX_CLIENT_STATEMENTS {
            return Err((
                "53400",
                "too many prepared statements on this connection".to_string(),
            ));
        }
        let routing = self
            .db
            .routing
            .as_ref()
            .map(|rt| route::stmt_routing(rt, p.query))
            .unwrap_or_default();
        let def = Arc::new(StmtDef::new(p, routing));
        self.stmts
            .insert(Bytes::copy_from_slice(p.name), def.clone());
        Ok(def)
    }

    /// Answer named Parses + Sync without a server: register the statements and
    /// reply ParseComplete + ReadyForQuery. The statement is prepared (and so
    /// validated) lazily on the server that first executes or describes it; a syntax
    /// error then surfaces at that Bind/Describe. Without this, a client that blocks
    /// on a Parse while its other connections hold every server in a transaction
    /// (pgbench -M prepared does exactly that) deadlocks on any transaction pooler.
    pub(super) fn parse_locally(&mut self, msgs: Vec<(u8, Bytes)>) {
        for (_, frame) in &msgs {
            let Some(p) = Parse::parse(&frame[5..]) else {
                return self.fail_unattached(
                    b'S',
                    sqlstate::PROTOCOL_VIOLATION,
                    "malformed Parse message",
                );
            };
            self.client_parses += 1;
            if let Err((code, msg)) = self.register_statement(&p) {
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
        let mut clear_prepared = false;
        if tag == b'Q' {
            let sql = query_text(&frame);
            let mut kwbuf = [0u8; 16];
            match route::first_keyword(sql, &mut kwbuf) {
                b"DEALLOCATE" => return self.deallocate(sql),
                b"DISCARD" if contains_ci(sql, b"all") => {
                    self.stmts.clear();
                    clear_prepared = true;
                }
                _ => {}
            }
            self.note_statement(sql);
        }
        if self.expect.ready_owed() == 0 {
            self.query_start = Some(Instant::now());
        }
        let mut e = Entry::forward(tag);
        e.clear_prepared = clear_prepared;
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
            let _ = self.simple_error_reply("26000", &msg);
        }
    }

    /// Forward one extended-protocol message, translating statement names.
    pub(super) fn forward_ext(&mut self, tag: u8, frame: Bytes) {
        let body = &frame[5..];
        match tag {
            b'P' => {
                let Some(p) = Parse::parse(body) else {
                    return self
                        .inject_error_ext(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message");
                };
                self.note_statement(p.query);
                self.client_parses += 1;
                if p.name.is_empty() {
                    self.server_parses += 1;
                    if let Some(rt) = &self.db.routing {
                        self.unnamed.set(route::stmt_routing(rt, p.query), &p);
                    }
                    self.send_ext(tag, frame);
                    return;
                }
                let def = match self.register_statement(&p) {
                    Ok(def) => def,
                    Err((code, msg)) => return self.inject_error_ext(code, &msg),
                };
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
                    // Describe of a portal, or malformed: the server judges it.
                    return self.send_ext(tag, frame);
                };
                if name.is_empty() {
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
                    return self.inject_error_ext("26000", &msg);
                };
                self.ensure_prepared(&def);
                let Some(msg) = prepared::rewrite_name(&mut self.scratch, &frame, &def.server_name)
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
            _ => self.send_ext(tag, frame),
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

    /// Prepare `def` on the attached server if it lacks it (the ParseComplete is
    /// swallowed; an error stands for the client's Bind/Describe).
    pub(super) fn ensure_prepared(&mut self, def: &Arc<StmtDef>) {
        let conn = &mut self.server.as_mut().expect("attached").co.conn;
        if conn.prepared.touch(def) {
            return;
        }
        conn.prepared.insert(def.clone());
        let msg = def.parse_message(&mut self.scratch);
        self.server_parses += 1;
        let mut e = Entry::forward(b'P').with_stmt(def.clone());
        e.mode = Mode::SwallowOk;
        self.expect.push(e);
        self.to_server.push(msg);
    }

    /// Make the server raise `code`/`msg` in an extended batch: the client sees the
    /// error where its message stood, and Postgres skips to Sync and fails the
    /// transaction exactly as for its own errors.
    pub(super) fn inject_error_ext(&mut self, code: &str, msg: &str) {
        let Some(sql) = raise_sql(code, msg) else {
            return;
        };
        let p = Parse {
            name: b"",
            query: sql.as_bytes(),
            param_types: &[],
        };
        let def = StmtDef::new(&p, Default::default());
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
        drop(def);
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

    /// Remember whether a statement may change settings Postgres does not report.
    pub(super) fn note_statement(&mut self, body: &[u8]) {
        if !self.touched_unreported {
            self.touched_unreported = may_change_settings(body, !self.login.unreported.is_empty());
        }
    }
}
