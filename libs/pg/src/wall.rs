//! PostgreSQL's side of the wall between a tenant and its host (issue 14): what the
//! tenant's role may install in its database and keep set on its role and database.
//!
//! The owner role already has no path to the host ([`crate::ensure_owner`]: not superuser,
//! no `pg_execute_server_program`, no server file access, no CREATEROLE), so PostgreSQL
//! itself refuses untrusted extensions and languages, `COPY … PROGRAM` and server files.
//! Trusted extensions, though, any database owner may create; [`fence`] narrows them to
//! [`EXTENSIONS`] with an event trigger that only a superuser can drop or disable, which
//! undoes a `CREATE EXTENSION` or `ALTER EXTENSION` of anything else. Settings kept on
//! the tenant's role or database are narrowed to [`PARAMETERS`] by
//! [`reset_parameters`]; the sessions its role may hold at once, by
//! [`limit_connections`] (PostgreSQL's own per-role limit, which a role without
//! CREATEROLE cannot change).

use crate::{quote_ident, quote_literal, ADMIN_USER};
use anyhow::{Context, Result};

/// The extensions a tenant may create: trusted ones (PostgreSQL runs their scripts as a
/// superuser on the tenant's behalf) that reach nothing outside the database.
pub const EXTENSIONS: &[&str] = &[
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "fuzzystrmatch",
    "hstore",
    "intarray",
    "isn",
    "ltree",
    "pg_trgm",
    "pgcrypto",
    "plpgsql",
    "seg",
    "tablefunc",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
];

/// Installs (idempotently) the extension allow-list in the database `conn` is connected
/// to, as the admin superuser: a `highrise` schema only the admin owns, the check, and
/// the event trigger.
pub async fn fence(conn: &mut sqlx::PgConnection) -> Result<()> {
    use sqlx::Executor;
    let allowed = EXTENSIONS
        .iter()
        .map(|e| quote_literal(e))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS highrise AUTHORIZATION {admin};
         REVOKE ALL ON SCHEMA highrise FROM PUBLIC;
         CREATE OR REPLACE FUNCTION highrise.allow_extensions() RETURNS event_trigger
         LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
         DECLARE
           r record;
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             RETURN;
           END IF;
           FOR r IN SELECT e.extname FROM pg_catalog.pg_event_trigger_ddl_commands() c
                    JOIN pg_catalog.pg_extension e ON e.oid = c.objid
                    WHERE c.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass LOOP
             IF NOT r.extname = ANY (ARRAY[{allowed}]) THEN
               RAISE EXCEPTION 'extension \"%\" is not available here', r.extname
                 USING ERRCODE = 'insufficient_privilege',
                       HINT = 'available: ' || pg_catalog.array_to_string(ARRAY[{allowed}], ', ');
             END IF;
           END LOOP;
         END
         $fn$;
         REVOKE ALL ON FUNCTION highrise.allow_extensions() FROM PUBLIC;
         DO $do$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'highrise_extensions') THEN
             CREATE EVENT TRIGGER highrise_extensions ON ddl_command_end
               WHEN TAG IN ('CREATE EXTENSION', 'ALTER EXTENSION')
               EXECUTE FUNCTION highrise.allow_extensions();
           END IF;
         END $do$;",
        admin = quote_ident(ADMIN_USER),
    );
    conn.execute(sql.as_str())
        .await
        .context("install the extension allow-list")?;
    Ok(())
}

