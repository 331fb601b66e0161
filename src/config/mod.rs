//! TOML configuration: schema (serde), validation, and the live snapshot.
//!
//! The whole configuration is parsed into [`Config`], validated, and then published as
//! an immutable `Arc` snapshot through [`Live`] (arc-swap). Readers on the hot path take
//! a cheap snapshot per transaction; a reload builds a complete new snapshot and swaps it
//! in atomically, so no reader ever sees half a config.

mod duration;
pub mod live;
mod tls;
mod tls_runtime;
pub mod userlist;
pub mod watch;

pub use duration::Duration;
pub use live::{DbRuntime, Live, RoutingRt, Snapshot};
pub use tls::{ClientTlsMode, ServerTlsMode, TlsConfig};
pub use tls_runtime::{ServerTls, TlsRuntime};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Pooling mode: when a server connection is returned to its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Server is released when the client disconnects.
    Session,
    /// Server is released at the end of each transaction (ReadyForQuery 'I').
    Transaction,
    /// Server is released after every statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The lowercase name used in the config and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How clients authenticate to shardbouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    /// SCRAM-SHA-256 (the default).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response.
    #[serde(rename = "md5")]
    Md5,
    /// No password check (the user must still exist in `[[users]]`).
    #[serde(rename = "trust")]
    Trust,
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// TCP address to accept clients on.
    #[serde(default = "default_listen_addr")]
    pub addr: String,
    /// Bind the listener with `SO_REUSEPORT`, so that a second shardbouncer can
    /// listen on the same address: the new one of a rolling restart. A drain
    /// (`SHUTDOWN WAIT_FOR_CLIENTS`, SIGUSR2) then closes this process's
    /// listener, and the kernel gives every new connection to the other.
    #[serde(default)]
    pub so_reuseport: bool,
    /// A directory shared by the shardbouncer processes on one address: each
    /// listens there on `shardbouncer-<pid>.sock` for CancelRequests the
    /// others received for clients they do not have (with `so_reuseport`, a
    /// client's cancel may reach any of them).
    #[serde(default)]
    pub peer_dir: Option<String>,
}

fn default_listen_addr() -> String {
    "127.0.0.1:6432".into()
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            addr: default_listen_addr(),
            so_reuseport: false,
            peer_dir: None,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Maximum simultaneous client connections; more are refused with 53300.
    #[serde(default = "default_max_client_conn")]
    pub max_client_conn: usize,
    /// Largest protocol message accepted from a client (bytes); larger ones close it with 08P01.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// How long SIGTERM/SIGINT waits for running transactions before exiting.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Most bytes all clients together may hold in messages not yet complete;
    /// past it the client holding the most is closed (53200).
    #[serde(default = "default_max_buffered")]
    pub max_buffered: usize,
    /// A client message larger than this (bytes) is kept in a spool file, not in
    /// memory, while it arrives; once whole it is routed and sent as any other.
    /// At or above `max_message_size`, nothing is spooled.
    #[serde(default = "default_spool_threshold")]
    pub spool_threshold: usize,
    /// Where spool files go (created and unlinked at once, so none outlives its
    /// session); empty means the system's temporary directory.
    #[serde(default)]
    pub spool_dir: String,
    /// Most bytes all spool files together may hold; a client whose message
    /// would go past it is closed (53100).
    #[serde(default = "default_max_spooled")]
    pub max_spooled: usize,
    /// Threads that run client sessions, each with its own single-threaded event
    /// loop; 0 means half the CPU cores, at least one (see [`Config::workers`]).
    /// Needs a restart to change.
    #[serde(default)]
    pub workers: usize,
    /// A plain-TCP client idle this long between transactions hands its socket
    /// to its worker's dormitory ([`crate::net::dormant`]) and frees its task:
    /// a few hundred bytes per idle client instead of a task and an I/O
    /// registration. Waking it costs a few system calls, so clients busier than
    /// this never pay it. 0 keeps every client in a task.
    #[serde(default = "default_client_hibernate_after")]
    pub client_hibernate_after: Duration,
}

/// Most worker threads `[limits] workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

fn default_max_client_conn() -> usize {
    10000
}
fn default_max_message_size() -> usize {
    256 * 1024 * 1024
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_client_hibernate_after() -> Duration {
    Duration::from_secs(1)
}
fn default_max_buffered() -> usize {
    128 * 1024 * 1024
}
fn default_spool_threshold() -> usize {
    1024 * 1024
}
fn default_max_spooled() -> usize {
    4 * 1024 * 1024 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_conn: default_max_client_conn(),
            max_message_size: default_max_message_size(),
            shutdown_timeout: default_shutdown_timeout(),
            max_buffered: default_max_buffered(),
            client_hibernate_after: default_client_hibernate_after(),
            spool_threshold: default_spool_threshold(),
            spool_dir: String::new(),
            max_spooled: default_max_spooled(),
            workers: 0,
        }
    }
}

