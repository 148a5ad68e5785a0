//! Simulator tests: small fleets, fast, deterministic.

use super::*;

fn config(market: Market, clusters: u32, days: f64) -> SimConfig {
    SimConfig {
        market,
        prices: PriceBook::repository().unwrap(),
        calibration: Calibration::repository().unwrap(),
        clusters,
        days,
        seed: 7,
        shapes: vec![Shape::PrimaryPlusOne, Shape::SingleSync, Shape::PrimaryPlusTwo],
        plans: vec!["small".into()],
        policies: Policy::ALL.to_vec(),
        cell_size: 8,
        spot: SpotPolicy::default(),
        timeline: true,
        ha_sync: false,
    }
}

fn result(r: &report::Report, p: Policy) -> &report::PolicyResult {
    r.policies.iter().find(|x| x.policy == p).unwrap()
}

#[test]
fn the_repository_calibration_parses_and_bad_ones_are_refused() {
    Calibration::repository().unwrap();
    let bad = REPOSITORY_CALIBRATION.replace("host_boot_secs = 45.0", "host_boot_secs = -1.0");
    assert!(Calibration::parse(&bad).unwrap_err().to_string().contains("positive"));
    let unknown = format!("{REPOSITORY_CALIBRATION}\nsurprise = 1\n");
    assert!(Calibration::parse(&unknown).is_err());
}

#[test]
fn trace_names_become_pools_of_regions() {
    assert_eq!(
        trace_pool("availability/1-node/aws-02-15-2023/us-east-1f_v100_1.json"),
        (
            "aws-02-15-2023".into(),
            "us-east-1".into(),
            "us-east-1f".into(),
            "v100_1".into()
        )
    );
    assert_eq!(trace_pool("odd.json").0, "traces");
}

#[test]
fn without_interruptions_every_policy_is_always_up_and_spot_is_cheaper() {
    let r = run(&config(Market::Synthetic { per_month: 0.0 }, 6, 1.0)).unwrap();
    for p in &r.policies {
        assert!(p.availability > 0.9999, "{}: {}", p.name, p.availability);
        assert_eq!(p.lost_acknowledged_commits, 0.0, "{}", p.name);
        assert_eq!(p.never_up, 0, "{}", p.name);
    }
    let hr = result(&r, Policy::Highrise);
    let od = result(&r, Policy::OnDemand);
    assert!(
        hr.cost.on_demand_compute == 0.0 && hr.cost.spot_compute > 0.0,
        "{:?}",
        hr.cost
    );
    assert!(hr.cost.total < od.cost.total * 0.6, "{:?} vs {:?}", hr.cost, od.cost);
    assert!(hr.cost.total < r.managed_per_cluster_month, "{:?}", hr.cost);
}

#[test]
fn runs_are_deterministic_per_seed() {
    let cfg = config(Market::Synthetic { per_month: 30.0 }, 6, 2.0);
    let a = run(&cfg).unwrap();
    let b = run(&cfg).unwrap();
    for (x, y) in a.policies.iter().zip(&b.policies) {
        assert_eq!(x.availability, y.availability, "{}", x.name);
        assert_eq!(x.outages, y.outages, "{}", x.name);
        assert_eq!(x.cost.total, y.cost.total, "{}", x.name);
    }
}

#[test]
fn under_frequent_interruptions_highrise_loses_nothing_and_stays_up_where_naive_spot_does_not() {
    // 30 outages per pool-month of an hour each: far harsher than the clouds' best pools.
    let r = run(&config(Market::Synthetic { per_month: 30.0 }, 6, 3.0)).unwrap();
    let hr = result(&r, Policy::Highrise);
    let naive = result(&r, Policy::NaiveSpot);
    assert_eq!(hr.lost_acknowledged_commits, 0.0);
    assert!(
        hr.events.get("spot notice").copied().unwrap_or(0) > 0,
        "{:?}",
        hr.events
    );
    assert!(
        hr.availability > naive.availability,
        "{} vs {}",
        hr.availability,
        naive.availability
    );
    assert!(hr.timeline.as_ref().is_some_and(|t| !t.is_empty()));
    let text = r.text();
    assert!(text.contains("highrise") && text.contains("managed multi-AZ"), "{text}");
    assert!(r.svg_cost_vs_availability().starts_with("<svg"));
    assert!(r.svg_timeline().contains("highrise"));
}

#[test]
fn nothing_to_simulate_is_refused() {
    let mut cfg = config(Market::Synthetic { per_month: 0.0 }, 0, 1.0);
    assert!(run(&cfg).is_err());
    cfg.clusters = 1;
    cfg.plans = vec!["huge".into()];
    assert!(run(&cfg).unwrap_err().to_string().contains("huge"));
}