/// What a tenant may keep set with `ALTER ROLE … SET` and `ALTER DATABASE … SET`: the
/// session's own behaviour (time limits, formats, planner choices, memory for its own
/// queries). Not on it, above all: `synchronous_commit` (a role set to `off` or `local`
/// would quietly give up the cluster's durability for every session, which a session
/// deciding for itself does knowingly) and `default_transaction_read_only` (the storage
/// guard's lever). An extension's own parameters (`module.name`) are allowed too
/// (PostgreSQL keeps undefined ones to superusers).
pub const PARAMETERS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "constraint_exclusion",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "cpu_tuple_cost",
    "cursor_tuple_fraction",
    "datestyle",
    "default_statistics_target",
    "default_table_access_method",
    "default_text_search_config",
    "default_transaction_deferrable",
    "default_transaction_isolation",
    "effective_cache_size",
    "effective_io_concurrency",
    "enable_bitmapscan",
    "enable_gathermerge",
    "enable_hashagg",
    "enable_hashjoin",
    "enable_incremental_sort",
    "enable_indexonlyscan",
    "enable_indexscan",
    "enable_material",
    "enable_memoize",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_parallel_append",
    "enable_parallel_hash",
    "enable_partition_pruning",
    "enable_partitionwise_aggregate",
    "enable_partitionwise_join",
    "enable_seqscan",
    "enable_sort",
    "enable_tidscan",
    "extra_float_digits",
    "from_collapse_limit",
    "geqo",
    "gin_fuzzy_search_limit",
    "hash_mem_multiplier",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "intervalstyle",
    "jit",
    "join_collapse_limit",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "maintenance_work_mem",
    "max_parallel_workers_per_gather",
    "random_page_cost",
    "row_security",
    "search_path",
    "seq_page_cost",
    "statement_timeout",
    "temp_buffers",
    "timezone",
    "work_mem",
    "xmlbinary",
    "xmloption",
];

/// Whether the tenant may keep `name` set on its role or database.
pub fn parameter_allowed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    PARAMETERS.contains(&name.as_str()) || name.contains('.')
}

/// Resets, as the admin, every setting kept on the tenant's role (in any database) or on
/// its database that [`PARAMETERS`] does not allow, and returns the statements run.
/// PostgreSQL fires no event trigger for `ALTER ROLE/DATABASE`, so this runs after the
/// fact (the agent sweeps every few seconds); such settings take effect only when a
/// session starts, and a session may set the same parameters for itself anyway.
pub async fn reset_parameters(conn: &mut sqlx::PgConnection, owner: &str, database: &str) -> Result<Vec<String>> {
    use sqlx::{Executor, Row};
    let rows = sqlx::query(
        "SELECT coalesce(d.datname::text, '') AS db, coalesce(r.rolname::text, '') AS role, \
                split_part(c, '=', 1) AS name \
         FROM pg_catalog.pg_db_role_setting s \
         LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase \
         LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
         CROSS JOIN LATERAL unnest(s.setconfig) AS c \
         WHERE r.rolname = $1 OR (s.setrole = 0 AND d.datname = $2)",
    )
    .bind(owner)
    .bind(database)
    .fetch_all(&mut *conn)
    .await
    .context("read role and database settings")?;
    let mut done = Vec::new();
    for r in rows {
        let (db, role, name): (String, String, String) = (r.try_get("db")?, r.try_get("role")?, r.try_get("name")?);
        if parameter_allowed(&name) {
            continue;
        }
        let sql = match (role.is_empty(), db.is_empty()) {
            (false, true) => format!("ALTER ROLE {} RESET {}", quote_ident(&role), quote_ident(&name)),
            (false, false) => format!(
                "ALTER ROLE {} IN DATABASE {} RESET {}",
                quote_ident(&role),
                quote_ident(&db),
                quote_ident(&name)
            ),
            (true, _) => format!("ALTER DATABASE {} RESET {}", quote_ident(&db), quote_ident(&name)),
        };
        conn.execute(sql.as_str())
            .await
            .with_context(|| format!("reset a setting the tenant may not keep ({sql})"))?;
        done.push(sql);
    }
    Ok(done)
}

/// Sets, as the admin, the most sessions `role` may hold at once (`None`: no limit of its
/// own, only the server's `max_connections`). PostgreSQL refuses a session beyond it with
/// SQLSTATE 53300; sessions already open stay. Idempotent; standbys get it by replication.
pub async fn limit_connections(conn: &mut sqlx::PgConnection, role: &str, limit: Option<u32>) -> Result<()> {
    use sqlx::Executor;
    let limit = limit.map_or(-1, i64::from);
    let current: Option<i32> = sqlx::query_scalar("SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *conn)
        .await
        .context("read the role's connection limit")?;
    if current.map(i64::from) == Some(limit) {
        return Ok(());
    }
    let sql = format!("ALTER ROLE {} CONNECTION LIMIT {limit}", quote_ident(role));
    conn.execute(sql.as_str())
        .await
        .context("set the role's connection limit")?;
    Ok(())
}
