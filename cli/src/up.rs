//! `highrise up`: the whole service on one machine, in the foreground — control plane on
//! SQLite, the local land (two clouds) and a proxy per cloud, all under one data directory.
//! Ctrl-C (or SIGTERM) stops everything it started; running it again on the same
//! directory brings every cluster back with its data. The land's operator control
//! `POST /land/control-plane/move` restarts the control plane (API and reconciler, same
//! store) at a new address while hosts, databases and proxies run on: they find it
//! again through the land's metadata.

use anyhow::{Context, Result};
use highrise_control::ca::Issued;
use highrise_control::tls_listener::TlsListener;
use highrise_control::{Control, ControlConfig};
use highrise_provider::local::{default_clouds, LocalLand, LocalLandConfig};
use highrise_provider::market::{Trace, TraceReading};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where everything lives: metadata (SQLite), hosts' disks, object storage.
    #[arg(long, default_value = ".highrise")]
    data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:7480")]
    api_listen: SocketAddr,
    /// Address agents and proxies reach the control plane at, over TLS with a certificate
    /// from the land's CA (the API's address with any free port when omitted).
    #[arg(long)]
    agent_listen: Option<SocketAddr>,
    /// The list prices invoices are priced with (TOML; default: the repository's,
    /// prices/list.toml).
    #[arg(long)]
    list_prices: Option<PathBuf>,
    /// The cloud marketplaces linked orgs' usage is sent to (TOML: an `[aws]`, `[azure]`
    /// or `[gcp]` table each; docs/architecture.md). Without it, their records wait in the
    /// outbox.
    #[arg(long)]
    marketplaces: Option<PathBuf>,
    /// Let spend-alert webhooks reach loopback and private addresses (a receiver on this
    /// machine); by default they reach public addresses only.
    #[arg(long)]
    webhooks_to_private_addresses: bool,
    /// How often every cluster's objects (WAL, backups, copies) are measured in every
    /// object store for billing; each round lists every cluster's objects, so a large land
    /// on a cloud's store measures every few minutes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    storage_meter_every: std::time::Duration,
    /// Address clients connect to with psql: the proxy of the land's first cloud (in the
    /// first cell); repeat for the next clouds' proxies, then the next cells'. One without
    /// an address gets the port after the last (any free port when that is 0). Each cell
    /// has proxies of its own, one per cloud, serving its orgs only; an org's connection
    /// URIs list its cell's. With `control`: where the separate proxies are reached.
    #[arg(long, default_value = "127.0.0.1:7432")]
    proxy_listen: Vec<SocketAddr>,
    /// With `control`: where the separate proxies of a cell are reached
    /// (`CELL=HOST:PORT`, repeatable; run them with `highrise proxy --cell CELL`). Orgs of
    /// a cell without any are sent to --proxy-listen.
    #[arg(long, value_name = "CELL=ADDR", value_parser = parse_cell_proxy)]
    cell_proxy: Vec<(String, SocketAddr)>,
    /// Metadata store; SQLite under the data directory when omitted.
    #[arg(long)]
    database_url: Option<String>,
    /// Seconds between a spot notice and the host's death in the local land, for every
    /// cloud; each cloud's own (AWS 120, GCP and Azure 30) when omitted.
    #[arg(long)]
    spot_notice_secs: Option<u64>,
    /// Spot hosts each pool of the local land holds while it has capacity.
    #[arg(long, default_value_t = 64)]
    spot_capacity: u32,
    /// Replay spot capacity from trace files (the format of the spot-traces data set;
    /// one file per pool, in path order) onto the land's pools.
    #[arg(long)]
    spot_traces: Option<PathBuf>,
    /// Trace seconds per real second when replaying.
    #[arg(long, default_value_t = 1.0)]
    trace_speed: f64,
    /// Read a trace's 1 as "capacity available" (default: 1 = no capacity, as recorded).
    #[arg(long)]
    trace_one_is_available: bool,
    /// A fallback member returns to spot after its pools were calm this long.
    #[arg(long, default_value_t = 1800)]
    spot_stable_secs: i64,
    /// A pool that refused a spot launch is not tried again for this long.
    #[arg(long, default_value_t = 300)]
    spot_backoff_secs: i64,
    /// Where to write the client config (API URL + admin key) that client commands read.
    #[arg(long, env = "HIGHRISE_CONFIG")]
    client_config: Option<PathBuf>,
    /// Object storage for WAL and backups: `file:///dir`, `s3://bucket`, `az://container`,
    /// for every cloud (then no cluster has a second copy); when omitted, each cloud gets a
    /// store of its own, `<data-dir>/objects/<cloud>`.
    #[arg(long, env = "HIGHRISE_STORAGE_URL")]
    storage_url: Option<String>,
    /// One cloud's own object store, `CLOUD=URL` (repeat), over `--storage-url`: clusters
    /// keep a second copy of their WAL and backups in another cloud's store.
    #[arg(long = "cloud-storage-url", value_parser = parse_option)]
    cloud_storage_urls: Vec<(String, String)>,
    /// A client option of the object store, `key=value` (repeat), e.g.
    /// `aws_endpoint=http://127.0.0.1:9000`, `azure_storage_use_emulator=true`.
    #[arg(long = "storage-option", value_parser = parse_option)]
    storage_options: Vec<(String, String)>,
    /// Failed authentications allowed per source address, key id or user a minute, before
    /// `429` (an API fuzzer that tests bad credentials on purpose needs more).
    #[arg(long, default_value_t = 20)]
    auth_failures_per_minute: usize,
    /// Cells every cloud and region's hosts are split into (`c1` … `cN`): each org lives
    /// in one, so losing a cell's hosts touches no other cell's tenants (1: no split).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    cells: u32,
    /// Give each new host of the local land a disk of its own of this size (e.g.
    /// `400MiB`, at least 128 MiB): an ext4 image loop-mounted on the host's directory,
    /// so a full disk is real and one host's alone. Needs root. Hosts share the data
    /// directory's file system when omitted.
    #[arg(long, value_parser = parse_disk_size)]
    host_disk: Option<u64>,
    /// Serve the API only: no reconciler, no host booted (a replica of a control plane
    /// whose reconciler runs elsewhere, or a store inspected as it is).
    #[arg(long)]
    no_reconciler: bool,
}

