//! Usage sent to the cloud marketplaces through the durable outbox, against strict doubles
//! of AWS's, Azure's and GCP's metering APIs (`doubles/`; AWS's through the AWS SDK, with
//! the `aws` feature, which also runs the SDK's wiring against moto): two and a half simulated days of
//! heartbeats (some lost, so usage arrives after its hour was staged), export rounds met
//! by injected failures (5xx, 429, answers that never come, answers lost after the records
//! were taken), a marketplace outage longer than its deadline, and the control plane
//! restarted mid-run — every record the double holds is held once, and what it holds
//! adds up to the instances' lifetimes, second for second.

use highrise_api::MeterReading;
use highrise_billing::export::State;
use highrise_billing::marketplace::Marketplace;
use highrise_control::marketplace::azure::{AzureConfig, AzureExporter};
use highrise_control::marketplace::gcp::{GcpConfig, GcpExporter};
use highrise_control::marketplace::{Exporter, Exports, Fetcher, Token};
use highrise_control::store::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod common;
mod doubles;
use common::*;
use doubles::{Double, Fault};

const HOUR: i64 = 3600;
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200;
const HOURS: i64 = 60;
const AZURE_SUB: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const GCP_ID: &str = "project_number:4815162342";
const DIMENSIONS: [&str; 2] = ["small_spot_seconds", "medium_on_demand_seconds"];

fn lives() -> Vec<Life> {
    vec![
        // A small spot instance from the first minutes to the end.
        Life {
            id: "i1".into(),
            host: "h-spot",
            cluster: "c1".into(),
            start: (T0 + 100) * 1000 + 250,
            end: None,
        },
        // A medium on-demand one, deleted after a day and a bit.
        Life {
            id: "i2".into(),
            host: "h-od",
            cluster: "c2".into(),
            start: (T0 + 1_000) * 1000 + 7,
            end: Some((T0 + 27 * HOUR + 1_234) * 1000 + 500),
        },
    ]
}

async fn world(store: &Store, m: Marketplace, account: &str, licence: Option<&str>) {
    metered_org(store).await;
    for (n, (plan, host)) in [("small", "h-spot"), ("medium", "h-od")].into_iter().enumerate() {
        let id = format!("c{}", n + 1);
        let mut c = cluster_row(&id, "o1", "p1", &format!("db{n}"), &format!("ep-{n}"));
        c.plan = plan.into();
        store
            .create_cluster(&c, &op_row(&format!("op{n}"), "o1", &id, "create"))
            .await
            .unwrap();
        store
            .insert_instance(&instance_row(&format!("i{}", n + 1), &id, host))
            .await
            .unwrap();
    }
    store
        .link_marketplace(
            "o1",
            &MarketplaceRow {
                marketplace: m.as_str().into(),
                account: account.into(),
                licence: licence.map(Into::into),
                linked_at: T0 + 600,
            },
        )
        .await
        .unwrap();
}

