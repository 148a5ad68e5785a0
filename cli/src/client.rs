//! Client commands: talk to the control plane's REST API.
//!
//! The API is found through `--api-url`/`--api-key`, then `HIGHRISE_API_URL`/
//! `HIGHRISE_API_KEY`, then the config file `highrise up` wrote. `--output json` prints
//! the API's JSON for scripts; text output is for people, and with `--wait` the last line
//! of `cluster create` is the connection URI.

use crate::up::{default_client_config_path, ClientConfig};
use anyhow::{bail, Context, Result};
use highrise_api::{
    Backup, BackupPolicy, BackupVerification, Cluster, ClusterEvent, CreateCluster, CreateOrg, CreatedCluster,
    CreatedOrg, DataKeyInfo, ErrorBody, MoveCluster, Operation, OperationStatus, OrgQuotas, QuotaUsage, RestoreFrom,
    StorageLevel, Switchover, UpdateCluster,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// Control plane URL (else $HIGHRISE_API_URL, else the config `highrise up` wrote).
    #[arg(long, global = true)]
    pub(crate) api_url: Option<String>,
    /// API key (else $HIGHRISE_API_KEY, else the config `highrise up` wrote).
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub(crate) output: Output,
    /// Project of the cluster.
    #[arg(long, global = true)]
    pub(crate) project: Option<String>,
}

/// Who may use a cluster's public endpoint.
#[derive(clap::Args, Clone, Default)]
pub struct AccessArgs {
    /// Whether the public endpoint takes connections (`--public false`: only through
    /// private endpoints).
    #[arg(long)]
    public: Option<bool>,
    /// A source network the public endpoint admits: a CIDR (10.0.0.0/8) or an address;
    /// repeat for more. Without any, every source.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// Admit every source again (clears the allow-list).
    #[arg(long, conflicts_with = "allow")]
    allow_any: bool,
    /// The most sessions the database's role may hold at once (1–1000; `0`: no limit but
    /// the server's). PostgreSQL refuses the next one; the role cannot raise it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    connection_limit: Option<u32>,
}

impl AccessArgs {
    /// The allow-list to send: `None` leaves it as it is.
    fn allowed(&self) -> Option<Vec<String>> {
        if self.allow_any {
            Some(Vec::new())
        } else if self.allow.is_empty() {
            None
        } else {
            Some(self.allow.clone())
        }
    }
}

/// What a cluster does when its whole cloud goes dark.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum CloudLossArg {
    /// Restore it in a surviving cloud from the copy there (same endpoint).
    Restore,
    /// Wait for the cloud to come back.
    Wait,
}

