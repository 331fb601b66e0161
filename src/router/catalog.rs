//! Catalog reads: a `SELECT` of the system catalogs alone, as drivers and
//! tools send to learn types and tables (asyncpg's type introspection,
//! PgJDBC's `DatabaseMetaData`, psql's `\d`, SQLAlchemy's reflection). It
//! reads no tenant's rows, so it may run on any shard: every shard has the
//! same schema.
//!
//! Two allow-lists, both of which must hold ([`catalog_read`]):
//! * **the statement's form**: a plain read ([`Walk::plain`]: every name
//!   after a dot a column name of the catalogs, no `ORDINALITY` or
//!   `LATERAL`), a `SELECT` of constants ([`constants_only`]: no `FROM`, no
//!   name after a dot but `pg_catalog.`'s), or a form drivers and tools are
//!   known to send (`testdata/catalog_reads.txt`, captured from their
//!   statement logs): the same tokens but for the values of its string and
//!   number literals ([`form`]). Six rounds of probes each found a way
//!   through the walk below alone, every one in what a plain read leaves
//!   out (names a statement gives its subqueries' columns, alias lists that
//!   rename them, `ordinality` taken for an alias): the walk is a partial
//!   parser of SQL, and a finite list of forms is what can be reviewed;
//! * **the walk**, an allow-list over every token of the statement, never
//!   "the first word looked harmless":
//! * every relation it reads (each item after `FROM`, `JOIN` and a `FROM`
//!   list's comma, at any depth) is a catalog of the schema ([`RELATIONS`],
//!   `pg_catalog`'s, qualified or not), a view of `information_schema`
//!   (qualified), or a `WITH` query of the statement in scope;
//! * every function it calls is one of [`FUNCTIONS`], which read the catalog
//!   or compute on their arguments (no `query_to_xml`, no `nextval`, no
//!   `pg_advisory_lock`, no `set_config`);
//! * every type it casts to is a built-in one ([`TYPES`]): a domain's
//!   `CHECK` could run a function of the application's;
//! * every operator is one of a few spellings of `pg_catalog`'s;
//! * nothing locks, writes or creates (`FOR`, `INTO`, `INSERT`, `UPDATE`,
//!   `DELETE`, `MERGE`, `TABLE`, `OPERATOR(..)`).
//!
//! Catalogs that hold row data (`pg_stats`, `pg_statistic`,
//! `pg_largeobject`, `pg_largeobject_metadata`), other sessions' text
//! (`pg_stat_activity`, `pg_prepared_statements`, which lists other
//! clients' statements on a pooled server), a sequence's value
//! (`pg_sequences`) or secrets (`pg_user_mappings`' options,
//! `pg_db_role_setting`, `pg_subscription`'s connection strings: probe DJ
//! F3) are not on the list.
//!
//! What it cannot see: an unqualified name is found through `search_path`
//! (relations through the session's temporary schema first). The caller is
//! told whether the statement names anything so ([`CatalogRead::by_name`]),
//! and the routing decision takes it as tenant-free only while the session's
//! types and `search_path` are trusted (`SessionView::types_untrusted`).

use super::lexer::{body, contains_ci, ident_eq, is_any_kw, is_kw, split, text, Lexer, Tok, K};

/// A statement [`catalog_read`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogRead {
    /// It names a relation, function or type without its schema, which
    /// `search_path` (or the session's temporary schema) resolves.
    pub by_name: bool,
}

/// Catalogs and catalog views of `pg_catalog` that describe the schema, the
/// roles and the server, and hold no row of a user table.
const RELATIONS: &[&[u8]] = &[
    b"pg_aggregate",
    b"pg_am",
    b"pg_amop",
    b"pg_amproc",
    b"pg_attrdef",
    b"pg_attribute",
    b"pg_auth_members",
    b"pg_available_extension_versions",
    b"pg_available_extensions",
    b"pg_cast",
    b"pg_class",
    b"pg_collation",
    b"pg_constraint",
    b"pg_conversion",
    b"pg_database",
    b"pg_default_acl",
    b"pg_depend",
    b"pg_description",
    b"pg_enum",
    b"pg_event_trigger",
    b"pg_extension",
    b"pg_foreign_data_wrapper",
    b"pg_foreign_server",
    b"pg_foreign_table",
    b"pg_group",
    b"pg_index",
    b"pg_indexes",
    b"pg_inherits",
    b"pg_init_privs",
    b"pg_language",
    b"pg_matviews",
    b"pg_namespace",
    b"pg_opclass",
    b"pg_operator",
    b"pg_opfamily",
    b"pg_parameter_acl",
    b"pg_partitioned_table",
    b"pg_policies",
    b"pg_policy",
    b"pg_proc",
    b"pg_publication",
    b"pg_publication_namespace",
    b"pg_publication_rel",
    b"pg_range",
    b"pg_rewrite",
    b"pg_roles",
    b"pg_rules",
    b"pg_sequence",
    b"pg_settings",
    b"pg_shdepend",
    b"pg_shdescription",
    b"pg_statistic_ext",
    b"pg_tables",
    b"pg_tablespace",
    b"pg_timezone_abbrevs",
    b"pg_timezone_names",
    b"pg_transform",
    b"pg_trigger",
    b"pg_ts_config",
    b"pg_ts_config_map",
    b"pg_ts_dict",
    b"pg_ts_parser",
    b"pg_ts_template",
    b"pg_type",
    b"pg_user",
    b"pg_views",
];

/// Functions of `pg_catalog` a catalog read may call: they read the
/// catalog or compute on their arguments, and change nothing.
const FUNCTIONS: &[&[u8]] = &[
    b"abs",
    b"array_agg",
    b"array_length",
    b"array_lower",
    b"array_position",
    b"array_remove",
    b"array_to_string",
    b"array_upper",
    b"avg",
    b"bool_and",
    b"bool_or",
    b"btrim",
    b"cardinality",
    b"char_length",
    b"col_description",
    b"concat",
    b"concat_ws",
    b"count",
    b"current_database",
    b"current_schema",
    b"current_schemas",
    b"current_setting",
    b"current_user",
    b"dense_rank",
    b"format",
    b"format_type",
    b"generate_series",
    b"generate_subscripts",
    b"getdatabaseencoding",
    b"has_any_column_privilege",
    b"has_column_privilege",
    b"has_database_privilege",
    b"has_function_privilege",
    b"has_schema_privilege",
    b"has_sequence_privilege",
    b"has_table_privilege",
    b"has_type_privilege",
    b"json_agg",
    b"json_build_object",
    b"jsonb_agg",
    b"jsonb_build_object",
    b"left",
    b"length",
    b"lower",
    b"lpad",
    b"ltrim",
    b"max",
    b"min",
    b"obj_description",
    b"octet_length",
    b"pg_backend_pid",
    b"pg_char_to_encoding",
    b"pg_collation_is_visible",
    b"pg_column_is_updatable",
    b"pg_conversion_is_visible",
    b"pg_database_size",
    b"pg_describe_object",
    b"pg_encoding_to_char",
    b"pg_function_is_visible",
    b"pg_get_constraintdef",
    b"pg_get_expr",
    b"pg_get_function_arguments",
    b"pg_get_function_identity_arguments",
    b"pg_get_function_result",
    b"pg_get_function_sqlbody",
    b"pg_get_functiondef",
    b"pg_get_indexdef",
    b"pg_get_keywords",
    b"pg_get_partition_constraintdef",
    b"pg_get_partkeydef",
    b"pg_get_ruledef",
    b"pg_get_serial_sequence",
    b"pg_get_statisticsobjdef",
    b"pg_get_statisticsobjdef_columns",
    b"pg_get_triggerdef",
    b"pg_get_userbyid",
    b"pg_get_viewdef",
    b"pg_has_role",
    b"pg_indexes_size",
    b"pg_is_in_recovery",
    b"pg_opclass_is_visible",
    b"pg_partition_ancestors",
    b"pg_relation_is_publishable",
    b"pg_operator_is_visible",
    b"pg_opfamily_is_visible",
    b"pg_options_to_table",
    b"pg_partition_tree",
    b"pg_relation_is_updatable",
    b"pg_relation_size",
    b"pg_size_pretty",
    b"pg_statistics_obj_is_visible",
    b"pg_table_is_visible",
    b"pg_table_size",
    b"pg_tablespace_location",
    b"pg_tablespace_size",
    b"pg_total_relation_size",
    b"pg_ts_config_is_visible",
    b"pg_ts_dict_is_visible",
    b"pg_ts_parser_is_visible",
    b"pg_ts_template_is_visible",
    b"pg_type_is_visible",
    b"pg_typeof",
    b"quote_ident",
    b"quote_literal",
    b"rank",
    b"regexp_replace",
    b"replace",
    b"right",
    b"round",
    b"row_number",
    b"rpad",
    b"rtrim",
    b"session_user",
    b"shobj_description",
    b"split_part",
    b"starts_with",
    b"string_agg",
    b"string_to_array",
    b"strpos",
    b"to_regclass",
    b"to_regnamespace",
    b"to_regproc",
    b"to_regprocedure",
    b"to_regrole",
    b"to_regtype",
    b"substr",
    b"sum",
    b"translate",
    b"ts_token_type",
    b"unnest",
    b"upper",
    b"version",
];

/// `information_schema`'s own functions (SQL functions over the catalog),
/// called qualified (PgJDBC's `_pg_expandarray`).
const INFO_SCHEMA_FUNCTIONS: &[&[u8]] = &[
    b"_pg_char_max_length",
    b"_pg_char_octet_length",
    b"_pg_datetime_precision",
    b"_pg_expandarray",
    b"_pg_index_position",
    b"_pg_interval_type",
    b"_pg_keysequal",
    b"_pg_numeric_precision",
    b"_pg_numeric_precision_radix",
    b"_pg_numeric_scale",
    b"_pg_truetypid",
    b"_pg_truetypmod",
];

/// Type names a catalog read may cast to or write a literal of: SQL's
/// keyword types (always `pg_catalog`'s) and built-in types found by name.
/// Not `double`: only `double precision` is a keyword type, `double` alone
/// is whatever `search_path` finds by that name (probe DK F2; see
/// [`double_precision`]).
const KEYWORD_TYPES: &[&[u8]] = &[
    b"bigint",
    b"bit",
    b"boolean",
    b"char",
    b"character",
    b"dec",
    b"decimal",
    b"float",
    b"int",
    b"integer",
    b"interval",
    b"numeric",
    b"real",
    b"smallint",
    b"time",
    b"timestamp",
    b"varchar",
];

/// Built-in types found by name (see [`KEYWORD_TYPES`]).
const TYPES: &[&[u8]] = &[
    b"aclitem",
    b"bool",
    b"bpchar",
    b"bytea",
    b"char",
    b"cid",
    b"date",
    b"float4",
    b"float8",
    b"int2",
    b"int2vector",
    b"int4",
    b"int8",
    b"json",
    b"jsonb",
    b"name",
    b"oid",
    b"oidvector",
    b"regclass",
    b"regcollation",
    b"regconfig",
    b"regdictionary",
    b"regnamespace",
    b"regoper",
    b"regoperator",
    b"regproc",
    b"regprocedure",
    b"regrole",
    b"regtype",
    b"text",
    b"tid",
    b"timestamptz",
    b"timetz",
    b"uuid",
    b"xid",
];

/// Words that follow a keyword type (`double precision`, `character
/// varying`, `timestamp with time zone`).
const TYPE_TAIL: &[&[u8]] = &[
    b"precision",
    b"varying",
    b"with",
    b"without",
    b"time",
    b"zone",
];

/// Operators a catalog read may use: spellings of `pg_catalog`'s
/// comparisons, arithmetic, concatenation, pattern and array operators.
const OPERATORS: &[&[u8]] = &[
    b"=", b"<>", b"!=", b"<", b">", b"<=", b">=", b"+", b"-", b"*", b"/", b"%", b"||", b"~", b"~*",
    b"!~", b"!~*", b"~~", b"!~~", b"~~*", b"!~~*", b"@>", b"<@", b"&&", b"&", b"|",
];

/// Words that lock, write, create or read a relation outside a `FROM`:
/// refused anywhere.
const FORBIDDEN: &[&[u8]] = &[
    b"copy",
    b"delete",
    b"for",
    b"insert",
    b"into",
    b"lock",
    b"merge",
    b"table",
    b"tablesample",
    b"update",
];

/// Words after which `(` opens syntax, not a call of a function of that
/// name (`ANY(..)`, `COALESCE(..)`, `IN (..)`). Each is a keyword Postgres's
/// grammar never takes for a function's name when unquoted (reserved, or a
/// column-name keyword). `OVER`, `FILTER` and `BY` may name functions: they
/// are syntax only where the grammar puts them (see [`Walk::word`]); `IS`,
/// `LIKE` and `ILIKE` may too, and a `(` after them is read as a call.
const SYNTAX_PAREN: &[&[u8]] = &[
    b"all",
    b"and",
    b"any",
    b"array",
    b"as",
    b"between",
    b"case",
    b"coalesce",
    b"distinct",
    b"else",
    b"except",
    b"exists",
    b"greatest",
    b"group",
    b"having",
    b"in",
    b"intersect",
    b"least",
    b"limit",
    b"not",
    b"nullif",
    b"offset",
    b"on",
    b"or",
    b"row",
    b"select",
    b"some",
    b"then",
    b"union",
    b"using",
    b"values",
    b"when",
    b"where",
];

/// Words whose parentheses hold arguments separated by `FROM`, `FOR` or
/// `PLACING` (`SUBSTRING(x FROM 1 FOR 2)`): syntax that calls
/// `pg_catalog`'s function of that name.
const ARGS_FROM: &[&[u8]] = &[b"extract", b"overlay", b"position", b"substring", b"trim"];

/// Words that may follow a FROM item (unquoted): any other word there is
/// its alias.
const AFTER_ITEM: &[&[u8]] = &[
    b"as",
    b"cross",
    b"except",
    b"fetch",
    b"for",
    b"full",
    b"group",
    b"having",
    b"inner",
    b"intersect",
    b"join",
    b"left",
    b"limit",
    b"natural",
    b"offset",
    b"on",
    b"order",
    b"outer",
    b"right",
    b"tablesample",
    b"union",
    b"using",
    b"where",
    b"window",
    b"with",
];

/// Reserved words a string literal may follow (`THEN 'x'`, `SELECT 'x'`):
/// never a type's name. After any other word, `word 'x'` is a literal of
/// type `word` (whose input, or a domain's `CHECK`, may run code), so the
/// word must be a built-in type, or one of [`OPERATOR_WORDS`] after an
/// operand, or `BY` after `ORDER`, `GROUP` or `PARTITION`.
const RESERVED_BEFORE_LITERAL: &[&[u8]] = &[
    b"all",
    b"and",
    b"any",
    b"as",
    b"between",
    b"both",
    b"case",
    b"distinct",
    b"else",
    b"end",
    b"having",
    b"in",
    b"leading",
    b"limit",
    b"not",
    b"offset",
    b"on",
    b"or",
    b"select",
    b"some",
    b"then",
    b"to",
    b"trailing",
    b"when",
    b"where",
];

/// Words Postgres may also take for a type's or function's name that stand
/// between two operands as operators: after an operand they are operators.
const OPERATOR_WORDS: &[&[u8]] = &[b"escape", b"ilike", b"is", b"like", b"similar"];

/// Words after which an expression starts (so the next word is not an
/// operator): never an operand, though not reserved.
const EXPRESSION_STARTS: &[&[u8]] = &[
    b"by",
    b"escape",
    b"first",
    b"following",
    b"groups",
    b"ilike",
    b"is",
    b"like",
    b"next",
    b"partition",
    b"preceding",
    b"range",
    b"rows",
    b"similar",
    b"zone",
];

/// Words that end a `FROM` list at their depth.
const FROM_ENDS: &[&[u8]] = &[
    b"except",
    b"fetch",
    b"group",
    b"having",
    b"intersect",
    b"limit",
    b"offset",
    b"order",
    b"select",
    b"union",
    b"where",
    b"window",
];

