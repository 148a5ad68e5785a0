//! The EC2 driver's contract against `moto` in server mode on loopback (PyPI
//! `moto[server]`, installed by `scripts/setup`): launch on-demand and spot, idempotency by
//! `ClientToken`, tags, user data, list, terminate, errors. moto keeps the API's contract
//! but runs no machine, so no agent starts: this covers the calls, not a host's boot.
#![cfg(feature = "aws")]

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use base64::Engine;
use highrise_provider::ec2::{Ec2Config, Ec2Land, TAG_HOST_ID, TAG_LAND};
use highrise_provider::{HostState, LaunchRequest, Market, Provider, ProviderError, Region};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server on a free loopback port, stopped (by its pid) when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (scripts/setup installs moto[server])");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sdk() -> aws_types::SdkConfig {
    aws_types::SdkConfig::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "moto",
        )))
        .region(aws_types::region::Region::new("us-east-1"))
        .build()
}

fn config(url: &str, land: &str) -> Ec2Config {
    Ec2Config {
        cloud: "aws".into(),
        regions: vec![
            Region {
                name: "us-east-1".into(),
                zones: vec!["us-east-1a".into(), "us-east-1b".into()],
            },
            Region {
                name: "eu-west-1".into(),
                zones: vec!["eu-west-1a".into()],
            },
        ],
        land: land.into(),
        // One of the images moto knows.
        image_id: "ami-12c6146b".into(),
        instance_type: "m6id.large".into(),
        agent_path: "/usr/local/bin/highrise".into(),
        subnet_id: None,
        security_group_ids: vec![],
        endpoint_url: Some(url.into()),
    }
}

fn request(host_id: &str, region: &str, market: Market, zone: Option<&str>) -> LaunchRequest {
    LaunchRequest {
        host_id: host_id.into(),
        cloud: "aws".into(),
        region: region.into(),
        market,
        zone: zone.map(str::to_string),
        bootstrap_token: format!("bt-{host_id}"),
        control_url: "https://control.example:8443".into(),
        control_ca: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        disk_bytes: None,
    }
}