impl From<CloudLossArg> for highrise_api::OnCloudLoss {
    fn from(a: CloudLossArg) -> Self {
        match a {
            CloudLossArg::Restore => highrise_api::OnCloudLoss::Restore,
            CloudLossArg::Wait => highrise_api::OnCloudLoss::Wait,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster.
    Create {
        name: String,
        #[arg(long)]
        cloud: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// small, medium or large.
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        replicas: Option<u32>,
        #[arg(long)]
        spot: bool,
        /// Put the standbys in other clouds than the primary.
        #[arg(long)]
        spread_clouds: bool,
        /// async (WAL in object storage within about a second) or sync (commits wait for it).
        #[arg(long)]
        durability: Option<String>,
        /// Storage autoscaling up to this disk size (e.g. 100GiB): before the disk nears
        /// the read-only mark the members move to hosts with twice the disk.
        #[arg(long)]
        storage_autoscale: Option<bytesize::ByteSize>,
        /// Object stores that keep its WAL and backups: 1 (its cloud's) or 2 (also another
        /// cloud's; the default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2))]
        backup_copies: Option<u32>,
        /// When its whole cloud goes dark: restore it in a surviving cloud from the copy
        /// there (the default), or wait for the cloud to come back.
        #[arg(long, value_enum)]
        on_cloud_loss: Option<CloudLossArg>,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Wait until the cluster answers queries; the last line printed is its URI.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a new cluster from another one's backups and WAL in object storage (also
    /// of a deleted cluster, also in another cloud).
    Restore {
        /// Name of the new cluster.
        name: String,
        /// The cluster to restore from.
        #[arg(long)]
        from: String,
        /// Recover up to this time: with its UTC offset, as psql prints it
        /// (2026-12-01 20:20:00.123+00) or in RFC 3339, or Unix seconds; the end of the
        /// archived WAL when neither --time nor --lsn is given.
        #[arg(long, conflicts_with = "lsn")]
        time: Option<String>,
        /// Recover up to this WAL position (X/Y).
        #[arg(long)]
        lsn: Option<String>,
        #[arg(long)]
        cloud: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        replicas: Option<u32>,
        #[arg(long)]
        durability: Option<String>,
        /// Wait until the restored cluster answers queries.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List clusters.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one cluster.
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run psql on the cluster with verified TLS (the land's CA fetched for it); it asks
    /// for the password unless PGPASSWORD or ~/.pgpass has it.
    Connect {
        name: String,
        #[command(flatten)]
        conn: Conn,
        /// Passed on to psql (after `--`).
        #[arg(last = true)]
        psql_args: Vec<String>,
    },
    /// Change a cluster: its number of standbys, durability, backup policy.
    Update {
        name: String,
        #[arg(long)]
        replicas: Option<u32>,
        /// async or sync.
        #[arg(long)]
        durability: Option<String>,
        /// Storage autoscaling up to this disk size; `0` turns it off.
        #[arg(long)]
        storage_autoscale: Option<bytesize::ByteSize>,
        /// A new plan (small, medium, large): members of the new size are built and the
        /// primary switched over, no restart.
        #[arg(long)]
        plan: Option<String>,
        /// When its whole cloud goes dark: restore elsewhere or wait.
        #[arg(long, value_enum)]
        on_cloud_loss: Option<CloudLossArg>,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Planned switchover to a standby (the most advanced one without --to).
    Switchover {
        name: String,
        /// The standby's instance id (see `cluster show`).
        #[arg(long)]
        to: Option<String>,
        /// Wait until the new primary takes writes.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move a cluster to another cloud (and region): new members there, then a switchover;
    /// the connection string stays the same.
    Move {
        name: String,
        /// CLOUD or CLOUD/REGION (see `highrise cloud list`).
        #[arg(long, required_unless_present = "cancel")]
        to: Option<String>,
        /// Cancel the running move or resize (until its switchover): the cluster stays
        /// where and as it was.
        #[arg(long, conflicts_with_all = ["to", "wait"])]
        cancel: bool,
        /// Wait until every member runs in the new place, showing each step.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a cluster's events (failovers, promotions, replaced members).
    Events {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a cluster and its data.
    Delete {
        name: String,
        /// Wait until the instance and its data are gone.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Base backup schedule and retention; unset parts keep their current (or default) value.
#[derive(clap::Args, Clone, Default)]
pub struct PolicyArgs {
    /// Seconds between scheduled base backups.
    #[arg(long)]
    backup_interval: Option<i64>,
    /// Keep at least this many backups.
    #[arg(long)]
    retain_count: Option<u32>,
    /// Keep every backup younger than this many days.
    #[arg(long)]
    retain_days: Option<u32>,
}

impl PolicyArgs {
    fn merge(&self, base: BackupPolicy) -> Option<BackupPolicy> {
        if self.backup_interval.is_none() && self.retain_count.is_none() && self.retain_days.is_none() {
            return None;
        }
        Some(BackupPolicy {
            interval_seconds: self.backup_interval.unwrap_or(base.interval_seconds),
            retain_count: self.retain_count.unwrap_or(base.retain_count),
            retain_days: self.retain_days.unwrap_or(base.retain_days),
        })
    }
}

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// List a cluster's base backups (also of a deleted cluster).
    List {
        cluster: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Take a base backup now.
    Create {
        cluster: String,
        /// Wait until the backup is complete.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Read a backup back and check every checksum (the newest without --id).
    Verify {
        cluster: String,
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum CloudCommand {
    /// The clouds, regions and zones a cluster can go to.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Move every cluster off a cloud (operators): each like `cluster move`, a few at a
    /// time; survives a control plane restart.
    Evacuate {
        cloud: String,
        /// Where the clusters go (the first other cloud that answers when omitted).
        #[arg(long)]
        to: Option<String>,
        /// Clusters moving at once (1-16; 2 by default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
        concurrency: Option<u32>,
        /// Follow it until every cluster is moved (or failed, with why).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show an evacuation (moved, moving, waiting, failed, staying), or pause or resume it.
    Evacuation {
        id: String,
        /// Start no new move; running ones finish.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        #[arg(long)]
        resume: bool,
        /// Follow it until it is finished.
        #[arg(long, conflicts_with_all = ["pause", "resume"])]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn cloud(cmd: CloudCommand) -> Result<()> {
    match cmd {
        CloudCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let clouds: Vec<highrise_api::CloudInfo> = api.send(api.http.get(format!("{}/v1/clouds", api.url))).await?;
            if conn.output == Output::Json {
                return print_json(&clouds);
            }
            println!("{:<12} {:<12} ZONES", "CLOUD", "REGION");
            for c in clouds {
                for r in c.regions {
                    println!("{:<12} {:<12} {}", c.name, r.name, r.zones.join(" "));
                }
            }
            Ok(())
        }
        CloudCommand::Evacuate {
            cloud,
            to,
            concurrency,
            wait,
            conn,
        } => crate::evacuate::evacuate(cloud, to, concurrency, wait, &conn).await,
        CloudCommand::Evacuation {
            id,
            pause,
            resume,
            wait,
            conn,
        } => crate::evacuate::evacuation(id, pause, resume, wait, &conn).await,
    }
}

#[derive(clap::Subcommand)]
pub enum OrgCommand {
    /// Create an org; prints its first admin key (shown only once).
    Create {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Your org's quotas and what it uses of them.
    Quotas {
        #[command(flatten)]
        conn: Conn,
    },
    /// Set an org's quotas (operator key only); unset ones keep their value.
    SetQuotas {
        /// Org name or id.
        org: String,
        #[arg(long)]
        clusters: Option<i64>,
        /// Primary and standbys of one cluster.
        #[arg(long)]
        members_per_cluster: Option<i64>,
        /// Bytes of base backups in object storage (e.g. 100GiB).
        #[arg(long)]
        storage: Option<bytesize::ByteSize>,
        #[arg(long)]
        concurrent_operations: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an org without clusters (operator key only): its data keys are destroyed,
    /// so nothing it left in object storage can be opened again.
    Delete {
        /// Org name or id.
        org: String,
        /// The org's name again, to confirm.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rotate your org's data key: a new generation seals everything written from now on.
    RotateKey {
        #[command(flatten)]
        conn: Conn,
    },
    /// Retire your org's older data key generations: everything they sealed is sealed again
    /// under the newest, then they are destroyed (an operation in the background; waits
    /// for it unless --no-wait).
    RetireKeys {
        /// Print the operation and return (`GET /v1/operations/{id}` follows it).
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Your org's data key generations.
    Keys {
        #[command(flatten)]
        conn: Conn,
    },
}

pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    key: String,
}

impl Api {
    pub(crate) fn from(conn: &Conn) -> Result<Self> {
        Self::open(conn, true)
    }

    /// For calls made before signing in (no key needed).
    pub(crate) fn from_url_only(conn: &Conn) -> Result<Self> {
        Self::open(conn, false)
    }

    fn open(conn: &Conn, need_key: bool) -> Result<Self> {
        let saved: Option<ClientConfig> = default_client_config_path()
            .map(|p: PathBuf| p)
            .and_then(|p| std::fs::read(&p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        let url = conn
            .api_url
            .clone()
            .or_else(|| std::env::var("HIGHRISE_API_URL").ok())
            .or_else(|| saved.as_ref().map(|c| c.api_url.clone()))
            .context(
                "no API URL: pass --api-url, set HIGHRISE_API_URL, or start `highrise up` (it writes a client config)",
            )?;
        let key = conn
            .api_key
            .clone()
            .or_else(|| std::env::var("HIGHRISE_API_KEY").ok())
            .or_else(|| saved.as_ref().map(|c| c.api_key.clone()))
            .filter(|k| !k.is_empty());
        let key = match key {
            Some(k) => k,
            None if !need_key => String::new(),
            None => {
                bail!("no API key: pass --api-key, set HIGHRISE_API_KEY, run `highrise login`, or start `highrise up`")
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("build HTTP client")?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// Sends `req` with the key; an error answer becomes its message.
    async fn fetch(&self, req: reqwest::RequestBuilder) -> Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
        let req = if self.key.is_empty() {
            req
        } else {
            req.bearer_auth(&self.key)
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("reach the control plane at {}", self.url))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.context("read the control plane's answer")?;
        if !status.is_success() {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => bail!("{} ({})", e.error.message, status),
                Err(_) => bail!("control plane answered {status}: {}", String::from_utf8_lossy(&bytes)),
            }
        }
        Ok((headers, bytes))
    }

    pub(crate) async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let (_, bytes) = self.fetch(req).await?;
        serde_json::from_slice(&bytes).context("parse the control plane's answer")
    }

    /// Sends a request and returns its answer as it came (a document, not JSON).
    pub(crate) async fn download(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        self.fetch(req).await.map(|(_, b)| b)
    }

    /// Sends a request whose answer is empty (204).
    pub(crate) async fn send_empty(&self, req: reqwest::RequestBuilder) -> Result<()> {
        self.fetch(req).await.map(drop)
    }

    /// Every item of a paged list, following `x-next-cursor` page after page.
    pub(crate) async fn list<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", "1000".into()));
            if let Some(c) = cursor.take() {
                q.push(("cursor", c));
            }
            let (headers, bytes) = self.fetch(self.http.get(url).query(&q)).await?;
            let page: Vec<T> = serde_json::from_slice(&bytes).context("parse the control plane's answer")?;
            out.extend(page);
            match headers.get("x-next-cursor").and_then(|v| v.to_str().ok()) {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(out),
            }
        }
    }

    fn cluster_path(&self, name: &str, project: &Option<String>) -> String {
        self.cluster_sub(name, project, "")
    }

    /// `/v1/clusters/<name><suffix>[?project=…]`.
    pub(crate) fn cluster_sub(&self, name: &str, project: &Option<String>, suffix: &str) -> String {
        let mut p = format!("{}/v1/clusters/{}{suffix}", self.url, urlencode(name));
        if let Some(project) = project {
            p.push_str(&format!("?project={}", urlencode(project)));
        }
        p
    }

    async fn create_cluster(&self, body: &CreateCluster, wait: bool, conn: &Conn) -> Result<()> {
        let name = &body.name;
        let mut created: CreatedCluster = self
            .send(self.http.post(format!("{}/v1/clusters", self.url)).json(body))
            .await?;
        if wait {
            let what = if body.restore.is_some() {
                "restoring"
            } else {
                "creating"
            };
            wait_operation(self, &created.operation, &format!("{what} {name}")).await?;
            created.cluster = self
                .send(self.http.get(self.cluster_path(&created.cluster.id, &conn.project)))
                .await?;
        }
        if conn.output == Output::Json {
            return print_json(&created);
        }
        println!(
            "cluster {} ({}) {}",
            created.cluster.name,
            created.cluster.id,
            if wait { "is running" } else { "is being created" }
        );
        println!(
            "password of {} (shown only now): {}",
            created.cluster.user, created.password
        );
        if let (Some(v), Some(ca)) = (&created.verified_uri, crate::tls::ca_for(self, &created.cluster).await?) {
            println!("verified TLS: {}", crate::tls::with_root_cert(v, &ca));
        }
        println!("{}", created.connection_uri);
        Ok(())
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SSZ` of Unix seconds (civil-from-days, proleptic Gregorian).
pub(crate) fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Polls an operation until it ends, showing progress on a terminal.
async fn wait_operation(api: &Api, op: &Operation, what: &str) -> Result<Operation> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    // On a terminal a bar of the operation's steps (or a spinner); elsewhere a line per step.
    let bar = if tty {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {elapsed} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_prefix(what.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut last_step = None;
    loop {
        let cur: Operation = api
            .send(api.http.get(format!("{}/v1/operations/{}", api.url, op.id)))
            .await?;
        match cur.status {
            OperationStatus::Succeeded => {
                bar.finish_and_clear();
                if tty {
                    eprintln!("{what}: done in {:.1}s", started.elapsed().as_secs_f64());
                }
                return Ok(cur);
            }
            OperationStatus::Failed | OperationStatus::Cancelled => {
                bar.abandon();
                let how = if cur.status == OperationStatus::Cancelled {
                    "was cancelled"
                } else {
                    "failed"
                };
                bail!(
                    "{what} {how}: {}",
                    cur.error.unwrap_or_else(|| "no reason given".into())
                )
            }
            OperationStatus::Running => {}
        }
        if let Some(p) = &cur.progress {
            let line = format!("step {}/{}: {}", p.step, p.steps, p.doing);
            if last_step.as_ref() != Some(&line) {
                if tty {
                    bar.set_message(line.clone());
                } else {
                    eprintln!("{what}: {line}");
                }
                last_step = Some(line);
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            bar.abandon();
            bail!("{what}: still running after 10 minutes (operation {})", op.id);
        }
        tokio::time::sleep(delay).await;
        if started.elapsed() > Duration::from_secs(10) {
            delay = Duration::from_millis(250);
        }
    }
}

fn show_cluster(c: &Cluster, ca: Option<&std::path::Path>) {
    println!("name:       {}", c.name);
    println!("id:         {}", c.id);
    println!("project:    {}", c.project);
    println!(
        "status:     {}",
        serde_json::to_string(&c.status).unwrap_or_default().trim_matches('"')
    );
    println!(
        "location:   {} / {}{}{}",
        c.cloud,
        c.region,
        if c.spread_clouds {
            ", standbys in other clouds"
        } else {
            ""
        },
        c.avoid_cloud
            .as_ref()
            .map(|a| format!(", keeps out of {a}"))
            .unwrap_or_default()
    );
    println!(
        "plan:       {}  (PostgreSQL {}, {} replicas{})",
        c.plan,
        c.pg_version,
        c.replicas,
        if c.spot { ", spot" } else { "" }
    );
    println!("endpoint:   {}", c.endpoint);
    match (c.public, c.allowed_cidrs.is_empty()) {
        (false, _) => println!("access:     public endpoint off (private endpoints only)"),
        (true, true) => println!("access:     public, from any address"),
        (true, false) => println!("access:     public, from {} only", c.allowed_cidrs.join(", ")),
    }
    if let Some(limit) = c.connection_limit {
        println!("sessions:   at most {limit} at once for {}", c.user);
    }
    println!("term:       {}", c.term);
    println!(
        "durability: {}  (base backup every {} s, keep {} / {} days)",
        c.durability, c.backup_policy.interval_seconds, c.backup_policy.retain_count, c.backup_policy.retain_days
    );
    if let Some(a) = &c.archive {
        println!(
            "archive:    WAL stored up to {}, {} behind{}",
            a.archived_lsn.as_deref().unwrap_or("-"),
            a.lag_bytes.map_or_else(|| "?".to_string(), |b| format!("{b} B")),
            a.error.as_ref().map(|e| format!("; failing: {e}")).unwrap_or_default()
        );
    }
    let size = |b: u64| bytesize::ByteSize(b).to_string();
    match &c.copy_cloud {
        Some(copy) => println!(
            "copies:     WAL and backups in {}'s store and {copy}'s ({} behind)",
            c.cloud,
            c.copy_lag_bytes.map_or_else(|| "not measured yet".to_string(), size)
        ),
        None => println!("copies:     WAL and backups in {}'s store only", c.cloud),
    }
    println!(
        "cloud loss: {}",
        match c.on_cloud_loss {
            highrise_api::OnCloudLoss::Restore => "restore in a surviving cloud from the copy there",
            highrise_api::OnCloudLoss::Wait => "wait for the cloud to come back",
        }
    );
    match c.storage_used_bytes {
        Some(used) if c.storage_limit_bytes > 0 => println!(
            "storage:    {} of {} ({:.1}%)",
            size(used),
            size(c.storage_limit_bytes),
            used as f64 * 100.0 / c.storage_limit_bytes as f64
        ),
        _ => println!("storage:    ? of {}", size(c.storage_limit_bytes)),
    }
    if let Some(max) = c.storage_autoscale_max_bytes {
        let disk = c
            .storage_disk_bytes
            .map_or_else(|| "any disk".to_string(), |d| format!("disks of {}", size(d)));
        println!("            autoscaling up to {} (members need {disk})", size(max));
    }
    match c.storage_level {
        StorageLevel::Normal => {}
        StorageLevel::Warning => println!("            filling up: read-only from 90% of the plan or the disk"),
        StorageLevel::ReadOnly | StorageLevel::Critical | StorageLevel::Full => println!(
            "            READ-ONLY: storage nearly full; free space in a session that runs\n            \
             `SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE` (writes resume below 85%)"
        ),
    }
    match (&c.verified_uri, ca) {
        (Some(v), Some(ca)) => {
            println!("connect:    {}", crate::tls::with_root_cert(v, ca));
            println!(
                "            (verifies the server; or `highrise cluster connect {}`)",
                c.name
            );
            println!("unverified: {}", c.connection_uri);
        }
        _ => println!("connect:    {}", c.connection_uri),
    }
    if !c.members.is_empty() {
        println!("members:");
        println!(
            "  {:<24} {:<8} {:<12} {:<24} {:<36} {:<10} {:<9} LAG",
            "INSTANCE", "ROLE", "STATE", "HOST", "POOL", "MARKET", "$/HOUR"
        );
        for m in &c.members {
            let lag = m.lag_bytes.map_or_else(|| "-".to_string(), |b| format!("{b} B"));
            let pool = if m.pool.is_empty() {
                format!("{}/{}", m.cloud, m.zone)
            } else {
                m.pool.clone()
            };
            println!(
                "  {:<24} {:<8} {:<12} {:<24} {:<36} {:<10} {:<9} {lag}",
                m.instance_id,
                m.role,
                m.state,
                m.host_id,
                pool,
                m.market,
                m.price_hour.as_deref().unwrap_or("-"),
            );
            if let Some(d) = m.notice_deadline {
                println!("    spot notice: its host goes at {}", utc(d));
            }
            if let Some(s) = m.storage {
                println!(
                    "    storage: data {}, WAL {}; disk {} free of {}{}{}",
                    size(s.data_bytes),
                    size(s.wal_bytes),
                    size(s.disk_free_bytes),
                    size(s.disk_total_bytes),
                    if s.disk_reserve_bytes > 0 {
                        format!(" ({} held in reserve)", size(s.disk_reserve_bytes))
                    } else {
                        String::new()
                    },
                    match s.level {
                        StorageLevel::Normal => "",
                        StorageLevel::Warning => "; guard: warning",
                        StorageLevel::ReadOnly => "; guard: read-only",
                        StorageLevel::Critical => "; guard: critical (writes cancelled)",
                        StorageLevel::Full => "; guard: DISK FULL (reserve released)",
                    }
                );
            }
            if let Some(seed) = &m.seed {
                let from = match (seed.from.as_str(), &seed.backup_id) {
                    ("backup", Some(id)) => format!("backup {id} from object storage"),
                    _ => format!("a copy of the primary ({})", size(seed.primary_bytes)),
                };
                let streaming = seed
                    .stream_start_lsn
                    .map_or_else(String::new, |l| format!(", streaming from {}", highrise_pg::fmt_lsn(l)));
                println!("    built from {from}{streaming}");
            }
        }
    }
}

pub async fn cluster(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Create {
            name,
            cloud,
            region,
            plan,
            replicas,
            spot,
            spread_clouds,
            durability,
            storage_autoscale,
            backup_copies,
            on_cloud_loss,
            access,
            policy,
            wait,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let body = CreateCluster {
                name,
                project: conn.project.clone(),
                cloud,
                region,
                plan,
                pg_version: None,
                replicas,
                spot: spot.then_some(true),
                spread_clouds: spread_clouds.then_some(true),
                durability,
                backup_policy: policy.merge(BackupPolicy::default()),
                restore: None,
                storage_autoscale_max_bytes: storage_autoscale.map(|s| s.as_u64()),
                backup_copies,
                on_cloud_loss: on_cloud_loss.map(Into::into),
                public: access.public,
                allowed_cidrs: access.allowed(),
                connection_limit: access.connection_limit,
            };
            api.create_cluster(&body, wait, &conn).await
        }
        ClusterCommand::Restore {
            name,
            from,
            time,
            lsn,
            cloud,
            region,
            plan,
            replicas,
            durability,
            wait,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let body = CreateCluster {
                name,
                project: conn.project.clone(),
                cloud,
                region,
                plan,
                pg_version: None,
                replicas,
                spot: None,
                spread_clouds: None,
                durability,
                backup_policy: None,
                restore: Some(RestoreFrom { from, time, lsn }),
                storage_autoscale_max_bytes: None,
                backup_copies: None,
                on_cloud_loss: None,
                public: None,
                allowed_cidrs: None,
                connection_limit: None,
            };
            api.create_cluster(&body, wait, &conn).await
        }
        ClusterCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let query: Vec<(&str, String)> = conn.project.iter().map(|p| ("project", p.clone())).collect();
            let clusters: Vec<Cluster> = api.list(&format!("{}/v1/clusters", api.url), &query).await?;
            if conn.output == Output::Json {
                return print_json(&clusters);
            }
            println!(
                "{:<20} {:<10} {:<10} {:<10} {:<18} ID",
                "NAME", "PROJECT", "STATUS", "CLOUD", "ENDPOINT"
            );
            for c in clusters {
                println!(
                    "{:<20} {:<10} {:<10} {:<10} {:<18} {}",
                    c.name,
                    c.project,
                    serde_json::to_string(&c.status).unwrap_or_default().trim_matches('"'),
                    c.cloud,
                    c.endpoint,
                    c.id
                );
            }
            Ok(())
        }
        ClusterCommand::Show { name, conn } => {
            let api = Api::from(&conn)?;
            let c: Cluster = api.send(api.http.get(api.cluster_path(&name, &conn.project))).await?;
            if conn.output == Output::Json {
                return print_json(&c);
            }
            let ca = crate::tls::ca_for(&api, &c).await?;
            show_cluster(&c, ca.as_deref());
            let private: Vec<highrise_api::PrivateEndpoint> = api
                .send(api.http.get(api.cluster_sub(&name, &conn.project, "/endpoints")))
                .await?;
            for e in private {
                println!("private:    {} in network {} at {}", e.id, e.network, e.address);
            }
            Ok(())
        }
        ClusterCommand::Connect { name, conn, psql_args } => {
            let api = Api::from(&conn)?;
            let c: Cluster = api.send(api.http.get(api.cluster_path(&name, &conn.project))).await?;
            crate::tls::connect(&api, &c, &psql_args).await
        }
        ClusterCommand::Update {
            name,
            replicas,
            durability,
            storage_autoscale,
            plan,
            on_cloud_loss,
            access,
            policy,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let backup_policy = match policy.merge(BackupPolicy::default()) {
                Some(_) => {
                    let cur: Cluster = api.send(api.http.get(api.cluster_path(&name, &conn.project))).await?;
                    policy.merge(cur.backup_policy)
                }
                None => None,
            };
            let body = UpdateCluster {
                replicas,
                durability,
                backup_policy,
                storage_autoscale_max_bytes: storage_autoscale.map(|s| s.as_u64()),
                plan,
                on_cloud_loss: on_cloud_loss.map(Into::into),
                public: access.public,
                allowed_cidrs: access.allowed(),
                connection_limit: access.connection_limit,
            };
            let c: Cluster = api
                .send(api.http.patch(api.cluster_path(&name, &conn.project)).json(&body))
                .await?;
            if conn.output == Output::Json {
                return print_json(&c);
            }
            let ca = crate::tls::ca_for(&api, &c).await?;
            show_cluster(&c, ca.as_deref());
            Ok(())
        }
        ClusterCommand::Switchover { name, to, wait, conn } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&name, &conn.project, "/switchover");
            let mut op: Operation = api.send(api.http.post(path).json(&Switchover { to })).await?;
            if wait {
                op = wait_operation(&api, &op, &format!("switching {name} over")).await?;
            }
            if conn.output == Output::Json {
                return print_json(&op);
            }
            println!(
                "switchover of {name} {} (operation {})",
                if wait { "done" } else { "started" },
                op.id
            );
            Ok(())
        }
        ClusterCommand::Move {
            name,
            to,
            cancel,
            wait,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&name, &conn.project, "/move");
            let Some(to) = to.filter(|_| !cancel) else {
                let op: Operation = api.send(api.http.delete(path)).await?;
                if conn.output == Output::Json {
                    return print_json(&op);
                }
                println!("move of {name} cancelled (operation {}); it stays where it was", op.id);
                return Ok(());
            };
            let (cloud, region) = match to.split_once('/') {
                Some((c, r)) => (c.to_string(), Some(r.to_string())),
                None => (to.clone(), None),
            };
            let mut op: Operation = api
                .send(api.http.post(path).json(&MoveCluster { cloud, region }))
                .await?;
            if wait {
                op = wait_operation(&api, &op, &format!("moving {name} to {to}")).await?;
            }
            if conn.output == Output::Json {
                return print_json(&op);
            }
            println!(
                "move of {name} to {to} {} (operation {})",
                if wait { "done" } else { "started" },
                op.id
            );
            Ok(())
        }
        ClusterCommand::Events { name, conn } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&name, &conn.project, "/events");
            let events: Vec<ClusterEvent> = api.list(&path, &[]).await?;
            if conn.output == Output::Json {
                return print_json(&events);
            }
            for e in events {
                println!("{}  {:<18} {}", utc(e.at), e.kind, e.message);
            }
            Ok(())
        }
        ClusterCommand::Delete { name, wait, conn } => {
            let api = Api::from(&conn)?;
            let mut op: Operation = api
                .send(api.http.delete(api.cluster_path(&name, &conn.project)))
                .await?;
            if wait {
                op = wait_operation(&api, &op, &format!("deleting {name}")).await?;
            }
            if conn.output == Output::Json {
                return print_json(&op);
            }
            println!(
                "cluster {name} {} (operation {})",
                if wait { "deleted" } else { "is being deleted" },
                op.id
            );
            Ok(())
        }
    }
}

fn show_backups(list: &[Backup]) {
    println!(
        "{:<26} {:<9} {:<9} {:<20} {:>10} {:>10}  WAL",
        "ID", "KIND", "STATUS", "FINISHED", "SIZE MB", "STORED MB"
    );
    for b in list {
        let mb = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{:.1}", v as f64 / 1e6));
        println!(
            "{:<26} {:<9} {:<9} {:<20} {:>10} {:>10}  {}",
            b.id,
            b.kind,
            b.status,
            b.finished_at.map_or_else(|| "-".into(), utc),
            mb(b.size_bytes),
            mb(b.stored_bytes),
            match (&b.start_lsn, &b.end_lsn) {
                (Some(s), Some(e)) => format!("{s} – {e}"),
                _ => b.error.clone().unwrap_or_default(),
            }
        );
    }
}

/// The backup ledger of a cluster, live or deleted, by id or name.
async fn ledger(api: &Api, cluster: &str, project: &Option<String>) -> Result<Vec<Backup>> {
    let mut q = vec![("cluster", cluster.to_string())];
    if let Some(p) = project {
        q.push(("project", p.clone()));
    }
    api.list(&format!("{}/v1/backups", api.url), &q).await
}

pub async fn backup(cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::List { cluster, conn } => {
            let api = Api::from(&conn)?;
            let list = ledger(&api, &cluster, &conn.project).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            show_backups(&list);
            Ok(())
        }
        BackupCommand::Create { cluster, wait, conn } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&cluster, &conn.project, "/backups");
            let mut b: Backup = api.send(api.http.post(&path)).await?;
            let started = Instant::now();
            while wait && b.status == "pending" {
                if started.elapsed() > Duration::from_secs(3600) {
                    bail!("backup {} still pending after an hour", b.id);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let list = ledger(&api, &cluster, &conn.project).await?;
                b = list
                    .into_iter()
                    .find(|x| x.id == b.id)
                    .with_context(|| format!("backup {} disappeared", b.id))?;
            }
            if b.status == "failed" {
                bail!("backup {} failed: {}", b.id, b.error.unwrap_or_default());
            }
            if conn.output == Output::Json {
                return print_json(&b);
            }
            show_backups(&[b]);
            Ok(())
        }
        BackupCommand::Verify { cluster, id, conn } => {
            let api = Api::from(&conn)?;
            let list = ledger(&api, &cluster, &conn.project).await?;
            let id = match id {
                Some(id) if list.iter().any(|b| b.id == id) => id,
                Some(id) => bail!("cluster {cluster} has no backup {id}"),
                None => list
                    .into_iter()
                    .rev()
                    .find(|b| b.status == "complete")
                    .map(|b| b.id)
                    .with_context(|| format!("cluster {cluster} has no complete backup"))?,
            };
            let url = format!("{}/v1/backups/{}/verify", api.url, urlencode(&id));
            let v: BackupVerification = api.send(api.http.post(url)).await?;
            if conn.output == Output::Json {
                print_json(&v)?;
            } else if v.ok {
                for c in &v.copies {
                    match (c.ok, c.pending) {
                        (true, _) => println!(
                            "backup {} in {}'s store: every checksum matches ({} bytes read)",
                            v.backup, c.cloud, c.checked_bytes
                        ),
                        (false, true) => println!("backup {} in {}'s store: not copied there yet", v.backup, c.cloud),
                        (false, false) => {}
                    }
                }
            }
            if !v.ok {
                bail!("backup {} is damaged: {}", v.backup, v.error.unwrap_or_default());
            }
            Ok(())
        }
    }
}

pub async fn org(cmd: OrgCommand) -> Result<()> {
    match cmd {
        OrgCommand::Create { name, conn } => {
            let api = Api::from(&conn)?;
            let created: CreatedOrg = api
                .send(api.http.post(format!("{}/v1/orgs", api.url)).json(&CreateOrg { name }))
                .await?;
            if conn.output == Output::Json {
                return print_json(&created);
            }
            println!("org {} ({})", created.org.name, created.org.id);
            if !created.org.cell.is_empty() {
                println!("cell: {} (its clusters run on that cell's hosts)", created.org.cell);
            }
            println!("admin API key (shown only now): {}", created.api_key.secret);
            Ok(())
        }
        OrgCommand::Delete { org, confirm, conn } => {
            if confirm != org {
                bail!("--confirm must repeat the org's name ({org:?}): deleting it destroys its data keys for good");
            }
            let api = Api::from(&conn)?;
            api.send_empty(api.http.delete(format!("{}/v1/orgs/{}", api.url, urlencode(&org))))
                .await?;
            println!("org {org} deleted; its data keys are destroyed");
            Ok(())
        }
        OrgCommand::RotateKey { conn } => {
            let api = Api::from(&conn)?;
            let k: DataKeyInfo = api
                .send(api.http.post(format!("{}/v1/data-keys/rotate", api.url)))
                .await?;
            if conn.output == Output::Json {
                return print_json(&k);
            }
            println!(
                "data key generation {} seals from now on; older generations still open what they sealed",
                k.generation
            );
            Ok(())
        }
        OrgCommand::RetireKeys { no_wait, conn } => {
            let api = Api::from(&conn)?;
            let op: Operation = api
                .send(api.http.post(format!("{}/v1/data-keys/retire", api.url)))
                .await?;
            let op = if no_wait {
                op
            } else {
                wait_operation(&api, &op, "retire older data keys").await?
            };
            if conn.output == Output::Json {
                return print_json(&op);
            }
            match &op.outcome {
                Some(outcome) => println!("{outcome}"),
                None => println!("retiring the older data keys: operation {}", op.id),
            }
            Ok(())
        }
        OrgCommand::Keys { conn } => {
            let api = Api::from(&conn)?;
            let keys: Vec<DataKeyInfo> = api.send(api.http.get(format!("{}/v1/data-keys", api.url))).await?;
            if conn.output == Output::Json {
                return print_json(&keys);
            }
            println!("{:<12} {:<8} CREATED", "GENERATION", "SEALS");
            for k in keys {
                println!(
                    "{:<12} {:<8} {}",
                    k.generation,
                    if k.current { "yes" } else { "no" },
                    utc(k.created_at)
                );
            }
            Ok(())
        }
        OrgCommand::Quotas { conn } => {
            let api = Api::from(&conn)?;
            let q: QuotaUsage = api.send(api.http.get(format!("{}/v1/quotas", api.url))).await?;
            if conn.output == Output::Json {
                return print_json(&q);
            }
            println!("{:<26} {:>12} {:>12}", "QUOTA", "USED", "LIMIT");
            println!("{:<26} {:>12} {:>12}", "clusters", q.clusters, q.quotas.max_clusters);
            println!(
                "{:<26} {:>12} {:>12}",
                "members per cluster", "-", q.quotas.max_members_per_cluster
            );
            println!(
                "{:<26} {:>12} {:>12}",
                "storage (backups)",
                bytesize::ByteSize(q.storage_bytes.max(0) as u64).to_string(),
                bytesize::ByteSize(q.quotas.max_storage_bytes.max(0) as u64).to_string()
            );
            println!(
                "{:<26} {:>12} {:>12}",
                "concurrent operations", q.running_operations, q.quotas.max_concurrent_operations
            );
            Ok(())
        }
        OrgCommand::SetQuotas {
            org,
            clusters,
            members_per_cluster,
            storage,
            concurrent_operations,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let url = format!("{}/v1/orgs/{}/quotas", api.url, urlencode(&org));
            let cur: OrgQuotas = api.send(api.http.get(&url)).await?;
            let storage = match storage {
                Some(b) => i64::try_from(b.as_u64()).context("--storage is too large")?,
                None => cur.max_storage_bytes,
            };
            let new = OrgQuotas {
                max_clusters: clusters.unwrap_or(cur.max_clusters),
                max_members_per_cluster: members_per_cluster.unwrap_or(cur.max_members_per_cluster),
                max_storage_bytes: storage,
                max_concurrent_operations: concurrent_operations.unwrap_or(cur.max_concurrent_operations),
            };
            let set: OrgQuotas = api.send(api.http.put(&url).json(&new)).await?;
            if conn.output == Output::Json {
                return print_json(&set);
            }
            println!(
                "{org}: {} clusters, {} members per cluster, {} of backups, {} operations at once",
                set.max_clusters,
                set.max_members_per_cluster,
                bytesize::ByteSize(set.max_storage_bytes.max(0) as u64),
                set.max_concurrent_operations
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_795_689_664), "2026-11-26 10:41:04Z");
    }
}
