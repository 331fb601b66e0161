//! Stateful fuzzing of the session core: two clients share a pool of scripted
//! Postgres servers (one pool per shard); the fuzzer picks who sends which
//! message and when servers answer. No sockets.
//!
//! Invariants, checked after every step and at quiescence:
//! * a client never receives more ReadyForQuery messages than it asked for, and
//!   once every server has answered, it has received exactly one per request;
//! * a server is released only at ReadyForQuery 'I' (idle, nothing unread);
//! * no byte of one client's server traffic reaches the other client: every
//!   DataRow a client receives names one of its own statements (the scripted
//!   server puts the statement's text in its rows);
//! * after a ReadyForQuery, the client's status is what that message said;
//! * responses come in request order: a row belongs to the oldest request not
//!   yet answered by its ReadyForQuery (a Query's statements, or the statements
//!   an extended batch parses or binds);
//! * with tenant pauses on (bit 1 of the first byte: ops 60..63 pause or resume
//!   tenant 1 or 2, as console PAUSE/RESUME TENANT), work held for a paused
//!   tenant holds no server, and every invariant above still holds once the
//!   pauses end;
//! * with parking on (bit 3 of the first byte), each core is parked and woken
//!   whenever it can be, as the driver parks an idle session: never with a
//!   server attached or work held, and every invariant above still holds;
//! * with spilling on (bit 2 of the first byte), every message arrives in three
//!   pieces and any message over 8 bytes is spilled to a spool (a Vec here, a
//!   file in the driver) while it arrives: every invariant above still holds,
//!   and a spool is read back only whole;
//! * with slicing on (bit 4 of the first byte), a batch goes to routing at any
//!   Execute once it holds two messages, as a long batch does at 1,024 (as if
//!   the client had sent a Flush there): every invariant above still holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardbouncer::app::Snapshot;
use shardbouncer::client::session::fake::{cstr, frame, FakeServer};
use shardbouncer::client::session::{Core, Need};
use shardbouncer::config::Config;
use shardbouncer::protocol::{tag, TxStatus};
use shardbouncer::router::TenantKey;
use shardbouncer::server::{ParamSet, ServerState};
use std::collections::HashSet;
use std::net::SocketAddr;

const CONFIG: &str = r#"
[databases.app]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 }, { name = "s1", host = "127.0.0.1", port = 2 } ]
[databases.app.routing]
no_tenant = "default"
default_shard = "s0"
[databases.plain]
shards = [ { name = "s0", host = "127.0.0.1", port = 1 } ]
"#;

const SQL: &[&str] = &[
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT fail",
    "SET x.y = 1",
    "SET LOCAL statement_timeout = 5",
    "SELECT * FROM t WHERE tenant_id = 1",
    "SELECT * FROM t WHERE tenant_id = 2",
    "SELECT * FROM t WHERE tenant_id = $1",
    "SET tenant_id = 1",
    "SET tenant_id = 2",
    "COPY t FROM STDIN",
    "DISCARD ALL",
    "DEALLOCATE ALL",
    "/* tenant_id=3 */ SELECT 2",
    "SHOW work_mem",
    "SAVEPOINT a",
    "",
    "SELECT 3; SELECT 4",
];

/// A server in a pool: its state (away while a client holds it) and its model.
struct Slot {
    state: Option<Box<ServerState>>,
    model: FakeServer,
    holder: Option<usize>,
}