fn parse_disk_size(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s.parse().map_err(|e| format!("not a size like 400MiB: {e}"))?;
    if size.as_u64() < 128 * 1024 * 1024 {
        return Err(format!("{size} is too small for a host's disk: at least 128 MiB"));
    }
    Ok(size.as_u64())
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// The client config file: the API URL and a key.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ClientConfig {
    pub api_url: String,
    pub api_key: String,
    /// The local land's operator controls (`highrise land ...`), when there is one.
    #[serde(default)]
    pub land_url: Option<String>,
}

pub fn default_client_config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HIGHRISE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("highrise").join("config.json"))
}

fn secret_file(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let s = make();
            write_private(path, s.as_bytes())?;
            Ok(s)
        }
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

/// PostgreSQL runs as an unprivileged user when we are root: it must reach the data dir.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data directory {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    if nix::unistd::geteuid().is_root() {
        return highrise_pg::open_to_postgres(&dir).context("choose a --data-dir the PostgreSQL user can reach");
    }
    Ok(dir)
}

/// The land's certificate authority, made on the first start and kept in
/// `<data-dir>/tls` (the key readable by this user only, never in the metadata store), and
/// a fresh certificate for `*.<domain>` signed by it for the proxies, issued at every
/// start (so it never runs out) and left in `tls/proxy.{crt,key}` for standalone proxies.
fn ensure_tls(dir: &Path, domain: &str) -> Result<(highrise_control::ca::Ca, PathBuf, PathBuf)> {
    use highrise_control::ca::Ca;
    let tls = dir.join("tls");
    let (ca_cert, ca_key) = (tls.join("ca.crt"), tls.join("ca.key"));
    let ca = match (std::fs::read_to_string(&ca_cert), std::fs::read_to_string(&ca_key)) {
        (Ok(cert), Ok(key)) => Ca::from_pem(&cert, &key)
            .with_context(|| format!("read the land's CA from {} and {}", ca_cert.display(), ca_key.display()))?,
        (Err(_), Err(_)) => {
            let ca = Ca::generate().context("make the land's CA")?;
            write_private(&ca_key, ca.key_pem().as_bytes())?;
            write_private(&ca_cert, ca.cert_pem().as_bytes())?;
            ca
        }
        _ => anyhow::bail!(
            "{} or {} is missing: restore both, or remove both for a new CA (clients must then fetch it again)",
            ca_cert.display(),
            ca_key.display()
        ),
    };
    let issued = ca
        .issue_server(&[format!("*.{domain}"), domain.to_string()])
        .context("issue the proxies' certificate")?;
    let cert = tls.join("proxy.crt");
    let key = tls.join("proxy.key");
    write_private(&key, issued.key_pem.as_bytes())?;
    write_private(&cert, issued.cert_pem.as_bytes())?;
    Ok((ca, cert, key))
}

/// A store per cloud: `--cloud-storage-url` where given, else `--storage-url` (shared), else
/// `<data-dir>/objects/<cloud>`. Objects a data directory kept at `objects/` itself (before
/// stores were per cloud) move to the first cloud's.
fn storage_config(
    dir: &Path,
    args: &UpArgs,
    clouds: &[highrise_provider::Cloud],
) -> Result<highrise_control::durability::StorageConfig> {
    use highrise_control::durability::{ObjectStore, StorageConfig};
    let options: std::collections::BTreeMap<String, String> = args.storage_options.iter().cloned().collect();
    let objects = dir.join("objects");
    if args.storage_url.is_none() {
        adopt_unsorted_objects(&objects, clouds)?;
    }
    for (cloud, _) in &args.cloud_storage_urls {
        if !clouds.iter().any(|c| &c.name == cloud) {
            anyhow::bail!("--cloud-storage-url names {cloud:?}, which is not a cloud of the land");
        }
    }
    let mut stores = Vec::new();
    for cloud in clouds {
        let url = match (
            args.cloud_storage_urls.iter().find(|(c, _)| c == &cloud.name),
            &args.storage_url,
        ) {
            (Some((_, url)), _) => url.clone(),
            (None, Some(url)) => url.clone(),
            (None, None) => {
                let d = objects.join(&cloud.name);
                std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
                url::Url::from_directory_path(&d)
                    .map_err(|_| anyhow::anyhow!("{} is not an absolute path", d.display()))?
                    .to_string()
            }
        };
        stores.push((
            cloud.name.clone(),
            ObjectStore {
                url,
                options: options.clone(),
            },
        ));
    }
    StorageConfig::new(stores)
}

