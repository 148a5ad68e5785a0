//! The tenant's side of the wall, on a real PostgreSQL 15 (issue 14): the owner role gets
//! allow-listed extensions only, and still has no path to the host — no untrusted
//! extension or language, no `COPY … PROGRAM`, no server files, no way around the
//! allow-list; it sees and cancels its own sessions and nobody else's; it holds no more
//! sessions than its limit, which it cannot raise.

use highrise_pg::scratch::ScratchServer;
use sqlx::{Connection, Executor, PgConnection};

async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match conn.execute(sql).await {
        Ok(_) => panic!("{sql}: allowed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_owner_gets_allow_listed_extensions_and_no_path_to_the_host() {
    let pg = ScratchServer::start(&[("owner", "shop")]).await.unwrap();
    let mut admin = pg.admin().await.unwrap();
    highrise_pg::ensure_owner(&mut admin, "owner", &highrise_pg::scram_sha256_verifier("pw"), "shop")
        .await
        .unwrap();
    let mut admin_shop = highrise_pg::admin_connect(pg.socket_dir(), pg.port(), "shop")
        .await
        .unwrap();
    // Idempotent: the agent applies it on every start.
    highrise_pg::wall::fence(&mut admin_shop).await.unwrap();
    highrise_pg::wall::fence(&mut admin_shop).await.unwrap();

    let url = format!("postgres://owner:pw@127.0.0.1:{}/shop", pg.port());
    let mut t = PgConnection::connect(&url).await.unwrap();
    for ext in ["pgcrypto", "hstore", "pg_trgm", "citext", "\"uuid-ossp\"", "btree_gist"] {
        t.execute(format!("create extension {ext}").as_str()).await.unwrap();
    }
    let digest: Vec<u8> = sqlx::query_scalar("select digest('x', 'sha256')")
        .fetch_one(&mut t)
        .await
        .unwrap();
    assert_eq!(digest.len(), 32);

    // Trusted by PostgreSQL, not on the list: undone, with the list in the hint.
    let e = refused(&mut t, "create extension lo").await;
    assert!(e.contains("extension \"lo\" is not available here"), "{e}");
    let lo: Option<String> = sqlx::query_scalar("select extname::text from pg_extension where extname = 'lo'")
        .fetch_optional(&mut t)
        .await
        .unwrap();
    assert_eq!(lo, None, "nothing of it is left");
    // Untrusted: PostgreSQL refuses them to a non-superuser.
    for ext in ["dblink", "file_fdw", "adminpack", "postgres_fdw"] {
        let e = refused(&mut t, &format!("create extension {ext}")).await;
        assert!(e.contains("permission denied"), "{ext}: {e}");
    }
    // No path to the host.
    for sql in [
        "copy (select 1) to program 'id'",
        "copy (select 1) to '/tmp/hr-wall-test'",
        "select pg_read_file('/etc/passwd')",
        "select pg_ls_dir('.')",
        "create function getpid() returns int as 'libc.so.6', 'getpid' language c",
        "create language evil handler plpgsql_call_handler",
        "set session_replication_role = replica",
        "alter system set shared_preload_libraries = 'x'",
        "load 'auto_explain'",
    ] {
        let e = refused(&mut t, sql).await;
        assert!(
            e.contains("permission denied") || e.contains("must be superuser") || e.contains("not allowed"),
            "{sql}: {e}"
        );
    }
    // And no way around the allow-list.
    for sql in [
        "drop event trigger highrise_extensions",
        "alter event trigger highrise_extensions disable",
        "drop schema highrise cascade",
        "create or replace function highrise.allow_extensions() returns event_trigger language plpgsql as $$ begin end $$",
        "create event trigger mine on ddl_command_end execute function pg_catalog.pg_event_trigger_ddl_commands()",
    ] {
        let e = refused(&mut t, sql).await;
        assert!(
            e.contains("must be owner")
                || e.contains("permission denied")
                || e.contains("must be superuser")
                || e.contains("does not exist"),
            "{sql}: {e}"
        );
    }

    // Its own sessions: seen with their queries, and cancelled.
    let mut other = PgConnection::connect(&url).await.unwrap();
    let other_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut other)
        .await
        .unwrap();
    let sessions: Vec<(i32, Option<String>)> =
        sqlx::query_as("select pid, query from pg_stat_activity where usename = 'owner' order by pid")
            .fetch_all(&mut t)
            .await
            .unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions
        .iter()
        .all(|(_, q)| q.as_deref().is_some_and(|q| !q.contains("insufficient"))));
    let cancelled: bool = sqlx::query_scalar("select pg_cancel_backend($1)")
        .bind(other_pid)
        .fetch_one(&mut t)
        .await
        .unwrap();
    assert!(cancelled);
    // The admin's session: its query hidden, and not the tenant's to end.
    let admin_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let hidden: Option<String> = sqlx::query_scalar("select query from pg_stat_activity where pid = $1")
        .bind(admin_pid)
        .fetch_one(&mut t)
        .await
        .unwrap();
    assert_eq!(hidden.as_deref(), Some("<insufficient privilege>"));
    let e = sqlx::query("select pg_terminate_backend($1)")
        .bind(admin_pid)
        .execute(&mut t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("permission denied") || e.contains("must be"), "{e}");
}