/// The columns of [`RELATIONS`] and of `information_schema`'s views (read
/// off PostgreSQL 15), sorted: the names a catalog read may take after a
/// dot (see [`Walk::word`]). Not `tableoid` (a column of tables only: after
/// a view's alias `v.tableoid` is `tableoid(v)`), nor the columns of the
/// functions of [`FUNCTIONS`] that return rows (`level`, `alias`: probe DJ
/// F1, an application's `level(x)` ran).
const FIELD_NAMES: &[&[u8]] = &[
    b"abbrev",
    b"action_condition",
    b"action_order",
    b"action_orientation",
    b"action_reference_new_row",
    b"action_reference_new_table",
    b"action_reference_old_row",
    b"action_reference_old_table",
    b"action_statement",
    b"action_timing",
    b"adbin",
    b"admin_option",
    b"adnum",
    b"adrelid",
    b"aggcombinefn",
    b"aggdeserialfn",
    b"aggfinalextra",
    b"aggfinalfn",
    b"aggfinalmodify",
    b"aggfnoid",
    b"agginitval",
    b"aggkind",
    b"aggmfinalextra",
    b"aggmfinalfn",
    b"aggmfinalmodify",
    b"aggminitval",
    b"aggminvtransfn",
    b"aggmtransfn",
    b"aggmtransspace",
    b"aggmtranstype",
    b"aggnumdirectargs",
    b"aggserialfn",
    b"aggsortop",
    b"aggtransfn",
    b"aggtransspace",
    b"aggtranstype",
    b"amhandler",
    b"amname",
    b"amopfamily",
    b"amoplefttype",
    b"amopmethod",
    b"amopopr",
    b"amoppurpose",
    b"amoprighttype",
    b"amopsortfamily",
    b"amopstrategy",
    b"amproc",
    b"amprocfamily",
    b"amproclefttype",
    b"amprocnum",
    b"amprocrighttype",
    b"amtype",
    b"as_locator",
    b"attacl",
    b"attalign",
    b"attbyval",
    b"attcacheoff",
    b"attcollation",
    b"attcompression",
    b"attfdwoptions",
    b"attgenerated",
    b"atthasdef",
    b"atthasmissing",
    b"attidentity",
    b"attinhcount",
    b"attisdropped",
    b"attislocal",
    b"attlen",
    b"attmissingval",
    b"attname",
    b"attndims",
    b"attnotnull",
    b"attnum",
    b"attoptions",
    b"attrelid",
    b"attribute_default",
    b"attribute_name",
    b"attribute_udt_catalog",
    b"attribute_udt_name",
    b"attribute_udt_schema",
    b"attstattarget",
    b"attstorage",
    b"atttypid",
    b"atttypmod",
    b"authorization_identifier",
    b"boot_val",
    b"castcontext",
    b"castfunc",
    b"castmethod",
    b"castsource",
    b"casttarget",
    b"catalog_name",
    b"category",
    b"cfgname",
    b"cfgnamespace",
    b"cfgowner",
    b"cfgparser",
    b"character_maximum_length",
    b"character_octet_length",
    b"character_repertoire",
    b"character_set_catalog",
    b"character_set_name",
    b"character_set_schema",
    b"character_value",
    b"check_clause",
    b"check_option",
    b"classid",
    b"classoid",
    b"cmd",
    b"collation_catalog",
    b"collation_name",
    b"collation_schema",
    b"collcollate",
    b"collctype",
    b"collection_type_identifier",
    b"collencoding",
    b"colliculocale",
    b"collisdeterministic",
    b"collname",
    b"collnamespace",
    b"collowner",
    b"collprovider",
    b"collversion",
    b"column_default",
    b"column_name",
    b"comment",
    b"comments",
    b"commit_action",
    b"conbin",
    b"condefault",
    b"condeferrable",
    b"condeferred",
    b"conexclop",
    b"confdelsetcols",
    b"confdeltype",
    b"conffeqop",
    b"confkey",
    b"confmatchtype",
    b"conforencoding",
    b"confrelid",
    b"confupdtype",
    b"conindid",
    b"coninhcount",
    b"conislocal",
    b"conkey",
    b"conname",
    b"connamespace",
    b"connoinherit",
    b"conowner",
    b"conparentid",
    b"conpfeqop",
    b"conppeqop",
    b"conproc",
    b"conrelid",
    b"constraint_catalog",
    b"constraint_name",
    b"constraint_schema",
    b"constraint_type",
    b"context",
    b"contoencoding",
    b"contype",
    b"contypid",
    b"convalidated",
    b"created",
    b"cycle_option",
    b"data_type",
    b"datacl",
    b"datallowconn",
    b"datcollate",
    b"datcollversion",
    b"datconnlimit",
    b"datctype",
    b"datdba",
    b"datetime_precision",
    b"datfrozenxid",
    b"daticulocale",
    b"datistemplate",
    b"datlocprovider",
    b"datminmxid",
    b"datname",
    b"dattablespace",
    b"dbid",
    b"defaclacl",
    b"defaclnamespace",
    b"defaclobjtype",
    b"defaclrole",
    b"default_character_set_catalog",
    b"default_character_set_name",
    b"default_character_set_schema",
    b"default_collate_catalog",
    b"default_collate_name",
    b"default_collate_schema",
    b"default_version",
    b"definition",
    b"delete_rule",
    b"dependent_column",
    b"deptype",
    b"description",
    b"dictinitoption",
    b"dictname",
    b"dictnamespace",
    b"dictowner",
    b"dicttemplate",
    b"domain_catalog",
    b"domain_default",
    b"domain_name",
    b"domain_schema",
    b"dtd_identifier",
    b"encoding",
    b"enforced",
    b"enumlabel",
    b"enumsortorder",
    b"enumtypid",
    b"enumvals",
    b"ev_action",
    b"ev_class",
    b"ev_enabled",
    b"ev_qual",
    b"ev_type",
    b"event_manipulation",
    b"event_object_catalog",
    b"event_object_column",
    b"event_object_schema",
    b"event_object_table",
    b"evtenabled",
    b"evtevent",
    b"evtfoid",
    b"evtname",
    b"evtowner",
    b"evttags",
    b"extcondition",
    b"extconfig",
    b"external_language",
    b"external_name",
    b"extname",
    b"extnamespace",
    b"extowner",
    b"extra_desc",
    b"extrelocatable",
    b"extversion",
    b"fdwacl",
    b"fdwhandler",
    b"fdwname",
    b"fdwoptions",
    b"fdwowner",
    b"fdwvalidator",
    b"feature_id",
    b"feature_name",
    b"foreign_data_wrapper_catalog",
    b"foreign_data_wrapper_language",
    b"foreign_data_wrapper_name",
    b"foreign_server_catalog",
    b"foreign_server_name",
    b"foreign_server_type",
    b"foreign_server_version",
    b"foreign_table_catalog",
    b"foreign_table_name",
    b"foreign_table_schema",
    b"form_of_use",
    b"ftoptions",
    b"ftrelid",
    b"ftserver",
    b"generation_expression",
    b"grantee",
    b"grantor",
    b"grolist",
    b"groname",
    b"grosysid",
    b"group_name",
    b"hasindexes",
    b"hasrules",
    b"hastriggers",
    b"identity_cycle",
    b"identity_generation",
    b"identity_increment",
    b"identity_maximum",
    b"identity_minimum",
    b"identity_start",
    b"implementation_info_id",
    b"implementation_info_name",
    b"increment",
    b"indcheckxmin",
    b"indclass",
    b"indcollation",
    b"indexdef",
    b"indexname",
    b"indexprs",
    b"indexrelid",
    b"indimmediate",
    b"indisclustered",
    b"indisexclusion",
    b"indislive",
    b"indisprimary",
    b"indisready",
    b"indisreplident",
    b"indisunique",
    b"indisvalid",
    b"indkey",
    b"indnatts",
    b"indnkeyatts",
    b"indnullsnotdistinct",
    b"indoption",
    b"indpred",
    b"indrelid",
    b"inhdetachpending",
    b"inhparent",
    b"inhrelid",
    b"inhseqno",
    b"initially_deferred",
    b"initprivs",
    b"installed",
    b"installed_version",
    b"integer_value",
    b"interval_precision",
    b"interval_type",
    b"is_deferrable",
    b"is_derived_reference_attribute",
    b"is_deterministic",
    b"is_dst",
    b"is_final",
    b"is_generated",
    b"is_grantable",
    b"is_identity",
    b"is_implicitly_invocable",
    b"is_insertable_into",
    b"is_instantiable",
    b"is_instead",
    b"is_null_call",
    b"is_nullable",
    b"is_result",
    b"is_self_referencing",
    b"is_supported",
    b"is_trigger_deletable",
    b"is_trigger_insertable_into",
    b"is_trigger_updatable",
    b"is_typed",
    b"is_udt_dependent",
    b"is_updatable",
    b"is_user_defined_cast",
    b"is_verified_by",
    b"ispopulated",
    b"lanacl",
    b"laninline",
    b"lanispl",
    b"lanname",
    b"lanowner",
    b"lanplcallfoid",
    b"lanpltrusted",
    b"lanvalidator",
    b"last_altered",
    b"library_name",
    b"mapcfg",
    b"mapdict",
    b"mapseqno",
    b"maptokentype",
    b"match_option",
    b"matviewname",
    b"matviewowner",
    b"max_dynamic_result_sets",
    b"max_val",
    b"maximum_cardinality",
    b"maximum_value",
    b"member",
    b"min_val",
    b"minimum_value",
    b"module_catalog",
    b"module_name",
    b"module_schema",
    b"name",
    b"new_savepoint_level",
    b"nspacl",
    b"nspname",
    b"nspowner",
    b"nulls_distinct",
    b"numeric_precision",
    b"numeric_precision_radix",
    b"numeric_scale",
    b"object_catalog",
    b"object_name",
    b"object_schema",
    b"object_type",
    b"objid",
    b"objoid",
    b"objsubid",
    b"oid",
    b"opcdefault",
    b"opcfamily",
    b"opcintype",
    b"opckeytype",
    b"opcmethod",
    b"opcname",
    b"opcnamespace",
    b"opcowner",
    b"opfmethod",
    b"opfname",
    b"opfnamespace",
    b"opfowner",
    b"oprcanhash",
    b"oprcanmerge",
    b"oprcode",
    b"oprcom",
    b"oprjoin",
    b"oprkind",
    b"oprleft",
    b"oprname",
    b"oprnamespace",
    b"oprnegate",
    b"oprowner",
    b"oprrest",
    b"oprresult",
    b"oprright",
    b"option_name",
    b"option_value",
    b"ordering_category",
    b"ordering_form",
    b"ordering_routine_catalog",
    b"ordering_routine_name",
    b"ordering_routine_schema",
    b"ordinal_position",
    b"pad_attribute",
    b"paracl",
    b"parameter_default",
    b"parameter_mode",
    b"parameter_name",
    b"parameter_style",
    b"parname",
    b"partattrs",
    b"partclass",
    b"partcollation",
    b"partdefid",
    b"partexprs",
    b"partnatts",
    b"partrelid",
    b"partstrat",
    b"passwd",
    b"pending_restart",
    b"permissive",
    b"pnnspid",
    b"pnpubid",
    b"polcmd",
    b"policyname",
    b"polname",
    b"polpermissive",
    b"polqual",
    b"polrelid",
    b"polroles",
    b"polwithcheck",
    b"position_in_unique_constraint",
    b"prattrs",
    b"privilege_type",
    b"privtype",
    b"proacl",
    b"proallargtypes",
    b"proargdefaults",
    b"proargmodes",
    b"proargnames",
    b"proargtypes",
    b"probin",
    b"proconfig",
    b"procost",
    b"proisstrict",
    b"prokind",
    b"prolang",
    b"proleakproof",
    b"proname",
    b"pronamespace",
    b"pronargdefaults",
    b"pronargs",
    b"proowner",
    b"proparallel",
    b"proretset",
    b"prorettype",
    b"prorows",
    b"prosecdef",
    b"prosqlbody",
    b"prosrc",
    b"prosupport",
    b"protrftypes",
    b"provariadic",
    b"provolatile",
    b"prpubid",
    b"prqual",
    b"prrelid",
    b"prsend",
    b"prsheadline",
    b"prslextype",
    b"prsname",
    b"prsnamespace",
    b"prsstart",
    b"prstoken",
    b"puballtables",
    b"pubdelete",
    b"pubinsert",
    b"pubname",
    b"pubowner",
    b"pubtruncate",
    b"pubupdate",
    b"pubviaroot",
    b"qual",
    b"ref_dtd_identifier",
    b"refclassid",
    b"reference_generation",
    b"reference_type",
    b"refobjid",
    b"refobjsubid",
    b"relacl",
    b"relallvisible",
    b"relam",
    b"relchecks",
    b"relfilenode",
    b"relforcerowsecurity",
    b"relfrozenxid",
    b"relhasindex",
    b"relhasrules",
    b"relhassubclass",
    b"relhastriggers",
    b"relispartition",
    b"relispopulated",
    b"relisshared",
    b"relkind",
    b"relminmxid",
    b"relname",
    b"relnamespace",
    b"relnatts",
    b"relocatable",
    b"reloftype",
    b"reloptions",
    b"relowner",
    b"relpages",
    b"relpartbound",
    b"relpersistence",
    b"relreplident",
    b"relrewrite",
    b"relrowsecurity",
    b"reltablespace",
    b"reltoastrelid",
    b"reltuples",
    b"reltype",
    b"requires",
    b"reset_val",
    b"result_cast_as_locator",
    b"result_cast_char_max_length",
    b"result_cast_char_octet_length",
    b"result_cast_char_set_catalog",
    b"result_cast_char_set_name",
    b"result_cast_char_set_schema",
    b"result_cast_collation_catalog",
    b"result_cast_collation_name",
    b"result_cast_collation_schema",
    b"result_cast_datetime_precision",
    b"result_cast_dtd_identifier",
    b"result_cast_from_data_type",
    b"result_cast_interval_precision",
    b"result_cast_interval_type",
    b"result_cast_maximum_cardinality",
    b"result_cast_numeric_precision",
    b"result_cast_numeric_precision_radix",
    b"result_cast_numeric_scale",
    b"result_cast_scope_catalog",
    b"result_cast_scope_name",
    b"result_cast_scope_schema",
    b"result_cast_type_udt_catalog",
    b"result_cast_type_udt_name",
    b"result_cast_type_udt_schema",
    b"rngcanonical",
    b"rngcollation",
    b"rngmultitypid",
    b"rngsubdiff",
    b"rngsubopc",
    b"rngsubtype",
    b"rngtypid",
    b"rolbypassrls",
    b"rolcanlogin",
    b"rolconfig",
    b"rolconnlimit",
    b"rolcreatedb",
    b"rolcreaterole",
    b"role_name",
    b"roleid",
    b"roles",
    b"rolinherit",
    b"rolname",
    b"rolpassword",
    b"rolreplication",
    b"rolsuper",
    b"rolvaliduntil",
    b"routine_body",
    b"routine_catalog",
    b"routine_definition",
    b"routine_name",
    b"routine_schema",
    b"routine_type",
    b"rowsecurity",
    b"rulename",
    b"schema",
    b"schema_level_routine",
    b"schema_name",
    b"schema_owner",
    b"schemaname",
    b"scope_catalog",
    b"scope_name",
    b"scope_schema",
    b"security_type",
    b"self_referencing_column_name",
    b"seqcache",
    b"seqcycle",
    b"seqincrement",
    b"seqmax",
    b"seqmin",
    b"seqrelid",
    b"seqstart",
    b"seqtypid",
    b"sequence_catalog",
    b"sequence_name",
    b"sequence_schema",
    b"setting",
    b"short_desc",
    b"sizing_id",
    b"sizing_name",
    b"source",
    b"source_dtd_identifier",
    b"sourcefile",
    b"sourceline",
    b"spcacl",
    b"spcname",
    b"spcoptions",
    b"spcowner",
    b"specific_catalog",
    b"specific_name",
    b"specific_schema",
    b"sql_data_access",
    b"sql_path",
    b"srvacl",
    b"srvfdw",
    b"srvname",
    b"srvoptions",
    b"srvowner",
    b"srvtype",
    b"srvversion",
    b"start_value",
    b"stxexprs",
    b"stxkeys",
    b"stxkind",
    b"stxname",
    b"stxnamespace",
    b"stxowner",
    b"stxrelid",
    b"stxstattarget",
    b"sub_feature_id",
    b"sub_feature_name",
    b"superuser",
    b"supported_value",
    b"table_catalog",
    b"table_name",
    b"table_schema",
    b"table_type",
    b"tablename",
    b"tableowner",
    b"tablespace",
    b"tgargs",
    b"tgattr",
    b"tgconstraint",
    b"tgconstrindid",
    b"tgconstrrelid",
    b"tgdeferrable",
    b"tgenabled",
    b"tgfoid",
    b"tginitdeferred",
    b"tgisinternal",
    b"tgname",
    b"tgnargs",
    b"tgnewtable",
    b"tgoldtable",
    b"tgparentid",
    b"tgqual",
    b"tgrelid",
    b"tgtype",
    b"tmplinit",
    b"tmpllexize",
    b"tmplname",
    b"tmplnamespace",
    b"to_sql_specific_catalog",
    b"to_sql_specific_name",
    b"to_sql_specific_schema",
    b"transform_type",
    b"trffromsql",
    b"trflang",
    b"trftosql",
    b"trftype",
    b"trigger_catalog",
    b"trigger_name",
    b"trigger_schema",
    b"trusted",
    b"typacl",
    b"typalign",
    b"typanalyze",
    b"typarray",
    b"typbasetype",
    b"typbyval",
    b"typcategory",
    b"typcollation",
    b"typdefault",
    b"typdefaultbin",
    b"typdelim",
    b"type_udt_catalog",
    b"type_udt_name",
    b"type_udt_schema",
    b"typelem",
    b"typinput",
    b"typisdefined",
    b"typispreferred",
    b"typlen",
    b"typmodin",
    b"typmodout",
    b"typname",
    b"typnamespace",
    b"typndims",
    b"typnotnull",
    b"typoutput",
    b"typowner",
    b"typreceive",
    b"typrelid",
    b"typsend",
    b"typstorage",
    b"typsubscript",
    b"typtype",
    b"typtypmod",
    b"udt_catalog",
    b"udt_name",
    b"udt_schema",
    b"umoptions",
    b"umuser",
    b"unique_constraint_catalog",
    b"unique_constraint_name",
    b"unique_constraint_schema",
    b"unit",
    b"update_rule",
    b"usebypassrls",
    b"useconfig",
    b"usecreatedb",
    b"usename",
    b"user_defined_type_catalog",
    b"user_defined_type_category",
    b"user_defined_type_name",
    b"user_defined_type_schema",
    b"userepl",
    b"usesuper",
    b"usesysid",
    b"utc_offset",
    b"valuntil",
    b"vartype",
    b"version",
    b"view_catalog",
    b"view_definition",
    b"view_name",
    b"view_schema",
    b"viewname",
    b"viewowner",
    b"with_check",
    b"with_hierarchy",
];

