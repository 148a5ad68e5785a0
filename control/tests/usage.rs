//! Metering over a simulated month, on SQLite and on a real PostgreSQL: agents' counters
//! read at random moments, with heartbeats lost, repeated, replayed late and cut off
//! mid-transaction, and the control plane restarted mid-hour — every hour's usage equals
//! the instances' lifetimes in it, the month's totals equal them exactly, and the month's
//! invoice prices each to the cent.

use highrise_api::MeterReading;
use highrise_billing::invoice::{self, HourUsage};
use highrise_control::store::*;
use highrise_pg::scratch::ScratchServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::time::Duration;

mod common;
use common::*;

const HOUR_MS: i64 = 3_600_000;
/// 2026-11-01T00:00:00Z.
const MONTH_START_MS: i64 = 1_793_491_200_000;
const MONTH_MS: i64 = 30 * 24 * HOUR_MS;

/// Three plans on spot and on demand; one cluster whose member is replaced mid-month.
async fn world(store: &Store, rng: &mut StdRng) -> Vec<Life> {
    metered_org(store).await;
    let mut lives = Vec::new();
    let mut n = 0;
    for plan in ["small", "medium", "large"] {
        for host in ["h-od", "h-spot"] {
            n += 1;
            let id = format!("c{n}");
            let mut c = cluster_row(&id, "o1", "p1", &format!("db{n}"), &format!("ep-{n}"));
            c.plan = plan.into();
            store
                .create_cluster(&c, &op_row(&format!("op{n}"), "o1", &id, "create"))
                .await
                .unwrap();
            let start = MONTH_START_MS + rng.gen_range(0..3 * 24 * HOUR_MS);
            // Some live past the month's end, some are deleted in its last days.
            let end = rng
                .gen_bool(0.5)
                .then(|| MONTH_START_MS + MONTH_MS - rng.gen_range(HOUR_MS..3 * 24 * HOUR_MS));
            lives.push(Life {
                id: format!("i{n}"),
                host,
                cluster: id,
                start,
                end,
            });
        }
    }
    // c1's member replaced half-way (a new instance on the same host, from a moment later).
    let half = MONTH_START_MS + MONTH_MS / 2 + 1_234;
    lives[0].end = Some(half);
    lives.push(Life {
        id: "i1b".into(),
        host: "h-od",
        cluster: "c1".into(),
        start: half + 40_321,
        end: None,
    });
    for l in &lives {
        store
            .insert_instance(&instance_row(&l.id, &l.cluster, l.host))
            .await
            .unwrap();
    }
    lives
}

