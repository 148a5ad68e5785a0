//! Private endpoints in tenant networks (issue 14), on the real `highrise up` as root: two
//! orgs each make a network (Linux network namespaces, both `10.0.0.0/24`: tenants'
//! ranges may overlap); a cluster of the first gets a private endpoint in its network.
//! A client inside that network reaches the cluster there (also with `verify-full`);
//! a client inside the other network cannot reach it at all; the endpoint's id named on
//! the public listener is refused; the public endpoint turned off leaves the private one
//! serving; deleting the endpoint closes its listener, deleting the network removes it.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// `ip`, which Debian keeps in /usr/sbin (not on every PATH).
fn ip() -> Command {
    let path = ["/usr/sbin/ip", "/sbin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("ip");
    Command::new(path)
}

/// Removes the namespaces a failed test left behind (the land removes them on `network
/// delete`; a test that stops midway must not leave them on the machine).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = ip().args(["netns", "delete", ns]).status();
            }
        }
    }
}

/// psql run inside a network namespace.
fn psql_in(namespace: &str, conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = ip()
        .args([
            "netns",
            "exec",
            namespace,
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args([conninfo, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run ip netns exec psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The password of a `postgresql://user:password@…` URI.
fn password_of(uri: &str) -> String {
    let rest = uri.split_once("://").expect("a URI").1;
    let user_info = rest.split_once('@').expect("user info").0;
    user_info.split_once(':').expect("a password").1.to_string()
}

#[test]
fn a_private_endpoint_is_reached_from_its_network_only() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tenant networks are network namespaces: this test runs as root"
    );
    let up = Up::start();
    // A second org, with a key of its own.
    let created = json(&up.cli_ok(&["org", "create", "globex", "--output", "json"]));
    let b_key = format!("--api-key={}", created["api_key"]["secret"].as_str().unwrap());
    let net_a = json(&up.cli_ok(&["network", "create", "vpc-a", "--output", "json"]));
    let net_b = json(&up.cli_ok(&["network", "create", "vpc-b", "--output", "json", &b_key]));
    let ns_a = net_a["namespace"].as_str().unwrap().to_string();
    let ns_b = net_b["namespace"].as_str().unwrap().to_string();
    let _cleanup = Namespaces(vec![ns_a.clone(), ns_b.clone()]);
    assert_eq!(net_a["cidr"], "10.0.0.0/24");
    assert_eq!(net_b["cidr"], "10.0.0.0/24");
    // Each org sees its own network only.
    let b_sees = up.cli(&["network", "delete", "vpc-a", &b_key]);
    assert!(!b_sees.status.success());
    assert!(String::from_utf8_lossy(&b_sees.stderr).contains("network not found"));

    let uri = up.create_cluster("shop");
    let password = password_of(&uri);
    let ep = json(&up.cli_ok(&[
        "endpoint",
        "create",
        "shop",
        "--private",
        "--network",
        "vpc-a",
        "--output",
        "json",
    ]));
    assert_eq!(ep["address"], "10.0.0.10:5432");
    assert_eq!(ep["network"], "vpc-a");
    let ep_id = ep["id"].as_str().unwrap().to_string();
    let inside = format!("host=10.0.0.10 port=5432 user=owner password={password} dbname=shop sslmode=require");

    // A's client, inside A's network: no endpoint option needed at the endpoint's address.
    wait_for("the private listener in vpc-a", Duration::from_secs(20), || {
        psql_in(&ns_a, &inside, "select 1").0
    });
    assert_eq!(psql_in(&ns_a, &inside, "select current_database()").1, "shop");
    // … and verifying the proxy, by the endpoint's own name.
    let ca = up.root.join("ca.crt");
    up.cli_ok(&["ca-cert", "--out", ca.to_str().unwrap()]);
    let verified = ep["verified_uri"].as_str().expect("a verifying URI");
    assert!(verified.contains(&format!("{ep_id}.localhost")), "{verified}");
    let verified = format!(
        "{}&sslrootcert={}",
        verified.replacen("owner@", &format!("owner:{password}@"), 1),
        ca.display()
    );
    let (ok, out, err) = psql_in(&ns_a, &verified, "select 1");
    assert!(ok && out == "1", "verify-full inside vpc-a: {err}");

    // B's client, inside B's network (the same range): nothing there answers.
    let (ok, _, err) = psql_in(&ns_b, &inside, "select 1");
    assert!(
        !ok && err.contains("Connection refused"),
        "B reached A's endpoint: {err}"
    );
    // Nor does anything outside the tenant network: the host's own loopback inside it
    // is the namespace's, with no proxy.
    let (ok, _, err) = psql_in(&ns_b, &uri, "select 1");
    assert!(!ok, "B reached the public proxy from inside its network: {err}");

    // The private endpoint's id on the public listener: refused.
    let named = uri.replace(
        &format!(
            "endpoint%3D{}",
            common::ha::show(&up, "shop")["endpoint"].as_str().unwrap()
        ),
        &format!("endpoint%3D{ep_id}"),
    );
    assert_ne!(named, uri);
    let (ok, _, err) = psql(&named, "select 1");
    assert!(!ok && err.contains("is private"), "{err}");

    // The public endpoint off: the public listener refuses, the private one still serves.
    up.cli_ok(&["cluster", "update", "shop", "--public", "false"]);
    wait_for("the public endpoint to close", Duration::from_secs(20), || {
        let (ok, _, err) = psql(&uri, "select 1");
        !ok && err.contains("has no public endpoint")
    });
    assert!(
        psql_in(&ns_a, &inside, "select 1").0,
        "the private endpoint stopped serving"
    );

    let listed = up.cli_ok(&["endpoint", "list", "shop"]);
    assert!(listed.contains(&ep_id) && listed.contains("10.0.0.10:5432"), "{listed}");
    let shown = up.cli_ok(&["cluster", "show", "shop"]);
    assert!(
        shown.contains(&format!("private:    {ep_id} in network vpc-a at 10.0.0.10:5432")),
        "{shown}"
    );
    // A network in use stays.
    let busy = up.cli(&["network", "delete", "vpc-a"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("still has 1 private endpoint"));

    // The machine restarts: its namespaces go with it; `up` makes them again and the
    // proxies listen in them anew.
    let mut first = up;
    first.stop();
    assert!(ip().args(["netns", "delete", &ns_a]).status().unwrap().success());
    let up = Up::start_in(&first.root);
    wait_for(
        "the private listener after the restart",
        Duration::from_secs(30),
        || psql_in(&ns_a, &inside, "select 1").0,
    );

    // The endpoint deleted: its listener closes.
    up.cli_ok(&["endpoint", "delete", "shop", &ep_id]);
    wait_for("the private listener to close", Duration::from_secs(20), || {
        let (ok, _, err) = psql_in(&ns_a, &inside, "select 1");
        !ok && err.contains("Connection refused")
    });
    // The networks deleted: the land removes the namespaces.
    up.cli_ok(&["network", "delete", "vpc-a"]);
    up.cli_ok(&["network", "delete", "vpc-b", &b_key]);
    for ns in [&ns_a, &ns_b] {
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "{ns} is still there"
        );
    }
}
