//! SQLSTATE codes of the errors shardbouncer raises itself: one place, so every
//! layer (router, session, console) reports the same code for the same thing.
//! Codes follow Postgres's Appendix A; `42P17` for "no tenant" is shardbouncer's
//! documented choice.

/// successful_completion (notices)
pub const SUCCESSFUL_COMPLETION: &str = "00000";
/// protocol_violation
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// connection_failure
pub const CONNECTION_FAILURE: &str = "08006";
/// sqlclient_unable_to_establish_sqlconnection
pub const CANNOT_CONNECT: &str = "08001";
/// invalid_password
pub const INVALID_PASSWORD: &str = "28P01";
/// invalid_authorization_specification
pub const INVALID_AUTHORIZATION: &str = "28000";
/// invalid_catalog_name (unknown database)
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// too_many_connections
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// feature_not_supported (cross-shard refusal)
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// query_canceled (used for wait timeouts, like PgBouncer)
pub const QUERY_CANCELED: &str = "57014";
/// admin_shutdown
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// idle_in_transaction_session_timeout
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
/// insufficient_privilege
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// syntax_error
pub const SYNTAX_ERROR: &str = "42601";
/// The routing error: no tenant could be found for a statement (shardbouncer's own code,
/// in the "invalid_table_definition"-adjacent class 42P17 as the routing spec allows).
pub const NO_TENANT: &str = "42P17";
/// invalid_parameter_value
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// config_file_error (failed RELOAD)
pub const CONFIG_FILE_ERROR: &str = "F0000";
/// internal_error
pub const INTERNAL_ERROR: &str = "XX000";
/// invalid_savepoint_specification: `ROLLBACK TO` a savepoint that does not exist
pub const INVALID_SAVEPOINT: &str = "3B001";
/// in_failed_sql_transaction: statements in an aborted transaction block
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// What Postgres says with [`IN_FAILED_SQL_TRANSACTION`].
pub const ABORTED_MESSAGE: &str =
    "current transaction is aborted, commands ignored until end of transaction block";
/// active_sql_transaction (warning: BEGIN inside a transaction)
pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
/// no_active_sql_transaction (warning: SET LOCAL outside a transaction)
pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
/// reserved_name: a statement name in shardbouncer's `sb_` namespace
pub const RESERVED_NAME: &str = "42939";
/// statement_too_complex: more tenant mentions than can be checked
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
/// duplicate_prepared_statement
pub const DUPLICATE_PSTATEMENT: &str = "42P05";
/// invalid_sql_statement_name: unknown prepared statement
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// program_limit_exceeded
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// name_too_long.
pub const NAME_TOO_LONG: &str = "42622";
/// out_of_memory (a client over its statement budget)
pub const OUT_OF_MEMORY: &str = "53200";
/// disk_full (the spool for large client messages is full: `[limits] max_spooled`)
pub const DISK_FULL: &str = "53100";
/// io_error (a spool file could not be written or read)
pub const IO_ERROR: &str = "58030";
/// insufficient_resources
pub const INSUFFICIENT_RESOURCES: &str = "53000";
/// cannot_connect_now (a disabled database; a server starting up)
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// undefined_object (console: no such client)
pub const UNDEFINED_OBJECT: &str = "42704";
/// A parameter that can only be set when a connection starts.
pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
/// object_not_in_prerequisite_state (console: already paused, not paused)
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// configuration_limit_exceeded (too many prepared statements on a connection)
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";

/// An error shardbouncer raises itself: the SQLSTATE (from this module) and the
/// message, plus an optional detail. The one shape every layer uses (routing
/// refusals, login failures, console errors, session errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// Severity: `ERROR`, or `FATAL` when the connection ends.
    pub severity: &'static str,
    /// SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional DETAIL.
    pub detail: Option<String>,
}

impl PgError {
    /// An ERROR.
    pub fn new(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: "ERROR",
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// A FATAL error (the connection ends after it).
    pub fn fatal(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: "FATAL",
            ..PgError::new(code, message)
        }
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for PgError {}

/// The constant for `code` (a code a server sent), if it is one of those
/// named here: codes are passed on as `&'static str`.
pub fn known(code: &str) -> Option<&'static str> {
    [
        SUCCESSFUL_COMPLETION,
        PROTOCOL_VIOLATION,
        CONNECTION_FAILURE,
        CANNOT_CONNECT,
        INVALID_PASSWORD,
        INVALID_AUTHORIZATION,
        INVALID_CATALOG_NAME,
        TOO_MANY_CONNECTIONS,
        FEATURE_NOT_SUPPORTED,
        QUERY_CANCELED,
        ADMIN_SHUTDOWN,
        IDLE_IN_TRANSACTION_TIMEOUT,
        INSUFFICIENT_PRIVILEGE,
        SYNTAX_ERROR,
        NO_TENANT,
        INVALID_PARAMETER_VALUE,
        CONFIG_FILE_ERROR,
        INTERNAL_ERROR,
        INVALID_SAVEPOINT,
        IN_FAILED_SQL_TRANSACTION,
        ACTIVE_SQL_TRANSACTION,
        NO_ACTIVE_SQL_TRANSACTION,
        RESERVED_NAME,
        STATEMENT_TOO_COMPLEX,
        DUPLICATE_PSTATEMENT,
        INVALID_SQL_STATEMENT_NAME,
        PROGRAM_LIMIT_EXCEEDED,
        OUT_OF_MEMORY,
        DISK_FULL,
        IO_ERROR,
        INSUFFICIENT_RESOURCES,
        CANNOT_CONNECT_NOW,
        UNDEFINED_OBJECT,
        CANT_CHANGE_RUNTIME_PARAM,
        OBJECT_NOT_IN_PREREQUISITE_STATE,
        CONFIGURATION_LIMIT_EXCEEDED,
        INVALID_NAME,
    ]
    .into_iter()
    .find(|c| *c == code)
}

/// invalid_name (a malformed setting name: `plpgsql.x` once plpgsql is loaded)
pub const INVALID_NAME: &str = "42602";
