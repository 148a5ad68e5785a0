//! PostgreSQL's side of the wall between a tenant and its host (issue 14): what the
//! tenant's role may install in its database.
//!
//! The owner role already has no path to the host ([`crate::ensure_owner`]: not superuser,
//! no `pg_execute_server_program`, no server file access, no CREATEROLE), so PostgreSQL
//! itself refuses untrusted extensions and languages, `COPY … PROGRAM` and server files.
//! Trusted extensions, though, any database owner may create; [`fence`] narrows them to
//! [`EXTENSIONS`] with an event trigger that only a superuser can drop or disable, which
//! undoes a `CREATE EXTENSION` or `ALTER EXTENSION` of anything else.

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