/// Nesting deeper than this is not followed: refused.
const MAX_DEPTH: usize = 32;

/// One level of parentheses or brackets.
#[derive(Default, Clone, Copy)]
struct Frame {
    /// A `[` (array subscript or constructor), not a `(`.
    bracket: bool,
    /// Inside a `FROM` list at this depth: a comma starts the next item.
    in_from: bool,
    /// In a select list at this depth (after `SELECT`, before `FROM` or the
    /// clause that ends it): a column named last in an item is an output.
    in_select: bool,
    /// A `UNION`, `INTERSECT` or `EXCEPT` came at this depth: the query's
    /// columns are its first branch's, named already (probe CU T6).
    branched: bool,
    /// The parentheses of `CAST(..)`: an `AS` here is followed by a type.
    cast: bool,
    /// The parentheses of `SUBSTRING`, `TRIM`, `EXTRACT`, `OVERLAY` or
    /// `POSITION`: `FROM`, `FOR` and `PLACING` here separate arguments.
    args_from: bool,
    /// The arguments of a function read in a FROM: an alias may follow.
    call_in_from: bool,
    /// The column names of an alias (`AS t(a, b)`): each defines a name,
    /// and is a column of that alias (its index in [`Walk::aliases`], when
    /// it names a FROM item).
    columns: bool,
    columns_of: Option<usize>,
    /// A parenthesized join: its items' names are seen outside it, as
    /// Postgres sees them.
    join: bool,
    /// This frame's number in the statement (the statement's own is 0): a
    /// FROM item's alias is seen in the frame it is in and those inside.
    id: u32,
    /// The parentheses stand where a `FROM` item does: a subquery, or a
    /// parenthesized join whose first item comes first.
    item: bool,
    /// The body of a `WITH` query (its name, and whether the list is
    /// `RECURSIVE`): once it closes, the list goes on or the statement does.
    cte: Option<(Tok, bool)>,
}

/// Whether `sql` (one statement, starting with `SELECT` or `WITH`) is a
/// catalog read (see the module's documentation); `None` if it is not.
pub fn catalog_read(sql: &[u8], std_strings: bool) -> Option<CatalogRead> {
    // Every SELECT the router analyzes comes here. One that reads a relation
    // but names no catalog anywhere is an application's: told by a scan of
    // its bytes, not a walk of its tokens (the walk would reach its first
    // relation only after the select list). A catalog read by a WITH query
    // or a function in FROM alone is refused with it: fail closed.
    if contains_ci(sql, b"from")
        && !contains_ci(sql, b"pg_")
        && !contains_ci(sql, b"information_schema")
    {
        return None;
    }
    // Limits count tokens, not bytes: texts of one shape (other integer
    // literals, of other lengths) must be decided alike, as a session keeps
    // one analysis for all of them (`ShapeCache`).
    let short = tokens_within(sql, std_strings, PLAIN_MAX);
    let known = (short && constants_only(sql, std_strings)) || known_form(sql, std_strings);
    // Nor is a long text walked unless its form is known: the walk compares
    // each FROM item with every `WITH` name in scope (probe CX F2: a crafted
    // 1 MB text held a worker for 120 s).
    if !known && !short {
        return None;
    }
    walk(sql, std_strings, known)
}

/// Whether `sql` has at most `max` significant tokens.
fn tokens_within(sql: &[u8], std_strings: bool, max: usize) -> bool {
    let mut lx = Lexer::new(sql, std_strings);
    let mut n = 0;
    while lx.next_sig().is_some() {
        n += 1;
        if n > max {
            return false;
        }
    }
    true
}

/// The walk (see the module's documentation): whether every token of `sql`
/// keeps to the allow-lists. Unless the statement's form is `known`, it must
/// also be a plain read ([`Walk::plain`]).
fn walk(sql: &[u8], std_strings: bool, known: bool) -> Option<CatalogRead> {
    let mut w = Walk {
        sql,
        lx: Lexer::new(sql, std_strings),
        frames: [Frame::default(); MAX_DEPTH],
        depth: 0,
        ctes: Vec::new(),
        outputs: Vec::new(),
        cte_columns: Vec::new(),
        last_body: 0,
        stars: Vec::new(),
        fields: Vec::new(),
        fields_see: Vec::new(),
        aliases: Vec::new(),
        pushed: 0,
        too_long: false,
        columns: Vec::new(),
        last_item: Rows::Catalog(None),
        catalog_fields: Vec::new(),
        taken: [None; 3],
        by_name: false,
    };
    // The plain check before the names after a dot: those are checked
    // against every alias and name the statement gives, which on a crafted
    // text of no known form held a worker for 26 s (probe CW F9); a plain
    // read has none to check.
    let read = w.run()
        && !w.too_long
        && (known || w.plain())
        && w.fields
            .iter()
            .zip(&w.fields_see)
            .all(|(f, open)| w.field_ok(f, open))
        && w.catalog_fields.iter().all(|f| w.value_field_ok(f));
    read.then_some(CatalogRead { by_name: w.by_name })
}

/// Whether the word `t` names a built-in type ([`KEYWORD_TYPES`], [`TYPES`]).
pub(super) fn builtin_type(sql: &[u8], t: &Tok) -> bool {
    is_any_kw(sql, t, KEYWORD_TYPES) || TYPES.iter().any(|n| ident_eq(sql, t, n))
}

/// Reserved words a string literal may follow besides
/// [`RESERVED_BEFORE_LITERAL`] (`DO $$..$$`, `COPY .. FROM 'file'`, `SELECT
/// 'a' UNION SELECT 'b'`): Postgres takes no type of these names.
const RESERVED_ALSO_BEFORE_LITERAL: &[&[u8]] = &[
    b"default",
    b"do",
    b"except",
    b"for",
    b"from",
    b"intersect",
    b"null",
    b"placing",
    b"returning",
    b"union",
    b"using",
    b"with",
];

/// Whether parsing `sql` may run the input function of a type that is not
/// built in ([`ParseInput::Application`]). Postgres reads a string literal's
/// constant at Parse through the input of the type it is cast or coerced
/// to, and the input of an array, a composite or a range of a domain checks
/// the domain's `CHECK`, the application's code (probe CW F5: a Parse and a
/// Sync alone ran it). A cast applies through parentheses and `ARRAY[..]`,
/// and a literal takes the type of another branch's cast (`CASE .. ELSE
/// NULL::t[] END`), so: a text with a string literal and a cast anywhere
/// (`::`, `CAST(.. AS ..)`; but a parameter's) to a type not built in, a
/// literal right after a word that may name a type ([`may_name_a_type`];
/// probe CX F1: `location '(x)'`), or a literal anywhere in the arguments
/// of a call ([`Call`]) of a name that is neither a built-in type nor a
/// function of `pg_catalog`'s: `_dom('{x}')` is a cast to the domain's
/// array type (probe CY F1), an application's function reads its arguments
/// through its parameters' types, and parentheses, `ALL`, `DISTINCT`,
/// named arguments and `ORDER BY` change neither (DI F1, F2). A qualified
/// call counts unless `pg_catalog.` qualifies it (DI F3). A parameter's
/// cast alone is left: a literal coerced to its type (`CASE .. THEN
/// $1::t[] ELSE '{x}' END`), or to a column's or an operand's, is not seen
/// (README, "Left to the application").
///
/// Built-in types and `pg_catalog`'s functions named without `pg_catalog.`
/// (`'(x)'::text`, `int4('(x)')`) are what `search_path` finds by those
/// names: [`ParseInput::ByName`] (probe CY F2).
pub(super) fn parse_input(sql: &[u8], std_strings: bool) -> ParseInput {
    let mut lx = Lexer::new(sql, std_strings);
    let (mut literal, mut cast, mut by_name) = (false, false, false);
    let mut prev: Option<Tok> = None;
    let mut prev2: Option<Tok> = None;
    let mut prev3: Option<Tok> = None;
    // Depths of the open `CAST(`s.
    let mut casts: Vec<usize> = Vec::new();
    // A parameter cast to a type not built in, or passed to a call of the
    // application's: Postgres gives it that type, and a literal it is
    // compared or unified with takes it (`'{x}' = $1::t[]`,
    // `COALESCE($1::t[], '{x}')`, `VALUES ('{x}'), ($1::t[])`, `f($1),
    // '{x}' = $1`; probes DK F3, DL F1, F2). Parentheses, lists, branches
    // and subqueries all carry it, so any literal counts but one in the
    // arguments of a built-in function's call with no parameter among
    // them, which its parameter types (asyncpg's `current_setting('port')
    // .. ANY($2::grade[])`); a polymorphic one unifies a literal with a
    // parameter beside it (`array_cat($1::_dom, '{x}')`, probe DM F1).
    let (mut app_param, mut free_literal) = (false, false);
    // A literal in a polymorphic built-in's arguments: it takes the type of
    // what is beside it, which a parameter of the application's type may
    // reach through a column of the statement's own (probe DN F5: `WITH c
    // AS (SELECT $1::_dom a) SELECT array_cat(a, '{x}') FROM c`).
    let mut poly_literal = false;
    // An operator that is not one of the built-in spellings, or one
    // qualified by another schema than `pg_catalog`, may be the
    // application's, and types a parameter as a call does, wherever the
    // parameter stands (probes DM F2: `$1 === 1, $1 = '{x}'`; DN F1:
    // `($1) === 1`, `$1 COLLATE "C" === 1`, `OPERATOR(public.===)`).
    let (mut app_operator, mut param) = (false, false);
    // The calls seen, and for each open parenthesis the call it is in
    // (itself, or the one around grouping parentheses; `None` for none): a
    // literal's or a parameter's is the last.
    let mut calls: Vec<Args> = Vec::new();
    let mut parens: Vec<Option<usize>> = Vec::new();
    // A built-in type found by name (not a keyword type, not qualified).
    let found_by_name = |n: &Tok| {
        n.k == K::Ident
            && !is_any_kw(sql, n, KEYWORD_TYPES)
            && TYPES.iter().any(|t| ident_eq(sql, n, t))
    };
    while let Some(t) = lx.next_sig() {
        match t.k {
            K::Str { .. } | K::Dollar | K::Lit => {
                literal = true;
                let inside = parens.last().copied().flatten();
                free_literal |= inside.is_none();
                let typed = prev.is_some_and(|p| {
                    p.k == K::QIdent || (p.k == K::Ident && may_name_a_type(sql, &p, prev2))
                });
                if let Some(c) = inside {
                    calls[c].literal = true;
                    poly_literal |= calls[c].poly;
                    match calls[c].call {
                        Call::Application => return ParseInput::Application,
                        Call::ByName => by_name = true,
                        _ => {}
                    }
                }
                if typed {
                    return ParseInput::Application;
                }
                by_name |= prev
                    .is_some_and(|p| found_by_name(&p) && !prev2.is_some_and(|d| d.k == K::Dot));
            }
            // A parameter's cast reads no constant (its value comes at the
            // Bind, which is routed as its statement: asyncpg's
            // `ANY($2::grade[])`), but a literal beside it takes its type.
            K::Cast if prev.is_some_and(|p| matches!(p.k, K::Param(_))) => {
                let mut after = lx;
                if matches!(type_at(sql, &mut after), TypeName::Other) {
                    app_param = true;
                }
            }
            K::Param(_) => {
                param = true;
                let inside = parens.last().copied().flatten();
                app_param |= inside.is_some_and(|c| calls[c].call == Call::Application);
                if let Some(c) = inside {
                    calls[c].param = true;
                }
            }
            // (`=>` names an argument.)
            K::Op if text(sql, &t) == b"=>" => {}
            K::Op => {
                app_operator |= !builtin_operator(sql, &t)
                    || (prev.is_some_and(|p| p.k == K::Dot)
                        && !prev2.is_some_and(|s| ident_eq(sql, &s, b"pg_catalog")));
            }
            K::Cast => {
                let mut after = lx;
                match type_at(sql, &mut after) {
                    TypeName::Other => cast = true,
                    TypeName::ByName => by_name = true,
                    TypeName::Qualified => {}
                }
            }
            K::LParen => {
                if prev.is_some_and(|p| is_kw(sql, &p, b"CAST")) {
                    casts.push(parens.len());
                }
                let here = match Call::at(sql, prev, prev2, prev3) {
                    Call::Group => parens.last().copied().flatten(),
                    call => {
                        calls.push(Args {
                            call,
                            literal: false,
                            param: false,
                            poly: matches!(call, Call::Builtin | Call::ByName)
                                && prev.is_some_and(|p| polymorphic_function(sql, &p)),
                        });
                        Some(calls.len() - 1)
                    }
                };
                parens.push(here);
            }
            K::RParen => {
                if let Some(Some(c)) = parens.pop() {
                    let outer = parens.last().copied().flatten();
                    if outer != Some(c) {
                        // A call's arguments closed: a literal beside a
                        // parameter there may take the parameter's type;
                        // the parameter stands in the call around it too.
                        free_literal |= calls[c].literal && calls[c].param;
                        if let Some(o) = outer {
                            calls[o].param |= calls[c].param;
                        }
                    }
                }
                if casts.last() == Some(&parens.len()) {
                    casts.pop();
                }
            }
            K::Ident
                if is_kw(sql, &t, b"AS")
                    && !parens.is_empty()
                    && casts.last() == Some(&(parens.len() - 1)) =>
            {
                let mut after = lx;
                match type_at(sql, &mut after) {
                    TypeName::Other => cast = true,
                    TypeName::ByName => by_name = true,
                    TypeName::Qualified => {}
                }
            }
            _ => {}
        }
        app_param |= app_operator && param;
        if (literal && cast) || ((free_literal || poly_literal) && app_param) {
            return ParseInput::Application;
        }
        prev3 = prev2;
        prev2 = prev;
        prev = Some(t);
    }
    // Calls left open at the end (Postgres refuses the text, but fail
    // closed).
    free_literal |= calls.iter().any(|c| c.literal && c.param);
    if (free_literal || poly_literal) && app_param {
        return ParseInput::Application;
    }
    if literal && by_name {
        ParseInput::ByName
    } else {
        ParseInput::Builtin
    }
}

/// What a `(` opens, for [`parse_input`]: whose input its literals are
/// read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Grouping, a subquery, or the grammar's (`IN (..)`, `VALUES (..)`,
    /// `COALESCE(..)`, `CAST(..)`, `agg(..) FILTER (..)`).
    Group,
    /// A call `pg_catalog` answers whatever the path: a keyword type's
    /// (`numeric(10, 2)`), or a `pg_catalog.`-qualified function or type.
    Builtin,
    /// A call of a built-in type or a `pg_catalog` function by its name
    /// alone: what `search_path` finds by that name.
    ByName,
    /// A call of any other name: the application's function, procedure,
    /// aggregate or type (`_dom('{x}')`, a cast).
    Application,
}

/// A call [`parse_input`] saw, and what stands in its arguments.
struct Args {
    call: Call,
    /// A string literal.
    literal: bool,
    /// A parameter (in a call inside its arguments too).
    param: bool,
    /// A built-in call of a polymorphic function's name
    /// ([`polymorphic_function`]).
    poly: bool,
}