async fn a_month_of_heartbeats(url: &str) {
    let mut rng = StdRng::seed_from_u64(15);
    let mut store = Store::open(url).await.unwrap();
    let lives = world(&store, &mut rng).await;
    let plans: BTreeMap<&str, &str> = [
        ("c1", "small"),
        ("c2", "small"),
        ("c3", "medium"),
        ("c4", "medium"),
        ("c5", "large"),
        ("c6", "large"),
    ]
    .into();

    // The heartbeats: every host beats every 20–100 minutes of simulated time; a closed
    // counter is sent until a heartbeat carrying it succeeded.
    let mut acked: BTreeMap<String, bool> = BTreeMap::new();
    let mut sent_before: Vec<(&str, Vec<MeterReading>)> = Vec::new();
    let (mut restarts, mut cut, mut lost, mut repeated, mut late) = (0, 0, 0, 0, 0);
    let mut t = MONTH_START_MS;
    let mut next_restart = MONTH_START_MS + 5 * 24 * HOUR_MS + HOUR_MS / 2;
    let end = MONTH_START_MS + MONTH_MS;
    loop {
        let last_round = t >= end;
        let now = t.min(end);
        if now >= next_restart {
            // The control plane restarts mid-hour: a new process opens the same store.
            drop(store);
            store = Store::open(url).await.unwrap();
            restarts += 1;
            next_restart += 5 * 24 * HOUR_MS + 17 * 60_000;
        }
        for host in ["h-od", "h-spot"] {
            let beat: Vec<MeterReading> = lives
                .iter()
                .filter(|l| l.host == host && !acked.get(&l.id).copied().unwrap_or(false))
                .filter_map(|l| l.reading(now))
                .collect();
            if beat.is_empty() {
                continue;
            }
            let delivered = if !last_round && rng.gen_bool(0.1) {
                lost += 1;
                false
            } else if !last_round && rng.gen_bool(0.05) {
                // Cut off at some point of the transaction (a control plane killed while
                // writing): committed or not, the agent cannot tell and sends again.
                cut += 1;
                let wait = Duration::from_micros(rng.gen_range(0..3_000));
                let _ = tokio::time::timeout(wait, store.record_readings(host, &beat)).await;
                false
            } else {
                deliver(&store, host, &beat).await;
                if rng.gen_bool(0.1) {
                    // The answer was lost: the agent's retry carries the same readings.
                    repeated += 1;
                    let again = deliver(&store, host, &beat).await;
                    assert_eq!(again.taken, 0, "a repeated heartbeat adds nothing");
                }
                true
            };
            if now > MONTH_START_MS + 4 * 24 * HOUR_MS && rng.gen_bool(0.05) {
                // A heartbeat from the first hours arrives late (every instance had
                // readings taken since).
                if let Some((h, old)) = sent_before.iter().find(|(h, _)| *h == host) {
                    late += 1;
                    let o = store.record_readings(h, old).await.unwrap();
                    assert_eq!(o.taken, 0, "a late heartbeat adds nothing");
                }
            }
            if delivered {
                for r in beat.iter().filter(|r| r.closed) {
                    acked.insert(r.source.clone(), true);
                }
            }
            if sent_before.len() < 8 {
                sent_before.push((host, beat));
            }
        }
        if last_round {
            break;
        }
        t += rng.gen_range(20 * 60_000..100 * 60_000);
    }
    assert!(restarts >= 5 && cut > 0 && lost > 0 && repeated > 0 && late > 0);

    // Another host cannot meter an instance that is not its own; unknown sources add
    // nothing.
    let foreign = lives[1].reading(end).unwrap();
    let o = store.record_readings("h-od", &[foreign]).await.unwrap();
    assert_eq!((o.taken, o.unknown), (0, 1));

    // Every hour of every cluster: the instances' lifetimes in it.
    let hourly = store
        .metered_usage("o1", None, MONTH_START_MS / 1000, end / 1000 + 3600, true)
        .await
        .unwrap();
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in &hourly {
        let market = if lives.iter().any(|l| l.cluster == r.cluster_id && l.host == "h-spot") {
            "spot"
        } else {
            "on_demand"
        };
        assert_eq!(
            r.dimension,
            format!("instance_ms:{}:{market}", plans[r.cluster_id.as_str()])
        );
        assert_eq!((r.cloud.as_str(), r.region.as_str()), ("local-a", "region-1"));
        *got.entry((r.cluster_id.clone(), r.hour.unwrap())).or_default() += r.quantity;
    }
    let mut worst = 0;
    for hour in (MONTH_START_MS..end).step_by(HOUR_MS as usize) {
        for cluster in plans.keys() {
            let want: i64 = lives
                .iter()
                .filter(|l| l.cluster == *cluster)
                .map(|l| l.overlap(hour, hour + HOUR_MS))
                .sum();
            let have = got.get(&(cluster.to_string(), hour / 1000)).copied().unwrap_or(0);
            worst = worst.max((have - want).abs());
        }
    }
    // A counter of milliseconds grows as the clock does, so each hour's share of a
    // difference is exact.
    assert_eq!(worst, 0, "an hour's usage is off its lifetime by {worst} ms");

    // The month's sums: exactly the lifetimes.
    let sums = store
        .metered_usage("o1", None, MONTH_START_MS / 1000, end / 1000 + 3600, false)
        .await
        .unwrap();
    assert_eq!(sums.len(), plans.len());
    for r in &sums {
        let want: i64 = lives
            .iter()
            .filter(|l| l.cluster == r.cluster_id)
            .map(|l| l.overlap(MONTH_START_MS, end))
            .sum();
        assert_eq!(r.quantity, want, "{}", r.cluster_id);
        assert_eq!(r.hour, None);
        assert_eq!(r.cluster_name, format!("db{}", &r.cluster_id[1..]));
    }
    // The month's invoice from the hourly records and the repository's list prices: one
    // line per cluster (one price in force all month), each the cluster's lifetime at its
    // price rounded once to the cent; the total is the sum of the lines.
    let book = highrise_billing::prices::PriceBook::repository().unwrap();
    let usage: Vec<HourUsage> = hourly
        .iter()
        .map(|r| HourUsage {
            cluster_id: r.cluster_id.clone(),
            cluster: r.cluster_name.clone(),
            dimension: r.dimension.clone(),
            cloud: r.cloud.clone(),
            region: r.region.clone(),
            hour: r.hour.unwrap(),
            quantity: u64::try_from(r.quantity).unwrap(),
        })
        .collect();
    let (lines, total) = invoice::lines(&usage, &book, MONTH_START_MS / 1000).unwrap();
    assert_eq!(lines.len(), plans.len());
    assert_eq!(total, lines.iter().map(|l| l.amount).sum::<Decimal>());
    for (l, sum) in lines.iter().zip(&sums) {
        assert_eq!(l.cluster_id, sum.cluster_id);
        let price = book
            .price_at(&l.dimension, &l.cloud, &l.region, MONTH_START_MS / 1000)
            .unwrap();
        let exact = Decimal::from(sum.quantity) * price.amount / Decimal::from(price.per);
        let cents = exact.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(l.amount, cents, "{}", l.cluster_id);
    }

    // One cluster, one range: only its hours in it.
    let day = store
        .metered_usage(
            "o1",
            Some("c1"),
            MONTH_START_MS / 1000 + 86_400 * 10,
            MONTH_START_MS / 1000 + 86_400 * 11,
            false,
        )
        .await
        .unwrap();
    assert_eq!(day.len(), 1);
    assert_eq!(
        day[0].quantity,
        lives[0].overlap(MONTH_START_MS + 10 * 24 * HOUR_MS, MONTH_START_MS + 11 * 24 * HOUR_MS)
    );
    assert!(store
        .metered_usage("o2", None, 0, i64::MAX / 2, false)
        .await
        .unwrap()
        .is_empty());
}