/// Moves what lies in `objects/` outside the clouds' directories (a data directory of an
/// earlier version kept one store there) into the first cloud's store.
fn adopt_unsorted_objects(objects: &Path, clouds: &[highrise_provider::Cloud]) -> Result<()> {
    let Some(first) = clouds.first() else { return Ok(()) };
    let Ok(entries) = std::fs::read_dir(objects) else {
        return Ok(());
    };
    let home = objects.join(&first.name);
    for e in entries.flatten() {
        let name = e.file_name();
        if clouds.iter().any(|c| std::ffi::OsStr::new(&c.name) == name) {
            continue;
        }
        std::fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
        std::fs::rename(e.path(), home.join(&name))
            .with_context(|| format!("move {} into {}", e.path().display(), home.display()))?;
        tracing::info!("moved {} into {}'s object store", e.path().display(), first.name);
    }
    Ok(())
}

/// A `--cell-proxy` value: `CELL=HOST:PORT`.
fn parse_cell_proxy(s: &str) -> Result<(String, SocketAddr), String> {
    let (cell, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CELL=HOST:PORT"))?;
    let addr = addr.parse().map_err(|e| format!("{addr:?} is not HOST:PORT ({e})"))?;
    Ok((cell.to_string(), addr))
}

/// An embedded proxy: the cell whose orgs it serves (`None`: a land without cells), its
/// cloud and region, and its listener.
struct EmbeddedProxy {
    cell: Option<String>,
    cloud: String,
    region: String,
    listener: std::net::TcpListener,
}

impl EmbeddedProxy {
    /// What its files and meter are named by: its cloud, after its cell when it has one.
    fn tag(&self) -> String {
        match &self.cell {
            Some(cell) => format!("{cell}-{}", self.cloud),
            None => self.cloud.clone(),
        }
    }
}

/// Where each cloud's proxy listens: the addresses given, in the land's cloud order, then
/// the ports after the last one given (port 0 stays 0: any free port).
fn proxy_addrs(given: &[SocketAddr], clouds: usize) -> Vec<SocketAddr> {
    let Some(last) = given.last() else {
        return Vec::new();
    };
    (0..clouds.max(given.len()))
        .map(|i| match given.get(i) {
            Some(a) => *a,
            None if last.port() == 0 => *last,
            None => {
                let step = u16::try_from(i + 1 - given.len()).unwrap_or(u16::MAX);
                SocketAddr::new(last.ip(), last.port().saturating_add(step))
            }
        })
        .collect()
}

/// A cloud's proxy: its own single-threaded runtime on its own OS thread (the relay is
/// latency-bound, and hopping between the shared runtime's workers costs more than it
/// gains on a small machine; see bench/README.md). It runs while its cloud is up: when the
/// land takes the cloud down, the runtime goes and every connection through it breaks,
/// as they would; when the cloud is back, the proxy listens on its address again.
fn spawn_proxy(
    cloud: String,
    listener: std::net::TcpListener,
    cfg: highrise_proxy::ProxyConfig,
    stop: watch::Receiver<bool>,
    down: watch::Receiver<Vec<String>>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let addr = listener.local_addr().context("read the proxy's address")?;
    let mut first = Some(listener);
    std::thread::Builder::new()
        .name(format!("proxy-{cloud}"))
        .spawn(move || -> Result<()> {
            let is_down = |d: &Vec<String>| d.contains(&cloud);
            let mut held: Option<highrise_proxy::PortHold> = None;
            loop {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("start the proxy's runtime")?;
                let (mut stop, mut down) = (stop.clone(), down.clone());
                let listener = first.take();
                let mut hold = held.take();
                let cfg = cfg.clone();
                let stopped = rt.block_on(async move {
                    // Down: wait for the cloud (or the end) before listening again.
                    loop {
                        if *stop.borrow_and_update() {
                            return Ok(true);
                        }
                        if !is_down(&down.borrow_and_update()) {
                            break;
                        }
                        tokio::select! {
                            _ = stop.changed() => {}
                            _ = down.changed() => {}
                        }
                    }
                    drop(hold.take());
                    let listener = match listener {
                        Some(l) => TcpListener::from_std(l).context("attach the proxy listener")?,
                        None => highrise_proxy::listen(addr)
                            .and_then(TcpListener::from_std)
                            .with_context(|| format!("listen for clients on {addr} again"))?,
                    };
                    let (end_tx, end_rx) = watch::channel(false);
                    let serving = highrise_proxy::run(listener, cfg, end_rx);
                    tokio::pin!(serving);
                    let stopped = loop {
                        tokio::select! {
                            r = &mut serving => { r?; break *stop.borrow() }
                            _ = stop.changed() => {}
                            _ = down.changed() => {}
                        }
                        if *stop.borrow() || is_down(&down.borrow()) {
                            let _ = end_tx.send(true);
                            let _ = (&mut serving).await;
                            break *stop.borrow();
                        }
                    };
                    anyhow::Ok(stopped)
                })?;
                // Dropping the runtime ends every connection the proxy still relays.
                drop(rt);
                if stopped {
                    return Ok(());
                }
                tracing::warn!("{cloud} is down: its proxy on {addr} stopped");
                // Its address stays this proxy's: clients are refused there, as they would
                // be by a cloud that is down, not answered by whatever took the port.
                held = highrise_proxy::hold(addr)
                    .map_err(|e| tracing::warn!("hold {addr} while {cloud} is down: {e}"))
                    .ok();
            }
        })
        .context("start the proxy thread")
}

/// The list prices from `path`, or the repository's.
fn list_prices(path: Option<&Path>) -> Result<(highrise_billing::prices::PriceBook, String)> {
    use highrise_api::MeterKind;
    use highrise_billing::prices::{PriceBook, REPOSITORY_LIST_PRICES};
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        None => REPOSITORY_LIST_PRICES.to_string(),
    };
    let where_ = match path {
        Some(p) => format!("the list prices in {}", p.display()),
        None => "the repository's list prices".to_string(),
    };
    let (book, version) = PriceBook::parse(&text).with_context(|| format!("read {where_}"))?;
    // Every dimension agents and proxies meter needs a price, or no invoice with it could
    // be made.
    let mut metered: Vec<String> = [
        MeterKind::DiskMibMs,
        MeterKind::ProxyBytesIn,
        MeterKind::ProxyBytesOut,
        MeterKind::ObjectStorageMibMs,
    ]
    .map(|k| k.as_str().to_string())
    .to_vec();
    for plan in highrise_planner::PLANS {
        for market in ["on_demand", "spot"] {
            metered.push(highrise_billing::meter::dimension(
                MeterKind::InstanceMs.as_str(),
                plan,
                market,
            ));
        }
    }
    let missing = book.unpriced(&metered);
    if !missing.is_empty() {
        anyhow::bail!(
            "{where_} price no {}: every metered dimension needs a price (see prices/list.toml)",
            missing.join(", ")
        );
    }
    Ok((book, version))
}