struct Client {
    core: Core,
    /// Pool slot attached to this client: (shard, index).
    attached: Option<(usize, usize)>,
    requests: usize,
    readies: usize,
    last_status: Option<TxStatus>,
    /// Statement texts this client sent.
    sent: HashSet<Vec<u8>>,
    /// Per request not yet answered, oldest first: the texts whose rows it may get.
    pending: std::collections::VecDeque<HashSet<Vec<u8>>>,
    /// The same for the extended batch not yet ended by Sync.
    open: HashSet<Vec<u8>>,
    /// The client's statement names and the texts each may hold (a Parse of a
    /// name in use fails, unless a DEALLOCATE ALL or DISCARD ALL went first).
    names: std::collections::HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    /// Texts its unnamed statement may hold: every unnamed Parse since the last
    /// simple Query, since a Parse that an earlier error made Postgres skip
    /// leaves the one before in place.
    unnamed: HashSet<Vec<u8>>,
    /// Portal names and the texts each may run (a portal outlives its batch
    /// inside a transaction, so an Execute alone may produce its rows).
    portals: std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>>,
    closed: bool,
    /// Extended messages sent since the last Sync.
    ext_open: bool,
    /// A COPY was asked for and not ended by CopyDone/CopyFail.
    copying: bool,
    /// The client broke the protocol's order (a Query inside an unfinished
    /// extended batch): Postgres may never answer it, so neither need we.
    ill_formed: bool,
    /// Its work waits for this tenant's pause to end.
    held: Option<TenantKey>,
    /// What the core spilled of the message arriving (the driver's spool file).
    spool: Vec<u8>,
}

struct World {
    clients: Vec<Client>,
    pools: Vec<Vec<Slot>>,
    gate: std::sync::Arc<shardbouncer::app::gate::TenantGate>,
    /// Messages arrive in pieces (and large ones are spilled).
    pieces: bool,
    /// Cores are parked and woken whenever they can be.
    park: bool,
}

impl World {
    fn serve(&mut self, c: usize, mut need: Need) {
        loop {
            need = match need {
                Need::Io => break,
                Need::Close(_) => {
                    self.clients[c].closed = true;
                    break;
                }
                Need::Attach(shard) => {
                    assert!(self.clients[c].attached.is_none(), "attach while attached");
                    let pool = &mut self.pools[shard];
                    let i = match pool.iter().position(|s| s.holder.is_none()) {
                        Some(i) => i,
                        None => {
                            pool.push(Slot {
                                state: Some(Box::new(ServerState::new(
                                    SocketAddr::from(([127, 0, 0, 1], 1)),
                                    None,
                                ))),
                                model: FakeServer::default(),
                                holder: None,
                            });
                            pool.len() - 1
                        }
                    };
                    let mut st = pool[i].state.take().expect("idle server has its state");
                    pool[i].holder = Some(c);
                    self.clients[c].attached = Some((shard, i));
                    let _ = self.clients[c].core.prepare_attach(&mut st);
                    self.clients[c].core.attached(shard, st)
                }
                Need::Release(r) => {
                    let (shard, i) = self.clients[c]
                        .attached
                        .take()
                        .expect("release of no server");
                    let slot = &mut self.pools[shard][i];
                    assert_eq!(
                        slot.model.status(),
                        TxStatus::Idle,
                        "released inside a transaction"
                    );
                    assert!(r.state.rbuf.is_empty(), "released with unread bytes");
                    if r.state.broken {
                        // The pool closes it: a new one takes its place.
                        slot.state = Some(Box::new(ServerState::new(
                            SocketAddr::from(([127, 0, 0, 1], 1)),
                            None,
                        )));
                        slot.model = FakeServer::default();
                    } else {
                        slot.state = Some(r.state);
                    }
                    slot.holder = None;
                    self.clients[c].core.released(Ok(None))
                }
                Need::Spill(chunk) => {
                    assert!(!chunk.is_empty(), "an empty spill");
                    self.clients[c].spool.extend_from_slice(&chunk);
                    self.clients[c].core.client_data()
                }
                Need::Unspill(n) => {
                    let spool = std::mem::take(&mut self.clients[c].spool);
                    assert_eq!(spool.len(), n, "unspill of what was not spilled");
                    self.clients[c]
                        .core
                        .unspilled(bytes::BytesMut::from(&spool[..]))
                }
                Need::ServerGone => {
                    let (shard, i) = self.clients[c]
                        .attached
                        .take()
                        .expect("server gone of no server");
                    let (state, _) = self.clients[c].core.server_lost();
                    assert!(state.is_some_and(|s| s.broken), "a gone server kept");
                    // The backend is gone: a new one takes its place.
                    self.pools[shard][i] = Slot {
                        state: Some(Box::new(ServerState::new(
                            SocketAddr::from(([127, 0, 0, 1], 1)),
                            None,
                        ))),
                        model: FakeServer::default(),
                        holder: None,
                    };
                    self.clients[c].closed = true;
                    break;
                }
                Need::Paused(key) => {
                    assert!(self.clients[c].attached.is_none(), "held with a server");
                    assert!(self.gate.is_paused(&key), "held for a tenant not paused");
                    self.clients[c].held = Some(key);
                    break;
                }
            };
        }
        self.collect(c);
        if self.park {
            self.park(c);
        }
    }

