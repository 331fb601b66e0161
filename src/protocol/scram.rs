//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it. Pure, no I/O.
//!
//! Two state machines live here:
//!
//! * [`ScramServer`]: shardbouncer authenticating a connecting client against a
//!   stored [`ScramVerifier`].
//! * [`ScramClient`]: shardbouncer logging in to a PostgreSQL server, either with a
//!   plaintext password or (for pass-through) with the `ClientKey`/`ServerKey` pair
//!   recovered from a client's earlier exchange.
//!
//! Every function takes untrusted bytes and returns a `Result`; nothing panics on
//! any input. Secrets never appear in error messages or `Debug` output of the
//! state machines.
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not supported: clients may send the
//! gs2 flags `n` or `y`, and `p=...` is rejected with [`ScramError::Unsupported`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of SCRAM-SHA-256 keys, signatures and proofs.
pub const SCRAM_KEY_LEN: usize = 32;

/// Name of the SASL mechanism implemented here, as sent in
/// `AuthenticationSASL` / `SASLInitialResponse`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Default upper bound on the iteration count a [`ScramClient`] accepts from a
/// server (guards against a hostile server making us burn CPU).
pub const DEFAULT_MAX_ITERATIONS: u32 = 10_000_000;

/// Iteration count PostgreSQL uses by default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Longest `e=` text from a server we keep in [`ScramError::ServerError`].
const MAX_SERVER_ERROR_LEN: usize = 256;

/// Error in a SCRAM exchange; `Display` gives a human-readable reason (never
/// includes secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The peer's message does not follow the SCRAM grammar; the string says what
    /// was wrong.
    Malformed(&'static str),
    /// The client's proof did not match the stored verifier (wrong password).
    BadProof,
    /// The peer asked for a feature we do not implement (channel binding,
    /// authorization identity, mandatory extensions, absurd iteration counts).
    Unsupported(&'static str),
    /// The nonce in a later message does not match the one negotiated earlier.
    NonceMismatch,
    /// The channel-binding echo (`c=`) in client-final does not match the gs2
    /// header sent in client-first.
    ChannelBindingMismatch,
    /// The server's signature (`v=`) did not verify: the server does not know
    /// the password, or something is tampering with the exchange.
    BadServerSignature,
    /// The server reported an error in server-final (`e=...`); the string is the
    /// server's (sanitised, truncated) error value.
    ServerError(String),
    /// A method was called at the wrong point of the exchange (out of order, or
    /// after the exchange already failed or finished).
    InvalidState(&'static str),
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::Malformed(why) => write!(f, "malformed SCRAM message: {why}"),
            ScramError::BadProof => f.write_str("SCRAM authentication failed: invalid proof"),
            ScramError::Unsupported(what) => write!(f, "unsupported SCRAM feature: {what}"),
            ScramError::NonceMismatch => f.write_str("SCRAM nonce mismatch"),
            ScramError::ChannelBindingMismatch => {
                f.write_str("SCRAM channel binding data does not match")
            }
            ScramError::BadServerSignature => {
                f.write_str("SCRAM server signature is invalid (server failed to authenticate)")
            }
            ScramError::ServerError(e) => write!(f, "SCRAM server error: {e}"),
            ScramError::InvalidState(what) => write!(f, "SCRAM exchange in wrong state: {what}"),
        }
    }
}

impl std::error::Error for ScramError {}

// ---------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------

/// HMAC-SHA-256 keyed with a 32-byte key. A key shorter than the 64-byte block is
/// zero-padded by HMAC itself, so building the padded key here is exactly
/// equivalent and avoids the (never-failing) `new_from_slice` `Result`.
fn hmac32(key: &[u8; SCRAM_KEY_LEN], parts: &[&[u8]]) -> [u8; SCRAM_KEY_LEN] {
    let mut block = [0u8; 64];
    block[..SCRAM_KEY_LEN].copy_from_slice(key);
    let mut mac = <HmacSha256 as Mac>::new(&block.into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; SCRAM_KEY_LEN] {
    Sha256::digest(data).into()
}

fn xor32(a: &[u8; SCRAM_KEY_LEN], b: &[u8; SCRAM_KEY_LEN]) -> [u8; SCRAM_KEY_LEN] {
    let mut out = [0u8; SCRAM_KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// `Hi()` of RFC 5802, i.e. PBKDF2-HMAC-SHA-256 with a 32-byte output.
/// An iteration count of 0 is treated as 1.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; SCRAM_KEY_LEN] {
    // PBKDF2 is deliberately slow (4096 HMAC rounds) and the same (password, salt,
    // iterations) recurs for every login of a user and every server connection of a
    // pool, so results are memoized in a small bounded cache keyed by a digest of the
    // inputs (the password itself is not kept as a key).
    use sha2::Digest;
    type Cache = std::sync::Mutex<std::collections::HashMap<[u8; 32], [u8; SCRAM_KEY_LEN]>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let mut h = Sha256::new();
    h.update((password.len() as u64).to_be_bytes());
    h.update(password);
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(iterations.to_be_bytes());
    let key: [u8; 32] = h.finalize().into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return v;
    }
    let mut out = [0u8; SCRAM_KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut out);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(key, out);
    }
    out
}