/// Pool settings. `[pool]` holds the defaults; each database may override any key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOverrides {
    /// See [`PoolSettings::mode`].
    pub mode: Option<PoolMode>,
    /// See [`PoolSettings::default_pool_size`].
    pub default_pool_size: Option<usize>,
    /// See [`PoolSettings::min_pool_size`].
    pub min_pool_size: Option<usize>,
    /// See [`PoolSettings::reserve_pool_size`].
    pub reserve_pool_size: Option<usize>,
    /// See [`PoolSettings::reserve_pool_timeout`].
    pub reserve_pool_timeout: Option<Duration>,
    /// See [`PoolSettings::server_connect_timeout`].
    pub server_connect_timeout: Option<Duration>,
    /// See [`PoolSettings::query_wait_timeout`].
    pub query_wait_timeout: Option<Duration>,
    /// See [`PoolSettings::idle_transaction_timeout`].
    pub idle_transaction_timeout: Option<Duration>,
    /// See [`PoolSettings::client_idle_timeout`].
    pub client_idle_timeout: Option<Duration>,
    /// See [`PoolSettings::client_login_timeout`].
    pub client_login_timeout: Option<Duration>,
    /// See [`PoolSettings::server_idle_timeout`].
    pub server_idle_timeout: Option<Duration>,
    /// See [`PoolSettings::server_lifetime`].
    pub server_lifetime: Option<Duration>,
    /// See [`PoolSettings::server_reset_query`].
    pub server_reset_query: Option<String>,
    /// See [`PoolSettings::max_prepared_statements`].
    pub max_prepared_statements: Option<usize>,
    /// See [`PoolSettings::max_db_connections`].
    pub max_db_connections: Option<usize>,
    /// See [`PoolSettings::max_user_connections`] (in `[pool]` only; a user may
    /// override it in its `[[users]]` entry).
    pub max_user_connections: Option<usize>,
}

/// Effective pool settings of one database (defaults merged with its overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// transaction | session | statement.
    pub mode: PoolMode,
    /// Server connections per (database, user, shard).
    pub default_pool_size: usize,
    /// Connections kept open even when idle.
    pub min_pool_size: usize,
    /// Extra connections allowed once a client has waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    /// Wait before the reserve pool may be used.
    pub reserve_pool_timeout: Duration,
    /// How long to keep trying to reach a server before failing the client's query.
    pub server_connect_timeout: Duration,
    /// A client waiting longer than this for a server gets an error (0 = forever).
    pub query_wait_timeout: Duration,
    /// Close a client idle inside a transaction this long (0 = off).
    pub idle_transaction_timeout: Duration,
    /// Close a client idle outside a transaction this long (0 = off).
    pub client_idle_timeout: Duration,
    /// Close a client that has not finished logging in after this long.
    pub client_login_timeout: Duration,
    /// Close server connections idle in the pool this long (0 = off).
    pub server_idle_timeout: Duration,
    /// Close server connections older than this when they return to the pool (0 = off).
    pub server_lifetime: Duration,
    /// Query run before a server is reused by another client in session mode.
    pub server_reset_query: String,
    /// Named prepared statements kept per server connection (LRU beyond this).
    pub max_prepared_statements: usize,
    /// Server connections of one database to one shard, all users together
    /// (0 = no cap). Clients beyond it wait as for a full pool; an idle server
    /// of another user's pool is closed to make room.
    pub max_db_connections: usize,
    /// Server connections of one user to one shard, all databases together
    /// (0 = no cap), as `max_db_connections`.
    pub max_user_connections: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            mode: PoolMode::Transaction,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            server_connect_timeout: Duration::from_secs(5),
            query_wait_timeout: Duration::from_secs(120),
            idle_transaction_timeout: Duration::ZERO,
            client_idle_timeout: Duration::ZERO,
            client_login_timeout: Duration::from_secs(60),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            server_reset_query: "DISCARD ALL".into(),
            max_prepared_statements: 200,
            max_db_connections: 0,
            max_user_connections: 0,
        }
    }
}