    /// Park client `c`'s core if it can be parked, and wake it at once (the
    /// driver parks an idle session between transactions).
    fn park(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.core.trim_idle();
        let stand_in = Core::new(
            client.core.db().clone(),
            0,
            0,
            ParamSet::default(),
            ParamSet::default(),
            None,
            self.gate.clone(),
        );
        let core = std::mem::replace(&mut client.core, stand_in);
        client.core = match core.park() {
            Ok(parked) => {
                assert!(
                    client.attached.is_none(),
                    "client {c} parked with a server attached"
                );
                assert!(
                    client.held.is_none(),
                    "client {c} parked with work held for a pause"
                );
                Core::unpark(parked, bytes::BytesMut::new(), self.gate.clone())
            }
            Err(core) => core,
        };
    }

    /// Check what client `c` received.
    fn collect(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let out = client.core.to_client().take_all();
        let mut b = &out[..];
        while b.len() >= 5 {
            let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            let body = &b[5..1 + len];
            match b[0] {
                tag::backend::READY_FOR_QUERY => {
                    client.readies += 1;
                    client.pending.pop_front();
                    client.last_status = Some(TxStatus::from_byte(body[0]));
                }
                tag::backend::DATA_ROW => {
                    let v = &body[6..];
                    assert!(
                        client.sent.contains(v),
                        "client {c} got a row of a statement it did not send: {:?}",
                        String::from_utf8_lossy(v)
                    );
                    if !client.ill_formed && !client.copying {
                        let oldest = client.pending.front().unwrap_or(&client.open);
                        assert!(
                            oldest.contains(v),
                            "client {c}: a row of {:?} before the answer to an earlier request",
                            String::from_utf8_lossy(v)
                        );
                    }
                }
                _ => {}
            }
            b = &b[1 + len..];
        }
        assert!(
            client.readies <= client.requests,
            "client {c}: {} ReadyForQuery for {} requests",
            client.readies,
            client.requests
        );
    }

    /// Console PAUSE TENANT / RESUME TENANT of tenant `t`.
    fn pause(&mut self, t: &str, on: bool) {
        let key = TenantKey::new(t.as_bytes()).expect("key");
        if on {
            self.gate.pause(key);
            return;
        }
        self.gate.resume(&key);
        for c in 0..self.clients.len() {
            if self.clients[c].held == Some(key) && !self.clients[c].closed {
                self.clients[c].held = None;
                let need = self.clients[c].core.resumed(None);
                self.serve(c, need);
            }
        }
    }

    /// The attached server of client `c` answers what was sent to it.
    fn server_turn(&mut self, c: usize) -> bool {
        let Some((shard, i)) = self.clients[c].attached else {
            return false;
        };
        let input = self.clients[c].core.take_to_server();
        if input.is_empty() {
            return false;
        }
        let answer = self.pools[shard][i].model.feed(&input);
        self.clients[c].core.server_bytes(&answer);
        let need = self.clients[c].core.server_data();
        self.serve(c, need);
        true
    }