#[tokio::test]
async fn only_allow_listed_parameters_stay_set_on_the_role_and_database() {
    let pg = ScratchServer::start(&[("owner", "shop")]).await.unwrap();
    let mut admin = pg.admin().await.unwrap();
    highrise_pg::ensure_owner(&mut admin, "owner", &highrise_pg::scram_sha256_verifier("pw"), "shop")
        .await
        .unwrap();
    let url = format!("postgres://owner:pw@127.0.0.1:{}/shop", pg.port());
    let mut t = PgConnection::connect(&url).await.unwrap();
    // What the tenant can persist at all: PostgreSQL refuses it superuser-only ones.
    let e = refused(&mut t, "alter role owner set commit_delay = 10").await;
    assert!(e.contains("permission denied"), "{e}");
    for sql in [
        "alter role owner set statement_timeout = '5s'",
        "alter role owner set synchronous_commit = off",
        "alter role owner in database shop set enable_seqscan = off",
        "alter role owner in database shop set default_transaction_read_only = on",
        "alter database shop set work_mem = '64MB'",
        "alter database shop set synchronous_commit = local",
    ] {
        t.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Settings of roles and databases that are not the tenant's stay as they are.
    admin
        .execute("alter role postgres set synchronous_commit = remote_apply")
        .await
        .ok();
    let mut reset = highrise_pg::wall::reset_parameters(&mut admin, "owner", "shop")
        .await
        .unwrap();
    reset.sort();
    assert_eq!(
        reset,
        vec![
            "ALTER DATABASE \"shop\" RESET \"synchronous_commit\"",
            "ALTER ROLE \"owner\" IN DATABASE \"shop\" RESET \"default_transaction_read_only\"",
            "ALTER ROLE \"owner\" RESET \"synchronous_commit\"",
        ]
    );
    // Nothing left to do; a new session has the allowed settings only.
    assert!(highrise_pg::wall::reset_parameters(&mut admin, "owner", "shop")
        .await
        .unwrap()
        .is_empty());
    let mut fresh = PgConnection::connect(&url).await.unwrap();
    for (name, want) in [
        ("statement_timeout", "5s"),
        ("synchronous_commit", "on"),
        ("enable_seqscan", "off"),
        ("default_transaction_read_only", "off"),
        ("work_mem", "64MB"),
    ] {
        let got: String = sqlx::query_scalar(&format!("show {name}"))
            .fetch_one(&mut fresh)
            .await
            .unwrap();
        assert_eq!(got, want, "{name}");
    }
    assert!(highrise_pg::wall::parameter_allowed("Work_Mem"));
    assert!(!highrise_pg::wall::parameter_allowed("synchronous_commit"));
}

#[tokio::test]
async fn the_owner_holds_no_more_sessions_than_its_limit_and_cannot_raise_it() {
    let pg = ScratchServer::start(&[("owner", "shop")]).await.unwrap();
    let mut admin = pg.admin().await.unwrap();
    highrise_pg::ensure_owner(&mut admin, "owner", &highrise_pg::scram_sha256_verifier("pw"), "shop")
        .await
        .unwrap();
    highrise_pg::wall::limit_connections(&mut admin, "owner", Some(2))
        .await
        .unwrap();
    // Idempotent: the agent applies it whenever the desired state changes.
    highrise_pg::wall::limit_connections(&mut admin, "owner", Some(2))
        .await
        .unwrap();
    let url = format!("postgres://owner:pw@127.0.0.1:{}/shop", pg.port());
    let mut first = PgConnection::connect(&url).await.unwrap();
    let _second = PgConnection::connect(&url).await.unwrap();
    let e = PgConnection::connect(&url).await.unwrap_err();
    let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("53300"), "{e}");
    assert!(e.to_string().contains("too many connections for role \"owner\""), "{e}");
    // The admin still gets in (the agent's own sessions never count against the tenant).
    let _admin_too = pg.admin().await.unwrap();
    // The role cannot raise its own limit, nor make a role without one.
    for sql in [
        "alter role owner connection limit -1",
        "alter role owner connection limit 100",
        "create role helper login password 'x'",
    ] {
        let e = refused(&mut first, sql).await;
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    // Raised by the admin: one more session gets in; lifted: any number.
    highrise_pg::wall::limit_connections(&mut admin, "owner", Some(3))
        .await
        .unwrap();
    let _third = PgConnection::connect(&url).await.unwrap();
    assert!(PgConnection::connect(&url).await.is_err());
    highrise_pg::wall::limit_connections(&mut admin, "owner", None)
        .await
        .unwrap();
    let limit: i32 = sqlx::query_scalar("select rolconnlimit from pg_roles where rolname = 'owner'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(limit, -1);
    let _fourth = PgConnection::connect(&url).await.unwrap();
}
