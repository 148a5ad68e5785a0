//! The land: the [`Provider`] trait through which the control plane launches and
//! terminates hosts, and [`local::LocalLand`], an honest IaaS emulator on one machine.
//!
//! The control plane never reaches a cloud except through this trait, so a real cloud's
//! driver is one more implementation (behind a cargo feature), not a change to the core.

#[cfg(feature = "aws")]
pub mod ec2;
pub mod local;
pub mod market;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Market {
    OnDemand,
    Spot,
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::OnDemand => "on_demand",
            Market::Spot => "spot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cloud {
    pub name: String,
    pub regions: Vec<Region>,
}

/// What the control plane asks for. `host_id` is the idempotency key: launching the same
/// id twice yields the one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    pub host_id: String,
    pub cloud: String,
    pub region: String,
    pub market: Market,
    /// A zone of the region (a spot launch names its pool's); `None`: the land chooses.
    pub zone: Option<String>,
    /// Handed to the host's agent, which trades it for a host-scoped token.
    pub bootstrap_token: String,
    /// Where the agent finds the control plane.
    pub control_url: String,
    /// The CA certificate (PEM) the control plane's TLS certificate chains to: the agent
    /// trusts it and nothing else for `control_url`.
    #[serde(default)]
    pub control_ca: Option<String>,
    /// A disk of its own of this many bytes (`None`: the land's default).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Running,
    /// A spot notice was posted; the host dies when it runs out.
    Preempting,
    /// Gone, disk wiped (terminated, preempted, or its zone/cloud went down).
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub host_id: String,
    pub cloud: String,
    pub region: String,
    pub zone: String,
    pub market: Market,
    /// Empty in a land state written before pools existed.
    #[serde(default)]
    pub instance_type: String,
    /// The host's own network address.
    pub address: String,
    pub state: HostState,
    /// The size of the host's own disk, if it has one of a known size.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("unknown cloud or region: {0}")]
    UnknownLocation(String),
    #[error("no capacity: {0}")]
    NoCapacity(String),
    #[error("unknown host {0}")]
    UnknownHost(String),
    /// The cloud's API does not answer (an outage, or the land took the cloud down).
    #[error("cloud unreachable: {0}")]
    Unreachable(String),
    /// The land cannot do this at all.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The clouds, regions and zones this land offers.
    fn clouds(&self) -> Vec<Cloud>;
    /// Launches a host (idempotent by `host_id`).
    async fn launch_host(&self, req: LaunchRequest) -> Result<HostInfo, ProviderError>;
    /// Terminates a host and wipes its disk (idempotent; unknown hosts are fine).
    async fn terminate_host(&self, host_id: &str) -> Result<(), ProviderError>;
    async fn list_hosts(&self) -> Result<Vec<HostInfo>, ProviderError>;
    /// Whether the cloud's API answers: one cheap read call (a real provider lists a
    /// region or its own instances). The control plane probes every cloud of the land and
    /// judges a cloud dark from this and its hosts' silence together.
    async fn probe(&self, cloud: &str) -> Result<(), ProviderError>;
    /// The land's host pools with their list prices (none: the land has no spot market).
    fn pools(&self) -> Vec<market::Pool> {
        Vec::new()
    }
    /// Makes a tenant network (a "VPC") with the address range `cidr`, under the land's
    /// handle `namespace` (idempotent).
    async fn create_network(&self, namespace: &str, cidr: &str) -> Result<(), ProviderError> {
        let _ = (namespace, cidr);
        Err(ProviderError::Unsupported("this land has no tenant networks".into()))
    }
    /// Removes a tenant network (idempotent; an unknown one is fine).
    async fn delete_network(&self, namespace: &str) -> Result<(), ProviderError> {
        let _ = namespace;
        Err(ProviderError::Unsupported("this land has no tenant networks".into()))
    }
}

impl HostInfo {
    /// The pool the host belongs to.
    pub fn pool(&self) -> market::PoolId {
        market::PoolId {
            cloud: self.cloud.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            instance_type: self.instance_type.clone(),
        }
    }
}