impl Call {
    /// The call a `(` after `prev` (after `prev2` and `prev3`) opens.
    fn at(sql: &[u8], prev: Option<Tok>, prev2: Option<Tok>, prev3: Option<Tok>) -> Call {
        let Some(p) = prev else {
            return Call::Group;
        };
        match p.k {
            K::QIdent => return Call::Application,
            K::Ident => {}
            _ => return Call::Group,
        }
        if prev2.is_some_and(|d| d.k == K::Dot) {
            let catalog = prev3.is_some_and(|q| ident_eq(sql, &q, b"pg_catalog"))
                && (builtin_type(sql, &p) || catalog_function(sql, &p));
            return if catalog {
                Call::Builtin
            } else {
                Call::Application
            };
        }
        // `agg(..) FILTER (WHERE ..)`, `f(..) OVER (..)`: after a call.
        let clause =
            is_any_kw(sql, &p, &[b"over", b"filter"]) && prev2.is_some_and(|c| c.k == K::RParen);
        if clause
            || is_any_kw(sql, &p, SYNTAX_PAREN)
            || is_any_kw(sql, &p, RESERVED_BEFORE_LITERAL)
            || is_any_kw(sql, &p, RESERVED_ALSO_BEFORE_LITERAL)
            || is_kw(sql, &p, b"cast")
        {
            Call::Group
        } else if is_any_kw(sql, &p, KEYWORD_TYPES) {
            Call::Builtin
        } else if builtin_type(sql, &p)
            || catalog_function(sql, &p)
            || is_any_kw(sql, &p, ARGS_FROM)
        {
            Call::ByName
        } else {
            Call::Application
        }
    }
}

/// Operators of `pg_catalog`'s spellings (for the Parse rule: another may
/// be the application's, and give a parameter beside it its type).
const BUILTIN_OPERATORS: &[&[u8]] = &[
    b"=", b"<>", b"!=", b"<", b">", b"<=", b">=", b"+", b"-", b"*", b"/", b"%", b"^", b"||", b"~",
    b"~*", b"!~", b"!~*", b"~~", b"!~~", b"~~*", b"!~~*", b"@>", b"<@", b"&&", b"&", b"|", b"#",
    b"<<", b">>", b"@@", b"@", b"->", b"->>", b"#>", b"#>>", b"?", b"?|", b"?&", b"@?", b"<->",
    b"-|-", b"&<", b"&>", b"<<|", b"|>>", b"&<|", b"|&>", b"<<=", b">>=", b"~=", b"|/", b"||/",
    b"!!", b"#-", b"<^", b">^", b"?#", b"?-", b"?-|", b"?||",
];

/// Whether the operator token `t` is spelled as one of `pg_catalog`'s.
fn builtin_operator(sql: &[u8], t: &Tok) -> bool {
    BUILTIN_OPERATORS.contains(&text(sql, t))
}

/// Whether the unquoted word `t` names a polymorphic function of
/// `pg_catalog`'s (`pg_catalog_polymorphic.txt`, PostgreSQL 15's).
fn polymorphic_function(sql: &[u8], t: &Tok) -> bool {
    static NAMES: NameList = NameList::new();
    listed(&NAMES, include_str!("pg_catalog_polymorphic.txt"), sql, t)
}

/// Whether the unquoted word `t` names a function of `pg_catalog`'s
/// (`pg_catalog_functions.txt`, PostgreSQL 15's).
fn catalog_function(sql: &[u8], t: &Tok) -> bool {
    static NAMES: NameList = NameList::new();
    listed(&NAMES, include_str!("pg_catalog_functions.txt"), sql, t)
}

/// A list of names read once from one of the router's name files.
type NameList = std::sync::OnceLock<Vec<&'static [u8]>>;

/// Whether the unquoted word `t`, folded, is one of the names of `file`
/// (one a line, sorted bytewise, `#` comments), read into `cache` once.
fn listed(cache: &'static NameList, file: &'static str, sql: &[u8], t: &Tok) -> bool {
    let names = cache.get_or_init(|| {
        file.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::as_bytes)
            .collect()
    });
    let mut buf = [0u8; 64];
    t.k == K::Ident && lowered(sql, t, &mut buf).is_some_and(|w| names.binary_search(&w).is_ok())
}

/// PostgreSQL 15's catalog relations (`pg_catalog` and
/// `information_schema`), sorted by name, each with its columns, sorted
/// (`pg_catalog_columns.txt`).
fn catalog_relations() -> &'static [(&'static [u8], Vec<&'static [u8]>)] {
    type Relations = Vec<(&'static [u8], Vec<&'static [u8]>)>;
    static RELS: std::sync::OnceLock<Relations> = std::sync::OnceLock::new();
    RELS.get_or_init(|| {
        include_str!("pg_catalog_columns.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let mut words = l.split(' ').map(str::as_bytes);
                Some((words.next()?, words.collect()))
            })
            .collect()
    })
}

/// The name `t` as Postgres reads it: folded to lower case unless quoted
/// (`None`: longer than any name of the lists).
fn folded<'b>(sql: &'b [u8], t: &Tok, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    match t.k {
        K::Ident => lowered(sql, t, buf),
        K::QIdent => Some(body(sql, t)),
        _ => None,
    }
}

/// The index in [`catalog_relations`] of the relation named `t`.
fn relation_index(sql: &[u8], t: &Tok) -> Option<u16> {
    let mut buf = [0u8; 64];
    let name = folded(sql, t, &mut buf)?;
    let i = catalog_relations()
        .binary_search_by(|(r, _)| (*r).cmp(name))
        .ok()?;
    u16::try_from(i).ok()
}

/// Whether catalog relation `rel` ([`relation_index`]) has a column named
/// `t`.
fn has_column(rel: u16, sql: &[u8], t: &Tok) -> bool {
    let mut buf = [0u8; 64];
    let (Some(name), Some((_, columns))) = (
        folded(sql, t, &mut buf),
        catalog_relations().get(usize::from(rel)),
    ) else {
        return false;
    };
    columns.binary_search(&name).is_ok()
}

/// The unquoted word `t` in lower case, as Postgres folds it, in `buf`;
/// `None` if it is longer (no name of the lists is).
fn lowered<'b>(sql: &[u8], t: &Tok, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    let w = text(sql, t);
    let out = buf.get_mut(..w.len())?;
    for (b, c) in out.iter_mut().zip(w) {
        *b = c.to_ascii_lowercase();
    }
    Some(out)
}

/// What a Parse of a text may read its string literals through
/// ([`parse_input`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParseInput {
    /// Built-in types' input only (or no literal).
    #[default]
    Builtin,
    /// Built-in types named without their schema: whatever `search_path`
    /// finds by those names, which is `pg_catalog`'s while it is trusted.
    ByName,
    /// A type that may be the application's.
    Application,
}

/// How a type is named ([`type_at`]).
enum TypeName {
    /// A keyword type, or `pg_catalog.` and a built-in name: `pg_catalog`'s.
    Qualified,
    /// A built-in type's name without its schema.
    ByName,
    /// Anything else: may be the application's.
    Other,
}

/// How the type named next in `lx` is named.
fn type_at(sql: &[u8], lx: &mut Lexer<'_>) -> TypeName {
    let Some(t) = lx.next_sig() else {
        return TypeName::Other;
    };
    if !matches!(t.k, K::Ident | K::QIdent) {
        return TypeName::Other;
    }
    if lx.peek_sig().is_some_and(|d| d.k == K::Dot) {
        lx.next_sig();
        let builtin = ident_eq(sql, &t, b"pg_catalog")
            && lx
                .next_sig()
                .is_some_and(|n| matches!(n.k, K::Ident | K::QIdent) && builtin_type(sql, &n));
        return if builtin {
            TypeName::Qualified
        } else {
            TypeName::Other
        };
    }
    if t.k == K::Ident && is_any_kw(sql, &t, KEYWORD_TYPES) || double_precision(sql, &t, lx) {
        TypeName::Qualified
    } else if builtin_type(sql, &t) {
        TypeName::ByName
    } else {
        TypeName::Other
    }
}

/// Whether `t` is `double` and `PRECISION` follows it in `lx`: the keyword
/// type (`double` alone is a name `search_path` resolves).
fn double_precision(sql: &[u8], t: &Tok, lx: &Lexer<'_>) -> bool {
    is_kw(sql, t, b"double") && lx.peek_sig().is_some_and(|n| is_kw(sql, &n, b"precision"))
}

/// Whether the word `p` before a string literal may be the name of the
/// literal's type: qualified, or not a built-in type, not a reserved word, and not a word
/// of the grammar where it stands (`x LIKE 'a'`, `x NOT LIKE 'a'`, `AT TIME
/// ZONE 'x'`, `U&'..' UESCAPE '!'`); `before` is the token before `p`.
fn may_name_a_type(sql: &[u8], p: &Tok, before: Option<Tok>) -> bool {
    // `schema.text '(x)'` is that schema's `text` (probe CY F2).
    if before.is_some_and(|b| b.k == K::Dot) {
        return true;
    }
    let after_operand = before.is_some_and(|o| ends_operand(sql, &o) || is_kw(sql, &o, b"NOT"));
    let not_a_type = builtin_type(sql, p)
        || is_any_kw(sql, p, RESERVED_BEFORE_LITERAL)
        || is_any_kw(sql, p, RESERVED_ALSO_BEFORE_LITERAL)
        || (is_any_kw(sql, p, OPERATOR_WORDS) && after_operand)
        || (is_kw(sql, p, b"ZONE") && before.is_some_and(|o| is_kw(sql, &o, b"TIME")))
        || (is_kw(sql, p, b"PRECISION") && before.is_some_and(|o| is_kw(sql, &o, b"DOUBLE")))
        || (is_kw(sql, p, b"UESCAPE") && before.is_some_and(|o| o.k == K::Lit));
    !not_a_type
}

/// Most tokens of a [`Walk::plain`] read of no known form (psql's longest
/// `\d` query has about 400).
const PLAIN_MAX: usize = 4096;

/// Most tokens of a [`constants_only`] read: a health check or a setting's
/// read is short.
const CONSTANTS_MAX: usize = 1024;

/// A `SELECT` that reads no relation: no `FROM` anywhere, and no name after
/// a dot but a function of `pg_catalog` (`SELECT 1`, `SELECT now()`,
/// `SELECT pg_catalog.version()`). The walk still checks every function and
/// type in it; with no `FROM` there is no alias, and with no other dot no
/// field of a row (`(x).f` calls `f(x)`).
fn constants_only(sql: &[u8], std_strings: bool) -> bool {
    let mut lx = Lexer::new(sql, std_strings);
    let mut prev: Option<Tok> = None;
    let mut n = 0;
    while let Some(t) = lx.next_sig() {
        n += 1;
        if n > CONSTANTS_MAX {
            return false;
        }
        match t.k {
            K::Ident if is_kw(sql, &t, b"FROM") => return false,
            K::Dot if !prev.is_some_and(|p| ident_eq(sql, &p, b"pg_catalog")) => return false,
            _ => {}
        }
        prev = Some(t);
    }
    true
}

/// A statement's form: its significant tokens, each string, dollar-quoted
/// or number literal as `?`, unquoted words in lower case (as Postgres folds
/// them), quoted names and everything else as written, comments and spacing
/// gone, a trailing `;` dropped. Two statements of one form differ only in
/// the values of such literals, which are data: they can change what a
/// catalog read finds (a table's name, an OID), not what it reads or calls.
/// Other literals (`U&".."` names, bit strings) keep their text.
fn form(sql: &[u8], std_strings: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len().min(16 * 1024));
    let mut lx = Lexer::new(sql, std_strings);
    while let Some(t) = lx.next_sig() {
        if t.k == K::Semi && lx.peek_sig().is_none() {
            break;
        }
        if !out.is_empty() {
            out.push(b' ');
        }
        match t.k {
            K::Str { .. } | K::Dollar | K::Int | K::Num => out.push(b'?'),
            K::Ident => out.extend(text(sql, &t).iter().map(u8::to_ascii_lowercase)),
            _ => out.extend_from_slice(text(sql, &t)),
        }
    }
    out
}

/// The captured statements of `testdata/catalog_reads.txt`: (source, text).
fn captured() -> Vec<(&'static str, &'static str)> {
    let text: &'static str = include_str!("testdata/catalog_reads.txt");
    let mut out = Vec::new();
    let mut source = "";
    let mut start: Option<usize> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if let Some(s) = line.strip_prefix("-- source: ") {
            source = s.trim_end();
            start = Some(at + line.len());
        } else if line.trim_end() == "-- end" {
            if let Some(b) = start.take() {
                let body = &text[b..at];
                out.push((source, body.strip_suffix('\n').unwrap_or(body)));
            }
        }
        at += line.len();
    }
    out
}

/// Whether `sql`'s [`form`] is that of a statement drivers and tools send
/// (each statement of each text in `testdata/catalog_reads.txt`).
fn known_form(sql: &[u8], std_strings: bool) -> bool {
    static FORMS: std::sync::OnceLock<std::collections::HashSet<Vec<u8>>> =
        std::sync::OnceLock::new();
    let forms = FORMS.get_or_init(|| {
        let mut forms = std::collections::HashSet::new();
        for (_, text) in captured() {
            split(text.as_bytes(), true, |stmt| {
                let f = form(stmt, true);
                if !f.is_empty() {
                    forms.insert(f);
                }
            });
        }
        forms
    });
    let f = form(sql, std_strings);
    !f.is_empty() && forms.contains(&f)
}

struct Walk<'a> {
    sql: &'a [u8],
    lx: Lexer<'a>,
    /// The open parentheses and brackets: `frames[..=depth]` (on the stack:
    /// every SELECT a client sends comes here first).
    frames: [Frame; MAX_DEPTH],
    depth: usize,
    /// `WITH` query names in scope, each with the depth whose frame holds it.
    ctes: Vec<(Tok, usize, u32)>,
    /// Names the statement gives the columns of its queries: a select list's
    /// (after `AS`), with the frame of the query it is in, and a `WITH`
    /// query's column list, with the frame of its body.
    outputs: Vec<(Tok, u32)>,
    /// A `WITH` query's column list, with the frame of its body: its
    /// columns are these, whatever its select list names (probe DO F1).
    cte_columns: Vec<(Tok, u32)>,
    /// The frame of the last subquery or `WITH` query taken as a FROM item.
    last_body: u32,
    /// Frames whose select list has a `*` (`SELECT *`, `t.*`): their
    /// outputs include the columns its FROM items' aliases list.
    stars: Vec<u32>,
    /// `alias.name` references whose name is no catalog's column: each must
    /// be a name the statement defines ([`Walk::defined`]), after an alias
    /// of composite rows only ([`Walk::aliases`]), checked at the end (a
    /// subquery's columns are defined after the outer select list names
    /// them). Postgres reads `alias.f` as `f(alias)` when the rows have no
    /// column `f`: on a function's single value of any type, any function
    /// of one argument would run (probe CS G1: `b.ts_stat AS ts_stat ..
    /// FROM unnest(ARRAY['SELECT ..']) b` ran the query); on a composite
    /// row, only one taking a row (none of `pg_catalog`'s do harm).
    fields: Vec<(Tok, Tok)>,
    /// For each of [`Walk::fields`], the frames open where it stands: the
    /// aliases of those are the ones it may name (a subquery's own are not).
    fields_see: Vec<Vec<u32>>,
    /// The names FROM items are known by, what their rows are, and the
    /// frame they are in: a relation's or `WITH` query's own name and its
    /// alias, a subquery's alias, a function's name and alias.
    aliases: Vec<(Tok, Rows, u32, u32, bool)>,
    /// Frames opened so far (numbers them).
    pushed: u32,
    /// A name past [`NAME_MAX`] bytes was seen: refused.
    too_long: bool,
    /// The column lists of FROM items' aliases (`b(q)`, `pg_class c(x)`):
    /// the alias's index in [`Walk::aliases`], and the name.
    columns: Vec<(usize, Tok)>,
    /// The rows of the last relation taken as a FROM item.
    last_item: Rows,
    /// `alias.name` references whose name is a catalog's column, with the
    /// frames open where each stands: a function's value's alias must list
    /// it, a query's in scope define it ([`Walk::value_field_ok`]).
    catalog_fields: Vec<(Tok, Tok, Vec<u32>)>,
    /// The last token taken, the one before it, and the one before that.
    taken: [Option<Tok>; 3],
    by_name: bool,
}