/// Billing terms, spend alerts and marketplace links as stored: an alert fires once per
/// org, period and threshold; a failed delivery keeps it pending with its error, a
/// delivery ends it; a new link replaces the old.
async fn terms_and_alerts(url: &str) {
    let store = Store::open(url).await.unwrap();
    assert_eq!(store.billing_terms("o1").await.unwrap(), BillingTermsRow::default());
    let terms = BillingTermsRow {
        commitment: Some("100.00".into()),
        commitment_from: Some(10),
        commitment_to: Some(20),
        hard_limit: Some("5.00".into()),
        alert_webhook: Some("http://127.0.0.1:1/hook".into()),
    };
    store.set_billing_terms("o1", &terms, 1).await.unwrap();
    store.set_billing_terms("o1", &terms, 2).await.unwrap();
    assert_eq!(store.billing_terms("o1").await.unwrap(), terms);
    assert_eq!(
        store.orgs_with_commitments().await.unwrap(),
        vec![("o1".to_string(), terms)]
    );
    let alert = AlertRow {
        org_id: "o1".into(),
        period: "commitment:10-20".into(),
        threshold: 80,
        spent: "80.00".into(),
        budget: "100.00".into(),
        fired_at: 15,
        delivered_at: None,
        attempts: 0,
        last_error: None,
    };
    assert!(store.fire_alert(&alert).await.unwrap());
    assert!(!store.fire_alert(&alert).await.unwrap(), "fired once");
    store.alert_attempted(&alert, 16, Some("refused")).await.unwrap();
    let pending = store.undelivered_alerts().await.unwrap();
    assert_eq!(
        (pending.len(), pending[0].attempts, pending[0].last_error.as_deref()),
        (1, 1, Some("refused"))
    );
    store.alert_attempted(&alert, 17, None).await.unwrap();
    assert!(store.undelivered_alerts().await.unwrap().is_empty());
    let all = store.alerts("o1").await.unwrap();
    assert_eq!(
        (all[0].delivered_at, all[0].attempts, all[0].last_error.clone()),
        (Some(17), 2, None)
    );

    assert_eq!(store.marketplace_link("o1").await.unwrap(), None);
    let link = MarketplaceRow {
        marketplace: "azure".into(),
        account: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        licence: None,
        linked_at: 3,
    };
    store.link_marketplace("o1", &link).await.unwrap();
    let relinked = MarketplaceRow {
        marketplace: "gcp".into(),
        account: "usage-id".into(),
        ..link
    };
    store.link_marketplace("o1", &relinked).await.unwrap();
    assert_eq!(store.marketplace_link("o1").await.unwrap(), Some(relinked));
}

