//! `highrise`: every component's entry point (`up`, `control`, `agent`, `proxy`) and the
//! client commands. Parses arguments and hands over; the work is in the crates.

mod access;
mod billing;
mod client;
mod evacuate;
mod land;
mod network;
mod sim;
mod tls;
mod up;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "highrise", version, about = "Cloud-neutral PostgreSQL as a service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run control plane + local land (two clouds) + proxy in the foreground.
    Up(up::UpArgs),
    /// Run the control plane (API, reconciler) with the local land, without a proxy;
    /// `--proxy-listen` is then the address of the separate proxies, for connection URIs.
    Control(up::UpArgs),
    /// Run a host agent (the local land starts these; see `highrise up`).
    Agent(AgentArgs),
    /// Write the land's CA certificate (what verifies its proxies) to a file; prints where.
    CaCert(tls::CaCertArgs),
    /// Run a standalone proxy against a control plane.
    Proxy(ProxyArgs),
    /// Manage clusters.
    #[command(subcommand)]
    Cluster(client::ClusterCommand),
    /// Base backups of a cluster (list, take, verify).
    #[command(subcommand)]
    Backup(client::BackupCommand),
    /// The clouds, regions and zones of the land.
    #[command(subcommand)]
    Cloud(client::CloudCommand),
    /// Orgs: create (operator key only) and quotas.
    #[command(subcommand)]
    Org(client::OrgCommand),
    /// Projects: groups of an org's clusters.
    #[command(subcommand)]
    Project(access::ProjectCommand),
    /// Tenant networks ("VPCs"), where clusters get private endpoints.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// A cluster's private endpoints inside tenant networks.
    #[command(subcommand)]
    Endpoint(network::EndpointCommand),
    /// The org's members and their roles; invitations.
    #[command(subcommand)]
    Member(access::MemberCommand),
    /// API keys with a role, optionally one project and an end.
    #[command(subcommand)]
    ApiKey(access::ApiKeyCommand),
    /// Sign in with email and password; the session goes into the client config.
    Login(access::LoginArgs),
    /// Who the configured key or session acts as.
    Whoami(access::WhoamiArgs),
    /// End the session in the client config.
    Logout(access::WhoamiArgs),
    /// The org's audit log.
    #[command(subcommand)]
    Audit(access::AuditCommand),
    /// The org's metered usage per cluster and dimension (owners, admins, billing).
    Usage(billing::UsageArgs),
    /// The org's monthly invoices, priced from its usage (owners, admins, billing).
    #[command(subcommand)]
    Invoice(billing::InvoiceCommand),
    /// The org's billing: hard limit, alert webhook, commitment and spend alerts.
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// The local land's operator controls: pools, spot capacity, preemption.
    #[command(subcommand)]
    Land(land::LandCommand),
    /// Run the fleet simulator: the production planner on virtual time, on spot traces
    /// or a synthetic market, against the baselines.
    Sim(sim::SimArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    #[arg(long)]
    host_id: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    address: String,
    #[arg(long)]
    control_url: String,
    /// The CA certificate (PEM file) the control plane's TLS certificate must chain to.
    #[arg(long)]
    control_ca: Option<PathBuf>,
    #[arg(long)]
    metadata_url: Option<String>,
    #[arg(long, env = "HIGHRISE_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Exit (stopping PostgreSQL) once this process is no longer the agent's parent.
    #[arg(long)]
    parent_pid: Option<u32>,
    /// The host's directory is on a file system other hosts share (the local land without
    /// `--host-disk`): its fullness says nothing of this host, so the storage guard follows
    /// the plans' storage only and no reserve is kept.
    #[arg(long)]
    shared_disk: bool,
    /// How often heartbeats carry the usage counters (e.g. `60s`, `1s`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    meter_every: std::time::Duration,
}