/// `highrise up`: control plane, local land and proxy. `highrise control` is the same
/// without the embedded proxy (proxies then run as `highrise proxy`).
pub async fn run(args: UpArgs, with_proxy: bool) -> Result<()> {
    let dir = prepare_data_dir(&args.data_dir)?;
    // One `up` per data directory.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("up.lock"))
        .context("open lock file")?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| anyhow::anyhow!("another `highrise up` is running on {} ({e})", dir.display()))?;

    let api_listener = TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("listen for the API on {}", args.api_listen))?;
    let clouds = default_clouds();
    let cells: Vec<String> = if args.cells > 1 {
        (1..=args.cells).map(|n| format!("c{n}")).collect()
    } else {
        Vec::new()
    };
    // Proxies of their own per cell, one per cloud in each (the first cell's first), so a
    // proxy that fails or is overwhelmed touches one cell's tenants; a land without cells
    // has one per cloud for everyone. Without embedded proxies, --proxy-listen and
    // --cell-proxy say where the separate proxies are reached.
    let proxy_cells: Vec<Option<String>> = if cells.is_empty() {
        vec![None]
    } else {
        cells.iter().cloned().map(Some).collect()
    };
    let mut proxy_listeners = Vec::new();
    if with_proxy {
        let places = proxy_cells
            .iter()
            .flat_map(|cell| clouds.iter().map(move |cloud| (cell, cloud)));
        for ((cell, cloud), addr) in places.zip(proxy_addrs(&args.proxy_listen, clouds.len() * proxy_cells.len())) {
            let listener = highrise_proxy::listen(addr)
                .with_context(|| format!("listen for {}'s clients on {addr}", cloud.name))?;
            proxy_listeners.push(EmbeddedProxy {
                cell: cell.clone(),
                cloud: cloud.name.clone(),
                region: cloud.regions.first().map(|r| r.name.clone()).unwrap_or_default(),
                listener,
            });
        }
    }
    for (cell, _) in &args.cell_proxy {
        if with_proxy || !cells.contains(cell) {
            anyhow::bail!(
                "--cell-proxy {cell}=…: {}",
                if with_proxy {
                    "`up` runs each cell's proxies itself (use `control` for separate ones)".to_string()
                } else {
                    format!("the land has no cell {cell:?} (see --cells)")
                }
            );
        }
    }
    let mut cell_proxies: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for p in &proxy_listeners {
        if let Some(cell) = &p.cell {
            cell_proxies
                .entry(cell.clone())
                .or_default()
                .push(p.listener.local_addr()?.to_string());
        }
    }
    for (cell, addr) in &args.cell_proxy {
        cell_proxies.entry(cell.clone()).or_default().push(addr.to_string());
    }
    let proxy_public: Vec<SocketAddr> = if with_proxy {
        proxy_listeners
            .iter()
            .filter(|p| p.cell == proxy_cells[0])
            .map(|p| p.listener.local_addr())
            .collect::<std::io::Result<_>>()?
    } else {
        args.proxy_listen.clone()
    };
    let land_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("listen for the land's metadata service")?;
    let agent_listener = TcpListener::bind(agent_listen(&args))
        .await
        .with_context(|| format!("listen for agents and proxies on {}", agent_listen(&args)))?;
    let api_addr = api_listener.local_addr()?;
    let land_addr = land_listener.local_addr()?;
    let api_url = format!("http://{api_addr}");
    let domain = "localhost".to_string();

    let agent_program = std::env::current_exe().context("find the highrise binary")?;
    let traces = match &args.spot_traces {
        Some(d) => {
            let reading = if args.trace_one_is_available {
                TraceReading::OneIsAvailable
            } else {
                TraceReading::OneIsPreempted
            };
            Trace::load_dir(d, reading).with_context(|| format!("load spot traces from {}", d.display()))?
        }
        None => Vec::new(),
    };
    if !(args.trace_speed > 0.0 && args.trace_speed.is_finite()) {
        anyhow::bail!("--trace-speed must be a positive number");
    }
    let land = LocalLand::open(LocalLandConfig {
        agent_args: vec!["agent".into()],
        notice_secs: args.spot_notice_secs,
        spot_capacity: args.spot_capacity,
        traces,
        trace_speed: args.trace_speed,
        host_disk_bytes: args.host_disk,
        ..LocalLandConfig::new(
            dir.join("land"),
            clouds.clone(),
            agent_program,
            format!("http://{land_addr}"),
        )?
    })?;
    let proxy_token = secret_file(&dir.join("proxy-token"), || highrise_control::random_hex(32))?;
    // Each cell's proxies' own token (derived from the land's, written again at every
    // start): a separate proxy of one cell is given that cell's routes alone.
    for cell in &cells {
        let token = highrise_control::cell_proxy_token(&proxy_token, cell);
        write_private(&dir.join(format!("proxy-token-{cell}")), token.as_bytes())?;
    }
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("control.db").display()));
    // The master key wraps every tenant's data key; it lives beside, not in, the
    // metadata store (or comes from the environment).
    let (master_key, previous_master_keys) = master_keys(&dir)?;
    let storage = storage_config(&dir, &args, &clouds)?;
    let (ca, tls_cert, tls_key) = ensure_tls(&dir, &domain)?;
    // The agents' channel: the control plane's certificate names its address (any port:
    // a moved control plane keeps it) and the land's CA signs it.
    let agent_ip = agent_listener.local_addr()?.ip();
    let agent_cert = ca
        .issue_server(&[agent_ip.to_string(), format!("control.{domain}")])
        .context("issue the control plane's certificate")?;
    let agent_listener = TlsListener::new(agent_listener, &agent_cert).context("serve TLS for agents")?;
    let agent_url = format!("https://{}", agent_listener.local_addr());
    let ca_pem = ca.cert_pem().to_string();
    let mut control_cfg = ControlConfig {
        database_url,
        agent_url: agent_url.clone(),
        proxy_token: proxy_token.clone(),
        proxy_public_addrs: proxy_public.iter().map(ToString::to_string).collect(),
        cell_proxy_addrs: cell_proxies.clone(),
        storage,
        master_key,
        previous_master_keys,
        spot: highrise_planner::SpotPolicy {
            stable_secs: args.spot_stable_secs,
            no_capacity_backoff_secs: args.spot_backoff_secs,
            ..Default::default()
        },
        auth_failures_per_minute: args.auth_failures_per_minute,
        cells,
        ca: Some(Arc::new(ca)),
        tls_domain: domain.clone(),
        list_prices: Arc::new(list_prices(args.list_prices.as_deref())?),
        // The book the local land prices its hosts by (LocalLandConfig::new).
        land_prices: Arc::new(highrise_provider::market::PriceBook::repository()?),
        exporters: match &args.marketplaces {
            Some(path) => highrise_control::marketplace::exporters_from_file(path)?,
            None => Vec::new(),
        },
        webhooks_to_private: args.webhooks_to_private_addresses,
        storage_meter_every: args.storage_meter_every,
    };
    let control = Arc::new(Control::open(control_cfg.clone(), land.clone()).await?);
    // A rotation interrupted after the store was re-sealed: the new key is now the key.
    finish_rotation(&dir, &mut control_cfg)?;

    // The client config: keep a saved key that still works, else mint one.
    let config_path = args
        .client_config
        .clone()
        .or_else(default_client_config_path)
        .unwrap_or_else(|| dir.join("client.json"));
    let saved: Option<ClientConfig> = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let key = match control.bootstrap_admin().await? {
        Some(k) => k,
        None => match saved {
            Some(c) if control.is_operator_key(&c.api_key).await => c.api_key,
            _ => control.new_admin_key().await?,
        },
    };
    let client_cfg = ClientConfig {
        api_url: api_url.clone(),
        api_key: key,
        land_url: Some(format!("http://{land_addr}")),
    };
    write_private(&config_path, &serde_json::to_vec_pretty(&client_cfg)?)?;
    write_private(&dir.join("client.json"), &serde_json::to_vec_pretty(&client_cfg)?)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (move_tx, mut move_rx) = tokio::sync::mpsc::channel::<PlaneRequest>(1);
    let land_srv = serve_http(
        land_listener,
        land.clone().router().merge(control_plane_routes(move_tx)),
        stop_rx.clone(),
    );
    // Hosts come back first; then the reconciler re-drives what was in flight.
    let reconcile = !args.no_reconciler;
    if reconcile {
        land.boot(&agent_url, Some(&ca_pem)).context("boot the land's hosts")?;
        land.spawn_market();
    }
    let mut plane = ControlPlane::start(control, api_listener, agent_listener, reconcile)?;
    let mut proxies = Vec::new();
    let mut shown = Vec::new();
    for p in proxy_listeners {
        let tag = p.tag();
        shown.push((p.cell.clone(), p.cloud.clone(), p.listener.local_addr()?));
        let EmbeddedProxy {
            cell,
            cloud,
            region,
            listener,
        } = p;
        let cfg = highrise_proxy::ProxyConfig {
            control_url: agent_url.clone(),
            control_url_source: Some(format!("http://{land_addr}/land/control-url")),
            control_ca: Some(ca_pem.clone()),
            // A cell's proxies hold its token: they are given its routes alone.
            token: match &cell {
                Some(cell) => highrise_control::cell_proxy_token(&proxy_token, cell),
                None => proxy_token.clone(),
            },
            // Each proxy keeps routes of its own: it serves on from them alone.
            cache_file: dir.join(format!("proxy-routes-{tag}.json")),
            tls: Some((tls_cert.clone(), tls_key.clone())),
            domain: domain.clone(),
            startup_timeout: highrise_proxy::STARTUP_TIMEOUT,
            // Traffic reported every second, as the local land's agents report theirs, so
            // usage shows quickly.
            meter: Some(highrise_proxy::MeterConfig {
                name: format!("proxy-{tag}"),
                file: dir.join(format!("proxy-traffic-{tag}.json")),
                cloud: cloud.clone(),
                region,
                every: std::time::Duration::from_secs(1),
            }),
            cell,
        };
        proxies.push(spawn_proxy(cloud, listener, cfg, stop_rx.clone(), land.watch_down())?);
    }

    println!("Highrise is up.");
    println!("  API:           {api_url}");
    println!("  console:       {api_url}/console  (members sign in; `highrise member invite` adds one)");
    println!(
        "  agents:        {agent_url}  (TLS; the land's CA: {})",
        dir.join("tls/ca.crt").display()
    );
    if with_proxy {
        for (cell, cloud, addr) in &shown {
            match cell {
                // The first cell's (the operator's org's) proxies, or everyone's.
                c if *c == proxy_cells[0] => println!(
                    "  proxy:         {addr}  ({cloud}{}: psql; TLS host names <endpoint>.{domain})",
                    c.as_ref().map(|c| format!(", cell {c}")).unwrap_or_default()
                ),
                Some(c) => println!("  proxy of {c}:   {addr}  ({cloud}, for orgs of cell {c})"),
                None => {}
            }
        }
    } else {
        let addrs: Vec<String> = proxy_public.iter().map(ToString::to_string).collect();
        println!(
            "  proxy token:   {}  (for `highrise proxy --control-url {agent_url} --control-ca {}`; clients are sent to {})",
            dir.join("proxy-token").display(),
            dir.join("tls/ca.crt").display(),
            addrs.join(",")
        );
        for (cell, addrs) in &cell_proxies {
            println!(
                "  proxies of {cell}: {}  (`highrise proxy --cell {cell}`, token in {})",
                addrs.join(","),
                dir.join(format!("proxy-token-{cell}")).display()
            );
        }
    }
    println!("  land:          http://{land_addr}  (host metadata and test controls)");
    println!("  client config: {}", config_path.display());
    println!("  data:          {}", dir.display());
    println!("Try: highrise cluster create shop --wait");
    std::io::stdout().flush().ok();

    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some((what, reply)) = move_rx.recv() => {
                let done = match what {
                    PlaneChange::Move => move_control_plane(&mut plane, &control_cfg, &agent_cert, &land, &args, &[&config_path, &dir.join("client.json")]).await,
                    PlaneChange::RotateMasterKey => rotate_master_key(&mut plane, &mut control_cfg, &agent_cert, &land, &args, &dir).await,
                };
                if let Err(e) = &done {
                    tracing::error!("{what:?}: {e:#}");
                }
                let _ = reply.send(done.map_err(|e| format!("{e:#}")));
            }
        }
    }
    tracing::info!("stopping: proxy, reconciler, hosts (and their PostgreSQL), API");
    let _ = stop_tx.send(true);
    plane.stop().await;
    for proxy in proxies {
        match tokio::task::spawn_blocking(move || proxy.join()).await {
            Ok(Ok(Err(e))) => tracing::error!("proxy: {e:#}"),
            Ok(Err(_)) => tracing::error!("a proxy thread panicked"),
            _ => {}
        }
    }
    land.shutdown().await;
    let _ = land_srv.await;
    println!("Highrise stopped.");
    Ok(())
}