    fn send(&mut self, c: usize, msg: Vec<u8>) {
        let client = &mut self.clients[c];
        if client.closed {
            return;
        }
        let t = msg[0];
        // During COPY FROM STDIN only CopyData/CopyDone/CopyFail (and Sync/Flush,
        // ignored) are valid.
        if client.copying && !matches!(t, b'd' | b'c' | b'f' | b'S' | b'H') {
            client.ill_formed = true;
        }
        if matches!(t, b'c' | b'f') {
            client.copying = false;
        }
        if (t == b'Q' || t == b'P') && msg.windows(4).any(|w| w == b"COPY") {
            client.copying = true;
            // Whether a Sync is ignored depends on when the copy really starts;
            // such sessions keep only the upper bound on ReadyForQuery.
            client.ill_formed = true;
        }
        match t {
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => client.ext_open = true,
            b'S' => client.ext_open = false,
            b'Q' | b'F' if client.ext_open => client.ill_formed = true,
            _ => {}
        }
        if matches!(t, b'Q' | b'F' | b'S') {
            client.requests += 1;
        }
        if t == b'Q' || t == b'P' {
            let body = &msg[5..];
            let text = if t == b'Q' {
                cstr(body).0
            } else {
                cstr(cstr(body).1).0
            };
            let mut texts = HashSet::new();
            texts.insert(text.to_vec());
            texts.insert(String::from_utf8_lossy(text).trim().as_bytes().to_vec());
            for st in text.split(|&b| b == b';') {
                texts.insert(String::from_utf8_lossy(st).trim().as_bytes().to_vec());
            }
            client.sent.extend(texts.iter().cloned());
            if t == b'Q' {
                client.pending.push_back(texts);
                client.unnamed.clear();
            } else {
                let name = cstr(body).0;
                if name.is_empty() {
                    client.unnamed.insert(text.to_vec());
                } else {
                    client
                        .names
                        .entry(name.to_vec())
                        .or_default()
                        .insert(text.to_vec());
                }
                client.open.extend(texts);
            }
        }
        match t {
            b'F' => client.pending.push_back(HashSet::new()),
            b'B' => {
                let (portal, rest) = cstr(&msg[5..]);
                let stmt = cstr(rest).0;
                let texts: Vec<Vec<u8>> = if stmt.is_empty() {
                    client.unnamed.iter().cloned().collect()
                } else {
                    client
                        .names
                        .get(stmt)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .collect()
                };
                for text in &texts {
                    client
                        .open
                        .insert(String::from_utf8_lossy(text).trim().as_bytes().to_vec());
                    client.open.insert(text.clone());
                }
                client.portals.insert(portal.to_vec(), texts);
            }
            b'E' => {
                for text in client
                    .portals
                    .get(cstr(&msg[5..]).0)
                    .cloned()
                    .unwrap_or_default()
                {
                    client
                        .open
                        .insert(String::from_utf8_lossy(&text).trim().as_bytes().to_vec());
                    client.open.insert(text);
                }
            }
            b'S' => {
                let batch = std::mem::take(&mut client.open);
                client.pending.push_back(batch);
            }
            _ => {}
        }
        if !self.pieces {
            client.core.cbuf().extend_from_slice(&msg);
            let need = client.core.client_data();
            self.serve(c, need);
            return;
        }
        for piece in msg.chunks(msg.len().div_ceil(3)) {
            if self.clients[c].closed {
                return;
            }
            self.clients[c].core.cbuf().extend_from_slice(piece);
            let need = self.clients[c].core.client_data();
            self.serve(c, need);
        }
    }
}

