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

use super::core::{Core, Need, Unit};
use super::frames::{
    describe_statement_name, execute_portal, is_named_parse, is_named_statement_close, query_text,
};
use super::statements::{declared_parse, reserved_name};
use crate::client::expect::{Entry, Mode};
use crate::protocol::{self, tag, Bind, Parse};
use crate::router::statement::Violation;
use crate::router::{self, Effects, Facts, Kind};
use crate::server::prepared::{self, Held, StmtDef};
use crate::sqlstate::{self, PgError};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

impl Core {
    /// An extended-protocol message for a database without routing: forwarded as
    /// it arrives once a server is attached (no batching needed, nothing to route).
    pub(super) fn plain_ext(&mut self, t: u8, frame: Bytes) -> Need {
        use tag::frontend as f;
        if self.att.is_some() {
            match self.check_results(t, &frame) {
                Verdict::Go => self.forward_ext(t, frame, None),
                // Sent once the server has answered.
                Verdict::Wait => self.wait.stall(Unit::Batch(vec![(t, frame)])),
                Verdict::Differ => self.inject_error_ext(&changed_result()),
            }
            return Need::Io;
        }
        // Named Parses followed by Sync are answered without a server (see
        // `parse_locally`); hold them until we see what follows. Not in session
        // mode, where the client's statements are its server's own.
        if t == f::PARSE
            && !self.owns_server()
            && is_named_parse(&frame)
            && self.batch.all(f::PARSE)
        {
            if let Err(e) = self.batch.push(t, frame) {
                let (code, msg) = e.error();
                return Need::Close(self.fatal(code, msg));
            }
            return Need::Io;
        }
        if t == f::SYNC && !self.batch.is_empty() {
            let held = self.batch.take();
            self.parse_locally(held);
            return Need::Io;
        }
        if self.batch.is_empty() {
            match t {
                // Nothing is in flight: answer without taking a server.
                f::SYNC => {
                    self.emit_rfq();
                    return Need::Io;
                }
                f::FLUSH => return Need::Io,
                f::CLOSE if is_named_statement_close(&frame) && !self.owns_server() => {
                    self.close_statement(&frame);
                    return Need::Io;
                }
                _ => {}
            }
        }
        // (Bounded: only Parses are held above.)
        let _ = self.batch.push(t, frame);
        let held = self.batch.take();
        self.route_unit(Unit::Batch(held))
    }

    /// Record a client's named Parse (see [`super::statements::Statements::register`]).
    pub(super) fn register_statement(
        &mut self,
        p: &Parse<'_>,
        facts: Facts,
    ) -> Result<Arc<StmtDef>, PgError> {
        let context = self.statement_context();
        self.stmts.register(p, facts, &context)
    }