/// The raw API's view of one instance, for what the trait does not return.
async fn describe(url: &str, region: &str, host_id: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let conf = aws_sdk_ec2::config::Builder::from(&sdk())
        .region(aws_types::region::Region::new(region.to_string()))
        .endpoint_url(url)
        .build();
    let client = aws_sdk_ec2::Client::from_conf(conf);
    let out = client
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{TAG_HOST_ID}"))
                .values(host_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

async fn user_data_of(url: &str, region: &str, instance_id: &str) -> String {
    let conf = aws_sdk_ec2::config::Builder::from(&sdk())
        .region(aws_types::region::Region::new(region.to_string()))
        .endpoint_url(url)
        .build();
    let out = aws_sdk_ec2::Client::from_conf(conf)
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let b64 = out.user_data().and_then(|v| v.value()).unwrap_or_default();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_launch_on_demand_and_spot_once_per_host_id_and_terminate() {
    let moto = Moto::start();
    let land = Ec2Land::new(config(&moto.url, "land-a"), &sdk()).unwrap();
    land.probe("aws").await.unwrap();
    assert!(matches!(
        land.probe("gcp").await,
        Err(ProviderError::UnknownLocation(_))
    ));

    // On-demand, the region's first zone.
    let a = land
        .launch_host(request("host_a", "us-east-1", Market::OnDemand, None))
        .await
        .unwrap();
    assert_eq!(
        (a.cloud.as_str(), a.region.as_str(), a.zone.as_str()),
        ("aws", "us-east-1", "us-east-1a")
    );
    assert_eq!(a.market, Market::OnDemand);
    assert_eq!(a.state, HostState::Running);
    assert_eq!(a.instance_type, "m6id.large");
    assert!(!a.address.is_empty(), "{a:?}");

    // Spot in a named zone of another region: InstanceMarketOptions reach EC2.
    let b = land
        .launch_host(request("host_b", "eu-west-1", Market::Spot, Some("eu-west-1a")))
        .await
        .unwrap();
    assert_eq!(
        (b.region.as_str(), b.zone.as_str(), b.market),
        ("eu-west-1", "eu-west-1a", Market::Spot)
    );
    let raw_b = describe(&moto.url, "eu-west-1", "host_b").await;
    assert_eq!(raw_b.len(), 1);
    assert_eq!(
        raw_b[0].instance_lifecycle(),
        Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot),
        "{raw_b:?}"
    );

    // A launch repeated (a retry after a timeout, a control plane restarted midway) is the
    // same instance: the host id is the ClientToken.
    let again = land
        .launch_host(request("host_a", "us-east-1", Market::OnDemand, None))
        .await
        .unwrap();
    assert_eq!(again.address, a.address);
    let raw_a = describe(&moto.url, "us-east-1", "host_a").await;
    assert_eq!(raw_a.len(), 1, "one instance per host id: {raw_a:?}");
    let inst = &raw_a[0];
    assert_eq!(inst.client_token(), Some("host_a"));
    let tags: Vec<(String, String)> = inst
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for want in [
        (TAG_LAND, "land-a"),
        (TAG_HOST_ID, "host_a"),
        ("Name", "host_a"),
        ("highrise:market", "on_demand"),
    ] {
        assert!(
            tags.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {tags:?}"
        );
    }

    // Instance metadata with session tokens only (IMDSv2).
    let md = inst.metadata_options().expect("metadata options");
    assert_eq!(
        md.http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required),
        "{md:?}"
    );

    // The user data starts the agent with its token, the control plane's URL, the
    // instance metadata endpoint …
    let script = user_data_of(&moto.url, "us-east-1", inst.instance_id().unwrap()).await;
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    assert!(
        script.contains("export HIGHRISE_BOOTSTRAP_TOKEN=bt-host_a\n"),
        "{script}"
    );
    assert!(
        script.contains("/usr/local/bin/highrise agent --host-id host_a --dir /var/lib/highrise")
            && script.contains("--control-url https://control.example:8443")
            && script.contains("--metadata-url http://169.254.169.254 "),
        "{script}"
    );
    // … and the CA the control plane's certificate must chain to, written to its disk.
    assert!(
        script.contains("printf '%s' '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >/var/lib/highrise/control-ca.pem\n")
            && script.contains("--control-ca /var/lib/highrise/control-ca.pem "),
        "{script}"
    );

    // Listed from both regions; another land in the same account sees neither.
    let mut hosts = land.list_hosts().await.unwrap();
    hosts.sort_by(|x, y| x.host_id.cmp(&y.host_id));
    assert_eq!(hosts, vec![a.clone(), b.clone()]);
    let other = Ec2Land::new(config(&moto.url, "land-b"), &sdk()).unwrap();
    assert!(other.list_hosts().await.unwrap().is_empty());
    other.terminate_host("host_a").await.unwrap();
    assert_eq!(
        land.list_hosts().await.unwrap().len(),
        2,
        "another land cannot terminate ours"
    );

    // Terminate: gone from service, idempotent, unknown hosts fine.
    land.terminate_host("host_a").await.unwrap();
    land.terminate_host("host_a").await.unwrap();
    land.terminate_host("host_never").await.unwrap();
    let hosts = land.list_hosts().await.unwrap();
    let state = |id: &str| hosts.iter().find(|h| h.host_id == id).map(|h| h.state);
    assert_eq!(state("host_a"), Some(HostState::Terminated));
    assert_eq!(state("host_b"), Some(HostState::Running));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_a_dead_endpoint_say_what_is_wrong() {
    let moto = Moto::start();
    let land = Ec2Land::new(config(&moto.url, "land-c"), &sdk()).unwrap();
    for (req, what) in [
        (request("h1", "ap-south-1", Market::OnDemand, None), "an unknown region"),
        (
            request("h2", "us-east-1", Market::OnDemand, Some("us-east-1z")),
            "an unknown zone",
        ),
        (
            LaunchRequest {
                cloud: "azure".into(),
                ..request("h3", "us-east-1", Market::OnDemand, None)
            },
            "another cloud",
        ),
    ] {
        let err = land.launch_host(req).await.unwrap_err();
        assert!(matches!(err, ProviderError::UnknownLocation(_)), "{what}: {err}");
    }
    // A value that cannot be quoted for the start script is refused before any call.
    let err = land
        .launch_host(LaunchRequest {
            control_url: "https://x\0y".into(),
            ..request("h4", "us-east-1", Market::OnDemand, None)
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot quote"), "{err}");
    assert!(land.list_hosts().await.unwrap().is_empty(), "nothing launched");

    // The API gone (moto stopped): `Unreachable`, which the cloud-loss judgement reads.
    let url = moto.url.clone();
    drop(moto);
    let land = Ec2Land::new(config(&url, "land-c"), &sdk()).unwrap();
    let err = land.probe("aws").await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable(_)), "{err}");
    let err = land.list_hosts().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable(_)), "{err}");
}
