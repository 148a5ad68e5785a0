//! Verified TLS through the proxies (issue 14) on the real `highrise up`: stock `psql`
//! with `sslmode=verify-full` and the land's CA connects (the endpoint travels as SNI);
//! a client trusting another CA, or asking for another host name, is refused by its own
//! TLS check; `ca-cert`, `cluster show` and `cluster connect` hand out the CA. Agents and
//! proxies reach the control plane over TLS verified by the same CA, and refuse a
//! control plane whose certificate it did not sign.

mod common;

use common::*;
use std::process::Command;

fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{out}"))
        .trim()
}

#[test]
fn clients_verify_the_proxy_with_the_lands_ca_and_refuse_any_other() {
    let mut up = Up::start();
    let out = up.cli_ok(&["cluster", "create", "shop", "--wait"]);
    let password = line_after(&out, "password of owner (shown only now):").to_string();
    let verified = line_after(&out, "verified TLS:").to_string();
    assert!(verified.contains("sslmode=verify-full"), "{verified}");
    assert!(!verified.contains("options="), "the endpoint goes as SNI: {verified}");

    let conninfo = psql_ok(&verified, "\\conninfo");
    assert!(conninfo.contains("SSL connection"), "{conninfo}");
    assert_eq!(psql_ok(&verified, "select current_database()"), "shop");
    // The proxy authenticates the client (SCRAM bound to the proxy's certificate: a
    // client that demands channel binding gets it) and reaches the server over TLS.
    let bound = format!("{verified}&channel_binding=require");
    assert_eq!(
        psql_ok(&bound, "select ssl from pg_stat_ssl where pid = pg_backend_pid()"),
        "t",
        "the proxy's connection to the server is TLS"
    );
    let (ok, _, err) = psql(&verified.replacen(&password, "wrong", 1), "select 1");
    assert!(!ok && err.contains("password authentication failed for user"), "{err}");

    // The CA the CLI keeps is the land's, and `ca-cert` writes the same.
    let land_ca = std::fs::read_to_string(up.data_dir.join("tls/ca.crt")).unwrap();
    let out_file = up.root.join("ca.pem");
    let printed = up.cli_ok(&["ca-cert", "--out", out_file.to_str().unwrap()]);
    assert_eq!(printed.trim(), out_file.to_str().unwrap());
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), land_ca);
    let ca_file = verified
        .split("sslrootcert=")
        .nth(1)
        .map(|p| p.split('&').next().unwrap_or(p))
        .expect("sslrootcert in the URI");
    assert_eq!(std::fs::read_to_string(ca_file).unwrap(), land_ca);

    // A client that trusts another CA refuses the proxy, password or not.
    let other = highrise_control::ca::Ca::generate().unwrap();
    let other_file = up.root.join("other-ca.pem");
    std::fs::write(&other_file, other.cert_pem()).unwrap();
    let foreign = verified.replace(ca_file, other_file.to_str().unwrap());
    let (ok, _, err) = psql(&foreign, "select 1");
    assert!(!ok, "connected trusting another CA");
    assert!(err.contains("certificate verify failed"), "{err}");
    // So does one asking for a host name the certificate does not carry.
    let endpoint = line_after(&up.cli_ok(&["cluster", "show", "shop"]), "endpoint:").to_string();
    let misnamed = verified.replace(&format!("{endpoint}.localhost"), &format!("{endpoint}.example.com"));
    let (ok, _, err) = psql(&misnamed, "select 1");
    assert!(!ok, "connected under another host name");
    assert!(err.contains("does not match host name"), "{err}");

    // `cluster show` prints the verifying URI (without the password) ...
    let shown = up.cli_ok(&["cluster", "show", "shop"]);
    let connect = line_after(&shown, "connect:");
    assert!(
        connect.contains("sslmode=verify-full") && connect.contains("sslrootcert="),
        "{shown}"
    );
    assert!(!connect.contains(&password), "{shown}");
    // ... and `cluster connect` runs psql on it.
    let out = Command::new(BIN)
        .args([
            "cluster",
            "connect",
            "shop",
            "--",
            "-X",
            "-A",
            "-t",
            "-c",
            "select 'verified ' || current_user",
        ])
        .env("XDG_CONFIG_HOME", up.root.join("config"))
        .env("PGPASSWORD", &password)
        .env_remove("HIGHRISE_API_URL")
        .env_remove("HIGHRISE_API_KEY")
        .env_remove("HIGHRISE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified owner");

    // Restarted, `up` reads its CA back and signs the proxies' new certificate with it:
    // the CA file clients already hold still verifies them.
    up.stop();
    let again = Up::start_in(&up.root);
    let shown = again.cli_ok(&["cluster", "show", "shop"]);
    let connect = line_after(&shown, "connect:").replace("owner@", &format!("owner:{password}@"));
    assert_eq!(std::fs::read_to_string(ca_file).unwrap(), land_ca, "the CA changed");
    wait_for(
        "the cluster back after the restart",
        std::time::Duration::from_secs(60),
        || psql(&connect, "select 1").0,
    );
    assert_eq!(psql_ok(&connect, "select current_database()"), "shop");
}

/// The host directory and desired spec of `cluster_id`'s standby.
fn standby(up: &Up, cluster_id: &str) -> (std::path::PathBuf, serde_json::Value) {
    for host in std::fs::read_dir(up.data_dir.join("land/hosts")).unwrap().flatten() {
        let Ok(bytes) = std::fs::read(host.path().join("desired.json")) else {
            continue;
        };
        let desired: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for spec in desired["instances"].as_array().into_iter().flatten() {
            if spec["cluster_id"] == cluster_id && spec["role"] == "standby" {
                return (host.path(), spec.clone());
            }
        }
    }
    panic!("no standby of {cluster_id} on any host");
}