    /// The facts of a Parse's text: from the routed batch, or analyzed now.
    pub(super) fn parse_facts(&self, query: &[u8], routed: Option<Facts>) -> Facts {
        routed.unwrap_or_else(|| {
            let mut f = Facts::default();
            let mut alt = Facts::default();
            router::analyze_checked(
                query,
                self.routing_key(),
                self.settings.std_strings(),
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
        let routed = self.db.routing.is_some();
        let mut n = 0;
        for (t, frame) in &msgs {
            if *t != tag::frontend::PARSE {
                continue;
            }
            let Some(p) = Parse::parse(&frame[5..]) else {
                return self.fail_unattached(
                    tag::frontend::SYNC,
                    &PgError::new(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message"),
                );
            };
            let analyzed = if routed {
                n += 1;
                self.route.parse_facts_at(n - 1)
            } else {
                None
            };
            let facts = self.parse_facts(p.query, analyzed);
            self.counters.client_parse();
            if let Err(e) = self.register_statement(&p, facts) {
                return self.fail_unattached(tag::frontend::SYNC, &e);
            }
            protocol::parse_complete(self.out.build());
            self.emit();
        }
        self.emit_rfq();
    }

    /// Forward a routed unit to the attached server.
    pub(super) fn forward_unit(&mut self, unit: Unit) {
        match unit {
            Unit::Simple(t, frame) => self.forward_simple(t, frame),
            Unit::Batch(msgs) => {
                let mut n = 0;
                let mut msgs = msgs.into_iter();
                while let Some((t, frame)) = msgs.next() {
                    match self.check_results(t, &frame) {
                        Verdict::Go => {}
                        Verdict::Wait => {
                            // This message and the rest wait for the server's
                            // answer, and are routed again after it, as a
                            // later slice of the batch.
                            let mut rest = vec![(t, frame)];
                            rest.extend(msgs);
                            self.wait.stall(Unit::Batch(rest));
                            break;
                        }
                        Verdict::Differ => {
                            // As Postgres fails it: in its place, and the
                            // server skips the rest up to the Sync.
                            self.inject_error_ext(&changed_result());
                            continue;
                        }
                    }
                    let analyzed = if t == tag::frontend::PARSE {
                        n += 1;
                        // Analyzed when the batch was routed.
                        self.route.parse_facts_at(n - 1)
                    } else {
                        None
                    };
                    self.forward_ext(t, frame, analyzed);
                }
            }
        }
        self.drain_synthetic();
    }

    /// Whether what the analysis of `f`'s text found may not be what Postgres
    /// runs, so its server is reset whole when it is given back: a text whose
    /// meaning depends on `standard_conforming_strings` (a change of it may
    /// be on its way, in the same batch), or one past ASCII under an encoding
    /// whose characters may hold ASCII bytes (SJIS, BIG5, ...). A routed
    /// database refuses such texts when unsure ([`router::decide`]); an
    /// unrouted one runs them (probe L: `SET ROLE` hidden behind an SJIS
    /// character, or behind a quote read under the old setting, reached the
    /// next client).
    pub(super) fn lexing_unsure(&self, f: &Facts) -> bool {
        self.db.routing.is_none()
            && (f.std_sensitive || (f.non_ascii && self.settings.ascii_only()))
    }

    /// Forward a simple Query / FunctionCall to the attached server.
    fn forward_simple(&mut self, t: u8, frame: Bytes) {
        let mut drops = false;
        let mut deallocates = None;
        let mut copies = 0;
        let mut effects = Effects::DYNAMIC;
        if t == tag::frontend::QUERY {
            // The analysis is this Query's (route_unit made it).
            let facts = self.route.facts();
            effects = facts.effects;
            if self.lexing_unsure(facts) {
                effects.add(Effects::DYNAMIC);
            }
            drops = facts.drops_statements;
            copies = facts.copies;
            if self.owns_server() && facts.is_only(Kind::Deallocate) {
                // Session mode: the name goes when the server's DEALLOCATE
                // succeeds (one it fails or skips leaves the statement, and
                // the record must say what the server runs).
                if let Some(Deallocated::One(name)) = deallocated(query_text(&frame)) {
                    deallocates = self
                        .stmts
                        .get(name.as_bytes())
                        .map(|def| (Bytes::from(name), def.clone()));
                }
            }
            if !self.settings.note_custom(&facts.custom_settings) {
                effects.add(Effects::UNNAMED_SETTINGS);
            }
            if facts.resets_all {
                // RESET ALL / DISCARD ALL reset a SET tenant as they reset
                // settings (and a rollback of the transaction undoes it).
                // Postgres refuses DISCARD ALL inside a transaction block, an
                // implicit one of several statements included, and with it
                // the whole Query: nothing is reset (probe M: a SET tenant
                // was lost to a DISCARD ALL refused in a held BEGIN).
                // A BEGIN in the same Query puts it in the transaction (re-probe
                // P: `BEGIN; RESET ALL`, then ROLLBACK, lost the SET tenant).
                let in_tx = self.client_status() != crate::protocol::TxStatus::Idle
                    || facts.first == router::Kind::Begin;
                if !(facts.discards_all && (in_tx || facts.count > 1)) {
                    self.route.reset(in_tx, self.owns_server());
                }
            }
            // (route_unit dropped the client's unnamed statement already.)
        }
        let Some(a) = self.att.as_mut() else { return };
        // A FunctionCall runs server-side code that may do anything.
        a.add_effects(effects);
        if t == tag::frontend::QUERY {
            a.set_unnamed_current(false);
        }
        self.counters.query_sent(a.ready_owed());
        let mut e = Entry::forward(t);
        e.drops_statements = drops;
        e.copies = copies;
        if let Some((name, def)) = deallocates {
            e.stmt = Some(def);
            e.client_name = Some(name);
        }
        a.send_simple(e, frame);
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` of the client's protocol-level names
    /// are answered here (its names are private to it; the server statements stay
    /// for others). What may concern SQL-level statements (`PREPARE`) on its
    /// server goes to that server, which answers as Postgres does: false, and
    /// nothing was done.
    pub(super) fn deallocate(&mut self, sql: &[u8]) -> bool {
        if self.owns_server() {
            // Session mode: the server holds the client's statements under
            // its names and answers; the record follows its answer (see
            // `forward_simple`).
            return false;
        }
        let Some(name) = deallocated(sql) else {
            return false;
        };
        // SQL-level statements live on the attached server only (a release
        // deallocates them): only then can the server have any.
        let sql_level = self
            .att
            .as_ref()
            .is_some_and(|a| a.effects().any(Effects::PREPARED.union(Effects::DYNAMIC)));
        let Deallocated::One(name) = name else {
            if sql_level {
                return false;
            }
            self.stmts.clear();
            self.simple_reply("DEALLOCATE ALL");
            return true;
        };
        if self.stmts.remove(name.as_bytes()) {
            self.simple_reply("DEALLOCATE");
        } else if sql_level {
            return false;
        } else {
            let e = PgError::new(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            );
            self.unit_error(Unit::Simple(tag::frontend::QUERY, Bytes::new()), &e);
        }
        true
    }

    /// Forward one extended-protocol message, translating statement names.
    /// `facts`: for a Parse, its text's analysis when the batch was routed.
    pub(super) fn forward_ext(&mut self, t: u8, frame: Bytes, facts: Option<Facts>) {
        use tag::frontend as f;
        if self.att.as_ref().is_none_or(|a| a.skipping()) && t != f::SYNC {
            // Postgres skips everything up to Sync after an error: nothing is
            // answered, so nothing is sent or owed (a Parse registers no name).
            return;
        }
        let body = &frame[5..];
        match t {
            f::PARSE => {
                let Some(p) = Parse::parse(body) else {
                    return self.inject_error_ext(&PgError::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "malformed Parse message",
                    ));
                };
                let facts = self.parse_facts(p.query, facts);
                self.counters.client_parse();
                if !self.owns_server() && facts.has_listen() {
                    // Run on a pooled server it would listen for the server's
                    // next client; relayed only from a simple Query.
                    return self.inject_error_ext(&PgError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "LISTEN and UNLISTEN through Parse/Bind/Execute are supported in \
                         transaction pooling only in a batch of their own (or as a simple \
                         query): shardbouncer relays notifications",
                    ));
                }
                if p.name.is_empty() {
                    if facts.violation == Some(Violation::ReservedName) {
                        return self.inject_error_ext(&reserved_name());
                    }
                    self.counters.server_parse();
                    // The same statement parsed again after the server
                    // described it (asyncpg without its statement cache):
                    // it keeps the described types, declared to the server.
                    let redescribed = self.stmts.redescribed(&frame).map(<[u32]>::to_vec);
                    let sent = match &redescribed {
                        Some(types) => declared_parse(self.out.build(), p.query, types),
                        None => frame.clone(),
                    };
                    // Kept after this read: a copy, so an idle client does not pin
                    // the whole read buffer its Parse arrived in.
                    let kept = Bytes::copy_from_slice(&frame);
                    let at = p.param_types.as_ptr() as usize - frame.as_ptr() as usize;
                    let declared = kept.slice(at..at + p.param_types.len());
                    let seq = match self.stmts.set_unnamed(facts, kept, declared) {
                        Ok(seq) => seq,
                        Err(e) => return self.inject_error_ext(&e),
                    };
                    if let Some(types) = redescribed {
                        self.stmts.describe_unnamed(seq, types.into_iter());
                    }
                    if let Some(a) = self.att.as_mut() {
                        a.set_unnamed_current(true);
                        let mut e = Entry::forward(t);
                        e.sets_unnamed = Some(seq);
                        a.send_ext(e, sent);
                    }
                    return;
                }
                let def = match self.register_statement(&p, facts) {
                    Ok(def) => def,
                    Err(e) => return self.inject_error_ext(&e),
                };
                let transparent = self.owns_server();
                let a = self.att.as_mut().expect("attached");
                if transparent {
                    // The client's own Parse, under its own name: DEALLOCATE ALL
                    // before another client gets the server, unless the reset
                    // query clears it anyway (not SQL that may replace names:
                    // probe CS, every Bind was parsed again).
                    a.client_named();
                    self.counters.server_parse();
                    a.send_ext(Entry::forward(f::PARSE).with_stmt(def), frame);
                    return;
                }
                let held = if a.statements_untrusted() {
                    Held::Stale
                } else {
                    a.has_prepared(&def)
                };
                match held {
                    Held::Stale => {
                        // The server's name cannot be trusted or its copy is too
                        // old: validate the text through the unnamed statement; it
                        // is re-parsed there whenever it runs on this server.
                        let msg = def.parse_as(self.out.build(), b"");
                        a.set_unnamed_current(false);
                        self.counters.server_parse();
                        let mut e = Entry::forward(f::PARSE).with_stmt(def);
                        e.parses_unnamed = true;
                        a.send_ext(e, msg);
                    }
                    Held::Ready => {
                        let mut b = BytesMut::new();
                        protocol::parse_complete(&mut b);
                        a.synthetic_stmt(f::PARSE, b.freeze(), def, None);
                    }
                    Held::Missing => {
                        a.note_prepared(def.clone());
                        let msg = def.parse_message(self.out.build());
                        self.counters.server_parse();
                        a.send_ext(Entry::forward(f::PARSE).with_stmt(def), msg);
                    }
                }
            }
            f::BIND | f::DESCRIBE => {
                if t == f::BIND {
                    self.counters.bind();
                    // The portal holds this Bind's statement from now on: a
                    // named one is noted again below (re-probe follow-up: an
                    // unnamed statement's portal was described as an older
                    // named one's, and its next Bind got a false 0A000).
                    if let Some((portal, rest)) =
                        protocol::cstr(body).filter(|_| self.last_bound.is_some())
                    {
                        let named = protocol::cstr(rest).is_some_and(|(n, _)| !n.is_empty());
                        let same = self.last_bound.as_deref().is_some_and(|b| b.0 == portal);
                        if same && (!named || self.owns_server()) {
                            self.last_bound = None;
                        }
                    }
                }
                let named = match t {
                    f::BIND => Bind::parse(body).map(|b| b.statement),
                    _ => describe_statement_name(body),
                };
                let Some(name) = named else {
                    if t == f::BIND {
                        return self.inject_error_ext(&PgError::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            "malformed Bind message",
                        ));
                    }
                    // Describe of a portal: the server judges it. One bound to a
                    // named statement tells the client its result types.
                    let portal = protocol::cstr(body.get(1..).unwrap_or_default())
                        .map_or(&[][..], |(p, _)| p);
                    let def = match self.last_bound.as_deref() {
                        Some((bound, def)) if bound == portal => Some(def.clone()),
                        _ => None,
                    };
                    let Some(def) = def else {
                        return self.send_ext(t, frame);
                    };
                    if let Some(a) = self.att.as_mut() {
                        a.send_ext(Entry::forward(t).with_stmt(def), frame);
                    }
                    return;
                };
                if name.is_empty() {
                    if t == f::BIND {
                        // Its custom settings are read back by name like a
                        // named statement's (they reached the next client).
                        if let Some((f, _)) = self.stmts.unnamed() {
                            let unsure = self.lexing_unsure(f);
                            note_bound(
                                self.att.as_deref_mut(),
                                &mut self.settings,
                                f,
                                body,
                                unsure,
                            );
                        }
                    }
                    if !self.ensure_unnamed() {
                        // The server's unnamed statement is not this client's (it
                        // may be another client's): as if it did not exist.
                        return self.inject_error_ext(&PgError::new(
                            sqlstate::INVALID_SQL_STATEMENT_NAME,
                            "unnamed prepared statement does not exist",
                        ));
                    }
                    let mut e = Entry::forward(t);
                    e.describes_unnamed = (t == f::DESCRIBE).then(|| self.stmts.unnamed_seq());
                    if let Some(a) = self.att.as_mut() {
                        a.send_ext(e, frame);
                    }
                    return;
                }
                if self.owns_server() {
                    // Under the client's own name. A name it never parsed may
                    // be an SQL-level PREPARE: the server judges (routing
                    // refuses its Bind: its text is not read).
                    let def = self.stmts.get(name).cloned();
                    if let Some(def) = def
                        .as_ref()
                        .filter(|_| self.att.as_ref().is_some_and(|a| a.statements_untrusted()))
                    {
                        // SQL ran on this server that may have freed the
                        // name and prepared another text under it (PREPARE,
                        // DEALLOCATE, DISCARD, DO, CALL, a function the
                        // session created: probes CQ, CR): what runs is the
                        // text routing read, parsed afresh into the unnamed
                        // statement, as transaction mode runs a name it
                        // cannot trust.
                        return self.run_reparsed(t, &frame, name, def.clone());
                    }
                    if t == f::BIND {
                        match &def {
                            Some(d) => note_bound(
                                self.att.as_deref_mut(),
                                &mut self.settings,
                                &d.facts,
                                body,
                                false,
                            ),
                            None => {
                                if let Some(a) = self.att.as_mut() {
                                    a.add_effects(Effects::DYNAMIC);
                                }
                            }
                        }
                    }
                    let mut e = Entry::forward(t);
                    if let Some(def) = def {
                        e = e.with_stmt(def);
                    }
                    if let Some(a) = self.att.as_mut() {
                        a.send_ext(e, frame);
                    }
                    return;
                }
                let Some(def) = self.stmts.get(name).cloned() else {
                    let e = PgError::new(
                        sqlstate::INVALID_SQL_STATEMENT_NAME,
                        format!(
                            "prepared statement \"{}\" does not exist",
                            String::from_utf8_lossy(name)
                        ),
                    );
                    return self.inject_error_ext(&e);
                };
                if def.facts.has_listen() && !self.owns_server() {
                    // Prepared in a batch of its own it is relayed (see
                    // `listen_ext`); here it would listen on a pooled server.
                    return self.inject_error_ext(&PgError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "LISTEN and UNLISTEN through Parse/Bind/Execute are supported in \
                         transaction pooling only in a batch of their own (or as a simple \
                         query): shardbouncer relays notifications",
                    ));
                }
                if t == f::BIND {
                    let unsure = self.lexing_unsure(&def.facts);
                    note_bound(
                        self.att.as_deref_mut(),
                        &mut self.settings,
                        &def.facts,
                        body,
                        unsure,
                    );
                }
                if t == f::BIND {
                    let portal = protocol::cstr(body).map_or(&[][..], |(p, _)| p);
                    // No allocation for the same portal again (the unnamed one).
                    match self.last_bound.as_deref_mut() {
                        Some(b) if b.0 == portal => b.1 = def.clone(),
                        _ => {
                            self.last_bound =
                                Some(Box::new((Bytes::copy_from_slice(portal), def.clone())))
                        }
                    }
                }
                let server_name = self.ensure_prepared(&def);
                let Some(msg) = prepared::rewrite_name(self.out.build(), &frame, server_name)
                else {
                    return self.inject_error_ext(&PgError::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        "malformed message",
                    ));
                };
                // Describe records the described types in `def`; both need its
                // internal name to name the client's in an error.
                let mut e = Entry::forward(t).with_stmt(def);
                // `name` points into `frame`: zero-copy, unless the frame is
                // large, which the slice would keep alive until the answer
                // comes (a batch of 900 KB Binds held all of them: probe).
                e.client_name = Some(if frame.len() <= 1024 {
                    frame.slice_ref(name)
                } else {
                    Bytes::copy_from_slice(name)
                });
                if let Some(a) = self.att.as_mut() {
                    a.send_ext(e, msg);
                }
            }
            f::CLOSE if is_named_statement_close(&frame) && self.owns_server() => {
                // The server closes its own statement and answers. Skipped
                // behind an error in its batch, it closed nothing: the
                // statement is the client's again (probe CN F3: the router
                // took a skipped Close and re-Parse as done, and a later
                // Bind ran the server's old COPY unchecked).
                let closed = describe_statement_name(body)
                    .and_then(|name| Some((frame.slice_ref(name), self.stmts.take(name)?)));
                let Some((name, def)) = closed else {
                    return self.send_ext(t, frame);
                };
                let mut e = Entry::forward(t).with_stmt(def);
                e.client_name = Some(name);
                if let Some(a) = self.att.as_mut() {
                    a.send_ext(e, frame);
                }
            }
            f::CLOSE if is_named_statement_close(&frame) => self.close_statement(&frame),
            f::CLOSE => {
                if describe_statement_name(body).is_some_and(|n| n.is_empty()) {
                    // Closing the unnamed statement: there is nothing to re-create.
                    self.stmts.drop_unnamed();
                }
                self.send_ext(t, frame)
            }
            f::EXECUTE => {
                let Some(a) = self.att.as_mut() else { return };
                // Postgres refuses DISCARD ALL behind other work of the same
                // batch, in its implicit transaction (re-probe P).
                let after_work = a.ext_has_executed();
                a.ext_executed();
                let portal = protocol::cstr(body).map_or(&b""[..], |(p, _)| p);
                // RESET ALL or DISCARD ALL through Parse/Bind/Execute
                // (PgJDBC, psycopg 3) ends a SET tenant as a Query does
                // (probe M: the next statements still ran on its shard).
                // DISCARD ALL fails inside a transaction block: nothing ends.
                let resets = a.has_resetting_portal() && a.portal_resets(portal);
                let discards = a.portal_drops_statements(portal);
                if resets {
                    let in_tx = self.client_status() != crate::protocol::TxStatus::Idle;
                    if !(discards && (in_tx || after_work)) {
                        self.route.reset(in_tx, self.owns_server());
                    }
                }
                let Some(a) = self.att.as_mut() else { return };
                if discards {
                    // DISCARD ALL or DEALLOCATE ALL through Parse/Bind/Execute:
                    // on success the client's names go too, as Postgres drops
                    // them (they stayed: a driver that prepared its statements
                    // again after it got 42P05).
                    let mut e = Entry::forward(t);
                    e.drops_statements = true;
                    a.send_ext(e, frame);
                    return;
                }
                self.send_ext(t, frame)
            }
            _ => self.send_ext(t, frame),
        }
    }

    /// Session mode: a Bind or Describe (`frame`) of the client's statement
    /// `name` (`def`), run through the unnamed statement parsed afresh from
    /// the text routing read (see the caller).
    fn run_reparsed(&mut self, t: u8, frame: &Bytes, name: &[u8], def: Arc<StmtDef>) {
        if t == tag::frontend::BIND {
            note_bound(
                self.att.as_deref_mut(),
                &mut self.settings,
                &def.facts,
                &frame[5..],
                false,
            );
        }
        let Some(msg) = prepared::rewrite_name(self.out.build(), frame, "") else {
            return self.inject_error_ext(&PgError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed message",
            ));
        };
        let parse = def.parse_as_told(self.out.build(), b"");
        self.counters.server_parse();
        let Some(a) = self.att.as_mut() else { return };
        let mut p = Entry::forward(tag::frontend::PARSE).with_stmt(def.clone());
        p.mode = Mode::SwallowOk;
        p.parses_unnamed = true;
        a.send_ext(p, parse);
        a.set_unnamed_current(false);
        let mut e = Entry::forward(t).with_stmt(def);
        e.client_name = Some(Bytes::copy_from_slice(name));
        a.send_ext(e, msg);
    }

    /// Make sure the server holds the client's unnamed statement before a Bind or
    /// Describe of it: re-create it from the client's Parse when this server does
    /// not (the client moved shards, or shardbouncer used the unnamed statement).
    /// False when the client has no unnamed statement: whatever unnamed
    /// statement the server has is not the client's and must not run.
    fn ensure_unnamed(&mut self) -> bool {
        // The client's record comes first: a simple Query answered here (a
        // local DEALLOCATE, a held BEGIN) dropped it while the server still
        // holds the statement parsed before.
        if self.stmts.unnamed_parse().is_none() {
            return false;
        }
        let Some(a) = self.att.as_mut() else {
            return false;
        };
        if a.unnamed_current() {
            return true;
        }
        // (With the described types declared: the values are read as the
        // router read them, on this server too.)
        let Some(p) = self.stmts.unnamed_parse_declared(self.out.build()) else {
            return false;
        };
        let Some(a) = self.att.as_mut() else {
            return false;
        };
        let mut e = Entry::forward(tag::frontend::PARSE);
        e.mode = Mode::SwallowOk;
        a.send_ext(e, p);
        self.counters.server_parse();
        a.set_unnamed_current(true);
        true
    }

    /// Queue an extended message unchanged, with its expectation.
    pub(super) fn send_ext(&mut self, t: u8, frame: Bytes) {
        let routed = self.db.routing.is_some();
        let Some(a) = self.att.as_mut() else { return };
        match t {
            tag::frontend::FLUSH => a.send_flush(frame),
            // COPY data that came in a batch, right behind its Execute: the
            // server answers none of it (a CopyDone or CopyFail ends the COPY
            // the Execute starts).
            // Dropped when no COPY the router read may run (see
            // `Core::copy_message_passes`): a Flush instead, since the batch
            // went at it as at a Flush, and work behind it waits for its
            // answers.
            tag::frontend::COPY_DATA | tag::frontend::COPY_DONE | tag::frontend::COPY_FAIL
                if routed && !a.copies_expected() =>
            {
                let mut b = BytesMut::new();
                protocol::flush(&mut b);
                a.send_flush(b.freeze());
            }
            tag::frontend::COPY_DATA => a.send_raw(frame),
            tag::frontend::COPY_DONE | tag::frontend::COPY_FAIL => {
                a.copy_end_ahead();
                a.send_raw(frame);
            }
            tag::frontend::SYNC => {
                self.counters.query_sent(a.ready_owed());
                a.send_sync(Entry::forward(t), frame);
            }
            tag::frontend::EXECUTE => {
                let mut e = Entry::forward(t);
                e.copies =
                    u8::from(routed && self.route.portal_copies(execute_portal(&frame[5..])));
                a.send_ext(e, frame);
            }
            _ => a.send_ext(Entry::forward(t), frame),
        }
    }

    /// Close of a named statement: the client's name goes, the server keeps the
    /// statement for others; answered locally, in order.
    pub(super) fn close_statement(&mut self, frame: &[u8]) {
        let closed = describe_statement_name(&frame[5..])
            .and_then(|name| Some((Bytes::copy_from_slice(name), self.stmts.take(name)?)));
        protocol::close_complete(self.out.build());
        match (closed, self.att.as_mut()) {
            // Behind work not answered yet: if the server skips to the Sync
            // first, so does this Close (probe J: the statement was gone
            // where Postgres still had it).
            (Some((name, def)), Some(a)) if !a.settled() => {
                let b = self.out.built();
                a.synthetic_stmt(tag::frontend::CLOSE, b, def, Some(name));
            }
            _ => self.reply(tag::frontend::CLOSE),
        }
    }

    /// Whether the client's settings that read literals changed since it
    /// parsed `def`: a copy prepared now would not be that statement.
    fn settings_moved_since(&self, def: &StmtDef) -> bool {
        StmtDef::context_hash(&self.statement_context()) != def.context
    }

    /// Make sure the attached server can run `def`, and return the name it has
    /// there. Normally the content-addressed name, prepared lazily if this server
    /// lacks it (the ParseComplete is swallowed; an error stands for the client's
    /// Bind/Describe). When the server's statements cannot be trusted, or its copy
    /// is stale, the unnamed statement, re-parsed now.
    fn ensure_prepared<'d>(&mut self, def: &'d Arc<StmtDef>) -> &'d str {
        let mut held = {
            let a = self.att.as_mut().expect("attached");
            if a.statements_untrusted() {
                Held::Stale
            } else {
                a.has_prepared(def)
            }
        };
        if held == Held::Missing && self.settings_moved_since(def) {
            // The client's settings changed since it prepared the statement:
            // a copy parsed now would read its literals under the new ones.
            // Filed under the statement's name, another client with the old
            // settings would get that reading (probe R: `'01/02/2024'::date`
            // under DMY, re-prepared under MDY). It is re-parsed as the
            // unnamed statement, which no one else runs.
            held = Held::Stale;
        }
        let a = self.att.as_mut().expect("attached");
        let mut e = Entry::forward(tag::frontend::PARSE).with_stmt(def.clone());
        e.mode = Mode::SwallowOk;
        match held {
            Held::Ready => return &def.server_name,
            Held::Stale => {
                let msg = def.parse_as(self.out.build(), b"");
                self.counters.server_parse();
                e.parses_unnamed = true;
                a.send_ext(e, msg);
                a.set_unnamed_current(false);
                return "";
            }
            Held::Missing => {}
        }
        a.note_prepared(def.clone());
        let msg = def.parse_message(self.out.build());
        self.counters.server_parse();
        a.send_ext(e, msg);
        &def.server_name
    }

    /// Whether a Bind or Describe of the client's named statement may go to
    /// the attached server. The client was told its result types (a
    /// Describe); the server's copy must have the same. Postgres fails a
    /// statement whose result changed under it (0A000): a copy the pooler
    /// prepares afresh after a migration must not run under the old
    /// description, where the client would read the rows as what they no
    /// longer are (probe: asyncpg read a `real` as the `int4` it was told).
    /// When the copy's types are not known yet, the copy is described
    /// (prepared first, if the server lacks it) and flushed, and the message
    /// waits for the answer ([`Verdict::Wait`]): only for a statement
    /// described before, on a server that did not describe its copy yet;
    /// rare, and one round trip each.
    fn check_results(&mut self, t: u8, frame: &[u8]) -> Verdict {
        use tag::frontend as f;
        let body = &frame[5..];
        // The common cases first, at a load each: a Bind of the unnamed
        // statement into the unnamed portal, a Describe of a portal or of
        // the unnamed statement.
        match (t, body.first(), body.get(1)) {
            (f::BIND, Some(0), Some(0)) | (f::DESCRIBE, Some(b'P'), _) => return Verdict::Go,
            (f::DESCRIBE, Some(b'S'), Some(0)) => return Verdict::Go,
            (f::BIND | f::DESCRIBE, _, _) => {}
            _ => return Verdict::Go,
        }
        // (Session mode runs the client's names as they are, unless SQL may
        // have replaced them: then through the unnamed statement, parsed
        // afresh, as here; see `run_reparsed`.)
        if self.owns_server() && !self.att.as_ref().is_some_and(|a| a.statements_untrusted()) {
            return Verdict::Go;
        }
        // The statement's name only (the portal's, then it): cheap, for every
        // Bind.
        let named = match t {
            f::BIND => protocol::cstr(body)
                .and_then(|(_, rest)| protocol::cstr(rest))
                .map(|(name, _)| name),
            _ => describe_statement_name(body),
        };
        let Some(def) = named
            .filter(|n| !n.is_empty())
            .and_then(|n| self.stmts.get(n))
            .cloned()
        else {
            return Verdict::Go;
        };
        // A copy this server lacks, which would be parsed under settings the
        // client changed since its Parse: the unnamed statement instead (see
        // `ensure_prepared`). Looked at only when the server lacks the copy.
        let missing = self
            .att
            .as_mut()
            .is_some_and(|a| !a.statements_untrusted() && a.has_prepared(&def) == Held::Missing);
        let moved_on = missing && self.settings_moved_since(&def);
        let owns = self.owns_server();
        let Some(a) = self.att.as_mut() else {
            return Verdict::Go;
        };
        if a.skipping() {
            return Verdict::Go;
        }
        // Compared under the locks, nothing cloned: this runs for every Bind
        // of a described statement (`pgbench -M prepared` describes each).
        let (held, same) = {
            let told = def.told.lock().unwrap_or_else(|p| p.into_inner());
            let Some(told) = told.as_deref() else {
                return Verdict::Go;
            };
            let told_params = def.told_params.lock().unwrap_or_else(|p| p.into_inner());
            // The parameter types count where the client was told them: it
            // sends its values in those (binary ones read as others would
            // be other values).
            let told_params = told_params.as_deref();
            // A copy that cannot be used runs through the unnamed statement,
            // parsed afresh (see `ensure_prepared`): described so, on this
            // server.
            let fresh = |id| {
                let results = fresh_on(&def.fresh_results, id)?;
                let params = fresh_on(&def.fresh_params, id);
                if told_params.is_some() && params.is_none() {
                    return None;
                }
                Some(*results == *told && told_params.is_none_or(|t| params.as_deref() == Some(t)))
            };
            match a.statements_untrusted() || moved_on {
                true => (Held::Stale, fresh(a.fresh_key())),
                false => match a.touch_and_compare(&def, told, told_params) {
                    (Held::Stale, _) => (Held::Stale, fresh(a.fresh_key())),
                    other => other,
                },
            }
        };
        if let Some(same) = same {
            return match same {
                true => Verdict::Go,
                false => Verdict::Differ,
            };
        }
        let mut b = BytesMut::new();
        let mut parse = Entry::forward(f::PARSE).with_stmt(def.clone());
        parse.mode = Mode::SwallowOk;
        match held {
            Held::Stale => {
                parse.parses_unnamed = true;
                // (Session mode: as `run_reparsed` parses it.)
                let msg = if owns {
                    def.parse_as_told(&mut b, b"")
                } else {
                    def.parse_as(&mut b, b"")
                };
                a.send_ext(parse, msg);
                a.set_unnamed_current(false);
                protocol::describe(&mut b, b'S', b"");
                let mut e = Entry::swallow(f::DESCRIBE).with_stmt(def.clone());
                e.verifies_unnamed = true;
                a.send_ext(e, b.split().freeze());
            }
            held => {
                if held == Held::Missing {
                    a.note_prepared(def.clone());
                    a.send_ext(parse, def.parse_message(&mut b));
                }
                protocol::describe(&mut b, b'S', def.server_name.as_bytes());
                a.send_ext(
                    Entry::swallow(f::DESCRIBE).with_stmt(def.clone()),
                    b.split().freeze(),
                );
            }
        }
        protocol::flush(&mut b);
        a.send_flush(b.freeze());
        if held != Held::Ready {
            self.counters.server_parse();
        }
        Verdict::Wait
    }

    /// Make the server raise `e` in an extended batch: the client sees the error
    /// where its message stood, and Postgres skips to Sync and fails the
    /// transaction exactly as for its own errors.
    pub(super) fn inject_error_ext(&mut self, e: &PgError) {
        let Some(sql) = raise_sql(e.code, &e.message) else {
            return;
        };
        let Some(a) = self.att.as_mut() else { return };
        if a.skipping() {
            // The server already skips to Sync: it would not answer this either.
            return;
        }
        let mut b = BytesMut::new();
        protocol::parse(&mut b, b"", sql.as_bytes(), &[0, 0]);
        // Its success is swallowed; its failure (a transaction the server
        // already failed) is the client's error, which Postgres would give.
        let mut p = Entry::swallow(tag::frontend::PARSE);
        p.mode = Mode::SwallowOk;
        let mut instead = BytesMut::new();
        protocol::pg_error(&mut instead, tag::backend::ERROR_RESPONSE, e);
        p.instead = Some(Box::new(instead.freeze()));
        a.send_ext(p, b.split().freeze());
        protocol::bind_plain(&mut b, b"");
        a.send_ext(Entry::swallow(tag::frontend::BIND), b.split().freeze());
        protocol::execute(&mut b, b"", 0);
        let mut x = Entry::forward(tag::frontend::EXECUTE);
        x.mode = Mode::SwallowOk;
        x.raised = true;
        a.send_ext(x, b.freeze());
        a.set_unnamed_current(false);
    }

    /// Same for a simple Query: the server raises the error, then ReadyForQuery.
    pub(super) fn inject_error_simple(&mut self, e: &PgError) {
        let Some(sql) = raise_sql(e.code, &e.message) else {
            return;
        };
        let Some(a) = self.att.as_mut() else { return };
        let mut b = BytesMut::new();
        protocol::query(&mut b, &sql);
        self.counters.query_sent(a.ready_owed());
        a.set_unnamed_current(false);
        let mut x = Entry::forward(tag::frontend::QUERY);
        x.raised = true;
        a.send_simple(x, b.freeze());
    }
}

/// SQL that makes the server raise an error with our SQLSTATE and message (so the
/// transaction state on the server is exactly that of a Postgres error).
pub(super) fn raise_sql(code: &str, msg: &str) -> Option<String> {
    if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // The message goes inside a dollar-quoted body as an E'' literal, its
    // `$` written `\x24`: no `$` in the body can end it, and the client
    // reads the message as sent (probe AD: a fullwidth `＄` stood for it,
    // so `$1` in a refusal read otherwise inside a transaction).
    let mut lit = String::new();
    crate::server::push_literal(&mut lit, msg);
    let lit = lit.replace('$', "\\x24");
    Some(format!(
        "DO $shardbouncer$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {lit}; END$shardbouncer$"
    ))
}

/// What [`Core::check_results`] says of a Bind or Describe.
pub(super) enum Verdict {
    /// It may go to the server.
    Go,
    /// It waits for the server to describe its copy.
    Wait,
    /// The server's copy has other result types than the client was told.
    Differ,
}

/// The error Postgres gives a statement whose result changed under it.
fn changed_result() -> PgError {
    PgError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "cached plan must not change result type",
    )
}

/// The types (results or parameters) of a statement's text as described
/// afresh on server `id` (see [`StmtDef::fresh_results`]).
fn fresh_on(
    fresh: &std::sync::Mutex<Option<(u64, prepared::Results)>>,
    id: u64,
) -> Option<prepared::Results> {
    match &*fresh.lock().unwrap_or_else(|p| p.into_inner()) {
        Some((on, r)) if *on == id => Some(r.clone()),
        _ => None,
    }
}

/// A statement name as written in SQL, as Postgres names it: quoted names kept
/// exactly, unquoted ones folded to lower case.
/// What a `DEALLOCATE [PREPARE] name | ALL` deallocates.
pub(super) enum Deallocated {
    All,
    One(String),
}

/// The target of the `DEALLOCATE` statement `sql` (`None`: not one).
pub(super) fn deallocated(sql: &[u8]) -> Option<Deallocated> {
    let text = String::from_utf8_lossy(sql);
    let mut words = text
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .peekable();
    if !words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("deallocate"))
    {
        return None;
    }
    if words
        .peek()
        .is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
    {
        words.next();
    }
    let name = words.next().unwrap_or("");
    // One plain or quoted identifier and nothing after it; anything else
    // (a comment, a name past ASCII) is not read (`None`).
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    let quoted = name.len() >= 2
        && name.starts_with('"')
        && name.ends_with('"')
        && !name[1..name.len() - 1].replace("\"\"", "").contains('"');
    if words.next().is_some() || !(plain || quoted) {
        return None;
    }
    Some(if name.eq_ignore_ascii_case("all") {
        Deallocated::All
    } else {
        Deallocated::One(ident_name(name))
    })
}

fn ident_name(word: &str) -> String {
    if word.len() >= 2 && word.starts_with('"') && word.ends_with('"') {
        word[1..word.len() - 1].replace("\"\"", "\"")
    } else {
        word.to_ascii_lowercase()
    }
}

/// A Bind (`body`) of a statement with facts `f`: its effects apply to the
/// server, and the custom settings it sets are read back by name: the
/// literal ones, and those a `set_config($n, ..)` takes from this Bind. When
/// every name is known so, nothing needs `RESET ALL`
/// ([`Effects::UNNAMED_SETTINGS`]); a name that is an expression, a value
/// that is NULL or not text, or a name past the cap keeps it.
fn note_bound(
    att: Option<&mut super::attachment::Attachment>,
    settings: &mut super::settings::Settings,
    f: &Facts,
    body: &[u8],
    lexing_unsure: bool,
) {
    let (mut effects, bound) = bound_names(f, body);
    if lexing_unsure {
        effects.add(Effects::DYNAMIC);
    }
    if !settings.note_custom(&f.custom_settings) || !settings.note_custom(&bound) {
        effects.add(Effects::UNNAMED_SETTINGS);
    }
    if let Some(a) = att {
        a.add_effects(effects);
        if f.rollback_to || a.has_rollback_to_portals() {
            if let Some(b) = Bind::parse(body) {
                a.bound_rollback_to(b.portal, f.rollback_to);
            }
        }
        // (The portal's name is looked at only around DISCARD ALL and
        // DEALLOCATE ALL: no work per ordinary Bind.)
        if f.drops_statements || a.has_dropping_portal() {
            if let Some(b) = Bind::parse(body) {
                a.bound_portal(b.portal, f.drops_statements);
            }
        }
        if f.resets_all || a.has_resetting_portal() {
            if let Some(b) = Bind::parse(body) {
                a.bound_resetting(b.portal, f.resets_all);
            }
        }
    }
}

/// The statement's effects, and the custom setting names this Bind gives
/// its `set_config($n, ..)` calls (none, and no allocation, for most).
fn bound_names(f: &Facts, body: &[u8]) -> (Effects, Vec<String>) {
    let mut names = Vec::new();
    if f.setting_params.is_empty() || f.setting_exprs {
        return (f.effects, names);
    }
    let Some(bind) = Bind::parse(body) else {
        return (f.effects, names);
    };
    let mut found = 0;
    let mut readable = true;
    crate::router::bind::ParamValues::each(&bind, &mut |i, v| {
        let n = u16::try_from(i + 1).unwrap_or(u16::MAX);
        if !f.setting_params.contains(&n) {
            return;
        }
        found += 1;
        match v.and_then(|v| std::str::from_utf8(v).ok()) {
            // Read as Postgres may read the parameter only if its type cannot
            // change it: `bpchar` drops trailing spaces, `name` cuts at 63
            // bytes, and names past ASCII are converted (probe N: a name bound
            // with a trailing space set another setting than was read back).
            Some(name)
                if !name.is_empty()
                    && name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
                    && !name.eq_ignore_ascii_case("seed") =>
            {
                let name = name.to_ascii_lowercase();
                if name.contains('.') && !names.contains(&name) {
                    names.push(name);
                }
            }
            _ => readable = false,
        }
    });
    if readable && found == f.setting_params.len() {
        (f.effects.without(Effects::UNNAMED_SETTINGS), names)
    } else {
        (f.effects, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_sql_is_safe() {
        let s = raise_sql("0A000", "it's $x$ here \\").unwrap();
        // The dollar signs are escapes: the body holds none.
        assert!(s.contains("E'it''s \\x24x\\x24 here \\\\'"), "{s}");
        assert_eq!(s.matches('$').count(), 4, "{s}");
        assert!(raise_sql("0A0'0", "x").is_none());
    }
}
