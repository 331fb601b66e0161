//! LISTEN and UNLISTEN through the extended protocol (asyncpg's
//! `add_listener` sends `LISTEN "channel"` with Parse/Describe/Sync, then
//! Bind/Execute/Sync). Outside session mode shardbouncer relays
//! notifications itself (`pool::listen`): a batch that does nothing but
//! prepare, describe, bind and run such statements is answered here, as a
//! simple Query LISTEN is, and its channels are registered with the relays
//! when it runs. Anything else in the batch keeps the old answer (0A000):
//! run on a pooled server, a LISTEN would listen for whoever gets the
//! server next.

use super::core::{Core, LocalPortal, Unit};
use crate::protocol::{self, tag, Bind, Parse, TxStatus};
use crate::router::{self, ListenOp};
use crate::sqlstate::{self, PgError};
use bytes::Bytes;
use std::collections::HashMap;

/// What one message of a LISTEN batch does.
enum Step {
    /// A Parse of a LISTEN/UNLISTEN text (named or unnamed).
    Parse,
    /// A Bind of such a statement into a portal.
    Bind(Vec<ListenOp>),
    /// A Describe of such a statement (`true`) or portal.
    Describe(bool),
    /// An Execute of a portal bound to such a statement.
    Execute,
    /// A Close of a statement (its name) or a portal.
    Close(Option<Bytes>),
    Sync,
    Flush,
}