impl Walk<'_> {
    /// A read whose every name after a dot is a column of the catalogs
    /// (but `x` and `n`, the fields of `_pg_expandarray`'s rows), with no
    /// `ORDINALITY` or `LATERAL`, of at most [`PLAIN_MAX`] tokens (checked
    /// by [`catalog_read`] before the walk): every hole
    /// six probe rounds found was a name after a dot the walk took for a
    /// column the statement gives (a subquery's, a `WITH` query's, an alias
    /// list's: renamed, or an expression's), or `ordinality` taken for an
    /// alias. Names of the catalogs' columns are left to the application
    /// (`x.typname` calls a function `typname(x)` of its own: README).
    fn plain(&self) -> bool {
        let sql = self.sql;
        if !self.fields.is_empty() {
            return false;
        }
        let mut lx = Lexer::new(sql, self.lx.std_strings());
        let mut after_dot = false;
        while let Some(t) = lx.next_sig() {
            if matches!(t.k, K::Ident | K::QIdent)
                && ((after_dot && (ident_eq(sql, &t, b"x") || ident_eq(sql, &t, b"n")))
                    || is_any_kw(sql, &t, &[b"ORDINALITY", b"LATERAL"]))
            {
                return false;
            }
            after_dot = t.k == K::Dot;
        }
        true
    }

    /// Whether `alias.field` (a catalog's column name) is no call on a
    /// function's value or a query's row: no FROM item of a function called
    /// `alias`, anywhere in the statement (scope aside, as in
    /// [`Walk::field_ok`]), leaves `field` out of its alias's column list;
    /// and where the reference stands, the FROM item that name stands for
    /// (the innermost in scope: a nearer query's own hides an outer one's)
    /// has a column `field`. A catalog's alias: the relation has one
    /// ([`has_column`]; probe DK: `c.description FROM pg_class c` ran an
    /// application's `description(anyelement)`). A query's (a subquery, a
    /// `WITH` query, a parenthesized join): it has such a column
    /// ([`Walk::brings`]; probe DK F4: `j.description` of a join of
    /// `unnest(ARRAY['chosen'])`, and DL F3: `s.description` of `(SELECT
    /// 'chosen' AS y FROM pg_am a) s`, ran an application's
    /// `description`).
    fn value_field_ok(&self, (alias, field, open): &(Tok, Tok, Vec<u32>)) -> bool {
        let sql = self.sql;
        let depth = |frame: &u32| open.iter().position(|f| f == frame);
        let innermost = self
            .aliases
            .iter()
            .filter(|(name, ..)| same_name(sql, name, alias))
            .filter_map(|(_, _, frame, ..)| depth(frame))
            .max();
        self.aliases
            .iter()
            .enumerate()
            .all(|(i, (name, rows, frame, body, _))| {
                if !same_name(sql, name, alias) {
                    return true;
                }
                let renamed = self.columns.iter().any(|(a, _)| *a == i);
                let listed = self
                    .columns
                    .iter()
                    .any(|(a, c)| *a == i && same_name(sql, c, field));
                let nearest = depth(frame).is_some() && depth(frame) == innermost;
                match rows {
                    Rows::Value => listed,
                    // (A column list renames the relation's first columns:
                    // only a listed name is sure to be one.)
                    Rows::Catalog(Some(rel)) if nearest => {
                        listed || !renamed && has_column(*rel, sql, field)
                    }
                    // (A `SELECT *` of a catalog brings its columns, as a
                    // catalog's alias does: any catalog column's name, the
                    // README's "named like a catalog column" class. Only
                    // while the statement reads a function's value: drivers'
                    // `SELECT *` chains over catalogs name columns the walk
                    // cannot follow.)
                    // (A column list renames the query's first columns:
                    // only a listed name is sure to be one, probe DO F1.)
                    Rows::Derived if nearest => {
                        listed || !renamed && self.brings(*body, field, CHAIN_MAX)
                    }
                    _ => true,
                }
            })
    }

    /// Whether the query whose frame is `body` has a column `field`: one
    /// it defines ([`Walk::defines`]), or one its `SELECT *` brings from a
    /// catalog among its FROM items that has it ([`has_column`]; any
    /// catalog column's name from one PostgreSQL 15 does not have) or
    /// from a query among them that has it. `hops` bounds the chain: a
    /// recursive `WITH` query reads itself.
    fn brings(&self, body: u32, field: &Tok, hops: u8) -> bool {
        if self.defines(body, field) {
            return true;
        }
        if self.cte_columns.iter().any(|(_, f)| *f == body) {
            // Its column list names its columns, starred ones too.
            return false;
        }
        // A column list on one of its FROM items renames what its `*`
        // brings from it: then only listed names (which item's columns a
        // list renames is not followed: fail closed; probe DP F1: `SELECT *
        // FROM (..) s(x)` brought `relname` past the list).
        let renamed_here = self.columns.iter().any(|(a, _)| {
            self.aliases
                .get(*a)
                .is_some_and(|x| x.2 == body && x.1 != Rows::Value)
        });
        if renamed_here {
            return false;
        }
        if hops == 0 || !self.stars.contains(&body) {
            return false;
        }
        self.aliases.iter().any(|(_, rows, frame, inner, _)| {
            *frame == body
                && match rows {
                    Rows::Catalog(Some(rel)) => has_column(*rel, self.sql, field),
                    Rows::Catalog(None) => true,
                    Rows::Derived => self.brings(*inner, field, hops - 1),
                    Rows::Value => false,
                }
        })
    }

    /// Whether the query whose frame is `body` has a column `field`: named
    /// in its select list or its column list, or brought by its `SELECT *`
    /// from a FROM item's alias list.
    fn defines(&self, body: u32, field: &Tok) -> bool {
        let sql = self.sql;
        if self.cte_columns.iter().any(|(_, f)| *f == body) {
            // A `WITH` query's column list renames its select list's.
            return self
                .cte_columns
                .iter()
                .any(|(c, f)| *f == body && same_name(sql, c, field));
        }
        let output = self
            .outputs
            .iter()
            .any(|(o, f)| *f == body && same_name(sql, o, field));
        // `SELECT * FROM .., f(..) AS koi(key, ..)`: `key` too.
        output
            || self.stars.contains(&body)
                && self.columns.iter().any(|(a, c)| {
                    // (Not a later branch's: a UNION's columns are its first
                    // branch's, probe CV.)
                    self.aliases.get(*a).is_some_and(|x| x.2 == body && !x.4)
                        && same_name(sql, c, field)
                })
    }

    /// Whether `alias.field` (a field no catalog has) names a column. Every
    /// FROM item of a function called `alias`, anywhere in the statement,
    /// and every catalog's in scope, must have `field` in its alias's column
    /// list: `alias.f` on a function's value is `f(value)`, any function
    /// (probe CT H1-H3: a column list, a parenthesized join, a name Postgres
    /// cuts to 63 bytes). The others of that name in scope are a `WITH`
    /// query's or a subquery's, and the statement must define `field`.
    fn field_ok(&self, (alias, field): &(Tok, Tok), open: &[u32]) -> bool {
        let sql = self.sql;
        let mut in_scope = false;
        for (i, (name, rows, frame, body, _)) in self.aliases.iter().enumerate() {
            if !same_name(sql, name, alias) {
                continue;
            }
            let seen = open.contains(frame);
            // A function's value anywhere (scope aside: Postgres may see it
            // where this walk does not); a catalog's rows in scope.
            let listed = self
                .columns
                .iter()
                .any(|(a, c)| *a == i && same_name(sql, c, field));
            if (*rows == Rows::Value || (matches!(rows, Rows::Catalog(_)) && seen)) && !listed {
                return false;
            }
            // A column of that query: named in its select list or its
            // column list (probe CT H4: any name given anywhere let `s.f`
            // call an application's `f(anyelement)`).
            if *rows == Rows::Derived && seen && !(listed || self.defines(*body, field)) {
                return false;
            }
            in_scope |= seen;
        }
        in_scope
    }

    /// `name`, a select list's item ending before `next`, is a column of
    /// this frame's query (its first branch's, for a UNION).
    fn select_output(&mut self, name: Tok, next: Option<Tok>) {
        if self.top().in_select && !self.top().branched && item_ends(self.sql, next) {
            let id = self.top().id;
            self.outputs.push((name, id));
        }
    }

    /// The next significant token, kept in [`Walk::taken`].
    fn next(&mut self) -> Option<Tok> {
        let t = self.lx.next_sig()?;
        // Postgres cuts a name past 63 bytes on a character's boundary, so
        // two names may be one to it and two here (probe CU N1: `"Aé"` and
        // `"A"`): such names are not followed.
        if matches!(t.k, K::Ident | K::QIdent) && t.be - t.bs > NAME_MAX {
            self.too_long = true;
        }
        self.taken = [Some(t), self.taken[0], self.taken[1]];
        Some(t)
    }

    fn frame(&mut self) -> &mut Frame {
        &mut self.frames[self.depth]
    }

    fn top(&self) -> &Frame {
        &self.frames[self.depth]
    }

    /// Whether the frame a FROM item's name is seen in ([`Walk::scope`]) is
    /// past its first branch (a `UNION`, `INTERSECT` or `EXCEPT` came).
    fn branched(&self) -> bool {
        self.frames[..=self.depth]
            .iter()
            .rev()
            .find(|f| !f.join)
            .is_some_and(|f| f.branched)
    }

    /// The frame a FROM item's name is seen in: the innermost open one that
    /// is not a parenthesized join.
    fn scope(&self) -> u32 {
        self.frames[..=self.depth]
            .iter()
            .rev()
            .find(|f| !f.join)
            .map_or(0, |f| f.id)
    }

    fn push(&mut self, f: Frame) -> bool {
        if self.depth + 1 >= MAX_DEPTH {
            return false;
        }
        self.pushed += 1;
        self.depth += 1;
        self.frames[self.depth] = Frame {
            id: self.pushed,
            ..f
        };
        true
    }

    fn run(&mut self) -> bool {
        let Some(first) = self.next() else {
            return false;
        };
        // At the start of a frame (a `WITH` may come), and at a FROM item.
        let (mut start, mut item) = (false, false);
        if is_kw(self.sql, &first, b"WITH") {
            if !self.with_query() {
                return false;
            }
            start = true;
        } else if !is_kw(self.sql, &first, b"SELECT") {
            return false;
        }
        // What the next word may be: an alias (after `AS`, or right after
        // a FROM item), or the `FROM` of `IS [NOT] DISTINCT FROM`.
        let mut after = After::Any;
        while let Some(t) = self.next() {
            // A name Postgres would cut refuses the read (see `next`): no
            // need to compare it with anything first.
            if self.too_long {
                return false;
            }
            if start {
                start = false;
                if is_kw(self.sql, &t, b"WITH") {
                    if !self.with_query() {
                        return false;
                    }
                    start = true;
                    continue;
                }
                if self.top().item && !is_any_kw(self.sql, &t, &[b"SELECT", b"VALUES"]) {
                    // A parenthesized join: its first item comes first.
                    self.frame().in_from = true;
                    self.frame().join = true;
                    item = true;
                }
            }
            let was = std::mem::replace(&mut after, After::Any);
            let [_, prev, prev2] = self.taken;
            if std::mem::take(&mut item) {
                match self.item_at(t) {
                    Some(Next::Item) => item = true,
                    Some(Next::Open(f)) => {
                        if !self.push(f) {
                            return false;
                        }
                        start = f.item;
                    }
                    // (A function's item ends at its `)`, below.)
                    Some(Next::Go) => after = After::Item(self.last_item),
                    None => return false,
                }
                continue;
            }
            match t.k {
                K::LParen => {
                    if !self.push(Frame::default()) {
                        return false;
                    }
                    start = true;
                }
                K::LBrack => {
                    if !self.push(Frame {
                        bracket: true,
                        ..Frame::default()
                    }) {
                        return false;
                    }
                }
                K::RParen | K::RBrack => {
                    if self.depth == 0 || self.top().bracket != (t.k == K::RBrack) {
                        return false;
                    }
                    let f = self.frames[self.depth];
                    self.ctes.retain(|c| c.1 < self.depth);
                    self.depth -= 1;
                    if f.call_in_from {
                        after = After::Item(Rows::Value);
                    } else if f.item {
                        // A subquery, or a parenthesized join.
                        after = After::Item(Rows::Derived);
                        self.last_body = f.id;
                    }
                    if let Some((name, recursive)) = f.cte {
                        match self.cte_done(name, recursive, f.id) {
                            Some(next_body) => start = next_body,
                            None => return false,
                        }
                    }
                }
                K::Comma => {
                    let f = self.frame();
                    if f.in_from && !f.bracket {
                        item = true;
                    }
                }
                K::Dot => {
                    // A field of a parenthesized value: `(t).name`. Postgres
                    // reads `(x).f` as `f(x)` when `x` has no field `f`
                    // (probe CR F1: `('SELECT ..').ts_stat` ran the query,
                    // `(pid).pg_cancel_backend` cancelled another client's
                    // statement; DJ F2: `('chosen').description` ran an
                    // application's `description(text)`), so the name must
                    // be a field of `_pg_expandarray`'s rows, the only ones
                    // drivers read so (PgJDBC's `(i.keys).x`).
                    match self.next() {
                        Some(n) if matches!(n.k, K::Ident | K::QIdent) => {
                            if self.lx.peek_sig().is_some_and(|p| p.k == K::LParen)
                                || !(ident_eq(self.sql, &n, b"x") || ident_eq(self.sql, &n, b"n"))
                            {
                                return false;
                            }
                        }
                        Some(n) if n.k == K::Op && text(self.sql, &n) == b"*" => {}
                        _ => return false,
                    }
                }
                K::Cast => {
                    if !self.type_name() {
                        return false;
                    }
                }
                K::Op => {
                    if !OPERATORS.contains(&text(self.sql, &t)) {
                        return false;
                    }
                    // Found by name too: a schema ahead of `pg_catalog` may
                    // have an operator of that spelling (probe CR F4). (Not
                    // a `*` of all columns: `SELECT *`, `t.*`, `count(*)`.)
                    let star = text(self.sql, &t) == b"*"
                        && prev.is_none_or(|p| {
                            matches!(p.k, K::Comma | K::LParen | K::Dot)
                                || is_kw(self.sql, &p, b"SELECT")
                        });
                    self.by_name |= !star;
                    if star && self.top().in_select && !self.top().branched {
                        let id = self.top().id;
                        self.stars.push(id);
                    }
                }
                K::Str { .. } | K::Dollar | K::Int | K::Num | K::Param(_) | K::Colon => {}
                K::Lit => {
                    // `U&"..."` is an identifier: a name spelled with escapes.
                    let s = text(self.sql, &t);
                    if s.len() > 2 && s[..2].eq_ignore_ascii_case(b"u&") && s[2] == b'"' {
                        return false;
                    }
                }
                K::Ident | K::QIdent => match self.word(t, was, [prev, prev2]) {
                    Some(Next::Item) => item = true,
                    Some(Next::Go) => {
                        after = if is_kw(self.sql, &t, b"AS") && !self.top().cast {
                            After::As(match was {
                                After::Item(rows) => Some(rows),
                                _ => None,
                            })
                        } else if is_kw(self.sql, &t, b"ORDINALITY")
                            && prev.is_some_and(|p| is_kw(self.sql, &p, b"WITH"))
                        {
                            // `WITH ORDINALITY cols(a, b)`: an alias comes
                            // (not after a column named `ordinality`: probe
                            // CW F1 took `FROM` for its alias).
                            After::Item(Rows::Value)
                        } else if is_any_kw(self.sql, &t, &[b"IS", b"NOT"])
                            && (was == After::Is || is_kw(self.sql, &t, b"IS"))
                        {
                            After::Is
                        } else if was == After::Is && is_kw(self.sql, &t, b"DISTINCT") {
                            After::Distinct
                        } else {
                            After::Any
                        };
                    }
                    Some(Next::Open(f)) => {
                        if !self.push(f) {
                            return false;
                        }
                        start = true;
                    }
                    None => return false,
                },
                K::Semi | K::Comment | K::Other => return false,
            }
        }
        self.depth == 0 && !item && !start
    }

    /// A word outside a FROM item: a keyword, a column, a function's name,
    /// an alias. `after` tells what came just before, `prev` the token
    /// before it and `prev2` the one before that.
    fn word(&mut self, t: Tok, after: After, [prev, prev2]: [Option<Tok>; 2]) -> Option<Next> {
        let sql = self.sql;
        let chain = self.chain(t)?;
        let next = self.lx.peek_sig();
        let paren = next.is_some_and(|n| n.k == K::LParen);
        let literal = next.is_some_and(|n| matches!(n.k, K::Str { .. } | K::Dollar | K::Lit));
        let keyword = chain.len == 1 && t.k == K::Ident;
        let w = text(sql, &t);
        let is = |list: &[&[u8]]| keyword && list.iter().any(|k| w.eq_ignore_ascii_case(k));
        let prev_is = |list: &[&[u8]]| prev.is_some_and(|p| is_any_kw(sql, &p, list));
        // An alias, and the rows of the FROM item it names, if it does.
        let (alias, of_item) = match after {
            After::As(item) => (true, item),
            // Right after a FROM item, a word that is not a keyword of
            // what may follow one: `generate_series(1, 32) pos(n)`.
            After::Item(rows) => (!is(AFTER_ITEM), Some(rows)),
            _ => (false, None),
        };
        if is(FORBIDDEN) && !(self.top().args_from && is(&[b"for"])) {
            // (Refused as an alias too: `FROM pg_class update` is one, and
            // refusing it costs nothing.)
            return None;
        }
        if self.top().columns {
            // An alias's column names (`AS t(a, b)`): names, nothing else.
            if chain.len != 1 || chain.star || paren {
                return None;
            }
            if let Some(i) = self.top().columns_of {
                self.columns.push((i, t));
            }
            return Some(Next::Go);
        }
        if alias {
            // An alias (`AS x`, `x(a, b)`): a `(` after it lists column
            // names.
            if chain.len != 1 || chain.star {
                return None;
            }
            let mut columns_of = None;
            match of_item {
                Some(rows) => {
                    // (A function's rows named with their columns, `b(q)`,
                    // are still its value to Postgres: `b.f` is `f(b)`,
                    // probe CT H1.)
                    columns_of = Some(self.aliases.len());
                    let id = self.scope();
                    let body = if rows == Rows::Derived {
                        self.last_body
                    } else {
                        0
                    };
                    let late = self.branched();
                    self.aliases.push((t, rows, id, body, late));
                }
                // A select list's column name: an output of this frame's
                // query.
                None if !self.top().branched => {
                    let id = self.top().id;
                    self.outputs.push((t, id));
                }
                None => {}
            }
            if paren {
                self.next();
                return Some(Next::Open(Frame {
                    columns: true,
                    columns_of,
                    ..Frame::default()
                }));
            }
            return Some(Next::Go);
        }
        if keyword {
            if self.top().args_from && is(&[b"from", b"for", b"placing"]) {
                // `SUBSTRING(x FROM 1 FOR 2)`, `TRIM(BOTH ' ' FROM x)`.
                return Some(Next::Go);
            }
            if is(&[b"from"]) && after == After::Distinct {
                // `IS [NOT] DISTINCT FROM`: a comparison.
                return Some(Next::Go);
            }
            if is(&[b"operator"]) {
                return self.operator().then_some(Next::Go);
            }
            if is(&[b"collate"]) {
                // A collation's name (`COLLATE pg_catalog.default`,
                // `COLLATE "C"`): no code of the application's runs.
                let n = self.next()?;
                if !matches!(n.k, K::Ident | K::QIdent) {
                    return None;
                }
                let c = self.chain(n)?;
                return (!c.star).then_some(Next::Go);
            }
            if is(&[b"from", b"join"]) {
                self.frame().in_from = true;
                self.frame().in_select = false;
                return Some(Next::Item);
            }
            if is(FROM_ENDS) {
                self.frame().in_from = false;
                self.frame().in_select = is(&[b"select"]);
            }
            if is(&[b"union", b"intersect", b"except"]) {
                self.frame().branched = true;
            }
            if is(&[b"as"]) && self.top().cast {
                return self.type_name().then_some(Next::Go);
            }
            // `ORDER BY`, `GROUP BY`, `PARTITION BY`: the keyword.
            let by = is(&[b"by"]) && prev_is(&[b"order", b"group", b"partition"]);
            if paren {
                if is(&[b"cast"]) {
                    self.next();
                    return Some(Next::Open(Frame {
                        cast: true,
                        ..Frame::default()
                    }));
                }
                if is(ARGS_FROM) {
                    // `substring(a, b)` and `overlay(a, b, c)` with commas
                    // are calls of whatever `search_path` finds by those
                    // names (probe DI F6), unlike their `FROM`/`PLACING`
                    // syntax: both count as named.
                    self.by_name = true;
                    self.next();
                    return Some(Next::Open(Frame {
                        args_from: true,
                        ..Frame::default()
                    }));
                }
                // `agg(..) FILTER (WHERE ..)`, `f(..) OVER (..)`: after a call.
                let clause = is(&[b"over", b"filter"]) && prev.is_some_and(|p| p.k == K::RParen);
                if is(SYNTAX_PAREN) || clause || by {
                    return Some(Next::Go);
                }
                return self.function(&chain).then_some(Next::Go);
            }
            if literal {
                // `x LIKE 'a'`, `x NOT ILIKE 'a'`, `'a' ESCAPE '!'`.
                let operand = |t: Option<Tok>| t.is_some_and(|p| ends_operand(sql, &p));
                let operator =
                    is(OPERATOR_WORDS) && (operand(prev) || (prev_is(&[b"not"]) && operand(prev2)));
                if !(is(RESERVED_BEFORE_LITERAL) || operator || by) {
                    // `text 'x'`: a literal of that type.
                    return self.known_type(&chain).then_some(Next::Go);
                }
            }
            // A select list's item that is a bare column named like a
            // catalog's (`SELECT attrelid FROM ..`): an output of this
            // frame's query. (Only such names: a keyword's output is named
            // otherwise, `SELECT true` gives `bool`.)
            if is_field_name(sql, &t) {
                self.select_output(t, next);
            }
            return Some(Next::Go);
        }
        if paren {
            return self.function(&chain).then_some(Next::Go);
        }
        if literal {
            return self.known_type(&chain).then_some(Next::Go);
        }
        // A select list's item that is a column (`s.r`, `r`): an output of
        // this frame's query, named as the column.
        if chain.star {
            if self.top().in_select && !self.top().branched && item_ends(sql, next) {
                let id = self.top().id;
                self.stars.push(id);
            }
        } else {
            self.select_output(chain.parts[chain.len - 1], next);
        }
        // A column: `alias.name` or `alias.column.field`. Postgres reads a
        // name that is no column of what precedes it as a call of the
        // function of that name on it (probe CR F1), so each name after
        // the first is a catalog column's, or (after an alias) a name the
        // statement defines.
        let schema = [b"pg_catalog".as_slice(), b"information_schema"]
            .iter()
            .any(|n| ident_eq(sql, &chain.parts[0], n));
        if schema {
            // `pg_catalog.pg_class.relname`: a catalog's column, qualified.
            let table = Chain {
                parts: [chain.parts[0], chain.parts[1], chain.parts[1]],
                len: 2,
                star: false,
            };
            let column = chain.star || is_field_name(sql, &chain.parts[2]);
            return (chain.len == 3 && self.relation(&table) && column).then_some(Next::Go);
        }
        if chain.len > 1 {
            for (i, part) in chain.parts[..chain.len].iter().enumerate().skip(1) {
                if is_field_name(sql, part) {
                    // A catalog's column, but after a function's alias only
                    // one its alias lists (probe DJ F2: `b.description ..
                    // FROM unnest(ARRAY['chosen']) b` ran an application's
                    // `description(text)`): checked at the end.
                    if i == 1 && chain.len == 2 {
                        let open = self.frames[..=self.depth].iter().map(|f| f.id).collect();
                        self.catalog_fields.push((chain.parts[0], *part, open));
                    }
                    continue;
                }
                if i == 1 && chain.len == 2 {
                    self.fields.push((chain.parts[0], *part));
                    let open = self.frames[..=self.depth].iter().map(|f| f.id).collect();
                    self.fields_see.push(open);
                    continue;
                }
                return None;
            }
        }
        Some(Next::Go)
    }

    /// After `OPERATOR`: `(op)` or `(pg_catalog.op)`, `op` one of
    /// [`OPERATORS`] (psql's `OPERATOR(pg_catalog.~)`).
    fn operator(&mut self) -> bool {
        if !self.next().is_some_and(|n| n.k == K::LParen) {
            return false;
        }
        let mut op = self.next();
        if op.is_some_and(|n| ident_eq(self.sql, &n, b"pg_catalog")) {
            if !self.next().is_some_and(|n| n.k == K::Dot) {
                return false;
            }
            op = self.next();
        }
        op.is_some_and(|n| n.k == K::Op && OPERATORS.contains(&text(self.sql, &n)))
            && self.next().is_some_and(|n| n.k == K::RParen)
    }

    /// A FROM item at `t`.
    fn item_at(&mut self, t: Tok) -> Option<Next> {
        match t.k {
            K::LParen => Some(Next::Open(Frame {
                item: true,
                ..Frame::default()
            })),
            K::Ident if is_any_kw(self.sql, &t, &[b"LATERAL", b"ONLY"]) => Some(Next::Item),
            K::Ident | K::QIdent => {
                let chain = self.chain(t)?;
                if chain.star {
                    return None;
                }
                let name = chain.parts[chain.len - 1];
                if self.lx.peek_sig().is_some_and(|n| n.k == K::LParen) {
                    if !self.function(&chain) {
                        return None;
                    }
                    self.next();
                    let id = self.scope();
                    let late = self.branched();
                    self.aliases.push((name, Rows::Value, id, 0, late));
                    return Some(Next::Open(Frame {
                        call_in_from: true,
                        ..Frame::default()
                    }));
                }
                let cte = (chain.len == 1)
                    .then(|| {
                        // The innermost of that name in scope.
                        self.ctes
                            .iter()
                            .rev()
                            .find(|(n, ..)| same_name(self.sql, n, &name))
                            .map(|c| c.2)
                    })
                    .flatten();
                self.last_item = if cte.is_some() {
                    Rows::Derived
                } else {
                    Rows::Catalog(relation_index(self.sql, &name))
                };
                self.last_body = cte.unwrap_or(0);
                let id = self.scope();
                let late = self.branched();
                self.aliases
                    .push((name, self.last_item, id, self.last_body, late));
                self.relation(&chain).then_some(Next::Go)
            }
            _ => None,
        }
    }

    /// A dotted name starting at `first` (the cursor after it): up to three
    /// parts, or a `.*` after the last.
    fn chain(&mut self, first: Tok) -> Option<Chain> {
        let mut c = Chain {
            parts: [first; 3],
            len: 1,
            star: false,
        };
        while self.lx.peek_sig().is_some_and(|n| n.k == K::Dot) {
            self.next();
            let n = self.next()?;
            if n.k == K::Op && text(self.sql, &n) == b"*" {
                c.star = true;
                return Some(c);
            }
            if !matches!(n.k, K::Ident | K::QIdent) || c.len == 3 {
                return None;
            }
            c.parts[c.len] = n;
            c.len += 1;
        }
        Some(c)
    }

    /// A relation read in a FROM: a catalog, an `information_schema` view, or
    /// a `WITH` query in scope.
    fn relation(&mut self, c: &Chain) -> bool {
        let sql = self.sql;
        match c.len {
            1 => {
                let name = c.parts[0];
                if self.ctes.iter().any(|(n, ..)| same_name(sql, n, &name)) {
                    return true;
                }
                let known = RELATIONS.iter().any(|r| ident_eq(sql, &name, r));
                self.by_name |= known;
                known
            }
            2 => {
                let (schema, name) = (c.parts[0], c.parts[1]);
                (ident_eq(sql, &schema, b"pg_catalog")
                    && RELATIONS.iter().any(|r| ident_eq(sql, &name, r)))
                    || ident_eq(sql, &schema, b"information_schema")
            }
            _ => false,
        }
    }

    /// A function called by name `c`.
    fn function(&mut self, c: &Chain) -> bool {
        let sql = self.sql;
        if c.star {
            return false;
        }
        match c.len {
            1 => {
                let known = FUNCTIONS.iter().any(|f| ident_eq(sql, &c.parts[0], f));
                self.by_name |= known;
                known
            }
            2 => {
                let (schema, name) = (c.parts[0], c.parts[1]);
                (ident_eq(sql, &schema, b"pg_catalog")
                    && FUNCTIONS.iter().any(|f| ident_eq(sql, &name, f)))
                    || (ident_eq(sql, &schema, b"information_schema")
                        && INFO_SCHEMA_FUNCTIONS
                            .iter()
                            .any(|f| ident_eq(sql, &name, f)))
            }
            _ => false,
        }
    }

    /// A type named by `c` (a typed literal's): built in.
    fn known_type(&mut self, c: &Chain) -> bool {
        let sql = self.sql;
        if c.star {
            return false;
        }
        match c.len {
            1 => {
                let t = c.parts[0];
                if t.k == K::Ident && is_any_kw(sql, &t, KEYWORD_TYPES) {
                    return true;
                }
                let known = TYPES.iter().any(|n| ident_eq(sql, &t, n));
                self.by_name |= known;
                known
            }
            2 => {
                let (schema, name) = (c.parts[0], c.parts[1]);
                (ident_eq(sql, &schema, b"pg_catalog")
                    && (TYPES
                        .iter()
                        .chain(KEYWORD_TYPES)
                        .any(|n| ident_eq(sql, &name, n))))
                    || ident_eq(sql, &schema, b"information_schema")
            }
            _ => false,
        }
    }

    /// The type after `::` or a CAST's `AS`: a built-in name, the words of
    /// a keyword type, a modifier list of numbers, and `[]`s.
    fn type_name(&mut self) -> bool {
        let Some(t) = self.next() else {
            return false;
        };
        if !matches!(t.k, K::Ident | K::QIdent) {
            return false;
        }
        let Some(c) = self.chain(t) else {
            return false;
        };
        if !(self.known_type(&c) || c.len == 1 && double_precision(self.sql, &t, &self.lx)) {
            return false;
        }
        while self
            .lx
            .peek_sig()
            .is_some_and(|n| is_any_kw(self.sql, &n, TYPE_TAIL))
        {
            self.next();
        }
        if self.lx.peek_sig().is_some_and(|n| n.k == K::LParen) {
            self.next();
            loop {
                match self.next().map(|n| n.k) {
                    Some(K::Int | K::Comma) => {}
                    Some(K::RParen) => break,
                    _ => return false,
                }
            }
        }
        while self.lx.peek_sig().is_some_and(|n| n.k == K::LBrack) {
            self.next();
            if self.lx.peek_sig().is_some_and(|n| n.k == K::Int) {
                self.next();
            }
            if !self.next().is_some_and(|n| n.k == K::RBrack) {
                return false;
            }
        }
        true
    }

    /// After `WITH`: `[RECURSIVE]`, then the first query's name, columns
    /// and `AS [[NOT] MATERIALIZED] (`, leaving the walk in its body.
    fn with_query(&mut self) -> bool {
        let recursive = self
            .lx
            .peek_sig()
            .is_some_and(|n| is_kw(self.sql, &n, b"RECURSIVE"));
        if recursive {
            self.next();
        }
        self.cte_header(recursive)
    }

    /// One `WITH` query's header, up to the `(` of its body.
    fn cte_header(&mut self, recursive: bool) -> bool {
        let sql = self.sql;
        let Some(name) = self.next() else {
            return false;
        };
        if !matches!(name.k, K::Ident | K::QIdent) {
            return false;
        }
        if self.lx.peek_sig().is_some_and(|n| n.k == K::LParen) {
            self.next();
            loop {
                match self.next() {
                    // (The body's frame is the next one opened.)
                    Some(n) if matches!(n.k, K::Ident | K::QIdent) => {
                        self.cte_columns.push((n, self.pushed + 1))
                    }
                    Some(n) if n.k == K::Comma => {}
                    Some(n) if n.k == K::RParen => break,
                    _ => return false,
                }
            }
        }
        if !self.next().is_some_and(|n| is_kw(sql, &n, b"AS")) {
            return false;
        }
        if self.lx.peek_sig().is_some_and(|n| is_kw(sql, &n, b"NOT")) {
            self.next();
        }
        if self
            .lx
            .peek_sig()
            .is_some_and(|n| is_kw(sql, &n, b"MATERIALIZED"))
        {
            self.next();
        }
        if !self.next().is_some_and(|n| n.k == K::LParen) {
            return false;
        }
        // The list's names are the statement's from here on (its own body
        // included, when RECURSIVE; a later query's name is not yet, so a
        // reference to it reads as a relation, and is refused unless a
        // catalog). The frame holding them is the one the WITH is in.
        if recursive {
            self.ctes.push((name, self.depth, self.pushed + 1));
        }
        self.push(Frame {
            cte: Some((name, recursive)),
            ..Frame::default()
        })
    }

    /// A `WITH` query's body closed: the next query of the list (`true`:
    /// the walk is at the start of its body), or the statement.
    fn cte_done(&mut self, name: Tok, recursive: bool, body: u32) -> Option<bool> {
        if !recursive {
            self.ctes.push((name, self.depth, body));
        }
        match self.lx.peek_sig() {
            Some(n) if n.k == K::Comma => {
                self.next();
                self.cte_header(recursive).then_some(true)
            }
            // SEARCH / CYCLE clauses are not followed.
            Some(n) if is_any_kw(self.sql, &n, &[b"SEARCH", b"CYCLE"]) => None,
            _ => Some(false),
        }
    }
}