/// Issuing: a closed month's invoice is frozen six hours after the month under the next
/// number, once however often (and however concurrently) issuing runs; credits and the
/// commitment are drawn down on it; usage recorded for the month after it was issued
/// leaves it as it was and rides on the next invoice, exactly once.
async fn issuing(url: &str) {
    use highrise_control::invoicing::{self, Pricing};
    let store = Store::open(url).await.unwrap();
    let book = highrise_billing::prices::PriceBook::repository().unwrap();
    let prices = Pricing {
        book: &book,
        version: "test",
    };
    metered_org(&store).await;
    for (n, host) in [(1, "h-od"), (2, "h-spot")] {
        let id = format!("c{n}");
        store
            .create_cluster(
                &cluster_row(&id, "o1", "p1", &format!("db{n}"), &format!("ep-{n}")),
                &op_row(&format!("op{n}"), "o1", &id, "create"),
            )
            .await
            .unwrap();
        store
            .insert_instance(&instance_row(&format!("i{n}"), &id, host))
            .await
            .unwrap();
    }
    let s = |ms: i64| ms / 1000;
    let end = MONTH_START_MS + MONTH_MS; // 2026-12-01
    let od = Life {
        id: "i1".into(),
        host: "h-od",
        cluster: "c1".into(),
        start: MONTH_START_MS,
        end: None,
    };
    // The spot instance started four hours before the month's end; its host's first
    // heartbeat arrives only on 2 December, after November was issued.
    let spot = Life {
        id: "i2".into(),
        host: "h-spot",
        cluster: "c2".into(),
        start: end - 4 * HOUR_MS,
        end: None,
    };
    store
        .record_readings("h-od", &[od.reading(end - HOUR_MS).unwrap()])
        .await
        .unwrap();
    store
        .grant_credit(&CreditRow {
            id: "cr1".into(),
            org_id: "o1".into(),
            amount: "10.00".into(),
            reason: "SLA".into(),
            granted_at: s(MONTH_START_MS),
        })
        .await
        .unwrap();
    let terms = BillingTermsRow {
        commitment: Some("100.00".into()),
        commitment_from: Some(s(MONTH_START_MS)),
        commitment_to: Some(s(end + 40 * 24 * HOUR_MS)),
        ..Default::default()
    };
    store.set_billing_terms("o1", &terms, 0).await.unwrap();

    // Not due before six hours after the month; a beat in that time still lands on it.
    assert_eq!(
        invoicing::issue_due(&store, prices, s(end + 6 * HOUR_MS) - 1)
            .await
            .unwrap(),
        0
    );
    let closed = invoicing::invoice(&store, prices, "o1", s(MONTH_START_MS), s(end))
        .await
        .unwrap();
    assert_eq!((closed.status.as_str(), closed.number.as_ref()), ("closed", None));
    store
        .record_readings("h-od", &[od.reading(end + HOUR_MS).unwrap()])
        .await
        .unwrap();

    // Another org whose usage has no price: its invoice cannot be made; o1's still is.
    store
        .create_org(&org_row("o2", "beta"), "p2", &key_row("k2", "o2"))
        .await
        .unwrap();
    let mut odd = cluster_row("c9", "o2", "p2", "odd", "ep-9");
    odd.plan = "xlarge".into();
    store
        .create_cluster(&odd, &op_row("op9", "o2", "c9", "create"))
        .await
        .unwrap();
    store.insert_instance(&instance_row("i9", "c9", "h-od")).await.unwrap();
    let unpriced = Life {
        id: "i9".into(),
        host: "h-od",
        cluster: "c9".into(),
        start: MONTH_START_MS,
        end: None,
    };
    store
        .record_readings("h-od", &[unpriced.reading(end - HOUR_MS).unwrap()])
        .await
        .unwrap();

    let due_at = s(end + 6 * HOUR_MS);
    let (a, b) = tokio::join!(
        invoicing::issue_due(&store, prices, due_at),
        invoicing::issue_due(&store, prices, due_at)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1, "issued once by two racing rounds");
    assert_eq!(invoicing::issue_due(&store, prices, due_at + 60).await.unwrap(), 0);
    assert_eq!(store.last_issued_month("o2").await.unwrap(), None);
    let err = invoicing::invoice(&store, prices, "o2", s(MONTH_START_MS), due_at)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("instance_ms:xlarge:on_demand"), "{err:#}");
    let nov = invoicing::invoice(&store, prices, "o1", s(MONTH_START_MS), due_at)
        .await
        .unwrap();
    assert_eq!(
        (nov.status.as_str(), nov.number.as_deref(), nov.issued_at),
        ("issued", Some("HR-000001"), Some(due_at))
    );
    assert_eq!(nov.lines.len(), 1);
    assert_eq!(
        nov.lines[0].quantity,
        720 * HOUR_MS as u64,
        "the whole month, not the hour after"
    );
    let price = book
        .price_at(&nov.lines[0].dimension, "local-a", "region-1", s(MONTH_START_MS))
        .unwrap();
    let total = (Decimal::from(720) * price.amount).round_dp(2);
    assert_eq!(nov.total, format!("{total:.2}"));
    let d = |x: &str| x.parse::<Decimal>().unwrap();
    assert_eq!(d(&nov.credits_applied), Decimal::from(10));
    assert_eq!(
        d(&nov.commitment_applied),
        (total - Decimal::from(10)).min(Decimal::from(100))
    );
    assert_eq!(
        d(&nov.due),
        total - d(&nov.credits_applied) - d(&nov.commitment_applied)
    );

    // The spot host's late beat: four hours of November recorded after its invoice.
    let late_at = end + 26 * HOUR_MS;
    store
        .record_readings("h-spot", &[spot.reading(late_at).unwrap()])
        .await
        .unwrap();
    store
        .record_readings("h-od", &[od.reading(late_at).unwrap()])
        .await
        .unwrap();
    let nov_usage = store
        .metered_usage("o1", Some("c2"), s(MONTH_START_MS), s(end), false)
        .await
        .unwrap();
    assert_eq!(nov_usage[0].quantity, 4 * HOUR_MS, "recorded in November");
    let again = invoicing::invoice(&store, prices, "o1", s(MONTH_START_MS), s(late_at))
        .await
        .unwrap();
    assert_eq!(again, nov, "an issued invoice does not change");

    // December's draft carries them, once; what is left of the credit and commitment
    // goes on.
    let dec = invoicing::invoice(&store, prices, "o1", s(end), s(late_at))
        .await
        .unwrap();
    assert_eq!(dec.status, "draft");
    let carried: Vec<_> = dec.lines.iter().filter(|l| l.carried).collect();
    assert_eq!(carried.len(), 1);
    assert_eq!(
        (
            carried[0].cluster_id.as_str(),
            carried[0].quantity,
            carried[0].first_hour
        ),
        ("c2", 4 * HOUR_MS as u64, s(end - HOUR_MS))
    );
    assert_eq!(
        dec.lines.iter().filter(|l| !l.carried).map(|l| l.quantity).sum::<u64>(),
        2 * 26 * HOUR_MS as u64,
        "December's own hours of both instances"
    );
    assert_eq!(dec.credits_applied, "0.00");
    let left = Decimal::from(100) - d(&nov.commitment_applied);
    assert_eq!(d(&dec.commitment_applied), d(&dec.total).min(left));

    // December issued on 1 January: the carried hours are held, and not carried again.
    let jan = end + 31 * 24 * HOUR_MS;
    assert_eq!(
        invoicing::issue_due(&store, prices, s(jan + 6 * HOUR_MS))
            .await
            .unwrap(),
        1
    );
    let dec = invoicing::invoice(&store, prices, "o1", s(end), s(jan + 6 * HOUR_MS))
        .await
        .unwrap();
    assert_eq!(dec.number.as_deref(), Some("HR-000002"));
    assert_eq!(dec.lines.iter().filter(|l| l.carried).count(), 1);
    let january = invoicing::invoice(&store, prices, "o1", s(jan), s(jan + 7 * HOUR_MS))
        .await
        .unwrap();
    assert!(january.lines.iter().all(|l| !l.carried), "{:?}", january.lines);
    let held: i64 = store
        .invoiced_usage("o1")
        .await
        .unwrap()
        .iter()
        .map(|u| u.quantity)
        .sum();
    let recorded: i64 = store
        .metered_usage("o1", None, 0, s(jan), false)
        .await
        .unwrap()
        .iter()
        .map(|u| u.quantity)
        .sum();
    assert_eq!(held, recorded, "every unit recorded before January invoiced once");
}

