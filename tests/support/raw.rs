//! A minimal blocking protocol client for tests that must control the exact
//! messages (named statements, pipelines, malformed frames). Trust auth only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One backend message: tag and body.
pub type Msg = (u8, Vec<u8>);

/// A raw frontend connection.
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
    out: Vec<u8>,
}

impl Raw {
    /// Connect and log in as `user` to `db` (the bouncer must use trust auth);
    /// reads up to the first ReadyForQuery.
    pub fn login(port: u16, user: &str, db: &str) -> Raw {
        Raw::login_with(port, user, db, &[])
    }

    /// Like [`Raw::login`], with extra startup parameters (e.g. `("tenant_id", "42")`
    /// or `("options", "-c tenant_id=42")`).
    pub fn login_with(port: u16, user: &str, db: &str, params: &[(&str, &str)]) -> Raw {
        let (r, msgs) = Raw::startup(port, user, db, params);
        assert!(
            msgs.iter().any(|(t, _)| *t == b'Z'),
            "login failed: {msgs:?}"
        );
        r
    }

    /// Send a startup packet and return what came back up to the first
    /// ReadyForQuery or error (ParameterStatus values, a refusal, ...).
    pub fn startup(port: u16, user: &str, db: &str, params: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw { s, out: Vec::new() };
        let mut body = 196608i32.to_be_bytes().to_vec();
        let extra = params.iter().flat_map(|(k, v)| [*k, *v]);
        for kv in ["user", user, "database", db].into_iter().chain(extra) {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut pkt = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&body);
        r.s.write_all(&pkt).unwrap();
        let mut msgs = Vec::new();
        // A refused login ends with an ErrorResponse and a closed socket.
        while let Some(m) = r.read_msg() {
            let done = m.0 == b'Z';
            msgs.push(m);
            if done {
                break;
            }
        }
        (r, msgs)
    }

    fn msg(&mut self, tag: u8, body: &[u8]) -> &mut Raw {
        self.out.push(tag);
        self.out
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.out.extend_from_slice(body);
        self
    }

    /// Parse(name, sql) with no declared types.
    pub fn parse(&mut self, name: &str, sql: &str) -> &mut Raw {
        let mut b = Vec::new();
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.push(0);
        b.extend_from_slice(&0i16.to_be_bytes());
        self.msg(b'P', &b)
    }

    /// Bind(unnamed portal, stmt) with text parameters.
    pub fn bind(&mut self, stmt: &str, params: &[&str]) -> &mut Raw {
        let mut b = vec![0u8];
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as i32).to_be_bytes());
            b.extend_from_slice(p.as_bytes());
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        self.msg(b'B', &b)
    }

    /// Parse(name, sql) declaring parameter type OIDs (0 = unspecified).
    pub fn parse_typed(&mut self, name: &str, sql: &str, types: &[u32]) -> &mut Raw {
        let mut b = Vec::new();
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.push(0);
        b.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        self.msg(b'P', &b)
    }

    /// Bind(unnamed portal, stmt) with raw parameter values (`None` = NULL), one
    /// format code per parameter (0 text, 1 binary), results in text.
    pub fn bind_raw(&mut self, stmt: &str, params: &[Option<&[u8]>], formats: &[i16]) -> &mut Raw {
        let mut b = vec![0u8];
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        self.msg(b'B', &b)
    }

    /// FunctionCall ('F'): call the function with OID `oid` with `args` (`None` =
    /// NULL), all in format `arg_format` (0 text, 1 binary); the result is asked
    /// for in `result_format`. The answer is a FunctionCallResponse ('V') or an
    /// ErrorResponse, then ReadyForQuery (see [`function_result`]).
    pub fn function_call(
        &mut self,
        oid: u32,
        args: &[Option<&[u8]>],
        arg_format: i16,
        result_format: i16,
    ) -> &mut Raw {
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&arg_format.to_be_bytes());
        b.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for a in args {
            match a {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&result_format.to_be_bytes());
        self.msg(b'F', &b)
    }

    /// Describe(statement).
    pub fn describe_stmt(&mut self, stmt: &str) -> &mut Raw {
        let mut b = vec![b'S'];
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        self.msg(b'D', &b)
    }

    /// Execute(unnamed portal, all rows).
    pub fn execute(&mut self) -> &mut Raw {
        self.msg(b'E', b"\0\0\0\0\0")
    }

    /// Bind statement `stmt`, with no parameters, into the named portal `portal`.
    pub fn bind_portal(&mut self, portal: &str, stmt: &str) -> &mut Raw {
        let mut b = portal.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        self.msg(b'B', &b)
    }

    /// Execute the named portal `portal`, all rows.
    pub fn execute_portal(&mut self, portal: &str) -> &mut Raw {
        let mut b = portal.as_bytes().to_vec();
        b.extend_from_slice(&[0, 0, 0, 0, 0]);
        self.msg(b'E', &b)
    }

    /// Close(statement).
    pub fn close_stmt(&mut self, stmt: &str) -> &mut Raw {
        let mut b = vec![b'S'];
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        self.msg(b'C', &b)
    }

    /// CopyData.
    pub fn copy_data(&mut self, data: &[u8]) -> &mut Raw {
        self.msg(b'd', data)
    }

    /// CopyDone.
    pub fn copy_done(&mut self) -> &mut Raw {
        self.msg(b'c', b"")
    }

    /// Describe of a portal.
    pub fn describe_portal(&mut self, portal: &str) -> &mut Raw {
        let mut b = vec![b'P'];
        b.extend_from_slice(portal.as_bytes());
        b.push(0);
        self.msg(b'D', &b)
    }

    /// CopyFail with `reason`.
    pub fn copy_fail(&mut self, reason: &str) -> &mut Raw {
        let mut b = reason.as_bytes().to_vec();
        b.push(0);
        self.msg(b'f', &b)
    }

    /// Flush.
    pub fn msg_flush(&mut self) -> &mut Raw {
        self.msg(b'H', b"")
    }

    /// Send what was built, then read until a message with tag `last` arrives.
    pub fn run_until(&mut self, last: u8) -> Vec<Msg> {
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).unwrap();
        let mut v = Vec::new();
        loop {
            let m = self.read_msg().expect("connection closed");
            let done = m.0 == last;
            v.push(m);
            if done {
                return v;
            }
        }
    }

    /// Take the messages built so far, unsent (to send them in pieces).
    pub fn take_built(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Sync.
    pub fn sync(&mut self) -> &mut Raw {
        self.msg(b'S', b"")
    }

    /// Terminate.
    pub fn terminate(&mut self) -> &mut Raw {
        self.msg(b'X', b"")
    }

    /// Send what was built, then read every message until the connection
    /// ends.
    pub fn send_and_read_to_end(&mut self) -> Vec<Msg> {
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).unwrap();
        std::iter::from_fn(|| self.read_msg()).collect()
    }

    /// Send what was built, reading nothing (the connection may be closing).
    pub fn send(&mut self) {
        let out = std::mem::take(&mut self.out);
        let _ = self.s.write_all(&out);
    }

    /// Simple Query.
    pub fn query(&mut self, sql: &str) -> &mut Raw {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        self.msg(b'Q', &b)
    }

    /// Send what was built, then read until `n` ReadyForQuery messages arrived.
    pub fn run(&mut self, n: usize) -> Vec<Msg> {
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).unwrap();
        let mut all = Vec::new();
        for _ in 0..n {
            all.extend(self.read_until_ready());
        }
        all
    }

    /// Read messages up to and including the next ReadyForQuery.
    pub fn read_until_ready(&mut self) -> Vec<Msg> {
        let mut v = Vec::new();
        loop {
            let Some(m) = self.read_msg() else {
                panic!("connection closed; got so far: {v:?}")
            };
            let done = m.0 == b'Z';
            v.push(m);
            if done {
                return v;
            }
        }
    }

    /// One message, or `None` at EOF.
    pub fn read_msg(&mut self) -> Option<Msg> {
        read_msg(&mut self.s)
    }
}