#[derive(clap::Args)]
struct ProxyArgs {
    #[arg(long, default_value = "127.0.0.1:7432")]
    listen: SocketAddr,
    #[arg(long)]
    control_url: String,
    /// A URL that names the control plane's current URL (e.g. the land's
    /// `/land/control-url`), read when the control plane stops answering.
    #[arg(long)]
    control_url_source: Option<String>,
    /// The CA certificate (PEM file) the control plane's TLS certificate must chain to.
    #[arg(long)]
    control_ca: Option<PathBuf>,
    #[arg(long, env = "HIGHRISE_PROXY_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    cache_file: PathBuf,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The proxy's name, stable across its restarts: with it the proxy counts the bytes it
    /// relays per endpoint and reports them for billing (needs --cloud, --region and
    /// --meter-file).
    #[arg(long, requires_all = ["cloud", "region", "meter_file"])]
    name: Option<String>,
    /// The cloud and region the proxy runs in (its traffic is priced there).
    #[arg(long, requires = "name")]
    cloud: Option<String>,
    #[arg(long, requires = "name")]
    region: Option<String>,
    /// Where the traffic counters are kept across restarts.
    #[arg(long, requires = "name")]
    meter_file: Option<PathBuf>,
    /// How often the traffic counters are reported.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    meter_every: std::time::Duration,
    /// Serve the orgs of this cell only (the control plane gives the proxy their routes
    /// alone, and sends their clients here with `control --cell-proxy`); every cell's
    /// when omitted.
    #[arg(long)]
    cell: Option<String>,
}

/// A CA certificate file's PEM text, checked to hold a certificate.
fn read_ca(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(Some(pem))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HIGHRISE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res: Result<()> = rt.block_on(async {
        match cli.command {
            Command::Up(args) => {
                init_logging();
                up::run(args, true).await
            }
            Command::Control(args) => {
                init_logging();
                up::run(args, false).await
            }
            Command::Agent(a) => {
                init_logging();
                let control_ca = read_ca(a.control_ca.as_deref())?;
                highrise_agent::run(highrise_agent::AgentConfig {
                    host_id: a.host_id,
                    dir: a.dir,
                    address: a.address,
                    control_url: a.control_url,
                    control_ca,
                    metadata_url: a.metadata_url,
                    bootstrap_token: a.bootstrap_token,
                    parent_pid: a.parent_pid,
                    shared_disk: a.shared_disk,
                    meter_every: a.meter_every,
                })
                .await
            }
            Command::Proxy(p) => {
                init_logging();
                let listener = highrise_proxy::listen(p.listen)
                    .and_then(tokio::net::TcpListener::from_std)
                    .with_context(|| format!("listen on {}", p.listen))?;
                println!("proxy listening on {}", listener.local_addr()?);
                std::io::Write::flush(&mut std::io::stdout()).ok();
                let (_tx, rx) = tokio::sync::watch::channel(false);
                highrise_proxy::run(
                    listener,
                    highrise_proxy::ProxyConfig {
                        control_url: p.control_url,
                        control_url_source: p.control_url_source,
                        control_ca: read_ca(p.control_ca.as_deref())?,
                        token: p.token,
                        cache_file: p.cache_file,
                        tls: p.tls_cert.zip(p.tls_key),
                        domain: p.domain,
                        startup_timeout: highrise_proxy::STARTUP_TIMEOUT,
                        meter: match (p.name, p.cloud, p.region, p.meter_file) {
                            (Some(name), Some(cloud), Some(region), Some(file)) => Some(highrise_proxy::MeterConfig {
                                name,
                                cloud,
                                region,
                                file,
                                every: p.meter_every,
                            }),
                            _ => None,
                        },
                        cell: p.cell,
                    },
                    rx,
                )
                .await
            }
            Command::Cluster(c) => client::cluster(c).await,
            Command::Backup(c) => client::backup(c).await,
            Command::Cloud(c) => client::cloud(c).await,
            Command::Org(c) => client::org(c).await,
            Command::Project(c) => access::project(c).await,
            Command::Network(c) => network::network(c).await,
            Command::Endpoint(c) => network::endpoint(c).await,
            Command::Member(c) => access::member(c).await,
            Command::ApiKey(c) => access::api_key(c).await,
            Command::Login(a) => access::login(a).await,
            Command::Whoami(a) => access::whoami(a).await,
            Command::CaCert(a) => tls::ca_cert(a).await,
            Command::Logout(a) => access::logout(a).await,
            Command::Audit(c) => access::audit(c).await,
            Command::Usage(a) => billing::usage(a).await,
            Command::Invoice(c) => billing::invoice(c).await,
            Command::Billing(c) => billing::billing(c).await,
            Command::Land(c) => land::land(c).await,
            Command::Sim(a) => sim::sim(a),
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