impl PoolSettings {
    /// Apply overrides on top of `self`.
    pub fn merged(&self, o: &PoolOverrides) -> PoolSettings {
        PoolSettings {
            mode: o.mode.unwrap_or(self.mode),
            default_pool_size: o.default_pool_size.unwrap_or(self.default_pool_size),
            min_pool_size: o.min_pool_size.unwrap_or(self.min_pool_size),
            reserve_pool_size: o.reserve_pool_size.unwrap_or(self.reserve_pool_size),
            reserve_pool_timeout: o.reserve_pool_timeout.unwrap_or(self.reserve_pool_timeout),
            server_connect_timeout: o
                .server_connect_timeout
                .unwrap_or(self.server_connect_timeout),
            query_wait_timeout: o.query_wait_timeout.unwrap_or(self.query_wait_timeout),
            idle_transaction_timeout: o
                .idle_transaction_timeout
                .unwrap_or(self.idle_transaction_timeout),
            client_idle_timeout: o.client_idle_timeout.unwrap_or(self.client_idle_timeout),
            client_login_timeout: o.client_login_timeout.unwrap_or(self.client_login_timeout),
            server_idle_timeout: o.server_idle_timeout.unwrap_or(self.server_idle_timeout),
            server_lifetime: o.server_lifetime.unwrap_or(self.server_lifetime),
            server_reset_query: o
                .server_reset_query
                .clone()
                .unwrap_or_else(|| self.server_reset_query.clone()),
            max_prepared_statements: o
                .max_prepared_statements
                .unwrap_or(self.max_prepared_statements),
            max_db_connections: o.max_db_connections.unwrap_or(self.max_db_connections),
            max_user_connections: o.max_user_connections.unwrap_or(self.max_user_connections),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// scram-sha-256 | md5 | trust.
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: AuthType,
    /// PgBouncer-style userlist (`"user" "secret"` per line), relative to the config
    /// file's dir; reloaded with the config. `[[users]]` entries win over the file.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// Role used to run `auth_query` for users found in neither `[[users]]` nor the
    /// auth_file; its own password must be in one of those (or the server trusts it).
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Query returning (name, secret) for `$1`, run on the database's first shard.
    #[serde(default = "default_auth_query")]
    pub auth_query: String,
    /// How long an auth_query answer (including "no such user") is reused.
    #[serde(default = "default_auth_cache_ttl")]
    pub auth_cache_ttl: Duration,
    /// Failed logins of one user from one address within `auth_failure_window` before
    /// that user is refused from that address for `auth_failure_cooldown` (0 = no
    /// limit). Other users from the same address are not affected.
    #[serde(default = "default_auth_failure_limit")]
    pub auth_failure_limit: u32,
    /// Failed logins of all users from one address within `auth_failure_window`
    /// before the whole address is refused for `auth_failure_cooldown` (0 = no cap).
    /// Unset: 10 times `auth_failure_limit`. See [`Auth::address_failure_limit`].
    #[serde(default)]
    pub auth_failure_address_limit: Option<u32>,
    /// Window in which failed logins are counted.
    #[serde(default = "default_auth_failure_window")]
    pub auth_failure_window: Duration,
    /// How long an address that hit the limit is refused (without a password check).
    #[serde(default = "default_auth_failure_cooldown")]
    pub auth_failure_cooldown: Duration,
}

fn default_auth_type() -> AuthType {
    AuthType::ScramSha256
}
fn default_auth_query() -> String {
    "SELECT usename, passwd FROM pg_shadow WHERE usename=$1".into()
}
fn default_auth_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_auth_failure_limit() -> u32 {
    5
}
fn default_auth_failure_window() -> Duration {
    Duration::from_secs(60)
}
fn default_auth_failure_cooldown() -> Duration {
    Duration::from_secs(60)
}

impl Auth {
    /// The per-address cap in force: `auth_failure_address_limit`, or 10 times
    /// `auth_failure_limit` when unset (so 0 when the per-user limit is off too).
    pub fn address_failure_limit(&self) -> u32 {
        self.auth_failure_address_limit
            .unwrap_or_else(|| self.auth_failure_limit.saturating_mul(10))
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            kind: default_auth_type(),
            auth_file: None,
            auth_user: None,
            auth_query: default_auth_query(),
            auth_cache_ttl: default_auth_cache_ttl(),
            auth_failure_limit: default_auth_failure_limit(),
            auth_failure_address_limit: None,
            auth_failure_window: default_auth_failure_window(),
            auth_failure_cooldown: default_auth_failure_cooldown(),
        }
    }
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name clients log in with.
    pub name: String,
    /// Plaintext, a `SCRAM-SHA-256$...` verifier, or an `md5...` hash.
    #[serde(default)]
    pub password: Option<String>,
    /// This user's cap on server connections per shard, all databases together
    /// (overrides `[pool] max_user_connections`; 0 = no cap).
    #[serde(default)]
    pub max_user_connections: Option<usize>,
}

/// One shard (a Postgres server) of a database.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Shard name, referenced by shard maps.
    pub name: String,
    /// Host name or IP of the server.
    pub host: String,
    /// TCP port of the server.
    #[serde(default = "default_pg_port")]
    pub port: u16,
}

fn default_pg_port() -> u16 {
    5432
}

/// What to do with a statement whose tenant cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoTenant {
    /// Refuse it with an error naming the key (fail closed).
    Reject,
    /// Send it to `default_shard`.
    Default,
}

/// A place the tenant may be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantSource {
    /// A startup parameter, `options=-c key=v`, or a user-name suffix.
    Startup,
    /// A SQL comment (`/* key=v */` or sqlcommenter).
    Comment,
    /// `SET key = v` / `SET LOCAL key = v`.
    Set,
    /// A scan of the statement for `key = literal` or `key = $n`.
    Scan,
}