/// Runs the simulated days against `double` and checks what it holds.
async fn export_through_failures(
    m: Marketplace,
    double: &Double,
    exporter: Arc<dyn Exporter>,
    account: &str,
    licence: Option<&str>,
) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    let mut store = Store::open(&url).await.unwrap();
    world(&store, m, account, licence).await;
    let mut exports = Exports::new(store.clone(), vec![Arc::clone(&exporter)]);
    let lives = lives();
    let mut rng = StdRng::seed_from_u64(1515);
    let (outage_from, outage_to) = (T0 + 20 * HOUR, T0 + 46 * HOUR + 1_800);
    let mut restarted = false;
    let mut faults = 0;
    let end = T0 + HOURS * HOUR;
    let mut t = T0 + 60;
    // After the last hour, rounds go on (no loss, no fault) until every record is settled.
    let drain = end + 4 * HOUR;
    while t < drain {
        let live = t < end;
        // Heartbeats: one in eight lost (the next carries its usage, possibly into an hour
        // already staged).
        for host in ["h-spot", "h-od"] {
            let beat: Vec<MeterReading> = lives
                .iter()
                .filter(|l| l.host == host)
                .filter_map(|l| l.reading(t.min(end) * 1000))
                .collect();
            if !beat.is_empty() && (!live || rng.gen_bool(0.875)) {
                store.record_readings(host, &beat).await.unwrap();
            }
        }
        let down = live && (outage_from..outage_to).contains(&t);
        double.set_down(down);
        if live && !down && rng.gen_bool(0.25) {
            faults += 1;
            double.fail_next(match rng.gen_range(0..5) {
                0 => Fault::Status(500),
                1 => Fault::Status(429),
                2 => Fault::Hang,
                3 if m == Marketplace::Aws => Fault::Unprocessed,
                _ => Fault::LoseAnswer,
            });
        }
        if !restarted && t >= T0 + 33 * HOUR + 1_111 {
            // The control plane restarts: a new process opens the same store.
            restarted = true;
            drop(exports);
            drop(store);
            store = Store::open(&url).await.unwrap();
            exports = Exports::new(store.clone(), vec![Arc::clone(&exporter)]);
        }
        double.set_now(t);
        exports.round(t).await.unwrap();
        t += rng.gen_range(300..1_500);
    }
    assert!(restarted && faults > 10, "{faults} faults");

    {
        let book = double.book.lock().unwrap();
        assert!(book.violations.is_empty(), "rules broken: {:#?}", book.violations);
        assert!(
            book.duplicates > 0,
            "an answer lost after the records were taken was sent again"
        );
    }

    // Every record settled; the outage outlived AWS's 6 hours and Azure's 24, so some
    // records expired (their usage went out with later hours); GCP has no deadline.
    let records = store.marketplace_records("o1").await.unwrap();
    let by_state = |s: State| records.iter().filter(|r| r.state == s.as_str()).count();
    assert_eq!(by_state(State::Pending) + by_state(State::Rejected), 0, "{records:#?}");
    let (calls, duplicates) = {
        let b = double.book.lock().unwrap();
        (b.calls, b.duplicates)
    };
    eprintln!(
        "{}: {} records, {} expired, {} in doubt past the deadline; the double: {calls} calls, {duplicates} duplicates",
        m.title(),
        records.len(),
        by_state(State::Expired),
        by_state(State::Conflict),
    );
    match m {
        Marketplace::Aws | Marketplace::Azure => assert!(by_state(State::Expired) > 0),
        _ => assert_eq!(by_state(State::Expired), 0),
    }
    let staged_through = records.iter().map(|r| r.window_end).max().unwrap();
    assert!(staged_through >= end, "every hour of the run was staged");

    // What the marketplace holds is every whole second the instances lived, from the
    // link's hour on — each second once. The one exception is a record sent, its answer
    // lost, and the marketplace then down past its deadline: it may hold it or not, so it
    // is never sent again under another hour (a conflict for an operator); the double
    // says which.
    let book = double.book.lock().unwrap();
    let mut unknown: BTreeMap<&str, i64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.state == State::Conflict.as_str()) {
        assert!(r.in_doubt, "{r:?}");
        if !book
            .accepted
            .contains_key(&(r.account.clone(), r.dimension.clone(), r.hour))
        {
            *unknown
                .entry(DIMENSIONS.iter().find(|d| **d == r.dimension).unwrap())
                .or_default() += r.quantity;
        }
    }
    drop(book);
    let held = double.totals();
    for (life, dim) in lives.iter().zip(DIMENSIONS) {
        let lived = life.overlap(T0 * 1000, end * 1000) / 1000;
        let h = held.get(dim).copied().unwrap_or(0);
        assert_eq!(
            h + unknown.get(dim).copied().unwrap_or(0),
            lived,
            "{dim}: held {h} s, lived {lived} s"
        );
    }
    // Each hour's record at most once per dimension (GCP: a window for every hour, joined).
    let book = double.book.lock().unwrap();
    let mut hours: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, _, h) in book.accepted.keys() {
        *hours.entry(*h).or_default() += 1;
    }
    assert!(hours.values().all(|&n| n <= DIMENSIONS.len()));
    if m == Marketplace::Gcp {
        assert_eq!(
            hours.len() as i64,
            (staged_through - T0) / HOUR,
            "a window for every hour"
        );
    }
}