/// Write `bytes` to `s` (from a thread: the peer may stop reading) while
/// reading everything it sends until it closes: the messages, and how the
/// stream ended (`Err` for a reset).
pub fn send_and_read_to_close(
    s: &mut TcpStream,
    bytes: Vec<u8>,
) -> (Vec<Msg>, std::io::Result<()>) {
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got).map(|_| ());
    writer.join().unwrap();
    let mut rest = &got[..];
    (std::iter::from_fn(|| read_msg(&mut rest)).collect(), end)
}

/// Read one backend message from any stream, or `None` at EOF.
pub fn read_msg(s: &mut impl Read) -> Option<Msg> {
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr).ok()?;
    let len = i32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut body).ok()?;
    Some((hdr[0], body))
}

/// Tags of messages, as a string (e.g. "12CZ").
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// SQLSTATE of the first ErrorResponse, if any.
pub fn first_error(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| shardbouncer::protocol::parse_error(b).code)
}

/// Text values of DataRows (first column).
pub fn first_column(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .filter_map(|(_, b)| {
            shardbouncer::protocol::parse_data_row(b)
                .into_iter()
                .next()
                .flatten()
        })
        .collect()
}

/// Tags of the CommandComplete messages (e.g. `["BEGIN", "INSERT 0 1", "ROLLBACK"]`).
pub fn command_tags(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'C')
        .map(|(_, b)| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        })
        .collect()
}

/// SQLSTATEs of every ErrorResponse, in order.
pub fn error_codes(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| shardbouncer::protocol::parse_error(b).code)
        .collect()
}

/// Transaction status of the last ReadyForQuery (`'I'`, `'T'` or `'E'`).
pub fn last_status(msgs: &[Msg]) -> Option<char> {
    msgs.iter()
        .rev()
        .find(|(t, _)| *t == b'Z')
        .and_then(|(_, b)| b.first().map(|&c| c as char))
}

/// The value of the first FunctionCallResponse ('V'): `Some(None)` for NULL,
/// `None` when there was none.
pub fn function_result(msgs: &[Msg]) -> Option<Option<Vec<u8>>> {
    let (_, b) = msgs.iter().find(|(t, _)| *t == b'V')?;
    let len = i32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    if len < 0 {
        return Some(None);
    }
    Some(Some(b.get(4..4 + len as usize)?.to_vec()))
}