/// The control plane's part of `up`: its API server and reconciler over one store.
struct ControlPlane {
    /// Where the API listens.
    api: SocketAddr,
    /// Where agents and proxies reach it (TLS).
    agents: SocketAddr,
    /// Until stopped.
    running: Option<Running>,
}

struct Running {
    control: Arc<Control>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    agents: tokio::task::JoinHandle<std::io::Result<()>>,
    api_stop: watch::Sender<bool>,
    reconciler: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>,
}

impl ControlPlane {
    fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    fn agent_url(&self) -> String {
        format!("https://{}", self.agents)
    }

    fn start(
        control: Arc<Control>,
        listener: TcpListener,
        agent_listener: TlsListener,
        reconcile: bool,
    ) -> Result<Self> {
        let api_addr = listener.local_addr().context("read the API's address")?;
        let agents_addr = agent_listener.local_addr();
        let (api_stop, api_stop_rx) = watch::channel(false);
        let api = serve_http(listener, control.router(), api_stop_rx.clone());
        let agents = serve_http(agent_listener, control.router(), api_stop_rx);
        let reconciler = reconcile.then(|| {
            let (tx, rx) = watch::channel(false);
            let control = Arc::clone(&control);
            (tokio::spawn(async move { control.run_reconciler(rx).await }), tx)
        });
        Ok(Self {
            api: api_addr,
            agents: agents_addr,
            running: Some(Running {
                control,
                api,
                agents,
                api_stop,
                reconciler,
            }),
        })
    }