/// `[databases.NAME.routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The tenant key name.
    #[serde(default = "default_key")]
    pub key: String,
    /// Sources, in precedence order.
    #[serde(default = "default_sources")]
    pub sources: Vec<TenantSource>,
    /// reject | default.
    #[serde(default = "default_no_tenant")]
    pub no_tenant: NoTenant,
    /// Shard for tenant-less statements when `no_tenant = "default"`.
    #[serde(default)]
    pub default_shard: Option<String>,
    /// A tenant given at connect time cannot be changed later.
    #[serde(default)]
    pub lock_startup_tenant: bool,
    /// A user name `app<suffix>42` carries tenant 42 (opt-in), e.g. ".".
    #[serde(default)]
    pub user_suffix: Option<String>,
    /// Shard map file; relative to the config file's directory.
    #[serde(default)]
    pub shard_map: Option<PathBuf>,
}

fn default_key() -> String {
    "tenant_id".into()
}
fn default_sources() -> Vec<TenantSource> {
    vec![
        TenantSource::Startup,
        TenantSource::Comment,
        TenantSource::Set,
        TenantSource::Scan,
    ]
}
fn default_no_tenant() -> NoTenant {
    NoTenant::Reject
}

/// `[databases.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct Database {
    /// Database name on the servers (default: the section name).
    #[serde(default)]
    pub dbname: Option<String>,
    /// User toward Postgres (default: the client's own).
    #[serde(default)]
    pub server_user: Option<String>,
    /// Password toward Postgres (default: the client's, when stored in plaintext).
    #[serde(default)]
    pub server_password: Option<String>,
    /// The servers; one shard means a plain pooler.
    pub shards: Vec<Shard>,
    /// Routing settings (needed only with several shards).
    #[serde(default)]
    pub routing: Option<Routing>,
    /// Per-database pool overrides (any `[pool]` key but `max_user_connections`).
    #[serde(flatten)]
    pub pool: PoolOverrides,
    /// `[databases.NAME.tenant_limits]`: per-tenant caps on this database's pools.
    #[serde(default)]
    pub tenant_limits: TenantLimits,
}

/// `[databases.NAME.tenant_limits]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Most transactions of one tenant that may hold a server of one shard
    /// pool at once (0 or absent = no cap). The shard map's `[tenant_limits]`
    /// overrides it per tenant. A tenant at its cap waits (up to
    /// `query_wait_timeout`) while other tenants go on.
    #[serde(default)]
    pub max_active: usize,
}

/// Keys a `[databases.NAME]` table may hold besides the `[pool]` keys.
const DATABASE_KEYS: &[&str] = &[
    "dbname",
    "server_user",
    "server_password",
    "shards",
    "routing",
    "tenant_limits",
];
/// The `[pool]` keys, which a database may override.
pub const POOL_KEYS: &[&str] = &[
    "mode",
    "default_pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "server_connect_timeout",
    "query_wait_timeout",
    "idle_transaction_timeout",
    "client_idle_timeout",
    "client_login_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "server_reset_query",
    "max_prepared_statements",
    "max_db_connections",
    "max_user_connections",
];

/// The same shape as [`Database`], deserialized after the key check.
#[derive(Deserialize)]
struct DatabaseRaw {
    #[serde(default)]
    dbname: Option<String>,
    #[serde(default)]
    server_user: Option<String>,
    #[serde(default)]
    server_password: Option<String>,
    shards: Vec<Shard>,
    #[serde(default)]
    routing: Option<Routing>,
    #[serde(flatten)]
    pool: PoolOverrides,
    #[serde(default)]
    tenant_limits: TenantLimits,
}

impl TryFrom<toml::Table> for Database {
    type Error = String;