impl Core {
    /// Answer `unit` here if it is a batch of LISTEN/UNLISTEN statements
    /// only (see the module doc); `None` when it is not, unanswered.
    pub(super) fn listen_batch(&mut self, unit: Unit) -> Option<Unit> {
        let Unit::Batch(msgs) = &unit else {
            return Some(unit);
        };
        // At a few loads for the batches of every other client.
        // Not one: a LISTEN portal bound earlier is left to `route_unit`,
        // which refuses a batch that runs it before binding it again.
        if !self.may_listen(msgs)
            || self.owns_server()
            || self.att.as_ref().is_some_and(|a| a.ext_open())
        {
            return Some(unit);
        }
        if self.in_copy_batch() {
            self.unit_error(unit, &super::routing::in_copy_batch_refusal());
            return None;
        }
        let Some(steps) = self.listen_steps(msgs) else {
            return Some(unit);
        };
        if self.client_status() == TxStatus::Failed {
            self.unit_error(unit, &super::routing::aborted());
            return None;
        }
        let Unit::Batch(msgs) = unit else {
            unreachable!("matched above")
        };
        let mut msgs = msgs.into_iter();
        let mut steps = steps.into_iter();
        while let (Some((t, frame)), Some(step)) = (msgs.next(), steps.next()) {
            match step {
                Step::Parse => {
                    if let Err(e) = self.register_listen(&frame) {
                        // It and the rest, skipped up to the Sync as
                        // Postgres skips them after an error.
                        let rest: Vec<_> = std::iter::once((t, frame)).chain(msgs).collect();
                        self.unit_error(Unit::Batch(rest), &e);
                        return None;
                    }
                    protocol::parse_complete(self.out.build());
                    self.reply(t);
                }
                Step::Bind(o) => {
                    let portal = Bind::parse(&frame[5..])
                        .map(|b| b.portal)
                        .unwrap_or_default();
                    self.local_portal = Some(Box::new(LocalPortal {
                        name: Bytes::copy_from_slice(portal),
                        listen: Some(o),
                        epoch: self.route.tx_ends(),
                    }));
                    protocol::bind_complete(self.out.build());
                    self.reply(t);
                }
                Step::Describe(statement) => {
                    if statement {
                        protocol::parameter_description(self.out.build(), &[]);
                    }
                    protocol::no_data(self.out.build());
                    self.reply(t);
                }
                Step::Execute => {
                    let portal = super::frames::execute_portal(&frame[5..]);
                    let ops = match &self.local_portal {
                        Some(p) if p.name == portal => p.listen.clone().unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    self.answer_listen_ops(ops);
                    self.reply(tag::frontend::EXECUTE);
                }
                Step::Close(statement) => {
                    if let Some(name) = statement {
                        self.stmts.remove(&name);
                    }
                    protocol::close_complete(self.out.build());
                    self.reply(t);
                }
                Step::Sync => self.answer_sync(),
                Step::Flush => {}
            }
        }
        None
    }

    /// Whether `msgs` may be a LISTEN batch: a LISTEN portal or statement of
    /// the client's is known, or a Parse's text begins with the word.
    fn may_listen(&self, msgs: &[(u8, Bytes)]) -> bool {
        self.local_portal
            .as_ref()
            .is_some_and(|p| p.listen.is_some())
            || self.stmts.any_listen()
            || msgs.iter().any(|(t, frame)| {
                *t == tag::frontend::PARSE && {
                    let body = &frame[5..];
                    // The text follows the name (most often empty).
                    let at = match body.first() {
                        Some(0) => Some(1),
                        _ => memchr::memchr(0, body).map(|n| n + 1),
                    };
                    at.is_some_and(|at| starts_with_listen(&body[at..]))
                }
            })
    }

    /// The steps of `msgs` if it is a LISTEN batch.
    fn listen_steps(&self, msgs: &[(u8, Bytes)]) -> Option<Vec<Step>> {
        use tag::frontend as f;
        let std = self.settings.std_strings();
        // Statements and portals of LISTEN/UNLISTEN texts this batch makes.
        let mut statements: HashMap<&[u8], Vec<ListenOp>> = HashMap::new();
        let mut portals: Vec<&[u8]> = Vec::new();
        // One bound in an earlier unit (a client that sends each message on
        // its own, as the unrouted path passes them).
        if let Some(p) = self.local_portal.as_ref().filter(|p| p.listen.is_some()) {
            portals.push(&p.name);
        }
        let known = |statements: &HashMap<&[u8], Vec<ListenOp>>, name: &[u8]| {
            if let Some(o) = statements.get(name) {
                return Some(o.clone());
            }
            // The facts found at its Parse first: no text is lexed again for
            // the statements of every other batch.
            let text = match name.is_empty() {
                true => {
                    self.stmts.unnamed().filter(|(f, _)| f.has_listen())?;
                    self.stmts.unnamed_text()?
                }
                false => {
                    let def = self.stmts.get(name).filter(|d| d.facts.has_listen())?;
                    def.query.clone()
                }
            };
            listen_text(&text, std)
        };
        // Allocated only once the first message is one of such a batch's.
        let mut steps = Vec::new();
        let mut listens = false;
        for (t, frame) in msgs {
            let body = &frame[5..];
            let step = match *t {
                f::PARSE => {
                    let p = Parse::parse(body)?;
                    // A cheap look first: every batch's Parse comes here.
                    if !starts_with_listen(p.query) {
                        return None;
                    }
                    statements.insert(p.name, listen_text(p.query, std)?);
                    Step::Parse
                }
                f::BIND => {
                    let b = Bind::parse(body)?;
                    let ops = known(&statements, b.statement)?;
                    portals.push(b.portal);
                    Step::Bind(ops)
                }
                f::DESCRIBE => match body.first() {
                    Some(b'S') => {
                        let name = super::frames::describe_statement_name(body)?;
                        known(&statements, name)?;
                        Step::Describe(true)
                    }
                    _ => {
                        let (name, _) = protocol::cstr(body.get(1..)?)?;
                        portals.contains(&name).then_some(Step::Describe(false))?
                    }
                },
                f::EXECUTE => {
                    let portal = super::frames::execute_portal(body);
                    portals.contains(&portal).then_some(Step::Execute)?
                }
                f::CLOSE => match body.first() {
                    Some(b'S') => {
                        let name = super::frames::describe_statement_name(body)?;
                        known(&statements, name)?;
                        Step::Close((!name.is_empty()).then(|| Bytes::copy_from_slice(name)))
                    }
                    _ => Step::Close(None),
                },
                f::SYNC => Step::Sync,
                f::FLUSH => Step::Flush,
                _ => return None,
            };
            // A Sync or Flush alone is not a LISTEN batch.
            listens |= !matches!(step, Step::Sync | Step::Flush);
            steps.push(step);
        }
        listens.then_some(steps)
    }

    /// Record the client's Parse of a LISTEN/UNLISTEN text as its statement.
    fn register_listen(&mut self, frame: &Bytes) -> Result<(), PgError> {
        let p = Parse::parse(&frame[5..])
            .ok_or_else(|| PgError::new(sqlstate::PROTOCOL_VIOLATION, "malformed Parse message"))?;
        let facts = self.parse_facts(p.query, None);
        self.counters.client_parse();
        if !p.name.is_empty() {
            return self.register_statement(&p, facts).map(|_| ());
        }
        let kept = Bytes::copy_from_slice(frame);
        let at = p.param_types.as_ptr() as usize - frame.as_ptr() as usize;
        let declared = kept.slice(at..at + p.param_types.len());
        self.stmts.set_unnamed(facts, kept, declared)?;
        if let Some(a) = self.att.as_mut() {
            // The server's unnamed statement is not the client's now.
            a.set_unnamed_current(false);
        }
        Ok(())
    }
}

/// Whether `text` begins with LISTEN or UNLISTEN (after blanks): a look at
/// its first bytes, for every Parse (one behind a comment keeps 0A000).
fn starts_with_listen(text: &[u8]) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let word = |w: &[u8]| {
        text.get(start..start + w.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(w))
    };
    word(b"listen") || word(b"unlisten")
}

/// The LISTEN/UNLISTEN operation of `text` if it is one such statement (a
/// prepared statement is one statement: Postgres refuses more).
fn listen_text(text: &[u8], std: bool) -> Option<Vec<ListenOp>> {
    let ops = router::listen_ops(text, std)?;
    (ops.len() == 1).then_some(ops)
}