fn client_key_from_salted(salted: &[u8; SCRAM_KEY_LEN]) -> [u8; SCRAM_KEY_LEN] {
    hmac32(salted, &[b"Client Key"])
}

fn server_key_from_salted(salted: &[u8; SCRAM_KEY_LEN]) -> [u8; SCRAM_KEY_LEN] {
    hmac32(salted, &[b"Server Key"])
}

/// Password bytes as PostgreSQL feeds them to PBKDF2: the SASLprep'd form if
/// SASLprep succeeds, otherwise the raw UTF-8 bytes (PostgreSQL also falls back
/// to the raw bytes when SASLprep would produce an empty string from a non-empty
/// password).
pub fn prepare_password(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) if !p.is_empty() || password.is_empty() => p.as_bytes().to_vec(),
        _ => password.as_bytes().to_vec(),
    }
}

fn decode_key(b64: &[u8]) -> Option<[u8; SCRAM_KEY_LEN]> {
    let v = B64.decode(b64).ok()?;
    <[u8; SCRAM_KEY_LEN]>::try_from(v.as_slice()).ok()
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E` (visible ASCII except `,`).
fn is_printable_nonce(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parse a decimal `u32` made only of ASCII digits (no sign, no whitespace).
fn parse_u32_digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s {
        v = v * 10 + u64::from(d - b'0');
    }
    u32::try_from(v).ok()
}

/// A verifier's iteration count as Postgres's `strtol` reads it (leading
/// blanks, an optional `+`, any number of leading zeros, nothing after the
/// digits), at least 1.
fn parse_iterations(s: &str) -> Option<u32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits = t.trim_start_matches('0');
    let digits = if digits.is_empty() && !t.is_empty() {
        "0"
    } else {
        digits
    };
    parse_u32_digits(digits.as_bytes()).filter(|&i| i >= 1)
}

/// Base64 text without the blanks Postgres's decoder skips.
fn unblank(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .collect()
}

/// Split an attribute `x=value` into `(x, value)`; the name must be one ASCII
/// letter.
fn split_attr(part: &[u8]) -> Option<(u8, &[u8])> {
    match part {
        [name, b'=', value @ ..] if name.is_ascii_alphabetic() => Some((*name, value)),
        _ => None,
    }
}

/// Expect attribute `name` as `part`, returning its value.
fn expect_attr<'a>(
    part: Option<&'a [u8]>,
    name: u8,
    err: &'static str,
) -> Result<&'a [u8], ScramError> {
    match part.and_then(split_attr) {
        Some((n, v)) if n == name => Ok(v),
        _ => Err(ScramError::Malformed(err)),
    }
}

/// Check that every remaining part is a well-formed `x=value` extension.
fn check_extensions<'a>(
    mut rest: impl Iterator<Item = &'a [u8]>,
    err: &'static str,
) -> Result<(), ScramError> {
    if rest.all(|p| split_attr(p).is_some()) {
        Ok(())
    } else {
        Err(ScramError::Malformed(err))
    }
}

/// Position of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Random printable nonce for either side of the exchange: 18 random bytes from
/// the thread-local CSPRNG, base64-encoded (24 characters, never containing `,`).
pub fn generate_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

/// Random 16-byte salt, as PostgreSQL uses for new verifiers.
pub fn generate_salt() -> [u8; 16] {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    raw
}

/// True if `s` looks like a stored SCRAM-SHA-256 verifier (parses as one).
pub fn is_scram_verifier(s: &str) -> bool {
    ScramVerifier::parse(s).is_some()
}

/// SCRAM keys recovered from a client's successful SCRAM exchange, replayed toward
/// Postgres when the user's server password is unknown (SCRAM pass-through).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ScramKeys {
    /// `ClientKey`, recovered from the client's proof.
    pub client_key: [u8; 32],
    /// `ServerKey`, from the verifier.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are password-equivalent toward the server: never print them.
        f.write_str("ScramKeys(..)")
    }
}

// ---------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------

/// A stored SCRAM-SHA-256 verifier, as in `pg_authid.rolpassword`:
/// `"SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>"`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// Salt (raw bytes, non-empty).
    pub salt: Vec<u8>,
    /// `StoredKey = H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parse the `pg_authid` text form. Returns `None` unless the mechanism is
    /// `SCRAM-SHA-256`, the iteration count is an integer >= 1 (read as
    /// Postgres's `strtol` reads it: leading blanks, a `+`, leading zeros),
    /// the salt is non-empty valid base64, and both keys are base64 of exactly
    /// 32 bytes (blanks in the base64 skipped, as Postgres's decoder skips
    /// them). What Postgres reads as a verifier must read as one here: a
    /// secret taken for a plain password would let its hash log in (probe K).
    pub fn parse(s: &str) -> Option<ScramVerifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt_b64) = iter_salt.split_once(':')?;
        let (stored_b64, server_b64) = keys.split_once(':')?;
        let iterations = parse_iterations(iter)?;
        let salt = B64
            .decode(unblank(salt_b64))
            .ok()
            .filter(|s| !s.is_empty())?;
        let stored_key = decode_key(&unblank(stored_b64))?;
        let server_key = decode_key(&unblank(server_b64))?;
        Some(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derive a verifier from a plaintext password (SASLprep'd as Postgres does:
    /// if SASLprep fails, use the raw bytes). An iteration count of 0 is treated
    /// as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let iterations = iterations.max(1);
        let salted = salted_password(&prepare_password(password), salt, iterations);
        let client_key = client_key_from_salted(&salted);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: server_key_from_salted(&salted),
        }
    }

    /// Render back to the `"SCRAM-SHA-256$..."` text form.
    pub fn to_string_form(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

enum ServerState {
    Initial,
    SentFirst {
        client_first_bare: Vec<u8>,
        /// Expected base64 of the gs2 header, as the client must echo it in `c=`.
        cbind_b64: &'static [u8],
        server_first: Vec<u8>,
        combined_nonce: Vec<u8>,
    },
    Done {
        client_key: [u8; SCRAM_KEY_LEN],
    },
    Failed,
}

/// Server side: shardbouncer authenticating a connecting client.
///
/// Call [`handle_client_first`](Self::handle_client_first) with the
/// `SASLInitialResponse` data, send the result as `AuthenticationSASLContinue`,
/// then call [`handle_client_final`](Self::handle_client_final) with the
/// `SASLResponse` data and send the result as `AuthenticationSASLFinal`. Any
/// error ends the exchange; later calls return [`ScramError::InvalidState`].
pub struct ScramServer {
    verifier: ScramVerifier,
    nonce: String,
    state: ServerState,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServerState::Initial => "initial",
            ServerState::SentFirst { .. } => "sent-server-first",
            ServerState::Done { .. } => "done",
            ServerState::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("iterations", &self.verifier.iterations)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `nonce` = server nonce (printable ASCII, no ','), caller generates it
    /// randomly (see [`generate_nonce`]). An invalid nonce makes
    /// [`handle_client_first`](Self::handle_client_first) fail rather than panic.
    pub fn new(verifier: ScramVerifier, nonce: String) -> ScramServer {
        ScramServer {
            verifier,
            nonce,
            state: ServerState::Initial,
        }
    }

    /// The verifier this exchange authenticates against.
    pub fn verifier(&self) -> &ScramVerifier {
        &self.verifier
    }

    /// Input: the data of SASLInitialResponse (client-first-message, e.g.
    /// `b"n,,n=,r=abc"`). Output: server-first-message bytes
    /// (`"r=<client+server nonce>,s=<salt b64>,i=<iter>"`).
    ///
    /// Accepts gs2 header `"n,,"` and `"y,,"` (we do not advertise channel
    /// binding yet); rejects `"p=..."`, an authorization identity (`a=`) and the
    /// mandatory-extension attribute (`m=`) with [`ScramError::Unsupported`].
    /// The username in `n=` is ignored (Postgres ignores it too; it's usually
    /// empty).
    pub fn handle_client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            self.state = ServerState::Failed;
            return Err(ScramError::InvalidState(
                "client-first-message received twice or after failure",
            ));
        }
        self.state = ServerState::Failed;
        let next = self.parse_client_first(data)?;
        let out = match &next {
            ServerState::SentFirst { server_first, .. } => server_first.clone(),
            _ => return Err(ScramError::InvalidState("internal state error")),
        };
        self.state = next;
        Ok(out)
    }

    fn parse_client_first(&self, data: &[u8]) -> Result<ServerState, ScramError> {
        if !is_printable_nonce(self.nonce.as_bytes()) {
            return Err(ScramError::InvalidState(
                "server nonce is not printable ASCII without ','",
            ));
        }
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let mut it = data.splitn(3, |&b| b == b',');
        let flag = it.next().unwrap_or_default();
        let cbind_b64: &'static [u8] = match flag {
            b"n" => b"biws", // base64("n,,")
            b"y" => b"eSws", // base64("y,,")
            [b'p', b'=', ..] => {
                return Err(ScramError::Unsupported(
                    "channel binding (SCRAM-SHA-256-PLUS)",
                ))
            }
            _ => return Err(ScramError::Malformed("invalid gs2 channel-binding flag")),
        };
        match it.next() {
            Some(b"") => {}
            Some([b'a', b'=', ..]) => {
                return Err(ScramError::Unsupported("authorization identity"));
            }
            _ => return Err(ScramError::Malformed("invalid gs2 header")),
        }
        let bare = it
            .next()
            .ok_or(ScramError::Malformed("missing client-first-message-bare"))?;

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut parts = bare.split(|&b| b == b',');
        let first = parts.next();
        if let Some([b'm', b'=', ..]) = first {
            return Err(ScramError::Unsupported("mandatory SCRAM extension"));
        }
        // The username is ignored (Postgres takes it from the startup packet).
        expect_attr(first, b'n', "expected username attribute 'n'")?;
        let client_nonce = expect_attr(parts.next(), b'r', "expected nonce attribute 'r'")?;
        if !is_printable_nonce(client_nonce) {
            return Err(ScramError::Malformed(
                "client nonce contains invalid characters",
            ));
        }
        check_extensions(parts, "invalid attribute in client-first-message")?;

        let mut combined_nonce = Vec::with_capacity(client_nonce.len() + self.nonce.len());
        combined_nonce.extend_from_slice(client_nonce);
        combined_nonce.extend_from_slice(self.nonce.as_bytes());

        let mut server_first = Vec::with_capacity(combined_nonce.len() + 64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(&combined_nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(B64.encode(&self.verifier.salt).as_bytes());
        server_first.extend_from_slice(b",i=");
        server_first.extend_from_slice(self.verifier.iterations.to_string().as_bytes());

        Ok(ServerState::SentFirst {
            client_first_bare: bare.to_vec(),
            cbind_b64,
            server_first,
            combined_nonce,
        })
    }

    /// Input: client-final-message (`"c=biws,r=...,p=..."`). Verifies the
    /// channel-binding echo, nonce, and proof (constant-time compare via
    /// `subtle`). Output: server-final-message (`"v=<server signature b64>"`).
    pub fn handle_client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::SentFirst {
            client_first_bare,
            cbind_b64,
            server_first,
            combined_nonce,
        } = state
        else {
            return Err(ScramError::InvalidState(
                "client-final-message received before client-first or after completion",
            ));
        };

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        // The proof is always the last attribute.
        let proof_pos = find(data, b",p=").ok_or(ScramError::Malformed("missing proof"))?;
        let without_proof = data.get(..proof_pos).unwrap_or_default();
        let proof_b64 = data.get(proof_pos + 3..).unwrap_or_default();
        if proof_b64.contains(&b',') {
            return Err(ScramError::Malformed(
                "garbage at end of client-final-message",
            ));
        }

        let mut parts = without_proof.split(|&b| b == b',');
        let cbind = expect_attr(parts.next(), b'c', "expected channel-binding attribute 'c'")?;
        let nonce = expect_attr(parts.next(), b'r', "expected nonce attribute 'r'")?;
        check_extensions(parts, "invalid attribute in client-final-message")?;

        if cbind != cbind_b64 {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if nonce != combined_nonce.as_slice() {
            return Err(ScramError::NonceMismatch);
        }
        let proof = decode_key(proof_b64).ok_or(ScramError::Malformed("invalid proof encoding"))?;

        let auth_message: [&[u8]; 5] =
            [&client_first_bare, b",", &server_first, b",", without_proof];
        let client_signature = hmac32(&self.verifier.stored_key, &auth_message);
        let client_key = xor32(&proof, &client_signature);
        let ok = sha256(&client_key).ct_eq(&self.verifier.stored_key);
        if !bool::from(ok) {
            return Err(ScramError::BadProof);
        }

        let server_signature = hmac32(&self.verifier.server_key, &auth_message);
        let mut out = b"v=".to_vec();
        out.extend_from_slice(B64.encode(server_signature).as_bytes());
        self.state = ServerState::Done { client_key };
        Ok(out)
    }

    /// After a successful exchange: the ClientKey recovered from the proof (for
    /// SCRAM pass-through later, together with `verifier().server_key`).
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            ServerState::Done { client_key } => Some(client_key),
            _ => None,
        }
    }

    /// True once [`handle_client_final`](Self::handle_client_final) succeeded.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Done { .. })
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

