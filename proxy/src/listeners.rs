//! Private endpoints' listeners: one per `(network, address)` the routing table names,
//! opened inside the tenant network (a Linux network namespace of that name on this
//! machine) and closed when the table no longer names it. The socket is made by a short
//! thread that enters the namespace, so the proxy itself stays in its own network and
//! relays to the cluster from there — the tenant's network only ever sees the listener.
//!
//! Every proxy on the machine listens on the same address (`SO_REUSEPORT`): the kernel
//! spreads connections over them, and one proxy stopping leaves the others serving.
//! A proxy where the network does not exist (another machine) has nothing to open.

use crate::access::Via;
use crate::Ctx;
use highrise_api::PrivateListener;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often listeners that could not be opened are tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Keeps the private listeners in line with the routing table until `shutdown`.
pub(crate) async fn keep(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = ctx.routes.subscribe();
    let mut open: HashMap<PrivateListener, JoinHandle<()>> = HashMap::new();
    // Listeners that could not be opened, and whether that was said already.
    let mut failing: HashSet<PrivateListener> = HashSet::new();
    loop {
        changes.mark_unchanged();
        let wanted = ctx.routes.private_listeners();
        open.retain(|l, task| {
            let keep = wanted.contains(l) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(network = %l.network_id, listen = %l.listen, "private listener closed");
            }
            keep
        });
        failing.retain(|l| wanted.contains(l));
        let mut pending = false;
        for l in wanted {
            if open.contains_key(&l) {
                continue;
            }
            match open_in(&l).await {
                Ok(listener) => {
                    tracing::info!(network = %l.network_id, listen = %l.listen, "private listener open");
                    failing.remove(&l);
                    let via = Arc::new(Via::Private(l.clone()));
                    open.insert(l, tokio::spawn(crate::accept(listener, via, Arc::clone(&ctx))));
                }
                Err(e) => {
                    pending = true;
                    if failing.insert(l.clone()) {
                        // Expected on a machine without the network; worth a warning otherwise.
                        if namespace_exists(&l.namespace) {
                            tracing::warn!(network = %l.network_id, listen = %l.listen, "open private listener: {e}");
                        } else {
                            tracing::debug!(network = %l.network_id, "no tenant network {} here", l.namespace);
                        }
                    }
                }
            }
        }
        let retry = async {
            if pending {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            r = changes.changed() => if r.is_err() { break },
            () = retry => {}
        }
    }
    for task in open.into_values() {
        task.abort();
    }
}

fn namespace_path(namespace: &str) -> Option<std::path::PathBuf> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| std::path::Path::new("/run/netns").join(namespace))
}

pub(crate) fn namespace_exists(namespace: &str) -> bool {
    namespace_path(namespace).is_some_and(|p| p.exists())
}

/// Opens a listener on `l.listen` inside the namespace `l.namespace`.
async fn open_in(l: &PrivateListener) -> std::io::Result<TcpListener> {
    let path = namespace_path(&l.namespace)
        .ok_or_else(|| std::io::Error::other(format!("not a namespace name: {:?}", l.namespace)))?;
    let addr: SocketAddr = l
        .listen
        .parse()
        .map_err(|e| std::io::Error::other(format!("listen address {:?}: {e}", l.listen)))?;
    // setns(2) moves the calling thread only: a thread of its own, gone once the socket
    // exists (a socket stays in the namespace it was made in).
    // Never a thread of a runtime's pool, which would stay in the namespace.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("netns-listen".into()).spawn(move || {
        let _ = tx.send(bind_in(&path, addr));
    })?;
    let std_listener = rx
        .await
        .map_err(|_| std::io::Error::other("the listener thread ended without an answer"))??;
    TcpListener::from_std(std_listener)
}

fn bind_in(namespace: &std::path::Path, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let ns = std::fs::File::open(namespace)?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(crate::LISTEN_BACKLOG)?;
    Ok(socket.into())
}
