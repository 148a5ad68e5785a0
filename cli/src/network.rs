//! Client commands for tenant networks and the private endpoints clusters have in them.

use crate::client::{print_json, urlencode, utc, Api, Conn, Output};
use anyhow::Result;
use highrise_api::{CreateNetwork, CreatePrivateEndpoint, Network, PrivateEndpoint};

#[derive(clap::Subcommand)]
pub enum NetworkCommand {
    /// Make a tenant network (a "VPC"; in the local land, a Linux network namespace that
    /// clients run in with `ip netns exec`).
    Create {
        name: String,
        /// Its IPv4 range, /16 to /29.
        #[arg(long, default_value = "10.0.0.0/24")]
        cidr: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the org's tenant networks.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a tenant network no private endpoint uses.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum EndpointCommand {
    /// Give a cluster an endpoint inside a tenant network, reachable from there only.
    Create {
        cluster: String,
        /// The endpoint is private (the public one every cluster has is turned on and
        /// off with `cluster update --public`).
        #[arg(long, required = true)]
        private: bool,
        /// The tenant network (name or id).
        #[arg(long)]
        network: String,
        /// Its address in the network (default: the first free one from the 10th).
        #[arg(long)]
        address: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A cluster's private endpoints.
    List {
        cluster: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a private endpoint (its sessions end).
    Delete {
        cluster: String,
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn network(cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Create { name, cidr, conn } => {
            let api = Api::from(&conn)?;
            let n: Network = api
                .send(
                    api.http
                        .post(format!("{}/v1/networks", api.url))
                        .json(&CreateNetwork { name, cidr: Some(cidr) }),
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&n);
            }
            println!("network {} ({}) {}", n.name, n.id, n.cidr);
            println!("clients run in it with: ip netns exec {} …", n.namespace);
            Ok(())
        }
        NetworkCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let list: Vec<Network> = api.list(&format!("{}/v1/networks", api.url), &[]).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!("{:<20} {:<22} {:<18} {:<26} CREATED", "NAME", "ID", "CIDR", "NAMESPACE");
            for n in list {
                println!(
                    "{:<20} {:<22} {:<18} {:<26} {}",
                    n.name,
                    n.id,
                    n.cidr,
                    n.namespace,
                    utc(n.created_at)
                );
            }
            Ok(())
        }
        NetworkCommand::Delete { name, conn } => {
            let api = Api::from(&conn)?;
            api.send_empty(api.http.delete(format!("{}/v1/networks/{}", api.url, urlencode(&name))))
                .await?;
            println!("network {name} deleted");
            Ok(())
        }
    }
}

pub async fn endpoint(cmd: EndpointCommand) -> Result<()> {
    match cmd {
        EndpointCommand::Create {
            cluster,
            private: _,
            network,
            address,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&cluster, &conn.project, "/endpoints");
            let e: PrivateEndpoint = api
                .send(api.http.post(path).json(&CreatePrivateEndpoint { network, address }))
                .await?;
            if conn.output == Output::Json {
                return print_json(&e);
            }
            println!(
                "private endpoint {} of {cluster} in network {} at {}",
                e.id, e.network, e.address
            );
            print_uris(&api, &e).await
        }
        EndpointCommand::List { cluster, conn } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&cluster, &conn.project, "/endpoints");
            let list: Vec<PrivateEndpoint> = api.send(api.http.get(path)).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!("{:<17} {:<20} {:<22} CREATED", "ID", "NETWORK", "ADDRESS");
            for e in list {
                println!("{:<17} {:<20} {:<22} {}", e.id, e.network, e.address, utc(e.created_at));
            }
            Ok(())
        }
        EndpointCommand::Delete { cluster, id, conn } => {
            let api = Api::from(&conn)?;
            let path = api.cluster_sub(&cluster, &conn.project, &format!("/endpoints/{}", urlencode(&id)));
            api.send_empty(api.http.delete(path)).await?;
            println!("private endpoint {id} of {cluster} deleted");
            Ok(())
        }
    }
}

/// How to connect from inside the network: plain, and verifying the proxy.
async fn print_uris(api: &Api, e: &PrivateEndpoint) -> Result<()> {
    println!("connect (from inside the network): {}", e.connection_uri);
    if let Some(uri) = &e.verified_uri {
        if let Some(ca) = crate::tls::fetch_ca(api, &crate::tls::ca_path(&api.url)).await? {
            println!("verified TLS: {}", crate::tls::with_root_cert(uri, &ca));
        }
    }
    Ok(())
}