#[tokio::test]
async fn invoices_are_issued_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    issuing(&format!("sqlite://{}", dir.path().join("control.db").display())).await;
}

#[tokio::test]
async fn invoices_are_issued_once_on_postgres() {
    let pg = ScratchServer::start(&[]).await.unwrap();
    issuing(&pg.admin_url()).await;
}

#[tokio::test]
async fn a_month_of_metering_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    a_month_of_heartbeats(&url).await;
    terms_and_alerts(&url).await;
}

#[tokio::test]
async fn a_month_of_metering_on_postgres() {
    let pg = ScratchServer::start(&[]).await.unwrap();
    a_month_of_heartbeats(&pg.admin_url()).await;
    terms_and_alerts(&pg.admin_url()).await;
}

/// A proxy's traffic: each proxy's counter of an endpoint is a meter of its own, recorded
/// under the endpoint's cluster and the proxy's place, spread over the hours it spans; a
/// repeat adds nothing, a closed endpoint's last reading is taken, unknown endpoints and
/// kinds a proxy does not count add nothing, and a host cannot move a proxy's meter.
async fn traffic(url: &str) {
    use highrise_api::MeterKind;
    let store = Store::open(url).await.unwrap();
    metered_org(&store).await;
    store
        .create_cluster(
            &cluster_row("c1", "o1", "p1", "db1", "ep-1"),
            &op_row("op1", "o1", "c1", "create"),
        )
        .await
        .unwrap();
    let reading = |kind, value, at_ms, closed| MeterReading {
        source: "ep-1".into(),
        kind,
        value,
        at_ms,
        since_ms: MONTH_START_MS,
        closed,
    };
    let t0 = MONTH_START_MS;
    // Half an hour into hour 0 to half an hour into hour 1: 3,000 bytes out, 10 in.
    let first = [
        reading(MeterKind::ProxyBytesIn, 10, t0 + 90 * 60_000, false),
        reading(MeterKind::ProxyBytesOut, 3_000, t0 + 90 * 60_000, false),
    ];
    let o = store
        .record_proxy_readings("proxy-a", "local-a", "region-1", &first)
        .await
        .unwrap();
    assert_eq!((o.taken, o.stale, o.unknown), (2, 0, 0));
    let again = store
        .record_proxy_readings("proxy-a", "local-a", "region-1", &first)
        .await
        .unwrap();
    assert_eq!((again.taken, again.stale), (0, 2));
    // The other cloud's proxy relays for the same endpoint: its own meter, its own place.
    let b = [reading(MeterKind::ProxyBytesOut, 500, t0 + 30 * 60_000, true)];
    let o = store
        .record_proxy_readings("proxy-b", "local-b", "region-1", &b)
        .await
        .unwrap();
    assert_eq!(o.taken, 1);
    // proxy-b lost its counters and began again after its last report: the new counter's
    // bytes are all new (not a regression to take as a baseline).
    let mut fresh = reading(MeterKind::ProxyBytesOut, 40, t0 + 150 * 60_000, false);
    fresh.since_ms = t0 + 130 * 60_000;
    let o = store
        .record_proxy_readings("proxy-b", "local-b", "region-1", &[fresh])
        .await
        .unwrap();
    assert_eq!((o.taken, o.regressed.len()), (1, 0));
    // Unknown endpoint; a kind a proxy does not count; a host moving the proxy's meter.
    let mut stray = reading(MeterKind::ProxyBytesOut, 1, t0 + 100 * 60_000, false);
    stray.source = "ep-nobody".into();
    let instance = reading(MeterKind::InstanceMs, 1, t0 + 100 * 60_000, false);
    let o = store
        .record_proxy_readings("proxy-a", "local-a", "region-1", &[stray, instance])
        .await
        .unwrap();
    assert_eq!((o.taken, o.unknown), (0, 2));
    let mut as_host = reading(MeterKind::ProxyBytesOut, 9_999, t0 + 100 * 60_000, false);
    as_host.source = "proxy:proxy-a:ep-1".into();
    let o = store.record_readings("h-od", &[as_host]).await.unwrap();
    assert_eq!((o.taken, o.unknown), (0, 1));

    let rows = store
        .metered_usage("o1", None, t0 / 1000, t0 / 1000 + 4 * 3600, true)
        .await
        .unwrap();
    let mut got: Vec<(String, String, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.dimension.clone(),
                r.cloud.clone(),
                r.hour.unwrap() - t0 / 1000,
                r.quantity,
            )
        })
        .collect();
    got.sort();
    let want = [
        ("proxy_bytes_in", "local-a", 0, 6),
        ("proxy_bytes_in", "local-a", 3600, 4),
        ("proxy_bytes_out", "local-a", 0, 2_000),
        ("proxy_bytes_out", "local-a", 3600, 1_000),
        ("proxy_bytes_out", "local-b", 0, 500),
        ("proxy_bytes_out", "local-b", 7200, 40),
    ]
    .map(|(d, c, h, q)| (d.to_string(), c.to_string(), h, q));
    assert_eq!(got, want);
    assert!(rows.iter().all(|r| r.cluster_id == "c1" && r.region == "region-1"));
}