/// What the walk expects after a token.
enum Next {
    /// Anything.
    Go,
    /// A FROM item.
    Item,
    /// The contents of the `(` just consumed, in this frame.
    Open(Frame),
}

/// What came just before a word.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Any,
    /// `AS` (not a CAST's): an alias; `Some` when `AS` came right after a
    /// FROM item (see [`After::Item`]).
    As(Option<Rows>),
    /// A FROM item (or `WITH ORDINALITY`): an alias may come.
    Item(Rows),
    /// `IS` or `IS NOT`.
    Is,
    /// `IS [NOT] DISTINCT`: its `FROM` compares.
    Distinct,
}

/// What the rows of a FROM item are, as `alias.name` reads them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rows {
    /// A function's: one value, of any type (`alias.f` is `f(value)`).
    Value,
    /// A catalog's: its columns only; `Some`: the relation's index in
    /// [`catalog_relations`] (`None`: one PostgreSQL 15 does not have).
    Catalog(Option<u16>),
    /// A `WITH` query's, a subquery's, or a function's named with their
    /// columns: names the statement gives.
    Derived,
}

/// A dotted name.
struct Chain {
    parts: [Tok; 3],
    len: usize,
    /// Ends in `.*`.
    star: bool,
}

/// Whether a select list's item ends before `next`: at a comma, the `)`
/// that closes its query, `FROM`, or the end.
fn item_ends(sql: &[u8], next: Option<Tok>) -> bool {
    next.is_none_or(|n| matches!(n.k, K::Comma | K::RParen) || is_kw(sql, &n, b"FROM"))
}

