//! Verified TLS on the client side: the land's CA certificate fetched from the control
//! plane (`GET /v1/tls/ca`) and kept beside the client config, one file per control plane;
//! connection URIs that name it (`sslrootcert`), and `cluster connect`, which runs `psql`
//! with such a URI so the proxy is verified with nothing to set up.

use crate::client::{Api, Conn};
use crate::up::default_client_config_path;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the CA certificate of the control plane at `api_url` is kept: beside the client
/// config (or in the temporary directory without one), named after the URL, so two lands
/// never share a file.
pub(crate) fn ca_path(api_url: &str) -> PathBuf {
    let dir = default_client_config_path()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir);
    let name: String = api_url
        .trim_end_matches('/')
        .split("://")
        .last()
        .unwrap_or(api_url)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    dir.join(format!("ca-{name}.crt"))
}

/// Fetches the CA certificate and writes it to `out` when what is there differs; `None`
/// when the control plane runs without a CA.
pub(crate) async fn fetch_ca(api: &Api, out: &Path) -> Result<Option<PathBuf>> {
    let resp = api
        .http
        .get(format!("{}/v1/tls/ca", api.url))
        .send()
        .await
        .with_context(|| format!("reach the control plane at {}", api.url))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        bail!("fetch the CA certificate: the control plane answered {}", resp.status());
    }
    let pem = resp.text().await.context("read the CA certificate")?;
    if !pem.starts_with("-----BEGIN CERTIFICATE-----") {
        bail!("the control plane's CA certificate is not PEM");
    }
    if std::fs::read_to_string(out).ok().as_deref() != Some(pem.as_str()) {
        crate::up::write_private(out, pem.as_bytes())?;
    }
    Ok(Some(out.to_path_buf()))
}

/// The CA file for a cluster's verifying URI, fetched; `None` when it has none.
pub(crate) async fn ca_for(api: &Api, cluster: &highrise_api::Cluster) -> Result<Option<PathBuf>> {
    match cluster.verified_uri {
        Some(_) => fetch_ca(api, &ca_path(&api.url)).await,
        None => Ok(None),
    }
}

/// `uri` with `sslrootcert` naming `ca`.
pub(crate) fn with_root_cert(uri: &str, ca: &Path) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    // Slashes stay as they are (libpq takes them in a query value), so the path reads.
    let path: Vec<String> = ca.to_string_lossy().split('/').map(crate::client::urlencode).collect();
    format!("{uri}{sep}sslrootcert={}", path.join("/"))
}

#[derive(clap::Args)]
pub struct CaCertArgs {
    /// Where to write it (default: beside the client config, named after the control
    /// plane's URL).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

/// `highrise ca-cert`: writes the CA certificate and prints where.
pub async fn ca_cert(args: CaCertArgs) -> Result<()> {
    let api = Api::from_url_only(&args.conn)?;
    let out = args.out.unwrap_or_else(|| ca_path(&api.url));
    match fetch_ca(&api, &out).await? {
        Some(p) => {
            println!("{}", p.display());
            Ok(())
        }
        None => bail!("this control plane runs without a CA: its proxies cannot be verified"),
    }
}

/// `highrise cluster connect NAME`: `psql` on the verifying URI (it asks for the password
/// unless PGPASSWORD or ~/.pgpass has it).
pub async fn connect(api: &Api, cluster: &highrise_api::Cluster, psql_args: &[String]) -> Result<()> {
    let Some(uri) = &cluster.verified_uri else {
        bail!(
            "this control plane runs without a CA: connect with `{}`",
            cluster.connection_uri
        );
    };
    let ca = fetch_ca(api, &ca_path(&api.url))
        .await?
        .context("the control plane stopped serving its CA certificate")?;
    let uri = with_root_cert(uri, &ca);
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(&uri).args(psql_args);
    use std::os::unix::process::CommandExt;
    // Only returns when psql could not be started.
    let e = cmd.exec();
    Err(e).context("run psql (is the PostgreSQL client installed?)")
}
