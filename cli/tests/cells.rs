//! Cells (issue 14), on the real `highrise up` (two cells by default): orgs are placed in
//! cells, every cluster of an org runs on its cell's hosts only, and killing every host of
//! one cell leaves the other cell's clusters serving without a single error. Each cell has
//! proxies of its own: they serve its orgs only, and killing one touches no other cell.

mod common;

use common::ha::{check_ledger, ledger_writer, show};
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The control plane's hosts (operator).
async fn hosts(up: &Up) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{}/v1/hosts", up.api_url))
        .bearer_auth(&up.api_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The cells of the hosts a cluster's members run on.
async fn member_cells(up: &Up, shown: &Value) -> Vec<String> {
    let hosts = hosts(up).await;
    shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let h = hosts
                .iter()
                .find(|h| h["id"] == m["host_id"])
                .expect("the member's host");
            h["cell"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_host_of_a_cell_leaves_the_other_cells_clusters_untouched() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    // The operator's org went to c1 (the first); a new org goes to the emptiest cell.
    let (up, _a_uri, b_uri, b_key) = tokio::task::spawn_blocking(move || {
        let up = Up::start_with(&root, &[]);
        let created = json(&up.cli_ok(&["org", "create", "globex", "--output", "json"]));
        assert_eq!(created["org"]["cell"], "c2", "{created}");
        let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
        let a_uri = up.create_cluster("a");
        let out = up.cli_ok(&["cluster", "create", "b", "--replicas", "1", "--wait", &b_key]);
        let b_uri = out.lines().last().unwrap().trim().to_string();
        psql_ok(&b_uri, "create table ledger (id bigserial primary key)");
        (up, a_uri, b_uri, b_key)
    })
    .await
    .unwrap();
    let shown_a = show(&up, "a");
    let shown_b: Value = json(&up.cli_ok(&["cluster", "show", "b", "--output", "json", &b_key]));
    assert_eq!(member_cells(&up, &shown_a).await, vec!["c1"]);
    assert_eq!(member_cells(&up, &shown_b).await, vec!["c2", "c2"]);

    // Org B writes all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(b_uri.clone(), Arc::clone(&stop)));
    wait_for_async("B's writer to commit", || async {
        psql(&b_uri, "select count(*) from ledger").1 != "0"
    })
    .await;

    // Every host of cell c1 is killed.
    let c1: Vec<String> = hosts(&up)
        .await
        .iter()
        .filter(|h| h["cell"] == "c1" && h["status"] == "running")
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!c1.is_empty());
    let http = reqwest::Client::new();
    for id in &c1 {
        let status = http
            .post(format!("{}/land/hosts/{id}/kill", up.land_url))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "kill {id}: {status}");
    }
    // A's cluster is down with its cell (the control plane sees its host fall silent)…
    let t = std::time::Instant::now();
    wait_for_async("A's cluster to be seen down", || async {
        show(&up, "a")["status"] != "running"
    })
    .await;
    eprintln!("A seen {} after {:?}", show(&up, "a")["status"], t.elapsed());
    // … while B's writer kept going a while longer.
    went_on_untouched(&b_uri, &stop, writer).await;
    let after: Value = json(&up.cli_ok(&["cluster", "show", "b", "--output", "json", &b_key]));
    assert_eq!(after["status"], "running");
    assert_eq!(after["term"], shown_b["term"], "B's cluster did not even fail over");
}

/// The proxies a connection URI names (`host:port` each).
fn uri_proxies(uri: &str) -> Vec<String> {
    let hosts = uri.split_once('@').unwrap().1;
    let hosts = &hosts[..hosts.find('/').unwrap()];
    hosts.split(',').map(str::to_string).collect()
}