/// Whether token `t` ends an operand: a literal, a parameter, a `)` or `]`,
/// or a name that is none of the words an expression starts after.
fn ends_operand(sql: &[u8], t: &Tok) -> bool {
    match t.k {
        K::Str { .. } | K::Dollar | K::Lit | K::Int | K::Num | K::Param(_) => true,
        K::RParen | K::RBrack | K::QIdent => true,
        K::Ident => {
            !is_any_kw(sql, t, RESERVED_BEFORE_LITERAL)
                && !is_any_kw(sql, t, EXPRESSION_STARTS)
                && !is_any_kw(sql, t, SYNTAX_PAREN)
                && !is_any_kw(sql, t, FROM_ENDS)
        }
        _ => false,
    }
}

/// Whether `t` is the name of a column of a catalog [`catalog_read`] may
/// read ([`FIELD_NAMES`]), or a field of `information_schema._pg_expandarray`'s
/// result (`x`, `n`).
fn is_field_name(sql: &[u8], t: &Tok) -> bool {
    let mut buf = [0u8; 64];
    let Some(name) = folded(sql, t, &mut buf) else {
        return false;
    };
    name == b"x" || name == b"n" || FIELD_NAMES.binary_search(&name).is_ok()
}

/// The most queries a `SELECT *` chain is followed through
/// ([`Walk::brings`]); a longer one is refused.
const CHAIN_MAX: u8 = 8;

/// Postgres cuts longer names to this many bytes (`NAMEDATALEN - 1`): two
/// names alike in their first 63 bytes are one (probe CT H3).
const NAME_MAX: usize = 63;

/// Whether two identifiers name the same thing (unquoted ones folded to
/// lower case, quoted ones as written with `""` as `"`), cut as Postgres
/// cuts them.
fn same_name(sql: &[u8], a: &Tok, b: &Tok) -> bool {
    // Folded lazily and no further than Postgres keeps: a name of megabytes
    // compared with every `WITH` name held a worker for seconds (probe DI
    // F5: 580 names and a 2 MB quoted one took 6 s).
    fn folded<'s>(sql: &'s [u8], t: &Tok) -> impl Iterator<Item = u8> + 's {
        let quoted = t.k == K::QIdent;
        let name = if quoted { body(sql, t) } else { text(sql, t) };
        let mut i = 0;
        std::iter::from_fn(move || {
            let c = *name.get(i)?;
            // A quoted name's `""` is one `"`; an unquoted one folds.
            i += if quoted && c == b'"' { 2 } else { 1 };
            Some(if quoted { c } else { c.to_ascii_lowercase() })
        })
        .take(NAME_MAX)
    }
    folded(sql, a).eq(folded(sql, b))
}

#[cfg(test)]
mod tests {
    use super::super::statement::{analyze, Facts, Kind};

    /// The statements in `testdata/catalog_reads.txt`: each follows a
    /// `-- source:` line and ends at a line `-- end`.
    fn corpus() -> Vec<(String, String)> {
        super::captured()
            .into_iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect()
    }

    fn kind(sql: &str) -> Kind {
        let mut f = Facts::default();
        analyze(sql.as_bytes(), b"tenant_id", true, &mut f);
        f.first
    }

    /// Whether the walk alone takes `sql`, whatever its form.
    fn walked(sql: &str) -> bool {
        super::walk(sql.as_bytes(), true, true).is_some()
    }

    /// Neither the walk nor the router takes `sql` as a catalog read.
    fn refused(sql: &str) {
        assert!(!walked(sql), "the walk took {sql}");
        assert_ne!(kind(sql), Kind::Catalog, "{sql}");
    }

    /// The walk alone takes these (none is of a captured form: see
    /// `only_captured_forms_read_without_a_tenant`).
    #[test]
    fn the_walk_takes_reads_of_the_catalog_alone() {
        for sql in [
            "SELECT 1",
            "select $1::int8[]",
            "SELECT t.oid FROM pg_catalog.pg_type AS t WHERE t.typname = $1",
            "SELECT * FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace",
            "SELECT * FROM \"pg_class\"",
            "SELECT * FROM information_schema.columns WHERE table_name = 'orders'",
            "WITH RECURSIVE r(oid) AS (SELECT oid FROM pg_type UNION ALL \
             SELECT t.typelem FROM pg_type t, r WHERE t.oid = r.oid) SELECT * FROM r",
            "WITH a AS (SELECT oid AS x FROM pg_type), b AS (SELECT * FROM a) SELECT b.x FROM b",
            "SELECT * FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(x)$' \
             COLLATE pg_catalog.default",
            "SELECT substring(relname FROM 1 FOR 3), trim(both ' ' from relname) FROM pg_class",
            "SELECT a.n FROM pg_catalog.generate_series(1, 3) a(n)",
            "SELECT u.x FROM pg_catalog.unnest(ARRAY[1,2]) WITH ORDINALITY u(x, i)",
            "SELECT CAST(oid AS pg_catalog.text), oid::regclass::text FROM pg_class",
            "SELECT setting FROM pg_settings WHERE name = 'max_index_keys' \
             AND setting IS NOT DISTINCT FROM boot_val",
            "SELECT relname FROM pg_class WHERE relname LIKE 'pg!_%' ESCAPE '!' \
             AND relname NOT ILIKE 'x%' ORDER BY relname",
            "SELECT count(*) FILTER (WHERE relkind = 'r'), \
             row_number() OVER (PARTITION BY relkind ORDER BY relname) FROM pg_class \
             GROUP BY relkind, relname",
            "SELECT tmp.table_cat FROM (SELECT NULL AS TABLE_CAT FROM pg_class) AS tmp",
            "SELECT relname FROM pg_class WHERE relname::text LIKE 'pg%'",
            // PgJDBC's (probe CS G4).
            "SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'",
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_temp_'",
            "SELECT s.leak, u.n FROM (SELECT 1 AS leak FROM pg_class) s, \
             pg_catalog.unnest(ARRAY[1]) u(n)",
            "SELECT b.q, c.x FROM pg_catalog.unnest(ARRAY[1]) AS b(q), pg_catalog.pg_class c(x)",
            "WITH w(y) AS (SELECT oid FROM pg_type) SELECT w.y, s.x, s.nspname FROM w, \
             (SELECT oid AS x, n.nspname FROM pg_namespace n) s",
            "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class",
            "SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_index i",
        ] {
            assert!(walked(sql), "{sql}");
        }
    }