    /// Stops the reconciler (its round finishes) and the API: requests get a second to
    /// finish, then the rest (agents' and proxies' long-polls) are cut. Once: two
    /// reconcilers never run over one store.
    async fn stop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        if let Some((task, stop)) = r.reconciler {
            let _ = stop.send(true);
            let _ = task.await;
        }
        // Long-polls answer now, so the graceful stop below does not wait on them and
        // their callers ask again, at the new address.
        r.control.close();
        let _ = r.api_stop.send(true);
        for mut serving in [r.api, r.agents] {
            if tokio::time::timeout(std::time::Duration::from_secs(1), &mut serving)
                .await
                .is_err()
            {
                serving.abort();
                let _ = serving.await;
            }
        }
        drop(r.control);
    }
}

/// What the operator asks of the control plane through the land.
#[derive(Debug, Clone, Copy)]
enum PlaneChange {
    /// It moved: restart at a new address over the same store.
    Move,
    /// Re-seal the store under a new master key: restart at the same addresses.
    RotateMasterKey,
}

/// A change, answered with the API's URL afterwards.
type PlaneRequest = (PlaneChange, tokio::sync::oneshot::Sender<Result<String, String>>);

/// `POST /land/control-plane/move`: the operator's "the control plane moved" (in the
/// local land it restarts at a new port of the same machine, over the same store).
/// `POST /land/control-plane/rotate-master-key`: a new master key (see
/// [`rotate_master_key`]).
fn control_plane_routes(requests: tokio::sync::mpsc::Sender<PlaneRequest>) -> axum::Router {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    async fn ask(requests: tokio::sync::mpsc::Sender<PlaneRequest>, what: PlaneChange) -> axum::response::Response {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if requests.send((what, tx)).await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response();
        }
        match rx.await {
            Ok(Ok(url)) => axum::Json(serde_json::json!({ "api_url": url })).into_response(),
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response(),
        }
    }
    axum::Router::new()
        .route(
            "/land/control-plane/move",
            axum::routing::post(|State(r): State<tokio::sync::mpsc::Sender<PlaneRequest>>| ask(r, PlaneChange::Move)),
        )
        .route(
            "/land/control-plane/rotate-master-key",
            axum::routing::post(|State(r): State<tokio::sync::mpsc::Sender<PlaneRequest>>| {
                ask(r, PlaneChange::RotateMasterKey)
            }),
        )
        .with_state(requests)
}

