//! An AWS EC2 land (cargo feature `aws`): hosts are EC2 instances, launched, listed and
//! terminated through the official AWS SDK (`aws-sdk-ec2`).
//!
//! * **Launch** — `RunInstances` of one instance of the configured image and type, in the
//!   request's zone (or the region's first), on-demand or spot (`InstanceMarketOptions`:
//!   one-time, terminated on interruption). The host id is the `ClientToken`, so a launch
//!   repeated after a crash or a timeout yields the one instance (and the host's instance
//!   is looked for by its tag first: moto, for one, ignores tokens). Tags carry Highrise's
//!   ids (`highrise:land`, `highrise:host-id`, `highrise:market`, `Name`), instance
//!   metadata is IMDSv2 only (`HttpTokens=required`), and the user data is a shell script
//!   that starts the host's agent with its bootstrap token, the control plane's URL and
//!   the instance metadata endpoint (spot notices, read with a session token).
//! * **List** — `DescribeInstances` filtered by the land's tag, in every region, paginated;
//!   EC2's states map to [`HostState`] (stopping, stopped and terminated hosts are gone).
//! * **Terminate** — finds the instance by its host id tag; unknown hosts are fine.
//! * **Probe** — `DescribeAvailabilityZones` in the cloud's first region.
//!
//! Tested against `moto` in server mode (`libs/provider/tests/ec2.rs`): moto keeps the
//! API's contract (tokens, tags, user data, market options, states) but runs nothing, so
//! no agent ever starts there; that an image boots an agent from this user data is not
//! tested on this machine.

use crate::{Cloud, HostInfo, HostState, LaunchRequest, Market, Provider, ProviderError, Region};
use async_trait::async_trait;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, MarketType,
    Placement, ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use base64::Engine;
use std::collections::BTreeMap;

/// Tag keys. `highrise:land` scopes everything this driver lists to one land, so two
/// control planes (or other workloads) in an account never see each other's instances.
pub const TAG_LAND: &str = "highrise:land";
pub const TAG_HOST_ID: &str = "highrise:host-id";
pub const TAG_MARKET: &str = "highrise:market";

/// One EC2 cloud of the land.
#[derive(Debug, Clone)]
pub struct Ec2Config {
    /// The cloud's name in Highrise (`aws`, `aws-eu`, …).
    pub cloud: String,
    /// The regions offered, with the zones placement may use.
    pub regions: Vec<Region>,
    /// The land's name (the `highrise:land` tag).
    pub land: String,
    /// An image with PostgreSQL 15 and the `highrise` binary at [`Ec2Config::agent_path`].
    pub image_id: String,
    pub instance_type: String,
    /// Where the image keeps the `highrise` binary.
    pub agent_path: String,
    /// A subnet to launch into (the account's default VPC when `None`).
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// An endpoint other than AWS's (a VPC endpoint; moto in tests).
    pub endpoint_url: Option<String>,
}

/// The EC2 land: one SDK client per region.
pub struct Ec2Land {
    cfg: Ec2Config,
    clients: BTreeMap<String, aws_sdk_ec2::Client>,
}

impl Ec2Land {
    /// A land over `sdk` (credentials and retry settings: `aws_config::load_defaults` in
    /// production — environment, profile, instance role, SSO — or static ones in tests).
    pub fn new(cfg: Ec2Config, sdk: &aws_types::SdkConfig) -> Result<Self, ProviderError> {
        if cfg.regions.is_empty() {
            return Err(ProviderError::Other(anyhow::anyhow!(
                "cloud {} has no region",
                cfg.cloud
            )));
        }
        let clients = cfg
            .regions
            .iter()
            .map(|r| {
                let mut conf =
                    aws_sdk_ec2::config::Builder::from(sdk).region(aws_types::region::Region::new(r.name.clone()));
                if let Some(url) = &cfg.endpoint_url {
                    conf = conf.endpoint_url(url);
                }
                (r.name.clone(), aws_sdk_ec2::Client::from_conf(conf.build()))
            })
            .collect();
        Ok(Self { cfg, clients })
    }

    fn client(&self, region: &str) -> Result<&aws_sdk_ec2::Client, ProviderError> {
        self.clients
            .get(region)
            .ok_or_else(|| ProviderError::UnknownLocation(format!("{}/{region}", self.cfg.cloud)))
    }