fn message(sel: &[u8]) -> Vec<u8> {
    let pick = |i: usize| sel.get(i).copied().unwrap_or(0) as usize;
    let sql = SQL[pick(1) % SQL.len()];
    let name = ["", "s1", "s2"][pick(2) % 3];
    match pick(0) % 12 {
        0 | 1 => frame(b'Q', format!("{sql}\0").as_bytes()),
        2 => frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes()),
        3 => {
            let mut b = vec![0u8];
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(b"\0\0\0\0\x01\0\0\0\x01");
            b.push(b"12"[pick(3) % 2]);
            b.extend_from_slice(b"\0\0");
            frame(b'B', &b)
        }
        4 => frame(b'E', b"\0\0\0\0\0"),
        5 => frame(b'S', b""),
        6 => frame(b'H', b""),
        7 => frame(b'D', format!("S{name}\0").as_bytes()),
        8 => frame(b'C', format!("S{name}\0").as_bytes()),
        9 => frame(b'd', b"row\n"),
        10 => frame(b'c', b""),
        _ => frame(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let snap = Snapshot::build(Config::parse(CONFIG).expect("config"), 1).expect("snapshot");
    let db = snap
        .dbs
        .get(if first & 1 == 0 { "app" } else { "plain" })
        .expect("db")
        .clone();
    let shards = db.cfg.shards.len();
    let gate = std::sync::Arc::new(shardbouncer::app::gate::TenantGate::default());
    let mut w = World {
        clients: (0..2)
            .map(|i| {
                let mut core = Core::new(
                    db.clone(),
                    i as i32 + 1,
                    1 << 20,
                    ParamSet::default(),
                    ParamSet::default(),
                    None,
                    gate.clone(),
                );
                core.greeted(&ParamSet::default(), Default::default());
                Client {
                    core,
                    attached: None,
                    requests: 0,
                    readies: 0,
                    last_status: None,
                    sent: HashSet::new(),
                    pending: Default::default(),
                    open: HashSet::new(),
                    names: Default::default(),
                    unnamed: HashSet::new(),
                    portals: Default::default(),
                    closed: false,
                    ext_open: false,
                    copying: false,
                    ill_formed: false,
                    held: None,
                    spool: Vec::new(),
                }
            })
            .collect(),
        pools: (0..shards).map(|_| Vec::new()).collect(),
        gate: gate.clone(),
        pieces: first & 4 != 0,
        park: first & 8 != 0,
    };
    if w.pieces {
        for client in &mut w.clients {
            client.core.spill_above(8);
        }
    }
    if first & 16 != 0 {
        for client in &mut w.clients {
            client.core.slice_batches_at(2);
        }
    }
    let pauses = first & 2 != 0;
    // `SB_FUZZ_TRACE=1`: print each step (to read a crash's input).
    let trace = std::env::var_os("SB_FUZZ_TRACE").is_some();
    if trace {
        eprintln!("db {}, flags {first:#x}", db.name);
    }
    for op in ops.chunks(4) {
        let c = (op[0] >> 7) as usize;
        if pauses && (op[0] & 0x3f) >= 60 {
            w.pause(["1", "2"][(op[0] & 1) as usize], op[0] & 2 == 0);
            continue;
        }
        if op[0] & 0x40 != 0 {
            if trace {
                eprintln!("server turn for client {c}");
            }
            w.server_turn(c);
        } else {
            let m = message(&[
                op[0] & 0x3f,
                *op.get(1).unwrap_or(&0),
                *op.get(2).unwrap_or(&0),
                *op.get(3).unwrap_or(&0),
            ]);
            if trace {
                eprintln!("client {c} sends {:?}", String::from_utf8_lossy(&m));
            }
            w.send(c, m);
        }
    }
    // Every pause ends (held work goes on).
    w.pause("1", false);
    w.pause("2", false);
    // Quiescence: every server answers until nothing moves (each step moves at
    // least one message, so this ends).
    for _ in 0..100_000 {
        let mut moved = false;
        for c in 0..2 {
            moved |= w.server_turn(c);
            if !w.clients[c].closed {
                let need = w.clients[c].core.client_data();
                w.serve(c, need);
            }
        }
        if !moved {
            break;
        }
    }
    for (i, c) in w.clients.iter().enumerate() {
        let copying = c
            .attached
            .is_some_and(|(s, k)| w.pools[s][k].model.in_copy());
        if c.closed || copying || c.ill_formed || c.ext_open {
            continue;
        }
        assert!(
            c.spool.is_empty(),
            "client {i}: a whole message left in the spool"
        );
        assert_eq!(
            c.readies, c.requests,
            "client {i}: every request answered once everything settled"
        );
        if let Some(s) = c.last_status {
            assert_eq!(
                c.core.client_status(),
                s,
                "client {i}: status as last reported"
            );
        }
    }
});
