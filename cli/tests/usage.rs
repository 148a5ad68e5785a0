//! Metering on the real `highrise up` (issue 15): a cluster's instance time, counted by
//! its host's agent and taken into hourly usage by the control plane, lies between what
//! the test itself saw of the instance's life — from "running" to "delete asked" at least,
//! from "create asked" to "deleted" at most — and stops growing once the cluster is gone;
//! `highrise usage` shows it, for the deleted cluster by id too, and this month's invoice
//! prices it. Its disk is metered beside it, at its data directory's size, and the bytes
//! its clients exchange through the proxies and what it keeps in object storage.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn usage_ms(up: &Up, args: &[&str]) -> (u64, Value) {
    let mut all = vec!["usage", "--output", "json"];
    all.extend_from_slice(args);
    let v: Value = serde_json::from_str(&up.cli_ok(&all)).unwrap();
    let total = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dimension"].as_str().unwrap().starts_with("instance_ms:"))
        .map(|r| r["quantity"].as_u64().unwrap())
        .sum();
    (total, v)
}

#[test]
fn an_instances_time_is_metered_from_creation_to_deletion() {
    let tmp = temp_root();
    // Object storage measured every second (not every minute), so it shows quickly.
    let up = Up::start_with(tmp.path(), &["--storage-meter-every", "1s"]);
    let asked = Instant::now();
    let uri = up.create_cluster("metered");
    let running = Instant::now();
    assert_eq!(psql_ok(&uri, "select 1").trim(), "1");
    let shown: Value = serde_json::from_str(&up.cli_ok(&["cluster", "show", "metered", "--output", "json"])).unwrap();
    let id = shown["id"].as_str().unwrap().to_string();

    // Usage grows while the cluster lives.
    let mut first = 0;
    wait_for("usage to be recorded", Duration::from_secs(30), || {
        first = usage_ms(&up, &[]).0;
        first > 0
    });
    wait_for("usage to grow", Duration::from_secs(30), || {
        usage_ms(&up, &[]).0 > first
    });

    // Its disk, from its data directory's first measurement on: between two readings (the
    // same heartbeats carry both counters) MiB-milliseconds grow at the directory's size
    // in MiB — a new cluster's data and WAL are some tens of MiB.
    let both = || {
        let (ms, v) = usage_ms(&up, &[]);
        let disk: u64 = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dimension"] == "disk_mib_ms")
            .map(|r| r["quantity"].as_u64().unwrap())
            .sum();
        (ms, disk)
    };
    let mut from = (0, 0);
    wait_for("disk usage to be recorded", Duration::from_secs(30), || {
        from = both();
        from.1 > 0
    });
    let mut to = from;
    wait_for("two more seconds of usage", Duration::from_secs(30), || {
        to = both();
        to.0 >= from.0 + 2_000
    });
    let mib = (to.1 - from.1) / (to.0 - from.0);
    assert!((10..=1024).contains(&mib), "{from:?} to {to:?}: {mib} MiB");

    // Object storage: the cluster's WAL and backups in every store, measured by the control
    // plane. Between two readings its MiB-milliseconds grow at the objects' size in MiB
    // as last measured: more than nothing (a new cluster's backup and archived WAL), no
    // more than the store's files for the cluster hold now.
    psql_ok(
        &uri,
        "create table filler as select md5(random()::text) || md5(random()::text) as v \
         from generate_series(1, 200000)",
    );
    let objects_and_time = || {
        let (ms, v) = usage_ms(&up, &[]);
        let objects: u64 = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dimension"] == "object_storage_mib_ms")
            .map(|r| r["quantity"].as_u64().unwrap())
            .sum();
        (ms, objects)
    };
    let mut from = (0, 0);
    wait_for("object storage to be metered", Duration::from_secs(30), || {
        from = objects_and_time();
        from.1 > 0
    });
    let mut to = from;
    wait_for("three more seconds of usage", Duration::from_secs(30), || {
        to = objects_and_time();
        to.0 >= from.0 + 3_000 && to.1 > from.1
    });
    let stored_mib = files_bytes(&up.data_dir.join("objects"), &id) >> 20;
    let mib = (to.1 - from.1) / (to.0 - from.0);
    eprintln!("objects: {mib} MiB by usage, {stored_mib} MiB in the stores' files now");
    assert!(
        mib >= 1 && mib <= stored_mib * 2 + 1,
        "{from:?} to {to:?}: {mib} MiB, {stored_mib} MiB stored"
    );

    // Traffic through the proxies: a 5 MB result is counted out to the client, the query
    // in, once each, under the cloud of the proxy that relayed it.
    let traffic = || {
        let (_, v) = usage_ms(&up, &[]);
        let mut by = std::collections::BTreeMap::<String, u64>::new();
        for r in v["records"].as_array().unwrap() {
            let d = r["dimension"].as_str().unwrap();
            if d.starts_with("proxy_bytes_") {
                assert!(["local-a", "local-b"].contains(&r["cloud"].as_str().unwrap()), "{r}");
                *by.entry(d.to_string()).or_default() += r["quantity"].as_u64().unwrap();
            }
        }
        (
            by.get("proxy_bytes_in").copied().unwrap_or(0),
            by.get("proxy_bytes_out").copied().unwrap_or(0),
        )
    };
    let before = traffic();
    let query = "select length(repeat('x', 5000000) || '') as n, repeat('x', 5000000) as payload";
    assert!(psql_ok(&uri, query).len() > 5_000_000);
    let mut after = before;
    wait_for("the result's bytes to be metered", Duration::from_secs(30), || {
        after = traffic();
        after.1 >= before.1 + 5_000_000
    });
    eprintln!("traffic (in, out): {before:?} before the query, {after:?} after");
    // The session's own messages (authentication, parameters, the query, the row
    // description) are a few KiB beside the result.
    assert!(after.1 < before.1 + 5_100_000, "{before:?} to {after:?}");
    assert!(
        after.0 >= before.0 + query.len() as u64 && after.0 < before.0 + 20_000,
        "{before:?} to {after:?}"
    );

    let delete_asked = Instant::now();
    up.cli_ok(&["cluster", "delete", "metered", "--wait"]);
    let deleted = Instant::now();
    // The instance's last reading (its counter closed at deletion) arrives with a
    // heartbeat; from then on nothing is added.
    let mut total = 0;
    let mut last_change = Instant::now();
    wait_for("usage to stop growing", Duration::from_secs(30), || {
        let now = usage_ms(&up, &[]).0;
        if now != total {
            total = now;
            last_change = Instant::now();
        }
        last_change.elapsed() > Duration::from_secs(2)
    });

    let at_least = (delete_asked - running).as_millis() as u64;
    let at_most = (deleted - asked).as_millis() as u64;
    eprintln!("metered {total} ms; seen live {at_least}..{at_most} ms");
    assert!(
        total + 1_000 >= at_least && total <= at_most + 1_000,
        "instance time {total} ms, the test saw it live at least {at_least} ms and at most {at_most} ms"
    );

    // The deleted cluster's usage, by its id; per hour it adds up to the same.
    let (by_id, v) = usage_ms(&up, &["--cluster", &id]);
    assert_eq!(by_id, total);
    let records = v["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|r| r["dimension"].as_str().unwrap().starts_with("instance_ms:"))
        .unwrap();
    assert_eq!(record["cluster"], "metered");
    assert!(records.iter().any(|r| r["dimension"] == "disk_mib_ms"), "{records:?}");
    let dimension = record["dimension"].as_str().unwrap();
    assert!(dimension.ends_with(":on_demand"), "{dimension}");
    let (hourly, _) = usage_ms(&up, &["--cluster", &id, "--hourly"]);
    assert_eq!(hourly, total);
    let table = up.cli_ok(&["usage"]);
    assert!(table.contains("metered") && table.contains(dimension), "{table}");

    // This month's invoice (the bill so far) prices that time: its line is the instance
    // time at the list price, rounded once to the cent, and the total adds up its lines.
    let inv: Value = serde_json::from_str(&up.cli_ok(&["invoice", "show", "--output", "json"])).unwrap();
    assert_eq!(inv["status"], "draft");
    let lines = inv["lines"].as_array().unwrap();
    let line = lines
        .iter()
        .find(|l| l["cluster_id"] == id.as_str() && l["dimension"] == dimension)
        .unwrap();
    assert!(lines.iter().any(|l| l["dimension"] == "disk_mib_ms"), "{lines:?}");
    assert_eq!(line["quantity"].as_u64().unwrap(), total);
    let price: f64 = line["unit_price"].as_str().unwrap().parse().unwrap();
    let amount: f64 = line["amount"].as_str().unwrap().parse().unwrap();
    assert!((amount - (total as f64 * price / 3_600_000.0 * 100.0).round() / 100.0).abs() < 1e-9);
    let sum: f64 = lines
        .iter()
        .map(|l| l["amount"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((inv["total"].as_str().unwrap().parse::<f64>().unwrap() - sum).abs() < 1e-9);
    let list = up.cli_ok(&["invoice", "list"]);
    assert!(
        list.contains(inv["month"].as_str().unwrap()) && list.contains("draft"),
        "{list}"
    );
    let table = up.cli_ok(&["invoice", "show"]);
    assert!(table.contains("metered") && table.contains("total"), "{table}");
    // The same invoice as documents to file: a PDF whose text (read back by poppler's
    // pdftotext) and an HTML page that both name the cluster and the total.
    let docs = tempfile::tempdir().unwrap();
    let (pdf, page) = (docs.path().join("invoice.pdf"), docs.path().join("invoice.html"));
    up.cli_ok(&["invoice", "download", "--out", pdf.to_str().unwrap()]);
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    let read = std::process::Command::new("pdftotext")
        .args(["-layout", pdf.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (scripts/setup installs poppler-utils)");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let text = String::from_utf8_lossy(&read.stdout);
    let total = format!("{} USD", inv["total"].as_str().unwrap());
    assert!(
        text.contains("Highrise") && text.contains("metered") && text.contains(&total),
        "{text}"
    );
    assert!(text.contains("Amount due"), "{text}");
    up.cli_ok(&[
        "invoice",
        "download",
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>")
            && html.contains("metered")
            && html.contains(inv["total"].as_str().unwrap())
    );
    let out = up.cli(&["invoice", "show", "2026-13"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not YYYY-MM"));
    let out = up.cli(&["invoice", "show", "2999-01"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not begun"));

    // A range before the cluster existed holds nothing; a range that cannot be read is
    // refused with the reason.
    let (before, _) = usage_ms(&up, &["--from", "2020-01-01T00:00:00Z", "--to", "2020-01-02T00:00:00Z"]);
    assert_eq!(before, 0);
    let out = up.cli(&["usage", "--from", "last tuesday"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use a time with its offset"), "{err}");
}

/// Bytes of the files under `objects/<cloud>/<org>/<cluster>/` of every cloud's store.
fn files_bytes(objects: &std::path::Path, cluster: &str) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map_or(0, |m| m.len()),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    let mut total = 0;
    for cloud in std::fs::read_dir(objects).unwrap().flatten() {
        for org in std::fs::read_dir(cloud.path()).unwrap().flatten() {
            total += walk(&org.path().join(cluster));
        }
    }
    total
}