    /// The land's instances in every region, with their region; only the host's when
    /// `host_id` is given.
    async fn describe(
        &self,
        host_id: Option<&str>,
    ) -> Result<Vec<(String, aws_sdk_ec2::types::Instance)>, ProviderError> {
        let mut all = Vec::new();
        for (region, client) in &self.clients {
            let mut call = client
                .describe_instances()
                .filters(tag_filter(TAG_LAND, &self.cfg.land));
            if let Some(id) = host_id {
                call = call.filters(tag_filter(TAG_HOST_ID, id));
            }
            let reservations = call
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(|e| sdk_error("describe instances", e))?;
            for r in reservations {
                all.extend(r.instances.unwrap_or_default().into_iter().map(|i| (region.clone(), i)));
            }
        }
        Ok(all)
    }

    /// The instance carrying a host id, in any region (a live one before terminated ones).
    async fn find(&self, host_id: &str) -> Result<Option<(String, aws_sdk_ec2::types::Instance)>, ProviderError> {
        let mut found = None;
        for (region, i) in self.describe(Some(host_id)).await? {
            if found.is_none() || state_of(&i) != HostState::Terminated {
                found = Some((region, i));
            }
        }
        Ok(found)
    }

    fn host_info(&self, region: &str, i: &aws_sdk_ec2::types::Instance) -> Option<HostInfo> {
        let host_id = tag(i, TAG_HOST_ID)?;
        let spot = i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot) || tag(i, TAG_MARKET) == Some("spot");
        Some(HostInfo {
            host_id: host_id.to_string(),
            cloud: self.cfg.cloud.clone(),
            region: region.to_string(),
            zone: i
                .placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or_default()
                .to_string(),
            market: if spot { Market::Spot } else { Market::OnDemand },
            instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
            address: i.private_ip_address().unwrap_or_default().to_string(),
            state: state_of(i),
            disk_bytes: None,
        })
    }
}

/// The agent's start on first boot, every value shell-quoted. Anyone allowed
/// `DescribeInstanceAttribute` in the account can read user data, bootstrap token
/// included: the token is bound to its host id, but not yet single-use (issue 14).
pub fn user_data(cfg: &Ec2Config, req: &LaunchRequest) -> Result<String, ProviderError> {
    let q = |s: &str| {
        shlex::try_quote(s)
            .map(|q| q.into_owned())
            .map_err(|e| ProviderError::Other(anyhow::anyhow!("cannot quote {s:?} for the host's start script: {e}")))
    };
    Ok(format!(
        "#!/bin/sh\n\
         # Highrise host {host}: starts its agent (written by the control plane).\n\
         set -eu\n\
         mkdir -p /var/lib/highrise\n\
         export HIGHRISE_BOOTSTRAP_TOKEN={token}\n\
         address=$(hostname -I | cut -d' ' -f1)\n\
         {ca}\
         exec {agent} agent --host-id {host} --dir /var/lib/highrise --address \"$address\" --control-url {url} \
         {ca_arg}--metadata-url http://169.254.169.254 >>/var/log/highrise-agent.log 2>&1\n",
        ca = match &req.control_ca {
            Some(pem) => format!("printf '%s' {} >/var/lib/highrise/control-ca.pem\n", q(pem)?),
            None => String::new(),
        },
        ca_arg = if req.control_ca.is_some() {
            "--control-ca /var/lib/highrise/control-ca.pem "
        } else {
            ""
        },
        host = q(&req.host_id)?,
        token = q(&req.bootstrap_token)?,
        agent = q(&cfg.agent_path)?,
        url = q(&req.control_url)?,
    ))
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

fn tag<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn state_of(i: &aws_sdk_ec2::types::Instance) -> HostState {
    match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending | InstanceStateName::Running) | None => HostState::Running,
        // Stopped instances lose their instance store: for Highrise the host is gone.
        Some(_) => HostState::Terminated,
    }
}

/// The SDK's failure as the land's: the API not answering is `Unreachable` (the control
/// plane's cloud-loss judgement reads it), capacity errors are `NoCapacity` (placement
/// tries elsewhere), the rest keeps EC2's code and message.
fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            ProviderError::Unreachable(format!("{what}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e)))
        }
        _ => {
            let code = e.code().unwrap_or_default().to_string();
            let msg = format!(
                "{what}: {} {}",
                code,
                e.message().map(str::to_string).unwrap_or_else(|| e.to_string())
            );
            match code.as_str() {
                "InsufficientInstanceCapacity"
                | "InsufficientCapacity"
                | "SpotMaxPriceTooLow"
                | "MaxSpotInstanceCountExceeded" => ProviderError::NoCapacity(msg),
                _ => ProviderError::Other(anyhow::anyhow!(msg)),
            }
        }
    }
}