/// The master key and the previous ones a store may still be sealed under: from
/// `HIGHRISE_MASTER_KEY` (and `HIGHRISE_PREVIOUS_MASTER_KEYS`, comma-separated), else from
/// `master.key` in the data directory — or, while a rotation is under way, from
/// `master.key.next` with `master.key` as the previous one.
fn master_keys(dir: &Path) -> Result<(String, Vec<String>)> {
    if let Ok(k) = std::env::var("HIGHRISE_MASTER_KEY") {
        let previous = std::env::var("HIGHRISE_PREVIOUS_MASTER_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        return Ok((k, previous));
    }
    let current = secret_file(&dir.join("master.key"), || highrise_control::random_hex(32))?;
    match std::fs::read_to_string(dir.join("master.key.next")) {
        Ok(next) if !next.trim().is_empty() => Ok((next.trim().to_string(), vec![current])),
        _ => Ok((current, Vec::new())),
    }
}

/// Once the store is sealed under the key in `master.key.next`, it becomes `master.key`
/// (the old key is gone from the disk) and no previous key is kept.
fn finish_rotation(dir: &Path, cfg: &mut ControlConfig) -> Result<()> {
    let next = dir.join("master.key.next");
    if cfg.previous_master_keys.is_empty() || !next.exists() {
        return Ok(());
    }
    std::fs::rename(&next, dir.join("master.key")).context("make the new master key the master key")?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    cfg.previous_master_keys.clear();
    tracing::warn!("master key rotated: the store is sealed under the new key; the old one is gone");
    Ok(())
}

/// Rotates the master key: a new one (`master.key.next`), the control plane restarted at
/// the same addresses over the same store, which re-seals everything the old key sealed
/// under the new one as it opens; then the new key replaces the old on disk. Hosts,
/// databases and proxies are not touched (the data keys do not change, only their
/// wrapping); the API and the agents' channel are away for the restart. A failure leaves
/// the control plane running on the old key.
async fn rotate_master_key(
    plane: &mut ControlPlane,
    cfg: &mut ControlConfig,
    agent_cert: &Issued,
    land: &Arc<LocalLand>,
    args: &UpArgs,
    dir: &Path,
) -> Result<String> {
    if std::env::var_os("HIGHRISE_MASTER_KEY").is_some() {
        anyhow::bail!(
            "the master key comes from HIGHRISE_MASTER_KEY: rotate by starting with the new key there and the old one in HIGHRISE_PREVIOUS_MASTER_KEYS"
        );
    }
    let next = secret_file(&dir.join("master.key.next"), || highrise_control::random_hex(32))?;
    let rotated = ControlConfig {
        master_key: next,
        previous_master_keys: vec![cfg.master_key.clone()],
        ..cfg.clone()
    };
    let (api, agents) = (plane.api, plane.agents);
    plane.stop().await;
    let opened = Control::open(rotated.clone(), land.clone()).await;
    let (control, failed) = match opened {
        Ok(c) => (c, None),
        Err(e) => {
            let _ = std::fs::remove_file(dir.join("master.key.next"));
            let c = Control::open(cfg.clone(), land.clone())
                .await
                .context("reopen the control plane")?;
            (c, Some(e))
        }
    };
    let listener = TcpListener::bind(api)
        .await
        .with_context(|| format!("listen for the API on {api} again"))?;
    let agent_listener = TcpListener::bind(agents)
        .await
        .with_context(|| format!("listen for agents on {agents} again"))?;
    let agent_listener = TlsListener::new(agent_listener, agent_cert).context("serve TLS for agents")?;
    *plane = ControlPlane::start(Arc::new(control), listener, agent_listener, !args.no_reconciler)?;
    if let Some(e) = failed {
        return Err(e.context("the master key was not rotated; the old one is still in use"));
    }
    *cfg = rotated;
    finish_rotation(dir, cfg)?;
    println!("master key rotated");
    std::io::stdout().flush().ok();
    Ok(plane.url())
}

/// Stops the control plane and starts it again at a new address over the same store,
/// then tells the land (whose metadata the agents and proxies read) and the client
/// config where it is now. Hosts and their databases are not touched.
async fn move_control_plane(
    plane: &mut ControlPlane,
    cfg: &ControlConfig,
    agent_cert: &Issued,
    land: &Arc<LocalLand>,
    args: &UpArgs,
    client_configs: &[&Path],
) -> Result<String> {
    let listener = TcpListener::bind(SocketAddr::new(args.api_listen.ip(), 0))
        .await
        .context("listen for the API at a new address")?;
    let url = format!("http://{}", listener.local_addr()?);
    // Same address, new port: the certificate (which names the address) still fits.
    let agent_listener = TcpListener::bind(SocketAddr::new(agent_listen(args).ip(), 0))
        .await
        .context("listen for agents at a new address")?;
    let agent_listener = TlsListener::new(agent_listener, agent_cert).context("serve TLS for agents")?;
    let agent_url = format!("https://{}", agent_listener.local_addr());
    let from = plane.url();
    plane.stop().await;
    let control = Control::open(
        ControlConfig {
            agent_url: agent_url.clone(),
            ..cfg.clone()
        },
        land.clone(),
    )
    .await
    .context("open the control plane at its new address")?;
    *plane = ControlPlane::start(Arc::new(control), listener, agent_listener, !args.no_reconciler)?;
    land.set_control_url(&agent_url)
        .context("tell the land where the control plane is")?;
    for path in client_configs {
        if let Ok(mut c) = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<ClientConfig>(&b)?))
        {
            c.api_url = url.clone();
            write_private(path, &serde_json::to_vec_pretty(&c)?)?;
        }
    }
    tracing::warn!(from = %from, to = %url, agents = %plane.agent_url(), "the control plane moved");
    println!("control plane moved: API {url}, agents {}", plane.agent_url());
    std::io::stdout().flush().ok();
    Ok(url)
}