#[tokio::test]
async fn azure_usage_is_accepted_exactly_once_through_failures_outages_and_a_restart() {
    let double = doubles::azure("az-token", "highrise-payg", &[AZURE_SUB], &DIMENSIONS).await;
    let exporter = AzureExporter::new(AzureConfig {
        base_url: double.url.clone(),
        token: Token::Given("az-token".into()),
        plan_id: "highrise-payg".into(),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    export_through_failures(Marketplace::Azure, &double, Arc::new(exporter), AZURE_SUB, None).await;
}

#[tokio::test]
async fn gcp_usage_windows_join_and_are_accepted_exactly_once_through_failures_and_a_restart() {
    let service = "highrise.endpoints.vendor.cloud.goog";
    let double = doubles::gcp("gcp-token", service, &[GCP_ID], &DIMENSIONS).await;
    let exporter = GcpExporter::new(GcpConfig {
        base_url: double.url.clone(),
        service: service.into(),
        token: Token::Given("gcp-token".into()),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    export_through_failures(Marketplace::Gcp, &double, Arc::new(exporter), GCP_ID, None).await;
}

/// AWS Marketplace Metering through the AWS SDK (cargo feature `aws`).
#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use aws_sdk_marketplacemetering::config::{BehaviorVersion, Builder, Credentials};
    use highrise_control::marketplace::aws::{AwsConfig, AwsExporter};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    const ACCOUNT: &str = "123456789012";
    const LICENCE: &str = "arn:aws:license-manager::123456789012:license:l-0123456789abcdef0123456789abcdef";

    fn sdk() -> Builder {
        Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
    }

    fn exporter(url: &str, product_code: &str) -> AwsExporter {
        AwsExporter::new(
            &AwsConfig {
                endpoint_url: Some(url.into()),
                region: "us-east-1".into(),
                product_code: product_code.into(),
                timeout: Duration::from_millis(300),
            },
            &sdk(),
        )
    }

    #[tokio::test]
    async fn aws_usage_is_accepted_exactly_once_through_failures_outages_and_a_restart() {
        let double = doubles::aws("prod-highrise", &[(ACCOUNT, LICENCE)], &DIMENSIONS).await;
        let exporter = exporter(&double.url, "prod-highrise");
        export_through_failures(Marketplace::Aws, &double, Arc::new(exporter), ACCOUNT, Some(LICENCE)).await;
    }

    /// A moto server on a free loopback port, stopped (by its pid) when dropped.
    struct Moto {
        child: Child,
        url: String,
    }

    impl Moto {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server (scripts/setup installs moto[server])");
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
            }
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The SDK's wiring against moto: the call is signed, serialised and its answer read.
    /// moto holds no subscriptions, so it answers every record `CustomerNotSubscribed` —
    /// which the exporter reads as a refusal for an operator, not a retry.
    #[tokio::test]
    async fn the_sdk_calls_batch_meter_usage_on_moto() {
        let moto = Moto::start();
        let exporter = exporter(&moto.url, "prod-highrise");
        let now = highrise_control::store::now();
        let hour = now.div_euclid(HOUR) * HOUR - HOUR;
        let row = |dimension: &str| OutboxRow {
            org_id: "o1".into(),
            dimension: dimension.into(),
            hour,
            marketplace: "aws".into(),
            account: ACCOUNT.into(),
            licence: Some(LICENCE.into()),
            window_start: hour,
            window_end: hour + HOUR,
            quantity: 3600,
            operation_id: String::new(),
            state: "pending".into(),
            attempts: 0,
            in_doubt: false,
            next_attempt_at: 0,
            last_error: None,
            receipt: None,
            staged_at: now,
            settled_at: None,
        };
        let outcomes = exporter
            .send(&[row("small_spot_seconds"), row("medium_on_demand_seconds")])
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 2);
        for o in outcomes {
            assert!(
                matches!(&o, highrise_billing::export::Outcome::Rejected(e) if e.contains("CustomerNotSubscribed")),
                "{o:?}"
            );
        }
        // moto gone: the call fails as a whole, to be sent again.
        let url = moto.url.clone();
        drop(moto);
        let e = super::aws::exporter(&url, "prod-highrise")
            .send(&[row("small_spot_seconds")])
            .await
            .unwrap_err();
        assert!(e.message.contains("BatchMeterUsage"), "{e}");
    }
}

/// A service account key for the tests alone (generated for them; it opens nothing).
const SA_EMAIL: &str = "meter@vendor.iam.gserviceaccount.com";
const SA_KEY: &str = include_str!("doubles/service-account-test-key.pem");
const SA_PUBLIC: &str = include_str!("doubles/service-account-test-key.pub.pem");

/// A service account key file as Google issues it, its `token_uri` the double's.
fn key_file(dir: &std::path::Path, email: &str, token_uri: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{email}.json"));
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "vendor",
        "private_key_id": "k1",
        "private_key": SA_KEY,
        "client_email": email,
        "token_uri": token_uri,
    });
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

#[tokio::test]
async fn azure_usage_goes_out_under_tokens_the_control_plane_fetches_from_entra_id() {
    let entra = doubles::tokens::entra_id("tenant-1", "app-1", "s3cret", "az-fetched", "3599").await;
    let double = doubles::azure("az-fetched", "highrise-payg", &[AZURE_SUB], &DIMENSIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let fetcher = Fetcher::entra_id(&entra.url, "tenant-1", "app-1", secret, Duration::from_secs(5)).unwrap();
    let exporter = AzureExporter::new(AzureConfig {
        base_url: double.url.clone(),
        token: Token::Fetched(Arc::new(fetcher)),
        plan_id: "highrise-payg".into(),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    export_through_failures(Marketplace::Azure, &double, Arc::new(exporter), AZURE_SUB, None).await;
    // One token for the whole run: kept until five minutes before it expires.
    assert_eq!((entra.issued(), entra.refused()), (1, vec![]));
}

#[tokio::test]
async fn gcp_usage_goes_out_under_tokens_the_control_plane_fetches_with_its_service_account() {
    let google = doubles::tokens::google_oauth(SA_EMAIL, SA_PUBLIC, "gcp-fetched").await;
    let service = "highrise.endpoints.vendor.cloud.goog";
    let double = doubles::gcp("gcp-fetched", service, &[GCP_ID], &DIMENSIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), SA_EMAIL, &format!("{}/token", google.url));
    let exporter = GcpExporter::new(GcpConfig {
        base_url: double.url.clone(),
        service: service.into(),
        token: Token::Fetched(Arc::new(
            Fetcher::service_account(&key, Duration::from_secs(5)).unwrap(),
        )),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    export_through_failures(Marketplace::Gcp, &double, Arc::new(exporter), GCP_ID, None).await;
    assert_eq!((google.issued(), google.refused()), (1, vec![]));
}

#[tokio::test]
async fn a_token_is_fetched_again_before_it_expires_and_a_refused_fetch_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    // Good for five minutes only: kept for none of them, so every call fetches.
    let entra = doubles::tokens::entra_id("tenant-1", "app-1", "s3cret", "az-short", "300").await;
    let token = Token::Fetched(Arc::new(
        Fetcher::entra_id(&entra.url, "tenant-1", "app-1", secret.clone(), Duration::from_secs(5)).unwrap(),
    ));
    assert_eq!(token.get().await.unwrap(), "az-short");
    assert_eq!(token.get().await.unwrap(), "az-short");
    assert_eq!(entra.issued(), 2);
    // A rotated secret is read at the next fetch: the old one is refused, with Entra ID's
    // words, and nothing is kept.
    std::fs::write(&secret, "old-secret").unwrap();
    let err = token.get().await.unwrap_err();
    assert!(
        !err.in_doubt && err.message.contains("AADSTS7000215"),
        "{}",
        err.message
    );
    std::fs::write(&secret, "s3cret").unwrap();
    assert_eq!(token.get().await.unwrap(), "az-short");
    // Another tenant does not know the app.
    let other = Token::Fetched(Arc::new(
        Fetcher::entra_id(&entra.url, "tenant-2", "app-1", secret, Duration::from_secs(5)).unwrap(),
    ));
    assert!(other.get().await.unwrap_err().message.contains("AADSTS90002"));
    // A key signed for another account is refused by Google; a file that is not a
    // service account key is refused at start.
    let google = doubles::tokens::google_oauth(SA_EMAIL, SA_PUBLIC, "gcp-token").await;
    let key = key_file(
        dir.path(),
        "intruder@other.iam.gserviceaccount.com",
        &format!("{}/token", google.url),
    );
    let wrong = Token::Fetched(Arc::new(
        Fetcher::service_account(&key, Duration::from_secs(5)).unwrap(),
    ));
    let err = wrong.get().await.unwrap_err();
    assert!(err.message.contains("Invalid JWT"), "{}", err.message);
    let not_a_key = dir.path().join("user.json");
    std::fs::write(
        &not_a_key,
        r#"{"type":"authorized_user","client_email":"a","private_key":"b","token_uri":"http://x"}"#,
    )
    .unwrap();
    let err = Fetcher::service_account(&not_a_key, Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("not a service account key"), "{err:#}");
    // Nothing listens: refused, not in doubt (nothing reached the marketplace).
    let gone = Token::Fetched(Arc::new(
        Fetcher::entra_id(
            "http://127.0.0.1:1",
            "t",
            "a",
            dir.path().join("secret"),
            Duration::from_secs(2),
        )
        .unwrap(),
    ));
    assert!(!gone.get().await.unwrap_err().in_doubt);
}