#[async_trait]
impl Provider for Ec2Land {
    fn clouds(&self) -> Vec<Cloud> {
        vec![Cloud {
            name: self.cfg.cloud.clone(),
            regions: self.cfg.regions.clone(),
        }]
    }

    async fn launch_host(&self, req: LaunchRequest) -> Result<HostInfo, ProviderError> {
        if req.cloud != self.cfg.cloud {
            return Err(ProviderError::UnknownLocation(req.cloud.clone()));
        }
        let region = self
            .cfg
            .regions
            .iter()
            .find(|r| r.name == req.region)
            .ok_or_else(|| ProviderError::UnknownLocation(format!("{}/{}", req.cloud, req.region)))?;
        let zone = match &req.zone {
            Some(z) if region.zones.contains(z) => Some(z.clone()),
            Some(z) => {
                return Err(ProviderError::UnknownLocation(format!(
                    "{}/{}/{z}",
                    req.cloud, req.region
                )))
            }
            None => region.zones.first().cloned(),
        };
        // EC2 keeps a `ClientToken` for a while and answers a repeated launch with the same
        // instance; the instance is looked for first too (a token EC2 has forgotten, and
        // emulators that ignore tokens).
        if let Some((r, i)) = self.find(&req.host_id).await? {
            return self.host_info(&r, &i).ok_or_else(|| {
                ProviderError::Other(anyhow::anyhow!("instance of {} lacks its host id tag", req.host_id))
            });
        }
        let client = self.client(&region.name)?;
        let tags = [
            (TAG_LAND, self.cfg.land.as_str()),
            (TAG_HOST_ID, req.host_id.as_str()),
            (TAG_MARKET, req.market.as_str()),
            ("Name", req.host_id.as_str()),
        ];
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        let mut run = client
            .run_instances()
            .image_id(&self.cfg.image_id)
            .instance_type(InstanceType::from(self.cfg.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            // Idempotency: the same host id launches the same instance.
            .client_token(&req.host_id)
            .user_data(base64::engine::general_purpose::STANDARD.encode(user_data(&self.cfg, &req)?))
            .tag_specifications(spec.build())
            // IMDSv2 only: a token-less read (an SSRF through some service on the host)
            // gets nothing; the agent reads spot notices with a session token.
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .set_subnet_id(self.cfg.subnet_id.clone())
            .set_security_group_ids(
                (!self.cfg.security_group_ids.is_empty()).then(|| self.cfg.security_group_ids.clone()),
            );
        if let Some(z) = zone {
            run = run.placement(Placement::builder().availability_zone(z).build());
        }
        if req.market == Market::Spot {
            run = run.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = run.send().await.map_err(|e| sdk_error("run instances", e))?;
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| ProviderError::Other(anyhow::anyhow!("run instances returned no instance")))?;
        self.host_info(&region.name, instance).ok_or_else(|| {
            ProviderError::Other(anyhow::anyhow!(
                "instance {:?} lacks its host id tag",
                instance.instance_id()
            ))
        })
    }

    async fn terminate_host(&self, host_id: &str) -> Result<(), ProviderError> {
        let Some((region, i)) = self.find(host_id).await? else {
            return Ok(());
        };
        if state_of(&i) == HostState::Terminated
            && i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated)
        {
            return Ok(());
        }
        let Some(id) = i.instance_id() else {
            return Ok(());
        };
        self.client(&region)?
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error("terminate instances", e))?;
        Ok(())
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>, ProviderError> {
        Ok(self
            .describe(None)
            .await?
            .iter()
            .filter_map(|(region, i)| self.host_info(region, i))
            .collect())
    }

    async fn probe(&self, cloud: &str) -> Result<(), ProviderError> {
        if cloud != self.cfg.cloud {
            return Err(ProviderError::UnknownLocation(cloud.to_string()));
        }
        let region = self.cfg.regions.first().map(|r| r.name.as_str()).unwrap_or_default();
        self.client(region)?
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| sdk_error("describe availability zones", e))?;
        Ok(())
    }
}