/// Where the agents' TLS listener binds.
fn agent_listen(args: &UpArgs) -> SocketAddr {
    args.agent_listen.unwrap_or(SocketAddr::new(args.api_listen.ip(), 0))
}

/// Serves `router` on `listener` (plain TCP or [`TlsListener`]) until `stop` turns true
/// (in-flight requests finish first).
fn serve_http<L>(
    listener: L,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    tokio::spawn(async move {
        // Handlers see the caller's address (failed authentications are limited per
        // address); axum hands any listener's address over once it is tapped.
        axum::serve(
            listener.tap_io(|_| ()),
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_prices_must_price_every_metered_dimension() {
        assert!(super::list_prices(None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.toml");
        std::fs::write(
            &file,
            "version = \"v\"\n[[price]]\ndimension = \"instance_ms:small:spot\"\namount = \"1\"\nper = 1\n\
             effective_from = \"2026-01-01T00:00:00Z\"\n",
        )
        .unwrap();
        let err = format!("{:#}", super::list_prices(Some(&file)).unwrap_err());
        assert!(
            err.contains("price no disk_mib_ms, proxy_bytes_in, proxy_bytes_out, object_storage_mib_ms, instance_ms:small:on_demand")
                && !err.contains("small:spot"),
            "{err}"
        );
    }
}