#[test]
fn each_cell_has_proxies_of_its_own_and_they_serve_its_orgs_only() {
    let up = Up::start();
    let created = json(&up.cli_ok(&["org", "create", "globex", "--output", "json"]));
    assert_eq!(created["org"]["cell"], "c2", "{created}");
    let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
    let a_uri = up.create_cluster("a");
    let out = up.cli_ok(&["cluster", "create", "b", "--wait", &b_key]);
    let b_uri = out.lines().last().unwrap().trim().to_string();
    // Each org's URIs name its cell's proxies, one per cloud: none in common.
    let (a_proxies, b_proxies) = (uri_proxies(&a_uri), uri_proxies(&b_uri));
    assert_eq!((a_proxies.len(), b_proxies.len()), (2, 2), "{a_uri} {b_uri}");
    assert!(a_proxies.iter().all(|p| !b_proxies.contains(p)), "{a_uri} {b_uri}");
    assert_eq!(a_proxies, up.proxy_addrs, "the operator's org is in the first cell");
    assert_eq!(psql_ok(&a_uri, "select 1"), "1");
    assert_eq!(psql_ok(&b_uri, "select 1"), "1");
    // A cell's proxies do not know the other cell's endpoints.
    let b_endpoint = json(&up.cli_ok(&["cluster", "show", "b", "--output", "json", &b_key]))["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let a_endpoint = uri_endpoint(&a_uri);
    for (proxies, uri, endpoint) in [(&a_proxies, &b_uri, &b_endpoint), (&b_proxies, &a_uri, &a_endpoint)] {
        for p in proxies {
            let elsewhere = uri.replace(&uri_proxies(uri).join(","), p);
            let (ok, _, err) = psql(&elsewhere, "select 1");
            assert!(
                !ok && err.contains(&format!("endpoint \"{endpoint}\" not found")),
                "{elsewhere}: {err}"
            );
        }
    }
}

/// The endpoint a plain URI names in its `options`.
fn uri_endpoint(uri: &str) -> String {
    uri.split("endpoint%3D")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cells_proxy_killed_leaves_the_other_cells_clients_untouched() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (c1_addr, c2_addr) = (free(), free());
    // The control plane with separate proxies, one per cell.
    let (control, a_uri, b_uri, proxy_of) = {
        let (root, c1_addr, c2_addr) = (root.clone(), c1_addr.clone(), c2_addr.clone());
        tokio::task::spawn_blocking(move || {
            let control = Up::start_command(
                &root,
                "control",
                &c1_addr,
                &[
                    "--cell-proxy",
                    &format!("c1={c1_addr}"),
                    "--cell-proxy",
                    &format!("c2={c2_addr}"),
                ],
            );
            let (agent_url, ca) = (control.agent_url.clone(), control.data_dir.join("tls/ca.crt"));
            let (root, data) = (control.root.clone(), control.data_dir.clone());
            // Each proxy with its cell's own token.
            let proxy_of = move |cell: &str, listen: &str| {
                let token = std::fs::read_to_string(data.join(format!("proxy-token-{cell}"))).unwrap();
                std::process::Command::new(BIN)
                    .args(["proxy", "--listen", listen, "--control-url", &agent_url, "--cell", cell])
                    .arg("--control-ca")
                    .arg(&ca)
                    .arg("--cache-file")
                    .arg(root.join(format!("routes-{cell}.json")))
                    .env("HIGHRISE_PROXY_TOKEN", token.trim())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map(Reaped)
                    .unwrap()
            };
            let created = json(&control.cli_ok(&["org", "create", "globex", "--output", "json"]));
            let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
            let a_uri = control.create_cluster("a");
            let out = control.cli_ok(&["cluster", "create", "b", "--wait", &b_key]);
            let b_uri = out.lines().last().unwrap().trim().to_string();
            (control, a_uri, b_uri, proxy_of)
        })
        .await
        .unwrap()
    };
    assert_eq!(uri_proxies(&a_uri), vec![c1_addr.clone()]);
    assert_eq!(uri_proxies(&b_uri), vec![c2_addr.clone()]);
    let c1_proxy = proxy_of("c1", &c1_addr);
    let _c2_proxy = proxy_of("c2", &c2_addr);
    wait_for(
        "both cells' proxies to route",
        std::time::Duration::from_secs(30),
        || psql(&a_uri, "select 1").0 && psql(&b_uri, "select 1").0,
    );
    psql_ok(&b_uri, "create table ledger (id bigserial primary key)");

    // Org B (cell c2) writes all along; cell c1's proxy is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(b_uri.clone(), Arc::clone(&stop)));
    wait_for_async("B's writer to commit", || async {
        psql(&b_uri, "select count(*) from ledger").1 != "0"
    })
    .await;
    drop(c1_proxy);
    let (ok, _, err) = psql(&a_uri, "select 1");
    assert!(!ok && err.contains("refused"), "A's clients lose their proxy: {err}");
    went_on_untouched(&b_uri, &stop, writer).await;

    // Back: cell c1's proxy serves A again from where it was.
    let _c1_proxy = proxy_of("c1", &c1_addr);
    wait_for("A to be served again", std::time::Duration::from_secs(30), || {
        psql(&a_uri, "select 1").0
    });
    // What the control plane gives each token: a cell's, its cell's routes (and owners'
    // verifiers) alone, whatever it asks for; the land's, any cell's it names.
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(control.data_dir.join("tls/ca.crt")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let token = |name: &str| {
        std::fs::read_to_string(control.data_dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let routes = |token: String, query: &'static str| {
        let (http, url) = (http.clone(), format!("{}/v1/proxy/routes{query}", control.agent_url));
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            let endpoints: Vec<String> = body["routes"]
                .as_array()
                .map(|rs| rs.iter().map(|r| r["endpoint"].as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (status, endpoints, body)
        }
    };
    let (a_endpoint, b_endpoint) = (uri_endpoint(&a_uri), uri_endpoint(&b_uri));
    let (status, endpoints, _) = routes(token("proxy-token-c1"), "").await;
    assert_eq!((status, endpoints), (200, vec![a_endpoint.clone()]));
    let (status, endpoints, _) = routes(token("proxy-token-c2"), "").await;
    assert_eq!((status, endpoints), (200, vec![b_endpoint.clone()]));
    let (status, _, body) = routes(token("proxy-token-c1"), "?cell=c2").await;
    assert_eq!(status, 403, "{body}");
    let (status, endpoints, _) = routes(token("proxy-token"), "?cell=c2").await;
    assert_eq!((status, endpoints), (200, vec![b_endpoint.clone()]));
    let (status, endpoints, _) = routes(token("proxy-token"), "").await;
    assert_eq!((status, endpoints.len()), (200, 2));
    // A forged cell token, and a cell the land does not have, are refused.
    let forged = format!("hrpc_c2_{}", "0".repeat(64));
    assert_eq!(routes(forged, "").await.0, 401);
    let (status, _, body) = routes(token("proxy-token"), "?cell=c9").await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no cell \"c9\" (its cells: c1, c2)"), "{body}");
    drop(tmp);
}

/// Lets B's ledger writer commit 50 more times, stops it, and checks that it never saw a
/// failed attempt and that nothing it was told committed is lost.
async fn went_on_untouched(b_uri: &str, stop: &AtomicBool, writer: tokio::task::JoinHandle<Ledger>) {
    let acked_before = psql_ok(b_uri, "select count(*) from ledger").parse::<u64>().unwrap();
    wait_for_async("B's writer to go on", || async {
        psql_ok(b_uri, "select count(*) from ledger").parse::<u64>().unwrap() > acked_before + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acked, timeline) = writer.await.unwrap();
    let failed = timeline.iter().filter(|(_, ok)| !ok).count();
    assert_eq!(failed, 0, "B's writer saw {failed} failed attempts");
    check_ledger(b_uri, &acked);
}

/// What a ledger writer returns: the ids it was told committed, and each attempt.
type Ledger = (Vec<i64>, Vec<(std::time::Instant, bool)>);

/// [`wait_for`] for async conditions (60 s).
async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
