//! `highrise land`: the local land's operator controls — its pools (prices, spot
//! capacity), a pool's capacity, preempting a host. Found through `--land-url`,
//! `HIGHRISE_LAND_URL`, or the client config `highrise up` wrote.

use crate::up::{default_client_config_path, ClientConfig};
use anyhow::{bail, Context, Result};
use highrise_provider::local::PoolStatus;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum LandCommand {
    /// List the pools: prices, spot capacity, spot hosts.
    Pools {
        #[command(flatten)]
        conn: LandConn,
    },
    /// Post a spot notice on a host (it dies when the notice runs out).
    Preempt {
        host: String,
        /// Seconds of notice; 0: none, the host dies at once. The cloud's own when omitted.
        #[arg(long)]
        notice: Option<u64>,
        #[command(flatten)]
        conn: LandConn,
    },
    /// Rotate the master key: everything it seals in the store (orgs' data keys, clusters'
    /// certificate keys, the audit chain's key) is sealed under a new one and the old one
    /// is removed; the control plane restarts at the same addresses, databases run on.
    RotateMasterKey {
        #[command(flatten)]
        conn: LandConn,
    },
    /// Set a pool's spot capacity (hosts beyond it get notices); `auto` hands it back to
    /// its model (fixed, or the replayed trace).
    Capacity {
        /// `cloud/region/zone/instance-type`, as `land pools` lists; or `cloud/region` (or
        /// `cloud`) for all its pools at once.
        pool: String,
        /// A number of spot hosts, or `auto`.
        capacity: String,
        #[command(flatten)]
        conn: LandConn,
    },
}

#[derive(clap::Args, Clone)]
pub struct LandConn {
    /// The land's URL (else $HIGHRISE_LAND_URL, else the config `highrise up` wrote).
    #[arg(long)]
    land_url: Option<String>,
    /// Print the land's JSON.
    #[arg(long)]
    json: bool,
}

fn land_url(conn: &LandConn) -> Result<String> {
    let saved: Option<ClientConfig> = default_client_config_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    conn.land_url
        .clone()
        .or_else(|| std::env::var("HIGHRISE_LAND_URL").ok())
        .or_else(|| saved.and_then(|c| c.land_url))
        .map(|u| u.trim_end_matches('/').to_string())
        .context("no land URL: pass --land-url, set HIGHRISE_LAND_URL, or start `highrise up`")
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body["error"]["message"].as_str().unwrap_or("(no message)").to_string();
    bail!("{msg} ({status})")
}

pub async fn land(cmd: LandCommand) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("build HTTP client")?;
    match cmd {
        LandCommand::Pools { conn } => {
            let url = land_url(&conn)?;
            let resp = http
                .get(format!("{url}/land/pools"))
                .send()
                .await
                .with_context(|| format!("reach the land at {url}"))?;
            let pools: Vec<PoolStatus> = check(resp).await?.json().await.context("parse the land's pools")?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&pools)?);
                return Ok(());
            }
            println!(
                "{:<40} {:>10} {:>10} {:>9} {:>10} {:>7}",
                "POOL", "ON-DEMAND", "SPOT", "CAPACITY", "SPOT HOSTS", "NOTICE"
            );
            for p in pools {
                println!(
                    "{:<40} {:>10} {:>10} {:>9} {:>10} {:>6}s",
                    p.id, p.on_demand_hour, p.spot_hour, p.spot_capacity, p.spot_hosts, p.notice_secs
                );
            }
        }
        LandCommand::Preempt { host, notice, conn } => {
            let url = land_url(&conn)?;
            let mut req = http.post(format!("{url}/land/hosts/{host}/preempt"));
            if let Some(n) = notice {
                req = req.query(&[("notice", n)]);
            }
            let resp = req.send().await.with_context(|| format!("reach the land at {url}"))?;
            let body: serde_json::Value = check(resp).await?.json().await.context("parse the land's answer")?;
            if conn.json {
                println!("{body}");
            } else if notice == Some(0) {
                println!("host {host} killed without notice");
            } else {
                println!(
                    "host {host} has a spot notice; it goes at unix second {}",
                    body["terminates_at"]
                );
            }
        }
        LandCommand::RotateMasterKey { conn } => {
            let url = land_url(&conn)?;
            let resp = http
                .post(format!("{url}/land/control-plane/rotate-master-key"))
                .send()
                .await
                .with_context(|| format!("reach the land at {url}"))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{body} ({status})");
            }
            if conn.json {
                println!("{body}");
            } else {
                println!("master key rotated: the store is sealed under the new key, and the old one is gone");
            }
        }
        LandCommand::Capacity { pool, capacity, conn } => {
            let url = land_url(&conn)?;
            let capacity: Option<u32> = match capacity.as_str() {
                "auto" => None,
                n => Some(
                    n.parse()
                        .with_context(|| format!("capacity {n:?} is neither a number of hosts nor `auto`"))?,
                ),
            };
            let resp = http
                .post(format!("{url}/land/capacity"))
                .json(&serde_json::json!({ "pool": pool, "capacity": capacity }))
                .send()
                .await
                .with_context(|| format!("reach the land at {url}"))?;
            let body: serde_json::Value = check(resp).await?.json().await.context("parse the land's answer")?;
            let pools: Vec<&str> = body["pools"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            for p in pools {
                match capacity {
                    Some(n) => println!("pool {p} holds {n} spot hosts"),
                    None => println!("pool {p} follows its model again"),
                }
            }
        }
    }
    Ok(())
}
