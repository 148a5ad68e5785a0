//! The storage guard's cancel on a real PostgreSQL 15: it stops the tenant's running write
//! transactions, and never one whose commit waits for a synchronous standby — cancelling
//! that wait would tell the client "committed" for a commit no standby has.

use highrise_pg::scratch::ScratchServer;
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;

/// The `wait_event` of every session of `role` that runs a statement now.
async fn waits(admin: &mut PgConnection, role: &str) -> Vec<Option<String>> {
    sqlx::query_scalar(
        "select wait_event::text from pg_stat_activity where usename = $1 and state = 'active' order by pid",
    )
    .bind(role)
    .fetch_all(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_commit_waiting_for_its_standby_is_never_cancelled() {
    let pg = ScratchServer::start(&[("owner", "shop")]).await.unwrap();
    let mut admin = pg.admin().await.unwrap();
    highrise_pg::ensure_owner(&mut admin, "owner", &highrise_pg::scram_sha256_verifier("pw"), "shop")
        .await
        .unwrap();
    let url = format!("postgres://owner:pw@127.0.0.1:{}/shop", pg.port());
    let mut setup = PgConnection::connect(&url).await.unwrap();
    setup
        .execute("create table ledger(id bigserial primary key)")
        .await
        .unwrap();
    // A standby that never comes: every commit of the owner waits for it.
    admin
        .execute("alter system set synchronous_standby_names = 'nobody'")
        .await
        .unwrap();
    admin.execute("select pg_reload_conf()").await.unwrap();

    let mut committer = PgConnection::connect(&url).await.unwrap();
    let commit = tokio::spawn(async move {
        let r = sqlx::query_scalar::<_, i64>("insert into ledger default values returning id")
            .fetch_one(&mut committer)
            .await;
        (r.map_err(|e| e.to_string()), committer)
    });
    let mut writer = PgConnection::connect(&url).await.unwrap();
    writer.execute("begin").await.unwrap();
    writer.execute("insert into ledger default values").await.unwrap();
    let sleeping = tokio::spawn(async move {
        let r = writer.execute("select pg_sleep(60)").await;
        r.map(|_| ()).map_err(|e| e.to_string())
    });
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen = waits(&mut admin, "owner").await;
        if seen.contains(&Some("SyncRep".into())) && seen.contains(&Some("PgSleep".into())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.contains(&Some("SyncRep".into())) && seen.contains(&Some("PgSleep".into())),
        "{seen:?}"
    );

    let cancelled = highrise_pg::cancel_writers(&mut admin, "owner").await.unwrap();
    assert_eq!(cancelled, 1, "only the running write transaction");
    let e = sleeping.await.unwrap().unwrap_err();
    assert!(e.contains("canceling statement due to user request"), "{e}");
    assert!(!commit.is_finished(), "the waiting commit was answered");
    let still = waits(&mut admin, "owner").await;
    assert!(still.contains(&Some("SyncRep".to_string())), "{still:?}");

    // With the standby requirement gone, the commit completes as a commit.
    admin
        .execute("alter system reset synchronous_standby_names")
        .await
        .unwrap();
    admin.execute("select pg_reload_conf()").await.unwrap();
    let (r, _) = tokio::time::timeout(Duration::from_secs(30), commit)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}