/// The replication password a host was given for a standby of `cluster_id`, read from
/// that host's desired state (what an attacker on the host would hold).
fn standby_replication_password(up: &Up, cluster_id: &str) -> String {
    let (_, spec) = standby(up, cluster_id);
    spec["replication_password"].as_str().unwrap().to_string()
}

/// The server settings of `cluster_id`'s standby (its `highrise.conf`).
fn standby_config(up: &Up, cluster_id: &str) -> String {
    let (host, spec) = standby(up, cluster_id);
    let conf = host
        .join("i")
        .join(spec["id"].as_str().unwrap())
        .join("pgdata/highrise.conf");
    std::fs::read_to_string(conf).unwrap()
}

/// A replication connection as `replicator` to `addr` (`ip:port`, then any further
/// connection options) with `password`.
fn replicate(addr: &str, password: &str) -> (bool, String) {
    let (addr, extra) = addr.split_once(' ').unwrap_or((addr, ""));
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            &format!("host={ip} port={port} user=replicator password={password} dbname=replication replication=true connect_timeout=10 {extra}"),
            "-c",
            "IDENTIFY_SYSTEM",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_standby_of_one_cluster_cannot_replicate_from_another() {
    let up = Up::start();
    up.cli_ok(&["cluster", "create", "a", "--wait"]);
    let (_, b) = common::ha::ha_cluster(&up, "b", 1);
    let a = common::ha::show(&up, "a");
    let a_primary = common::ha::member(&a, "primary")["addr"].as_str().unwrap().to_string();
    let b_primary = common::ha::member(&b, "primary")["addr"].as_str().unwrap().to_string();
    let b_password = standby_replication_password(&up, b["id"].as_str().unwrap());

    // B's standby streams from B's primary with what its host was given, over TLS that
    // verifies the primary by B's name (a member takes TCP over TLS only) ...
    let (ok, out) = replicate(&b_primary, &b_password);
    assert!(ok, "{out}");
    let (ok, out) = replicate(&format!("{b_primary} sslmode=disable"), &b_password);
    assert!(!ok && out.contains("no encryption"), "{out}");
    let standby_conf = standby_config(&up, b["id"].as_str().unwrap());
    let conninfo = standby_conf
        .lines()
        .find(|l| l.starts_with("primary_conninfo"))
        .unwrap_or_default();
    let b_name = format!("{}.db.localhost", b["id"].as_str().unwrap().replace('_', "-"));
    assert!(
        conninfo.contains("sslmode=verify-full") && conninfo.contains(&format!("host={b_name} ")),
        "{conninfo}"
    );
    // ... and the same login is worth nothing at A's primary.
    let (ok, out) = replicate(&a_primary, &b_password);
    assert!(!ok, "B's replication login works at A: {out}");
    assert!(
        out.contains("password authentication failed for user \"replicator\""),
        "{out}"
    );
}

#[tokio::test]
async fn agents_reach_the_control_plane_over_tls_verified_by_the_lands_ca() {
    let up = Up::start();
    assert!(up.agent_url.starts_with("https://"), "{}", up.agent_url);
    // The land tells hosts and proxies that URL (their metadata's control-url) ...
    let land_says = reqwest::get(format!("{}/land/control-url", up.land_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(land_says, up.agent_url);
    // ... and agents that registered there run the cluster.
    let uri = up.create_cluster("shop");
    assert_eq!(psql_ok(&uri, "select current_database()"), "shop");
    let land_ca = std::fs::read_to_string(up.data_dir.join("tls/ca.crt")).unwrap();
    let hosts: Vec<_> = std::fs::read_dir(up.data_dir.join("land/hosts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!hosts.is_empty());
    for h in &hosts {
        assert_eq!(
            std::fs::read_to_string(h.join("control-ca.pem")).unwrap(),
            land_ca,
            "{}",
            h.display()
        );
    }

    // A client trusting the land's CA reaches the agents' listener ...
    let trusting = |pem: &str| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let health = format!("{}/healthz", up.agent_url);
    let r = trusting(&land_ca).get(&health).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // ... one trusting another CA is refused by its own check ...
    let other = highrise_control::ca::Ca::generate().unwrap();
    let err = trusting(other.cert_pem()).get(&health).send().await.unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    // (Both CAs are named "Highrise CA": the signature is what fails.)
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    // ... and nothing is served there in the clear.
    let plain = health.replacen("https://", "http://", 1);
    assert!(!reqwest::get(&plain).await.is_ok_and(|r| r.status().is_success()));

    // An agent given another CA refuses the control plane before it sends its token.
    let other_pem = up.root.join("other-ca.pem");
    std::fs::write(&other_pem, other.cert_pem()).unwrap();
    let log = up.root.join("stray-agent.log");
    let _agent = Reaped(
        Command::new(BIN)
            .args([
                "agent",
                "--host-id",
                "stray",
                "--address",
                "127.0.0.1",
                "--control-url",
                &up.agent_url,
            ])
            .arg("--dir")
            .arg(up.root.join("stray"))
            .arg("--control-ca")
            .arg(&other_pem)
            .env("HIGHRISE_BOOTSTRAP_TOKEN", "not-a-token")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the stray agent to refuse the certificate",
        std::time::Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("invalid peer certificate")),
    );
}