    /// Forms that read (or may read, or change) a tenant's rows, or run the
    /// application's code, wherever they hide in the statement.
    #[test]
    fn anything_else_is_not_a_catalog_read() {
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM pg_class, orders",
            "SELECT * FROM pg_class c JOIN orders o ON true",
            "SELECT * FROM pg_class c JOIN pg_type t ON t.oid = ANY(ARRAY[1,2]), orders",
            "SELECT * FROM pg_class c LEFT JOIN pg_type t USING (oid) CROSS JOIN orders",
            "SELECT * FROM (pg_class c JOIN orders o ON true)",
            "SELECT * FROM ((orders))",
            "SELECT * FROM pg_class, LATERAL (SELECT * FROM orders) o",
            "SELECT (SELECT count(*) FROM orders)",
            "SELECT * FROM pg_class WHERE oid IN (SELECT x FROM orders)",
            "SELECT * FROM pg_class WHERE relname IS DISTINCT FROM (SELECT n FROM orders)",
            "SELECT substring(relname FROM (SELECT n FROM orders)) FROM pg_class",
            "SELECT * FROM pg_class UNION SELECT * FROM orders",
            "SELECT * FROM pg_class AS a, orders",
            "SELECT * FROM pg_class where_, orders",
            "SELECT * FROM generate_series(1, 2) g(i), orders",
            "SELECT * FROM unnest(ARRAY[1]) WITH ORDINALITY u(x, i), orders",
            "SELECT * FROM pg_class c(query_to_xml('select 1', true, false, ''))",
            // A later WITH query's name, before it is defined, is a table.
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            // A WITH query's name outside its scope is a table.
            "SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) x, s",
            "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x",
            "WITH x AS (SELECT 1) INSERT INTO orders SELECT * FROM x",
            "SELECT * INTO t FROM pg_class",
            "SELECT * FROM pg_class FOR UPDATE",
            // Large objects are the application's data (psql's `\dl`).
            "SELECT oid, pg_catalog.obj_description(oid, 'pg_largeobject') \
             FROM pg_catalog.pg_largeobject_metadata ORDER BY oid",
            "SELECT pg_catalog.pg_get_userbyid(lomowner) FROM pg_largeobject_metadata",
            "SELECT * FROM pg_class update",
            "SELECT * FROM pg_class WHERE oid IN (TABLE orders)",
            "SELECT * FROM ROWS FROM (generate_series(1, 2))",
            "SELECT * FROM public.pg_class",
            "SELECT * FROM pg_temp.pg_class",
            "SELECT * FROM app.pg_catalog.pg_class",
            "SELECT * FROM \"PG_CLASS\"",
            "SELECT * FROM information_schema.tables, orders",
            // Catalogs that hold rows, other sessions' text, a sequence's value.
            "SELECT * FROM pg_stats",
            "SELECT * FROM pg_catalog.pg_statistic",
            "SELECT * FROM pg_stat_activity",
            "SELECT * FROM pg_prepared_statements",
            "SELECT * FROM pg_largeobject",
            "SELECT * FROM pg_sequences",
            // Functions that read rows, change state or take locks.
            "SELECT query_to_xml('select * from orders', true, false, '')",
            "SELECT pg_catalog.table_to_xml('orders', true, false, '')",
            "SELECT U&\"quer\\0079_to_xml\"('select 1', true, false, '')",
            "SELECT nextval('s')",
            "SELECT pg_advisory_lock(1) FROM pg_class",
            "SELECT set_config('a.b', 'c', false) FROM pg_class",
            "SELECT public.format_type(1, 2)",
            "SELECT my_function() FROM pg_class",
            // Types of the application's (a domain's CHECK runs its code).
            "SELECT 'x'::my_domain",
            "SELECT my_domain 'x'",
            "SELECT CAST('x' AS my_domain)",
            "SELECT 'x'::public.text",
            // Operators of the application's.
            "SELECT 1 OPERATOR(public.===) 2",
            "SELECT oid ### 1 FROM pg_class",
            "SELECT oid -> 1 FROM pg_class",
            // A name after a dot that is no column of what precedes it is a
            // call of that function on it (probe CR F1).
            "SELECT ('SELECT 1').ts_stat FROM pg_class LIMIT 1",
            "SELECT (b).pg_stat_get_backend_activity FROM generate_series(1, 40) b",
            "SELECT (1234).pg_cancel_backend FROM pg_class LIMIT 1",
            "SELECT ('s'::regclass).nextval FROM pg_class LIMIT 1",
            "SELECT c.leak_row FROM pg_class c",
            "SELECT c.relname.ts_stat FROM pg_class c",
            "SELECT 1 AS ts_stat FROM pg_class c WHERE (c.relname).ts_stat IS NULL",
            "SELECT pg_catalog.pg_class.ts_stat FROM pg_catalog.pg_class",
            "SELECT pg_catalog.orders.name FROM pg_catalog.pg_class",
            // Keywords Postgres also takes for a function's or a type's name
            // (probe CR F2).
            "SELECT filter(1) FROM pg_class",
            "SELECT over(1) FROM pg_class",
            "SELECT by(1) FROM pg_class",
            "SELECT is(1) FROM pg_class",
            "SELECT like(1) FROM pg_class",
            "SELECT ilike(1) FROM pg_class",
            "SELECT escape 'x' FROM pg_class",
            "SELECT similar 'x' FROM pg_class",
            "SELECT 1 FROM pg_class WHERE like 'x' IS NULL",
            "SELECT 1 FROM pg_class ORDER BY escape 'x'",
            "SELECT by 'x' FROM pg_class",
            // A name the statement gives, after an alias whose rows lack it:
            // a function's value, or a catalog's row (probe CS G1).
            "SELECT b.ts_stat AS ts_stat FROM pg_catalog.unnest(ARRAY['SELECT 1']) b",
            "SELECT unnest.ts_stat AS ts_stat FROM pg_catalog.unnest(ARRAY['SELECT 1'])",
            "SELECT b.nextval AS nextval FROM pg_catalog.unnest(ARRAY['s']) AS b",
            "SELECT c.leak_row AS leak_row FROM pg_catalog.pg_class c",
            "SELECT x.leak FROM (SELECT 1 AS leak) s, pg_catalog.pg_class x",
            "SELECT o.leak FROM pg_catalog.unnest(ARRAY[1]) WITH ORDINALITY o, \
             (SELECT 1 AS leak) s",
            // A function's value named with a column list is still its value
            // (probe CT H1); one inside a parenthesized join is seen outside
            // it (H2).
            "SELECT b.ts_stat AS ts_stat FROM pg_catalog.unnest(ARRAY['SELECT 1']) AS b(q)",
            "SELECT b.ts_stat FROM (pg_catalog.pg_class c CROSS JOIN \
             pg_catalog.unnest(ARRAY['SELECT 1']) b), (SELECT 1 AS ts_stat) d",
            "SELECT c.leak FROM pg_catalog.pg_class AS c(x), (SELECT 1 AS leak) d",
            // A name given, but not to that query's columns (probe CT H4).
            "SELECT s.leak FROM (SELECT oid AS x FROM pg_class) s, (SELECT 2 AS leak) t",
            "SELECT s.leak AS leak FROM (SELECT oid AS x FROM pg_class) s",
            "WITH w AS (SELECT oid AS x FROM pg_type) SELECT w.leak AS leak FROM w",
            "SELECT s.leak FROM (SELECT 1 AS x FROM pg_class c(leak)) s",
        ] {
            refused(sql);
        }
        // Postgres cuts names to 63 bytes: two aliases alike in those are one
        // (probe CT H3).
        let a = "a".repeat(63);
        let sql = format!(
            "SELECT {a}1.ts_stat FROM (SELECT 1 AS ts_stat) {a}1, \
             pg_catalog.unnest(ARRAY['SELECT 1']) {a}2"
        );
        refused(&sql);
        // Cut on a character's boundary, `"{62 a}é"` is `"{62 a}"` to
        // Postgres: names past 63 bytes are not followed (probe CU N1).
        let a = "a".repeat(62);
        let sql = format!(
            "SELECT (SELECT \"{a}é\".ts_stat AS ts_stat FROM \
             pg_catalog.unnest(ARRAY['SELECT 1']) \"{a}\" LIMIT 1) \
             FROM (SELECT 1 AS ts_stat) \"{a}é\""
        );
        refused(&sql);
        // A UNION's columns are its first branch's (probe CU T6).
        for sql in [
            "SELECT s.leak AS leak FROM (SELECT 1 AS a FROM pg_class UNION ALL \
             SELECT * FROM pg_catalog.unnest(ARRAY[1]) b(leak)) s",
            "SELECT s.leak FROM (SELECT oid AS a FROM pg_class UNION \
             SELECT oid AS leak FROM pg_type) s",
            // A first branch's `*` takes only its own FROM items' columns.
            "SELECT s.leak AS leak FROM (SELECT * FROM pg_catalog.unnest(ARRAY[1]) c(a) \
             UNION ALL SELECT 2 FROM pg_catalog.unnest(ARRAY[1]) b(leak)) s",
        ] {
            refused(sql);
        }
        let deep = format!("SELECT {}1{}", "(".repeat(40), ")".repeat(40));
        refused(&deep);
    }

    #[test]
    fn names_found_through_search_path_are_told() {
        let read = |sql: &str| super::walk(sql.as_bytes(), true, true).map(|c| c.by_name);
        assert_eq!(read("SELECT 1"), Some(false));
        assert_eq!(read("SELECT * FROM pg_catalog.pg_type"), Some(false));
        assert_eq!(
            read("SELECT pg_catalog.format_type(t.oid, NULL)::pg_catalog.text FROM pg_catalog.pg_type t"),
            Some(false)
        );
        assert_eq!(
            read("WITH a AS (SELECT oid FROM pg_catalog.pg_type) SELECT * FROM a"),
            Some(false)
        );
        assert_eq!(read("SELECT * FROM pg_type"), Some(true));
        assert_eq!(read("SELECT format_type(1, NULL)"), Some(true));
        assert_eq!(read("SELECT 'x'::text"), Some(true));
        assert_eq!(read("SELECT 'x'::varchar(3)"), Some(false));
    }

    /// Probe DJ F1, F2: `x.f` is `f(x)` where `x` has no column `f`.
    #[test]
    fn no_name_after_a_dot_calls_a_function_of_the_applications() {
        // Not after `(..)` but for `_pg_expandarray`'s fields, not after a
        // function's alias unless its alias lists the name, not `tableoid`
        // (a view has none) nor a function's rows' columns.
        for sql in [
            "SELECT ('attacker chosen').level",
            "SELECT (42).description",
            "SELECT ('chosen').description",
            "SELECT (n.nspname).relid FROM pg_catalog.pg_namespace n",
            "SELECT b.description FROM pg_catalog.unnest(ARRAY['chosen']) b",
            "SELECT b.description FROM pg_catalog.generate_series(7, 7) b",
            "SELECT b.alias FROM pg_catalog.unnest(ARRAY['x']) b",
            "SELECT r.tableoid FROM pg_catalog.pg_roles r",
            "SELECT t.tableoid FROM information_schema.tables t",
            "SELECT t.level FROM pg_catalog.pg_options_to_table(ARRAY['a=b']) t",
            "SELECT c.level FROM pg_catalog.pg_class c",
            // Probe DK F4: a join's or a query's alias over a function's
            // value; probe DK F2: `double` alone.
            "SELECT j.description FROM (pg_catalog.unnest(ARRAY['chosen']) b \
             CROSS JOIN pg_catalog.pg_am a) j",
            "SELECT s.description FROM (SELECT b.x FROM pg_catalog.unnest(ARRAY['chosen']) b(x)) s",
            "SELECT '(x)'::double",
            // Secrets: user mappings' options, role settings, subscriptions'
            // connection strings.
            "SELECT u.umoptions FROM pg_catalog.pg_user_mappings u",
            "SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s",
            "SELECT subconninfo FROM pg_catalog.pg_subscription",
        ] {
            refused(sql);
        }
        for sql in [
            "SELECT b.description FROM pg_catalog.unnest(ARRAY['x']) AS b(description)",
            "SELECT d.description FROM pg_catalog.pg_description d",
            "SELECT p.parname FROM pg_catalog.pg_parameter_acl p",
            "SELECT s.relname FROM (SELECT c.relname, b.x FROM pg_catalog.pg_class c, \
             pg_catalog.unnest(ARRAY[1]) b(x)) s",
            "SELECT '1'::double precision",
        ] {
            assert!(walked(sql), "{sql}");
        }
        // PgJDBC's `(..).x` and `(..).n` stay (in its captured forms).
        assert!(walked(
            "SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_catalog.pg_index i"
        ));
    }

    /// After a catalog's alias, a name is that relation's column only if it
    /// has one (PostgreSQL 15's columns, `pg_catalog_columns.txt`): Postgres
    /// reads `c.description` of `pg_class c`, which has no such column, as
    /// `description(c)`, a function of the application's (probe DK: the
    /// README's "named like a catalog column" class, a global list of
    /// column names then). The same after a query's alias (probe DL F3):
    /// its select list must name the column, or its `SELECT *` bring it
    /// from a catalog that has it. A nearer query's alias of the same name
    /// hides the outer one's, as in Postgres.
    #[test]
    fn a_name_after_a_catalogs_alias_is_one_of_its_columns() {
        for sql in [
            "SELECT c.description FROM pg_catalog.pg_class c",
            "SELECT pg_class.description FROM pg_catalog.pg_class",
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.nspname = 'x'",
            "SELECT t.attname FROM information_schema.tables t",
            "SELECT \"C\".description FROM pg_catalog.pg_class \"C\"",
            "SELECT c.\"description\" FROM pg_catalog.pg_class c",
            // The inner query's `c` is pg_class: its `c.attname` is a call.
            "SELECT c.attname FROM pg_catalog.pg_attribute c \
             WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.attname = 'x')",
            // A column list renames the first columns: only listed names.
            "SELECT c.relname FROM pg_catalog.pg_class c(a, b)",
            // Probe DL F3: a query's alias, its rows without such a column.
            "SELECT s.description FROM (SELECT 'chosen' AS y FROM pg_catalog.pg_am a) s",
            "SELECT s.description FROM (SELECT * FROM pg_catalog.pg_am a) s",
            "SELECT s.relname FROM (SELECT relname AS x FROM pg_catalog.pg_class) s",
            "WITH a AS (SELECT * FROM pg_catalog.pg_class) SELECT a.description FROM a",
            "WITH a AS (SELECT * FROM pg_catalog.pg_class), b AS (SELECT * FROM a) \
             SELECT b.description FROM b",
            // Probe DP F1: a column list renames what a `*` brings.
            "SELECT t.relname FROM (SELECT * FROM (SELECT relname FROM pg_catalog.pg_class) s(x)) t",
            "SELECT t.relname FROM (SELECT * FROM pg_catalog.pg_class c(a, b)) t",
            "SELECT t.relname FROM (SELECT * FROM (SELECT * FROM pg_catalog.pg_class) s(a, b)) t",
            "SELECT t.relname FROM (SELECT * FROM (SELECT * FROM (SELECT relname \
             FROM pg_catalog.pg_class) s(x)) u) t",
            "WITH w AS (SELECT * FROM (SELECT relname FROM pg_catalog.pg_class) s(x)) \
             SELECT w.relname FROM w",
            // Probe DO F1: a column list renames a query's columns.
            "SELECT s.relname FROM (SELECT relname FROM pg_catalog.pg_class) s(x)",
            "SELECT s.oid FROM (SELECT * FROM pg_catalog.pg_class) s(a)",
            "WITH w(x) AS (SELECT relname FROM pg_catalog.pg_class) SELECT w.relname FROM w",
            "WITH w(x) AS (SELECT * FROM pg_catalog.pg_type) SELECT w.typname FROM w",
            "SELECT s.relname FROM (SELECT relname FROM pg_catalog.pg_class UNION \
             SELECT relname FROM pg_catalog.pg_class) s(q)",
            // (Fail closed: the walk does not follow a join's columns.)
            "SELECT j.relname FROM (pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
             ON c.relnamespace = n.oid) j",
        ] {
            refused(sql);
        }
        for sql in [
            "SELECT c.relname, c.oid FROM pg_catalog.pg_class c",
            "SELECT d.description FROM pg_catalog.pg_description d",
            "SELECT t.table_name FROM information_schema.tables t",
            "SELECT c.\"relname\" FROM pg_catalog.pg_class c",
            "SELECT C.RELNAME FROM pg_catalog.pg_class C",
            // Each reference is to the nearest `c`.
            "SELECT c.relname FROM pg_catalog.pg_class c \
             WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute c WHERE c.attname = 'x')",
            "SELECT c.relname FROM pg_catalog.pg_class c \
             WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid)",
            "SELECT c.b FROM pg_catalog.pg_class c(a, b)",
            // A query's columns: named, bare, or brought by `SELECT *`.
            "SELECT s.amname FROM (SELECT * FROM pg_catalog.pg_am a) s",
            "SELECT s.relname FROM (SELECT relname FROM pg_catalog.pg_class) s",
            "SELECT s.relname FROM (SELECT c.relname FROM pg_catalog.pg_class c) s",
            "WITH a AS (SELECT * FROM pg_catalog.pg_class), b AS (SELECT * FROM a) \
             SELECT b.relname FROM b",
            // A column list's own names.
            "SELECT s.relname FROM (SELECT relname FROM pg_catalog.pg_class) s(relname)",
            "WITH w(relname) AS (SELECT c.relname FROM pg_catalog.pg_class c) \
             SELECT w.relname FROM w",
        ] {
            assert!(walked(sql), "{sql}");
        }
    }

    /// `substring(a, b)` with commas is a call of whatever `search_path`
    /// finds by that name (probe DI F6), like `lower(a)`.
    #[test]
    fn a_call_by_name_is_by_name_in_the_grammars_spellings_too() {
        for sql in [
            "SELECT substring(relname, 1) FROM pg_catalog.pg_class",
            "SELECT overlay(relname, 'x', 1) FROM pg_catalog.pg_class",
            "SELECT lower(relname) FROM pg_catalog.pg_class",
        ] {
            let read = super::catalog_read(sql.as_bytes(), true);
            assert_eq!(read, Some(super::CatalogRead { by_name: true }), "{sql}");
        }
    }

    /// A name of megabytes is refused before it is compared with every
    /// `WITH` name (probe DI F5: 580 names and a 2 MB one held a worker
    /// for 6 s, copying the name for each comparison); names compare cut
    /// to 63 bytes, without a copy.
    #[test]
    fn a_long_name_is_refused_before_it_is_compared() {
        let ctes: Vec<String> = (0..580).map(|i| format!("a{i} AS (SELECT 1)")).collect();
        for name in [format!("\"{}\"", "b".repeat(1 << 20)), "c".repeat(1 << 20)] {
            let sql = format!("WITH {} SELECT 1 FROM pg_class, {name}", ctes.join(", "));
            assert_eq!(super::catalog_read(sql.as_bytes(), true), None);
        }
        let long = "d".repeat(70);
        let sql = format!("WITH \"{long}\" AS (SELECT 1) SELECT * FROM {long}");
        assert_eq!(super::catalog_read(sql.as_bytes(), true), None);
    }

    /// A name after a dot that is not a catalog's column (a name the
    /// statement gives), `.x`, `.n`, `ORDINALITY` and `LATERAL` (where every
    /// hole of six probe rounds was) are taken only in a form drivers are
    /// known to send: each of these the walk alone took (probe CW), and the
    /// router refuses. Plain reads need no captured form.
    #[test]
    fn only_plain_reads_or_captured_forms_read_without_a_tenant() {
        for sql in [
            "SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = $1",
            "SELECT * FROM pg_catalog.pg_class",
            "SELECT t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n \
             ON n.oid = t.typnamespace WHERE t.typname = $1 AND n.nspname = 'public' \
             AND EXISTS (SELECT 1 FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)",
            // PgJDBC's field metadata: one row in `vals` per column of a result.
            "SELECT c.oid, a.attnum, a.attname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_attribute a ON (c.oid = a.attrelid) \
             JOIN (SELECT 1 AS oid , 1 AS attnum UNION ALL SELECT 2, 3 UNION ALL SELECT 4, 5) vals \
             ON (c.oid = vals.oid AND a.attnum = vals.attnum)",
        ] {
            assert_eq!(kind(sql), Kind::Catalog, "{sql}");
        }
        for sql in [
            "SELECT u.x FROM pg_catalog.unnest(ARRAY[1,2]) WITH ORDINALITY u(x, i)",
            "WITH a AS (SELECT oid AS x FROM pg_type), b AS (SELECT * FROM a) SELECT b.x FROM b",
            "SELECT a.n FROM pg_catalog.generate_series(1, 3) a(n)",
            "SELECT s.y FROM (SELECT oid AS y FROM pg_class) s",
            // CW F1: `ordinality` took the next word for an alias.
            "SELECT *, 1 AS ordinality FROM secrets /* pg_ */",
            "SELECT v, ordinality FROM secrets, pg_catalog.generate_series(1,1) WITH ORDINALITY",
            "SELECT CASE WHEN 1 = ordinality THEN (SELECT v FROM secrets LIMIT 1) END \
             FROM pg_catalog.generate_series(1,1) WITH ORDINALITY",
            "SELECT ordinality AND (tdom 'x' IS NOT NULL) \
             FROM (SELECT true AS ordinality, 1 AS z FROM pg_catalog.pg_class LIMIT 1) x",
            // CW F2: an expression ending in a name is no column of that name.
            "SELECT s.leak FROM (SELECT 0 + t.leak FROM (SELECT 1 AS leak) t) s, \
             pg_catalog.pg_class LIMIT 1",
            // CW F3: a column list renames.
            "SELECT s.leak FROM (SELECT 1 AS leak) s(a), pg_catalog.pg_class LIMIT 1",
            "WITH s(a) AS (SELECT 1 AS leak) SELECT s.leak FROM s, pg_catalog.pg_class LIMIT 1",
            // CW F4: so does a join's alias.
            "SELECT s.leak FROM (SELECT * FROM (pg_catalog.pg_namespace n \
             JOIN pg_catalog.generate_series(1,1) g(leak) ON true) AS j(a,b,c,d,e)) s LIMIT 1",
            // CW F7: `x` is no column of pg_class.
            "SELECT c.x FROM pg_catalog.pg_class c LIMIT 1",
            "SELECT ('(1)'::pg_catalog.pg_class).x",
        ] {
            assert_ne!(kind(sql), Kind::Catalog, "{sql}");
        }
        // CW F9: a long text of no captured form is refused before the walk
        // (which took about 26 s over this one).
        let sql = format!(
            "SELECT {} FROM {} pg_catalog.pg_am",
            vec!["s.zz"; 3000].join(", "),
            "(SELECT 1 AS zz) s, ".repeat(3000)
        );
        assert_ne!(kind(&sql), Kind::Catalog);
        // CX F2: nor is a long text of no known form walked (each FROM item
        // against every `WITH` name took 120 s over 1 MB).
        let sql = format!(
            "WITH {} SELECT 1 FROM {} /* pg_ */",
            (0..12_000)
                .map(|i| format!("a{i} AS (SELECT 1)"))
                .collect::<Vec<_>>()
                .join(", "),
            vec!["pg_class"; 24_000].join(", ")
        );
        assert_ne!(kind(&sql), Kind::Catalog);
        // Constants need no captured form; the walk still checks them.
        for sql in [
            "SELECT 1",
            "SELECT pg_catalog.pg_get_functiondef(16440)",
            "SELECT pg_catalog.length('x'::pg_catalog.text), 2::bigint",
        ] {
            assert_eq!(kind(sql), Kind::Catalog, "{sql}");
        }
        for sql in ["SELECT 'x'::tdom", "SELECT tdom 'x'", "SELECT public.f(1)"] {
            assert_ne!(kind(sql), Kind::Catalog, "{sql}");
        }
        // A captured statement with other literal values, spacing, comments
        // and case is of its form; with another name it is not.
        let jdbc = "SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'";
        assert!(super::captured().iter().any(|(_, t)| t.trim() == jdbc));
        let known = |sql: &str| super::known_form(sql.as_bytes(), true);
        assert!(known(jdbc));
        assert!(known(
            "select SETTING  from pg_catalog.pg_settings /* x */ where NAME = E'work_mem';"
        ));
        assert!(!known(
            "SELECT setting FROM pg_catalog.pg_settings WHERE \"name\"='work_mem'"
        ));
        assert!(!known(
            "SELECT setting FROM pg_catalog.pg_settings s WHERE name='work_mem'"
        ));
        assert!(!known(
            "SELECT setting FROM pg_catalog.pg_settings WHERE name=$1"
        ));
    }

    #[test]
    fn drivers_catalog_reads_are_tenant_free() {
        let mut f = Facts::default();
        let mut bad = Vec::new();
        let all = corpus();
        for (source, sql) in &all {
            analyze(sql.as_bytes(), b"tenant_id", true, &mut f);
            if !f.tenant_free {
                bad.push(format!("{source}\n{sql}\n"));
            }
        }
        assert!(
            bad.is_empty(),
            "{} of {} not tenant-free:\n{}",
            bad.len(),
            all.len(),
            bad.join("\n")
        );
    }
}