enum ClientSecret {
    /// SASLprep'd (or raw) password bytes.
    Password(Vec<u8>),
    /// Already-derived keys (pass-through).
    Keys {
        client_key: [u8; SCRAM_KEY_LEN],
        server_key: [u8; SCRAM_KEY_LEN],
    },
}

enum ClientState {
    Initial,
    SentFinal {
        expected_server_signature: [u8; SCRAM_KEY_LEN],
    },
    Failed,
}

/// Client side: shardbouncer logging in to a Postgres server that asked for
/// SCRAM-SHA-256.
///
/// Send [`client_first`](Self::client_first) as `SASLInitialResponse`, feed the
/// `AuthenticationSASLContinue` data to
/// [`handle_server_first`](Self::handle_server_first) and send its output as
/// `SASLResponse`, then check `AuthenticationSASLFinal` with
/// [`verify_server_final`](Self::verify_server_final).
pub struct ScramClient {
    secret: ClientSecret,
    nonce: String,
    /// `n=,r=<nonce>`; the part of client-first that enters the AuthMessage.
    client_first_bare: Vec<u8>,
    max_iterations: u32,
    state: ClientState,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "initial",
            ClientState::SentFinal { .. } => "sent-client-final",
            ClientState::Failed => "failed",
        };
        let secret = match self.secret {
            ClientSecret::Password(_) => "password",
            ClientSecret::Keys { .. } => "keys",
        };
        f.debug_struct("ScramClient")
            .field("secret", &secret)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// `nonce` printable ASCII without ',' (see [`generate_nonce`]). The password
    /// is SASLprep'd as PostgreSQL does (raw bytes if SASLprep fails).
    pub fn new(password: &str, nonce: String) -> ScramClient {
        Self::with_secret(ClientSecret::Password(prepare_password(password)), nonce)
    }

    /// Alternative for pass-through: authenticate with already-derived keys
    /// instead of a password. Only works if the server's verifier was derived
    /// from the same password, salt and iteration count as these keys.
    pub fn with_keys(client_key: [u8; 32], server_key: [u8; 32], nonce: String) -> ScramClient {
        Self::with_secret(
            ClientSecret::Keys {
                client_key,
                server_key,
            },
            nonce,
        )
    }

    fn with_secret(secret: ClientSecret, nonce: String) -> ScramClient {
        let mut client_first_bare = b"n=,r=".to_vec();
        client_first_bare.extend_from_slice(nonce.as_bytes());
        ScramClient {
            secret,
            nonce,
            client_first_bare,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            state: ClientState::Initial,
        }
    }

    /// Change the largest iteration count accepted from the server (default
    /// [`DEFAULT_MAX_ITERATIONS`]). Values below 1 are treated as 1.
    pub fn set_max_iterations(&mut self, max: u32) {
        self.max_iterations = max.max(1);
    }

    /// client-first-message: `"n,,n=,r=<nonce>"`
    pub fn client_first(&self) -> Vec<u8> {
        let mut out = b"n,,".to_vec();
        out.extend_from_slice(&self.client_first_bare);
        out
    }

    /// Input server-first-message; output client-final-message. Validates that
    /// the server nonce starts with ours (and extends it), iterations >= 1 and at
    /// most the configured maximum, salt decodes (non-empty).
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::Initial) {
            self.state = ClientState::Failed;
            return Err(ScramError::InvalidState(
                "server-first-message received twice or after failure",
            ));
        }
        self.state = ClientState::Failed;

        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
        let mut parts = data.split(|&b| b == b',');
        let first = parts.next();
        if let Some([b'm', b'=', ..]) = first {
            return Err(ScramError::Unsupported("mandatory SCRAM extension"));
        }
        let nonce = expect_attr(first, b'r', "expected nonce attribute 'r'")?;
        let salt_b64 = expect_attr(parts.next(), b's', "expected salt attribute 's'")?;
        let iter = expect_attr(parts.next(), b'i', "expected iteration count attribute 'i'")?;
        check_extensions(parts, "invalid attribute in server-first-message")?;

        let ours = self.nonce.as_bytes();
        if !nonce.starts_with(ours) || nonce.len() <= ours.len() {
            return Err(ScramError::NonceMismatch);
        }
        if !is_printable_nonce(nonce) {
            return Err(ScramError::Malformed(
                "server nonce contains invalid characters",
            ));
        }
        let salt = B64
            .decode(salt_b64)
            .map_err(|_| ScramError::Malformed("invalid salt encoding"))?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("empty salt"));
        }
        let iterations =
            parse_u32_digits(iter).ok_or(ScramError::Malformed("invalid iteration count"))?;
        if iterations == 0 {
            return Err(ScramError::Malformed("iteration count must be at least 1"));
        }
        if iterations > self.max_iterations {
            return Err(ScramError::Unsupported("iteration count too large"));
        }

        let (client_key, server_key) = match &self.secret {
            ClientSecret::Password(pw) => {
                let salted = salted_password(pw, &salt, iterations);
                (
                    client_key_from_salted(&salted),
                    server_key_from_salted(&salted),
                )
            }
            ClientSecret::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };

        let mut without_proof = b"c=biws,r=".to_vec();
        without_proof.extend_from_slice(nonce);

        let auth_message: [&[u8]; 5] = [&self.client_first_bare, b",", data, b",", &without_proof];
        let stored_key = sha256(&client_key);
        let client_signature = hmac32(&stored_key, &auth_message);
        let proof = xor32(&client_key, &client_signature);
        let expected_server_signature = hmac32(&server_key, &auth_message);

        let mut out = without_proof;
        out.extend_from_slice(b",p=");
        out.extend_from_slice(B64.encode(proof).as_bytes());
        self.state = ClientState::SentFinal {
            expected_server_signature,
        };
        Ok(out)
    }

    /// Verify `"v=..."` (or an `"e=..."` error) from the server.
    pub fn verify_server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let ClientState::SentFinal {
            expected_server_signature,
        } = &self.state
        else {
            return Err(ScramError::InvalidState(
                "server-final-message received before client-final was sent",
            ));
        };
        // server-final-message = (server-error / verifier) ["," extensions]
        let mut parts = data.split(|&b| b == b',');
        match parts.next().and_then(split_attr) {
            Some((b'e', value)) => {
                let text: String = String::from_utf8_lossy(value)
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_SERVER_ERROR_LEN)
                    .collect();
                Err(ScramError::ServerError(text))
            }
            Some((b'v', value)) => {
                check_extensions(parts, "invalid attribute in server-final-message")?;
                let sig = decode_key(value)
                    .ok_or(ScramError::Malformed("invalid server signature encoding"))?;
                if bool::from(sig.ct_eq(expected_server_signature)) {
                    Ok(())
                } else {
                    Err(ScramError::BadServerSignature)
                }
            }
            _ => Err(ScramError::Malformed(
                "expected verifier 'v' or error 'e' attribute",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 7677 section 3. The proof printed in the RFC
    // ("dHzbZapWIazNg9ZNGXn7vTVS1sE9AyAoDqZ6Ld2Q/aI=") is wrong (reported RFC
    // erratum); the value below is what the RFC's own inputs produce, checked
    // independently with Python's hashlib/hmac and used by other SCRAM
    // implementations. The server signature in the RFC is correct.
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE_SUFFIX: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_PRINTED_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIazNg9ZNGXn7vTVS1sE9AyAoDqZ6Ld2Q/aI=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = B64.decode(RFC_SALT_B64).unwrap();
        ScramVerifier::from_password("pencil", &salt, 4096)
    }

    #[test]
    fn rfc7677_server_side() {
        let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE_SUFFIX.to_string());
        let sf = server
            .handle_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(sf, RFC_SERVER_FIRST.as_bytes());
        let fin = server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap();
        assert_eq!(fin, RFC_SERVER_FINAL.as_bytes());
        assert!(server.is_authenticated());
        // The recovered ClientKey is the real one.
        let salted = salted_password(b"pencil", &B64.decode(RFC_SALT_B64).unwrap(), 4096);
        assert_eq!(server.client_key(), Some(client_key_from_salted(&salted)));
    }

    #[test]
    fn rfc7677_printed_proof_is_the_erratum() {
        let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE_SUFFIX.to_string());
        server
            .handle_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(
            server.handle_client_final(RFC_PRINTED_CLIENT_FINAL.as_bytes()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn rfc7677_client_side() {
        let mut client = ScramClient::new("pencil", RFC_CLIENT_NONCE.to_string());
        assert_eq!(client.client_first(), b"n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        // The RFC's client sends n=user; the username is part of the AuthMessage.
        client.client_first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec();
        let cf = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(cf, RFC_CLIENT_FINAL.as_bytes());
        client
            .verify_server_final(RFC_SERVER_FINAL.as_bytes())
            .unwrap();
        assert_eq!(
            client.verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn rfc7677_with_keys() {
        let salted = salted_password(b"pencil", &B64.decode(RFC_SALT_B64).unwrap(), 4096);
        let mut client = ScramClient::with_keys(
            client_key_from_salted(&salted),
            server_key_from_salted(&salted),
            RFC_CLIENT_NONCE.to_string(),
        );
        client.client_first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec();
        let cf = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(cf, RFC_CLIENT_FINAL.as_bytes());
        client
            .verify_server_final(RFC_SERVER_FINAL.as_bytes())
            .unwrap();
    }

    fn exchange(
        server_verifier: ScramVerifier,
        mut client: ScramClient,
    ) -> Result<(ScramServer, ScramClient), ScramError> {
        let mut server = ScramServer::new(server_verifier, generate_nonce());
        let sf = server.handle_client_first(&client.client_first())?;
        let cf = client.handle_server_first(&sf)?;
        let fin = server.handle_client_final(&cf)?;
        client.verify_server_final(&fin)?;
        Ok((server, client))
    }

    #[test]
    fn round_trip_right_and_wrong_password() {
        let salt = generate_salt();
        let v = ScramVerifier::from_password("s3cret", &salt, 4096);
        let (server, _) =
            exchange(v.clone(), ScramClient::new("s3cret", generate_nonce())).unwrap();
        assert!(server.client_key().is_some());

        let err = exchange(v.clone(), ScramClient::new("wrong", generate_nonce())).unwrap_err();
        assert_eq!(err, ScramError::BadProof);
        let err = exchange(v, ScramClient::new("", generate_nonce())).unwrap_err();
        assert_eq!(err, ScramError::BadProof);
    }

    #[test]
    fn pass_through_with_recovered_keys() {
        // Client authenticates to shardbouncer; shardbouncer reuses ClientKey +
        // ServerKey to log in to a backend holding the same verifier.
        let v = ScramVerifier::from_password("hunter2", b"0123456789abcdef", 4096);
        let (front, _) =
            exchange(v.clone(), ScramClient::new("hunter2", generate_nonce())).unwrap();
        let ck = front.client_key().unwrap();
        let (back, _) = exchange(
            v.clone(),
            ScramClient::with_keys(ck, front.verifier().server_key, generate_nonce()),
        )
        .unwrap();
        assert_eq!(back.client_key(), Some(ck));

        // Wrong keys fail.
        let err = exchange(
            v,
            ScramClient::with_keys([7; 32], [7; 32], generate_nonce()),
        )
        .unwrap_err();
        assert_eq!(err, ScramError::BadProof);
    }

    #[test]
    fn client_detects_fake_server() {
        // A server that does not know the real verifier cannot forge v=.
        let real = ScramVerifier::from_password("pw", b"salt", 4096);
        let mut fake = real.clone();
        fake.server_key = [0; 32];
        let mut client = ScramClient::new("pw", generate_nonce());
        let mut server = ScramServer::new(fake, generate_nonce());
        let sf = server.handle_client_first(&client.client_first()).unwrap();
        let cf = client.handle_server_first(&sf).unwrap();
        let fin = server.handle_client_final(&cf).unwrap();
        assert_eq!(
            client.verify_server_final(&fin),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
    }

    #[test]
    fn server_rejections() {
        let v = rfc_verifier();
        let mk = || ScramServer::new(v.clone(), "srv".to_string());
        assert!(matches!(
            mk().handle_client_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            mk().handle_client_first(b"n,a=bob,n=,r=abc"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            mk().handle_client_first(b"n,,m=ext,n=,r=abc"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            mk().handle_client_first(b"x,,n=,r=abc"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_client_first(b"n,,n=,r="),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_client_first(b"n,,r=abc"),
            Err(ScramError::Malformed(_))
        ));
        assert!(mk().handle_client_first(b"y,,n=,r=abc").is_ok());
        assert!(mk()
            .handle_client_first(b"n,,n=someone,r=abc,x=ext")
            .is_ok());
        // Invalid server nonce: error, not panic.
        assert!(ScramServer::new(v.clone(), "a,b".into())
            .handle_client_first(b"n,,n=,r=abc")
            .is_err());

        // client-final checks.
        let mut s = mk();
        s.handle_client_first(b"y,,n=,r=abc").unwrap();
        let proof = "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(
            s.handle_client_final(format!("c=biws,r=abcsrv,{proof}").as_bytes()),
            Err(ScramError::ChannelBindingMismatch)
        );
        // After a failure the exchange is over.
        assert!(matches!(
            s.handle_client_final(format!("c=eSws,r=abcsrv,{proof}").as_bytes()),
            Err(ScramError::InvalidState(_))
        ));
        let mut s = mk();
        s.handle_client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            s.handle_client_final(format!("c=biws,r=abcsrX,{proof}").as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        let mut s = mk();
        s.handle_client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            s.handle_client_final(format!("c=biws,r=abcsrv,{proof}").as_bytes()),
            Err(ScramError::BadProof)
        );
        let mut s = mk();
        s.handle_client_first(b"n,,n=,r=abc").unwrap();
        assert!(matches!(
            s.handle_client_final(b"c=biws,r=abcsrv,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_client_final(b"c=biws,r=abcsrv,p=AAAA"),
            Err(ScramError::InvalidState(_))
        ));
    }

    #[test]
    fn client_rejections() {
        let mk = || ScramClient::new("pw", "abc".to_string());
        assert_eq!(
            mk().handle_server_first(b"r=xyz,s=c2FsdA==,i=1"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            mk().handle_server_first(b"r=abc,s=c2FsdA==,i=1"),
            Err(ScramError::NonceMismatch)
        );
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=c2FsdA==,i=0"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=c2FsdA==,i=-1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=c2FsdA==,i=99999999999"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=c2FsdA==,i=10000001"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=!!,i=1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"r=abcd,s=,i=1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            mk().handle_server_first(b"m=x,r=abcd,s=c2FsdA==,i=1"),
            Err(ScramError::Unsupported(_))
        ));
        let mut c = mk();
        c.set_max_iterations(10);
        assert!(matches!(
            c.handle_server_first(b"r=abcd,s=c2FsdA==,i=11"),
            Err(ScramError::Unsupported(_))
        ));
        assert!(matches!(
            mk().verify_server_final(b"v=x"),
            Err(ScramError::InvalidState(_))
        ));
        let mut c = mk();
        c.handle_server_first(b"r=abcd,s=c2FsdA==,i=1,x=ext")
            .unwrap();
        assert!(matches!(
            c.verify_server_final(b"v=!!"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            c.verify_server_final(b"zzz"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            c.handle_server_first(b"r=abcd,s=c2FsdA==,i=1"),
            Err(ScramError::InvalidState(_))
        ));
    }

    #[test]
    fn verifier_round_trip_and_postgres_form() {
        let v = rfc_verifier();
        let s = v.to_string_form();
        assert_eq!(ScramVerifier::parse(&s), Some(v.clone()));
        assert!(is_scram_verifier(&s));

        // "pencil" with the RFC 7677 salt, keys computed independently with
        // Python's hashlib/hmac.
        let pg = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        assert_eq!(ScramVerifier::parse(pg), Some(v));
    }

    #[test]
    fn matches_real_postgres_verifiers() {
        // rolpassword values written by PostgreSQL 15 (password_encryption =
        // scram-sha-256) for CREATE ROLE ... PASSWORD <p>. Re-deriving with the same
        // salt must give the identical verifier, including SASLprep behaviour.
        let cases: &[(&str, &str)] = &[
            (
                "pencil",
                "SCRAM-SHA-256$4096:iBdE3mj6bAuwrT60U+sSnA==$PdVuNYMCjDK3UcQuwDQtBMPtRw4cexQdPDFVdlh2DQ4=:goGscnZoFQghJai9GJNicS9o4K1l0c1C64i3iPv1O5s=",
            ),
            (
                // Non-ASCII: NFKC, U+00A0 -> space, U+00AD -> nothing.
                "p\u{e4}ss\u{a0}w\u{ad}ord",
                "SCRAM-SHA-256$4096:zFAWMf28HowTM9JvV1Lqrg==$FANuGMXT3Oi9ZRv9tn7r+nSGchlINQI3KHXkhysAasw=:nMTrK58KkO7Le0svA32gSBJYiqPVMaQ78sC+/24JHvU=",
            ),
            (
                // ASCII control character: SASLprep fails, raw bytes used.
                "ctl\u{7}pw",
                "SCRAM-SHA-256$4096:1eHFD2B9pffNyX3EDvrfKA==$dcj+t6KNExd8XGp4fpSWqu84OZZ6OiUV0vKXmvEpRLI=:r7zeQKS3RyDfVCmkUN0YH6+Yh8INoTj8pk2qlKJ3V8c=",
            ),
            (
                // Maps to the empty string: Postgres falls back to raw bytes.
                "\u{ad}",
                "SCRAM-SHA-256$4096:v4wWbL3FdsV9AqayQ5sUwg==$OjLXO0nJ7eGrjf0YcNGyWo7U6lhqMQdV4CEbhCGtKS4=:rzmpSXobLI1sdEOwtD9I7A2CjZbEkOTenzI45Zwb9vw=",
            ),
        ];
        for (password, pg) in cases {
            let parsed = ScramVerifier::parse(pg).expect("postgres verifier parses");
            assert_eq!(parsed.to_string_form(), *pg);
            let derived = ScramVerifier::from_password(password, &parsed.salt, parsed.iterations);
            assert_eq!(derived, parsed, "password {password:?}");
        }
    }

    #[test]
    fn verifier_parse_rejects() {
        let good = rfc_verifier().to_string_form();
        assert!(ScramVerifier::parse(&good.replace("4096", "0")).is_none());
        assert!(ScramVerifier::parse(&good.replace("4096", "-4096")).is_none());
        assert!(ScramVerifier::parse(&good.replace("4096", "4096 ")).is_none());
        // What Postgres's strtol and base64 decoder accept reads the same here
        // (probe K: such a verifier was taken for a plain password).
        for alike in [
            good.replace("4096", "+4096"),
            good.replace("4096", " 4096"),
            good.replace("4096", "0000000000004096"),
            good.replacen('=', "= ", 1),
        ] {
            assert_eq!(
                ScramVerifier::parse(&alike),
                Some(rfc_verifier()),
                "{alike}"
            );
        }
        assert!(ScramVerifier::parse(&good.replace("SCRAM-SHA-256", "SCRAM-SHA-1")).is_none());
        assert!(ScramVerifier::parse(&good[..good.len() - 4]).is_none());
        assert!(ScramVerifier::parse("SCRAM-SHA-256$4096:$AAAA:AAAA").is_none());
        assert!(ScramVerifier::parse("md53175bce1d3201d16594cebf9d7eb3f9d").is_none());
        assert!(ScramVerifier::parse("").is_none());
    }

    #[test]
    fn saslprep_fallback() {
        // Non-ASCII space maps to ASCII space.
        assert_eq!(prepare_password("a\u{00A0}b"), b"a b");
        // Soft hyphen maps to nothing.
        assert_eq!(prepare_password("a\u{00AD}b"), b"ab");
        // Only mapped-to-nothing chars: Postgres falls back to raw bytes.
        assert_eq!(prepare_password("\u{00AD}"), "\u{00AD}".as_bytes());
        // Prohibited (control character): raw bytes.
        assert_eq!(prepare_password("a\u{0007}b"), b"a\x07b");
        assert_eq!(prepare_password(""), b"");
    }

    #[test]
    fn nonce_shape() {
        let n = generate_nonce();
        assert_eq!(n.len(), 24);
        assert!(is_printable_nonce(n.as_bytes()));
        assert_ne!(n, generate_nonce());
    }

    proptest! {
        #[test]
        fn server_never_panics(first in proptest::collection::vec(any::<u8>(), 0..200),
                               fin in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = ScramServer::new(rfc_verifier_cached(), "srvnonce".into());
            let _ = s.handle_client_first(&first);
            let _ = s.handle_client_final(&fin);
            let _ = s.client_key();
        }

        #[test]
        fn server_final_never_panics_after_valid_first(
            fin in proptest::collection::vec(any::<u8>(), 0..200),
            tail in "[ -~]{0,80}",
        ) {
            let mut s = ScramServer::new(rfc_verifier_cached(), "srvnonce".into());
            s.handle_client_first(b"n,,n=,r=abc").unwrap();
            let _ = s.handle_client_final(&fin);
            let mut s = ScramServer::new(rfc_verifier_cached(), "srvnonce".into());
            s.handle_client_first(b"n,,n=,r=abc").unwrap();
            let msg = format!("c=biws,r=abcsrvnonce{tail}");
            let _ = s.handle_client_final(msg.as_bytes());
        }

        #[test]
        fn client_never_panics(first in proptest::collection::vec(any::<u8>(), 0..200),
                               fin in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut c = ScramClient::new("pw", "abc".into());
            c.set_max_iterations(16);
            let _ = c.handle_server_first(&first);
            let _ = c.verify_server_final(&fin);
        }

        #[test]
        fn client_never_panics_structured(tail in "[ -~]{0,60}", fin in "[ -~]{0,80}") {
            let mut c = ScramClient::new("pw", "abc".into());
            c.set_max_iterations(16);
            let msg = format!("r=abc{tail}");
            let _ = c.handle_server_first(msg.as_bytes());
            let mut c = ScramClient::new("pw", "abc".into());
            c.set_max_iterations(16);
            c.handle_server_first(b"r=abcd,s=c2FsdA==,i=2").unwrap();
            let _ = c.verify_server_final(fin.as_bytes());
        }

        #[test]
        fn verifier_parse_never_panics(s in any::<String>(), tail in "[ -~]{0,80}") {
            let _ = ScramVerifier::parse(&s);
            let _ = ScramVerifier::parse(&format!("SCRAM-SHA-256${tail}"));
        }

        #[test]
        fn verifier_parse_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = String::from_utf8_lossy(&b);
            let _ = ScramVerifier::parse(&s);
        }
    }

    fn rfc_verifier_cached() -> ScramVerifier {
        static V: std::sync::OnceLock<ScramVerifier> = std::sync::OnceLock::new();
        V.get_or_init(rfc_verifier).clone()
    }
}