    /// serde cannot combine `deny_unknown_fields` with `flatten`, so unknown keys are
    /// checked here by name before the typed parse.
    fn try_from(t: toml::Table) -> Result<Self, String> {
        if let Some(k) = t
            .keys()
            .find(|k| !DATABASE_KEYS.contains(&k.as_str()) && !POOL_KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field `{k}`, expected one of {}",
                DATABASE_KEYS
                    .iter()
                    .chain(POOL_KEYS)
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let r = DatabaseRaw::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
        Ok(Database {
            dbname: r.dbname,
            server_user: r.server_user,
            server_password: r.server_password,
            shards: r.shards,
            routing: r.routing,
            pool: r.pool,
            tenant_limits: r.tenant_limits,
        })
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Users allowed every console command.
    #[serde(default)]
    pub users: Vec<String>,
    /// Users allowed only SHOW commands.
    #[serde(default)]
    pub stats_users: Vec<String>,
    /// Prometheus listener address (`/metrics`).
    #[serde(default)]
    pub metrics_addr: Option<String>,
}

/// The complete configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[listen]`
    #[serde(default)]
    pub listen: Listen,
    /// `[limits]`
    #[serde(default)]
    pub limits: Limits,
    /// `[pool]` defaults.
    #[serde(default)]
    pub pool: PoolOverrides,
    /// `[auth]`
    #[serde(default)]
    pub auth: Auth,
    /// `[[users]]`
    #[serde(default)]
    pub users: Vec<User>,
    /// `[databases.NAME]`
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    /// `[admin]`
    #[serde(default)]
    pub admin: Admin,
    /// `[tls]`
    #[serde(default)]
    pub tls: TlsConfig,
    /// Directory of the config file: relative paths (shard maps) resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Virtual database names that reach the admin console.
pub const ADMIN_DBS: [&str; 2] = ["pgbouncer", "shardbouncer"];

/// Read a config or shard-map file that someone may be rewriting in place right
/// now (`>` in a shell, an editor without atomic save): the text counts only once
/// two reads a moment apart agree, so a reload triggered mid-write (SIGHUP, RELOAD,
/// the file watcher) never applies half a file. A file still changing after a few
/// tries is an error, and the running config stays.
pub fn read_settled(path: &Path) -> std::io::Result<String> {
    settle(
        || {
            String::from_utf8(read_regular(path)?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        },
        std::time::Duration::from_millis(5),
    )
}

/// Most bytes a file shardbouncer reads (config, shard map, auth file, TLS
/// certificates and keys) may have: real ones are kilobytes.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The whole of a regular file of at most [`MAX_FILE_BYTES`]. Opened
/// without blocking, then checked: a FIFO, device or directory in the
/// file's place is refused, never waited on or read without end (probe AB:
/// a FIFO for the shard map blocked the thread that takes logins until a
/// restart; `/dev/zero` grew the pooler until the kernel killed it).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let too_large = || {
        std::io::Error::other(format!(
            "larger than {} MiB, the most a file may have",
            MAX_FILE_BYTES >> 20
        ))
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(buf)
}

/// Call `read` until two calls `gap` apart agree (at most 20 times).
fn settle(
    mut read: impl FnMut() -> std::io::Result<String>,
    gap: std::time::Duration,
) -> std::io::Result<String> {
    let mut text = read()?;
    for _ in 0..20 {
        std::thread::sleep(gap);
        let again = read()?;
        if again == text {
            return Ok(text);
        }
        text = again;
    }
    Err(std::io::Error::other(
        "the file kept changing while it was read; write it atomically (rename a new file over it)",
    ))
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = read_settled(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let in_file = |e: String| format!("{}: {e}", path.display());
        let mut cfg: Config = toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        // Before validating: relative paths are checked where they resolve.
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.validate().map_err(in_file)?;
        Ok(cfg)
    }

    /// Parse and validate config text (relative paths resolve against the current directory).
    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every key at its default (no database: not a configuration to run
    /// with, only what `SHOW CONFIG` compares with).
    pub fn defaults() -> Config {
        toml::from_str("").expect("every key has a default")
    }

    /// Effective pool settings of the `[pool]` section alone.
    pub fn pool_defaults(&self) -> PoolSettings {
        PoolSettings::default().merged(&self.pool)
    }

    /// Effective pool settings of a database.
    pub fn pool_settings(&self, db: &Database) -> PoolSettings {
        self.pool_defaults().merged(&db.pool)
    }

    /// Look a user up by name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The cap on a user's server connections per shard (0 = none): its own
    /// `max_user_connections`, else `[pool]`'s.
    pub fn user_connection_cap(&self, name: &str) -> usize {
        self.user(name)
            .and_then(|u| u.max_user_connections)
            .unwrap_or_else(|| self.pool_defaults().max_user_connections)
    }

    /// How many worker threads run client sessions (`[limits] workers`).
    ///
    /// 0, the default, resolves to half the CPU cores, at least one. Why not one
    /// per core: a pooler shares its machine with Postgres or the application,
    /// and on the 2-core benchmark box one worker spent 10-25% less CPU per
    /// transaction than two (docs/benchmarks.md): two workers hand servers and
    /// pool permits across threads, which costs wake-ups.
    pub fn workers(&self) -> usize {
        match self.limits.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// The directory spool files go to (`[limits] spool_dir`, relative to the
    /// config file's directory like every path; empty: the system's temporary
    /// directory).
    pub fn spool_dir(&self) -> PathBuf {
        if self.limits.spool_dir.is_empty() {
            std::env::temp_dir()
        } else {
            self.resolve(Path::new(&self.limits.spool_dir))
        }
    }

    /// Resolve a path given in the config relative to the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// `[listen] peer_dir`, resolved against the config file's directory.
    pub fn peer_dir(&self) -> Option<PathBuf> {
        self.listen
            .peer_dir
            .as_ref()
            .map(|d| self.resolve(Path::new(d)))
    }

    /// Check values and cross-references (also used for console SET).
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("[listen] addr {:?}: {e}", self.listen.addr))?;
        if let Some(d) = self.peer_dir() {
            // A Unix socket's path has room for 107 bytes; this process's
            // socket name takes at most 29 of them with the slash.
            if !d.is_dir() {
                return Err(format!("[listen] peer_dir {d:?} is not a directory"));
            }
            if d.as_os_str().len() > 107 - 29 {
                return Err(format!(
                    "[listen] peer_dir {:?} is too long for a Unix socket path (at most 78 bytes)",
                    d
                ));
            }
        }
        if self.limits.max_client_conn == 0 {
            return Err("[limits] max_client_conn must be at least 1".into());
        }
        if self.limits.max_message_size < 1024 {
            return Err("[limits] max_message_size must be at least 1024".into());
        }
        if self.limits.workers > MAX_WORKERS {
            return Err(format!(
                "[limits] workers must be at most {MAX_WORKERS} (0 means half the CPU cores)"
            ));
        }
        if self.limits.spool_threshold < 1024 {
            return Err("[limits] spool_threshold must be at least 1024".into());
        }
        if !self.limits.spool_dir.is_empty() && !self.spool_dir().is_dir() {
            return Err(format!(
                "[limits] spool_dir {:?} is not a directory",
                self.limits.spool_dir
            ));
        }
        self.tls.validate()?;
        if self.auth.auth_query.trim().is_empty() {
            return Err("[auth] auth_query must not be empty".into());
        }
        if matches!(&self.auth.auth_user, Some(u) if u.is_empty()) {
            return Err("[auth] auth_user must not be empty".into());
        }
        let (per_user, per_address) = (
            self.auth.auth_failure_limit,
            self.auth.address_failure_limit(),
        );
        if per_user > 0 && per_address > 0 && per_address < per_user {
            // Other users' failures would lock a user out before its own limit.
            return Err(format!(
                "[auth] auth_failure_address_limit ({per_address}) must be at least \
                 auth_failure_limit ({per_user}), or 0 for no per-address cap"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            if u.name.is_empty() {
                return Err("[[users]] entry with an empty name".into());
            }
            if !seen.insert(u.name.as_str()) {
                return Err(format!("[[users]] {:?} is listed twice", u.name));
            }
        }
        if let Some(a) = &self.admin.metrics_addr {
            a.parse::<std::net::SocketAddr>()
                .map_err(|e| format!("[admin] metrics_addr {a:?}: {e}"))?;
        }
        let defaults = self.pool_defaults();
        check_pool("[pool]", &defaults)?;
        for (name, db) in &self.databases {
            if ADMIN_DBS.contains(&name.as_str()) {
                return Err(format!(
                    "[databases.{name}]: {name:?} is reserved for the admin console"
                ));
            }
            if db.shards.is_empty() {
                return Err(format!("[databases.{name}] needs at least one shard"));
            }
            let mut names = std::collections::HashSet::new();
            for s in &db.shards {
                if s.name.is_empty() || !names.insert(s.name.as_str()) {
                    return Err(format!(
                        "[databases.{name}] shard names must be unique and non-empty (got {:?})",
                        s.name
                    ));
                }
                if s.port == 0 {
                    return Err(format!(
                        "[databases.{name}] shard {:?}: port must be 1 to 65535",
                        s.name
                    ));
                }
                if s.host.is_empty() {
                    return Err(format!("[databases.{name}] shard {:?} has no host", s.name));
                }
            }
            check_pool(&format!("[databases.{name}]"), &defaults.merged(&db.pool))?;
            if db.pool.max_user_connections.is_some() {
                // A user's cap spans every database: one database cannot set it.
                return Err(format!(
                    "[databases.{name}] max_user_connections is not a database setting: \
                     set it in [pool] or in the user's [[users]] entry"
                ));
            }
            if let Some(r) = &db.routing {
                if r.key.is_empty() || r.key.len() > 63 {
                    return Err(format!(
                        "[databases.{name}.routing] key must be 1..63 bytes"
                    ));
                }
                if r.sources.is_empty() {
                    // Every statement that needs a tenant would be refused.
                    return Err(format!(
                        "[databases.{name}.routing] sources is empty: no tenant could ever \
                         be read (omit it for all of startup, comment, set and scan)"
                    ));
                }
                if let Some(d) = &r.default_shard {
                    if !db.shards.iter().any(|s| &s.name == d) {
                        return Err(format!(
                            "[databases.{name}.routing] default_shard {d:?} is not one of its shards"
                        ));
                    }
                }
                if r.no_tenant == NoTenant::Default && r.default_shard.is_none() {
                    return Err(format!(
                        "[databases.{name}.routing] no_tenant = \"default\" needs default_shard"
                    ));
                }
                if matches!(&r.user_suffix, Some(s) if s.is_empty()) {
                    return Err(format!(
                        "[databases.{name}.routing] user_suffix must not be empty"
                    ));
                }
            }
        }
        if self.databases.is_empty() {
            // An empty or truncated file parses (every key has a default):
            // taken on a reload, it would drop every database and user at
            // once, the console's admin included (probe).
            return Err(
                "no [databases.<name>] section: a configuration serves at least one database"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Largest pool size accepted: Postgres's own ceiling for `max_connections`.
/// (Far larger values would also overflow the pool's permit counter.)
pub const MAX_POOL_SIZE: usize = 262_143;

fn check_pool(section: &str, p: &PoolSettings) -> Result<(), String> {
    if p.default_pool_size == 0 {
        return Err(format!("{section} default_pool_size must be at least 1"));
    }
    for (key, v) in [
        ("default_pool_size", p.default_pool_size),
        ("reserve_pool_size", p.reserve_pool_size),
        ("min_pool_size", p.min_pool_size),
    ] {
        if v > MAX_POOL_SIZE {
            return Err(format!(
                "{section} {key} = {v} is more than {MAX_POOL_SIZE} (Postgres's own limit on connections)"
            ));
        }
    }
    if p.min_pool_size > p.default_pool_size {
        return Err(format!(
            "{section} min_pool_size ({}) exceeds default_pool_size ({})",
            p.min_pool_size, p.default_pool_size
        ));
    }
    if p.server_connect_timeout.is_zero() {
        return Err(format!("{section} server_connect_timeout must be positive"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[databases.app]
shards = [ { name = "s0", host = "127.0.0.1", port = 5432 } ]
"#;

    #[test]
    fn workers_default_to_half_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.limits.workers, 0);
        assert_eq!(c.workers(), (cores / 2).max(1));
        let c = Config::parse(&format!("[limits]\nworkers = 3\n{MIN}")).unwrap();
        assert_eq!(c.workers(), 3);
        let e =
            Config::parse(&format!("[limits]\nworkers = {}\n{MIN}", MAX_WORKERS + 1)).unwrap_err();
        assert!(e.contains("[limits] workers"), "{e}");
    }

    /// Such a database could never route: every statement that needs a
    /// tenant got 42P17 (probe: it passed `--check` and RELOAD).
    #[test]
    fn routing_with_no_tenant_source_is_refused() {
        let routing = "[databases.app.routing]\nkey = \"tenant_id\"\nshard_map = \"m.toml\"\n";
        let e = Config::parse(&format!("{MIN}{routing}sources = []\n")).unwrap_err();
        assert!(e.contains("sources is empty"), "{e}");
        let e = Config::parse(&format!("{MIN}{routing}sources = [\"scan\"]\n"));
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn a_config_without_databases_is_refused() {
        for text in ["", "\n", "[listen]\naddr = \"127.0.0.1:6432\"\n"] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains("[databases."), "{text:?}: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.listen.addr, "127.0.0.1:6432");
        assert_eq!(c.limits.max_client_conn, 10000);
        let p = c.pool_settings(&c.databases["app"]);
        assert_eq!(p.mode, PoolMode::Transaction);
        assert_eq!(p.default_pool_size, 20);
        assert_eq!(p.query_wait_timeout.as_std().as_secs(), 120);
    }

    #[test]
    fn spool_limits_are_checked() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.limits.spool_threshold, 1 << 20);
        assert_eq!(c.spool_dir(), std::env::temp_dir());
        let e = Config::parse(&format!("[limits]\nspool_threshold = 10\n{MIN}")).unwrap_err();
        assert!(e.contains("spool_threshold"), "{e}");
        let e = Config::parse(&format!("[limits]\nspool_dir = \"/nonexistent/sb\"\n{MIN}"))
            .unwrap_err();
        assert!(
            e.contains("spool_dir") && e.contains("/nonexistent/sb"),
            "{e}"
        );
        // Relative to the config file's directory, like every path in it.
        let dir = std::env::temp_dir().join(format!("sb-spooldir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, format!("[limits]\nspool_dir = \"spool\"\n{MIN}")).unwrap();
        assert_eq!(Config::load(&path).unwrap().spool_dir(), dir.join("spool"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[pool]\nbogus_key = 1\n").unwrap_err();
        assert!(e.contains("bogus_key"), "{e}");
        let e = Config::parse(&format!("{MIN}\nfrobnicate = true\n")).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn database_overrides_pool_keys() {
        let c = Config::parse(
            r#"
[pool]
default_pool_size = 7
[databases.app]
mode = "session"
query_wait_timeout = "250ms"
shards = [ { name = "s0", host = "h" } ]
"#,
        )
        .unwrap();
        let p = c.pool_settings(&c.databases["app"]);
        assert_eq!(p.mode, PoolMode::Session);
        assert_eq!(p.default_pool_size, 7);
        assert_eq!(p.query_wait_timeout.as_std().as_millis(), 250);
        assert_eq!(c.databases["app"].shards[0].port, 5432);
    }

    #[test]
    fn connection_caps_per_database_and_per_user() {
        let c = Config::parse(
            r#"
[pool]
max_db_connections = 30
max_user_connections = 8
[databases.app]
max_db_connections = 12
shards = [ { name = "s0", host = "h" } ]
[databases.other]
shards = [ { name = "s0", host = "h" } ]
[[users]]
name = "big"
max_user_connections = 50
[[users]]
name = "plain"
"#,
        )
        .unwrap();
        assert_eq!(c.pool_settings(&c.databases["app"]).max_db_connections, 12);
        assert_eq!(
            c.pool_settings(&c.databases["other"]).max_db_connections,
            30
        );
        assert_eq!(c.user_connection_cap("big"), 50);
        assert_eq!(c.user_connection_cap("plain"), 8);
        assert_eq!(c.user_connection_cap("unknown"), 8);
        // A user's cap spans databases: one database cannot set it.
        let e = Config::parse(&format!("{MIN}max_user_connections = 3\n")).unwrap_err();
        assert!(e.contains("[databases.app] max_user_connections"), "{e}");
    }

    #[test]
    fn invalid_values_are_rejected_with_reason() {
        for (text, needle) in [
            ("[listen]\naddr = \"nope\"\n", "addr"),
            ("[pool]\nmode = \"sometimes\"\n", "sometimes"),
            ("[pool]\nquery_wait_timeout = \"5 parsecs\"\n", "parsecs"),
            ("[pool]\ndefault_pool_size = 0\n", "default_pool_size"),
            ("[pool]\ndefault_pool_size = 4294967296\n", "262143"),
            ("[pool]\nreserve_pool_size = 9999999\n", "reserve_pool_size"),
            ("[databases.app]\nshards = []\n", "at least one shard"),
            (
                "[auth]\nauth_failure_limit = 5\nauth_failure_address_limit = 4\n",
                "auth_failure_address_limit (4) must be at least auth_failure_limit (5)",
            ),
            ("[databases.pgbouncer]\nshards = [ { name = \"s0\", host = \"h\" } ]\n", "reserved"),
            (
                "[databases.app]\nshards = [ { name = \"s0\", host = \"h\", port = 0 } ]\n",
                "port must be 1 to 65535",
            ),
            (
                "[databases.app]\nshards = [ { name = \"s0\", host = \"h\" } ]\n[databases.app.routing]\ndefault_shard = \"s9\"\n",
                "s9",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn a_file_being_rewritten_is_not_read_half_written() {
        let gap = std::time::Duration::ZERO;
        // A writer that never stops: every read differs from the one before.
        let mut n = 0;
        let e = settle(
            || {
                n += 1;
                Ok(format!("a = {n}"))
            },
            gap,
        )
        .unwrap_err();
        assert!(e.to_string().contains("kept changing"), "{e}");
        // A write in progress, then done: the finished text.
        let mut reads = ["[pool", "[pool]\nde", "[pool]\ndefault_pool_size = 5\n"].into_iter();
        let mut last = String::new();
        let text = settle(
            || {
                if let Some(r) = reads.next() {
                    last = r.to_string();
                }
                Ok(last.clone())
            },
            gap,
        )
        .unwrap();
        assert_eq!(text, "[pool]\ndefault_pool_size = 5\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(read_settled(&path).unwrap(), "a = 1\n");
    }

    /// A FIFO, a device or a directory in a file's place, and a file past
    /// [`MAX_FILE_BYTES`], are refused at once with the reason (probe AB: a
    /// FIFO blocked the reader for good, `/dev/zero` was read until the
    /// kernel killed the pooler).
    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("map.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // (A blocking open of a FIFO nobody writes would never return.)
        let e = read_settled(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        for p in [Path::new("/dev/zero"), dir.path()] {
            let e = read_regular(p).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let big = dir.path().join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_regular(&big).unwrap_err();
        assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
        f.set_len(MAX_FILE_BYTES).unwrap();
        assert_eq!(read_regular(&big).unwrap().len() as u64, MAX_FILE_BYTES);
    }

    #[test]
    fn address_failure_cap_defaults_to_ten_times_the_user_limit() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.auth.auth_failure_limit, 5);
        assert_eq!(c.auth.address_failure_limit(), 50);
        let c = Config::parse(&format!("[auth]\nauth_failure_limit = 3\n{MIN}")).unwrap();
        assert_eq!(c.auth.address_failure_limit(), 30);
        let c = Config::parse(&format!("[auth]\nauth_failure_address_limit = 7\n{MIN}")).unwrap();
        assert_eq!(c.auth.address_failure_limit(), 7);
        // Off: both 0 by default once the per-user limit is off; each can be off alone.
        let c = Config::parse(&format!("[auth]\nauth_failure_limit = 0\n{MIN}")).unwrap();
        assert_eq!(c.auth.address_failure_limit(), 0);
        let c = Config::parse(&format!(
            "[auth]\nauth_failure_limit = 0\nauth_failure_address_limit = 20\n{MIN}"
        ))
        .unwrap();
        assert_eq!(c.auth.address_failure_limit(), 20);
        let c = Config::parse(&format!("[auth]\nauth_failure_address_limit = 0\n{MIN}")).unwrap();
        assert_eq!(c.auth.address_failure_limit(), 0);
    }
}