#[tokio::test]
async fn a_proxys_traffic_is_metered_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    traffic(&format!("sqlite://{}", dir.path().join("control.db").display())).await;
}

#[tokio::test]
async fn a_proxys_traffic_is_metered_on_postgres() {
    let pg = ScratchServer::start(&[]).await.unwrap();
    traffic(&pg.admin_url()).await;
}

/// Object storage, measured by the control plane: a measurement starts a cluster's meter
/// in a store, each next one adds the time since at the size measured before (MiB-ms,
/// spread over the hours), a repeat adds nothing, each store is a meter of its own, and a
/// store holding nothing of the cluster gets none.
async fn objects(url: &str) {
    let store = Store::open(url).await.unwrap();
    metered_org(&store).await;
    store
        .create_cluster(
            &cluster_row("c1", "o1", "p1", "db1", "ep-1"),
            &op_row("op1", "o1", "c1", "create"),
        )
        .await
        .unwrap();
    // An org that is gone (its clusters deleted first): its clusters are not measured.
    store
        .create_org(&org_row("o9", "gone"), "p9", &key_row("k9", "o9"))
        .await
        .unwrap();
    let c9 = cluster_row("c9", "o9", "p9", "db9", "ep-9");
    store
        .create_cluster(&c9, &op_row("op9", "o9", "c9", "create"))
        .await
        .unwrap();
    store
        .delete_cluster(&c9, &op_row("op9d", "o9", "c9", "delete_cluster"))
        .await
        .unwrap();
    store.delete_org("o9", 1).await.unwrap();
    let listed = store.metered_clusters().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.cluster_id.as_str(), c.cloud.as_str()))
            .collect::<Vec<_>>(),
        [("c1", "local-a")]
    );
    let t0 = MONTH_START_MS;
    const MIB: u64 = 1 << 20;
    let at = |cloud: &'static str, bytes: u64, at_ms: i64| Stored {
        org_id: "o1",
        cluster_id: "c1",
        cluster_name: "db1",
        cloud,
        region: "region-1",
        bytes,
        at_ms,
    };
    assert!(!store.record_stored(&at("local-b", 0, t0)).await.unwrap());
    assert!(store
        .record_stored(&at("local-a", 10 * MIB + 5, t0 + 30 * 60_000))
        .await
        .unwrap());
    assert!(store
        .record_stored(&at("local-a", 20 * MIB, t0 + 90 * 60_000))
        .await
        .unwrap());
    assert!(!store
        .record_stored(&at("local-a", 99 * MIB, t0 + 90 * 60_000))
        .await
        .unwrap());
    assert!(store.record_stored(&at("local-a", 0, t0 + 120 * 60_000)).await.unwrap());
    // Nothing stored since: the meter stays, adding nothing.
    assert!(store.record_stored(&at("local-a", 0, t0 + 200 * 60_000)).await.unwrap());
    assert!(store.record_stored(&at("local-b", 3 * MIB, t0)).await.unwrap());
    assert!(store
        .record_stored(&at("local-b", 3 * MIB, t0 + 60 * 60_000))
        .await
        .unwrap());

    let rows = store
        .metered_usage("o1", None, t0 / 1000, t0 / 1000 + 4 * 3600, true)
        .await
        .unwrap();
    let mut got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.cloud.clone(), r.hour.unwrap() - t0 / 1000, r.quantity))
        .collect();
    got.sort();
    let min = 60_000;
    assert_eq!(
        got,
        [
            // 10 MiB for 30 min of hour 0 and 30 of hour 1, then 20 MiB for 30 more.
            ("local-a".to_string(), 0, 10 * 30 * min),
            ("local-a".to_string(), 3600, 10 * 30 * min + 20 * 30 * min),
            ("local-b".to_string(), 0, 3 * 60 * min),
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.dimension == "object_storage_mib_ms" && r.cluster_id == "c1"));
}

#[tokio::test]
async fn object_storage_is_metered_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    objects(&format!("sqlite://{}", dir.path().join("control.db").display())).await;
}

#[tokio::test]
async fn object_storage_is_metered_on_postgres() {
    let pg = ScratchServer::start(&[]).await.unwrap();
    objects(&pg.admin_url()).await;
}

/// Delivers a heartbeat's readings as an agent does: again while the store answers that a
/// meter moved meanwhile — a delivery cut off before (a control plane killed while writing)
/// may still be finishing on a PostgreSQL server, and whether it committed is not known.
async fn deliver(store: &Store, host: &str, beat: &[MeterReading]) -> MeterOutcome {
    for _ in 0..200 {
        match store.record_readings(host, beat).await {
            Err(StoreError::Conflict(_)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            r => return r.unwrap(),
        }
    }
    panic!("the readings were never taken: the meter kept moving");
}
