//! What a simulation run measured, per policy: availability, outages, lost acknowledged
//! commits and cost per cluster-month by kind — as a text table, JSON, and SVG charts.

use crate::cell::CellResult;
use crate::{Policy, SimConfig, MONTH_SECS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Cost per cluster-month, USD.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    pub spot_compute: f64,
    pub on_demand_compute: f64,
    pub disks: f64,
    pub object_storage: f64,
    pub traffic: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub policy: Policy,
    pub name: String,
    /// Share of the time a cluster accepts writes (from its first write on).
    pub availability: f64,
    pub outages: usize,
    pub outage_p50_secs: f64,
    pub outage_p99_secs: f64,
    pub outage_max_secs: f64,
    pub lost_acknowledged_commits: f64,
    /// Clusters that never accepted a write.
    pub never_up: u32,
    pub cost: Cost,
    pub events: BTreeMap<String, u64>,
    /// The first cluster's members over time: (seconds, what, market).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<(f64, String, String)>>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

impl PolicyResult {
    pub(crate) fn combine(cfg: &SimConfig, policy: Policy, cells: Vec<CellResult>) -> Self {
        let cluster_months = f64::from(cfg.clusters) * cfg.days * 86_400.0 / MONTH_SECS as f64;
        let up: f64 = cells.iter().map(|c| c.up_secs).sum();
        let watched: f64 = cells.iter().map(|c| c.watched_secs).sum();
        let mut outages: Vec<f64> = cells.iter().flat_map(|c| c.outages.iter().copied()).collect();
        outages.sort_by(f64::total_cmp);
        let per = |f: fn(&CellResult) -> f64| cells.iter().map(f).sum::<f64>() / cluster_months;
        let mut cost = Cost {
            spot_compute: per(|c| c.spend.spot),
            on_demand_compute: per(|c| c.spend.on_demand),
            disks: per(|c| c.spend.disks),
            object_storage: per(|c| c.spend.storage),
            traffic: per(|c| c.spend.traffic),
            total: 0.0,
        };
        cost.total = cost.spot_compute + cost.on_demand_compute + cost.disks + cost.object_storage + cost.traffic;
        let mut events = BTreeMap::new();
        for c in &cells {
            for (k, v) in &c.events {
                *events.entry(k.clone()).or_default() += v;
            }
        }
        PolicyResult {
            policy,
            name: policy.name().to_string(),
            availability: if watched > 0.0 { up / watched } else { 0.0 },
            outages: outages.len(),
            outage_p50_secs: percentile(&outages, 0.5),
            outage_p99_secs: percentile(&outages, 0.99),
            outage_max_secs: outages.last().copied().unwrap_or(0.0),
            lost_acknowledged_commits: cells.iter().map(|c| c.lost_commits).sum(),
            never_up: cells.iter().map(|c| c.never_up).sum(),
            cost,
            events,
            timeline: cells.into_iter().find_map(|c| c.timeline),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clusters: u32,
    pub days: f64,
    pub cluster_months: f64,
    pub seed: u64,
    pub market: String,
    pub policies: Vec<PolicyResult>,
    /// The managed multi-AZ price of the same shapes, per cluster-month.
    pub managed_per_cluster_month: f64,
    pub wall_secs: f64,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} clusters x {} days = {:.0} cluster-months; market: {}; seed {}; {:.1} s ({:.0} cluster-months/s per policy)",
            self.clusters,
            self.days,
            self.cluster_months,
            self.market,
            self.seed,
            self.wall_secs,
            self.cluster_months * self.policies.len() as f64 / self.wall_secs.max(1e-9)
        );
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>8} {:>9} {:>9} {:>10} {:>9} {:>11} {:>8} {:>10} {:>7} {:>8} {:>8} {:>10}",
            "POLICY",
            "AVAILABLE",
            "OUTAGES",
            "P50 (s)",
            "P99 (s)",
            "MAX (s)",
            "LOST",
            "$/CL-MONTH",
            "SPOT",
            "ON-DEMAND",
            "DISKS",
            "STORAGE",
            "TRAFFIC",
            "VS MANAGED"
        );
        for p in &self.policies {
            let _ = writeln!(
                out,
                "{:<14} {:>9.4}% {:>8} {:>9.1} {:>9.1} {:>10.1} {:>9.0} {:>11.2} {:>8.2} {:>10.2} {:>7.2} {:>8.2} {:>8.2} {:>9.1}%",
                p.name,
                p.availability * 100.0,
                p.outages,
                p.outage_p50_secs,
                p.outage_p99_secs,
                p.outage_max_secs,
                p.lost_acknowledged_commits,
                p.cost.total,
                p.cost.spot_compute,
                p.cost.on_demand_compute,
                p.cost.disks,
                p.cost.object_storage,
                p.cost.traffic,
                p.cost.total / self.managed_per_cluster_month.max(1e-9) * 100.0
            );
            if p.never_up > 0 {
                let _ = writeln!(out, "{:<14} ({} clusters never accepted a write)", "", p.never_up);
            }
        }
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>8} {:>9} {:>9} {:>10} {:>9} {:>11.2} {:>8} {:>10} {:>7} {:>8} {:>8} {:>9.1}%",
            "managed multi-AZ", "(SLA)", "", "", "", "", "", self.managed_per_cluster_month, "", "", "", "", "", 100.0
        );
        out
    }

    /// Cost per cluster-month against availability, one dot per policy (and the managed
    /// price as a line).
    pub fn svg_cost_vs_availability(&self) -> String {
        let (w, h, m) = (640.0, 400.0, 60.0);
        let max_cost = self
            .policies
            .iter()
            .map(|p| p.cost.total)
            .fold(self.managed_per_cluster_month, f64::max)
            * 1.1;
        // Availability on a "nines" scale: -log10(1 - a), clipped to 6 nines.
        let nines = |a: f64| (-(1.0 - a).max(1e-6).log10()).min(6.0);
        let x = |a: f64| m + nines(a) / 6.0 * (w - 2.0 * m);
        let y = |c: f64| h - m - c / max_cost * (h - 2.0 * m);
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>
<text x="{cx}" y="{ty}" text-anchor="middle">availability (nines: 2 = 99%, 4 = 99.99%)</text>
<text x="14" y="{cy}" transform="rotate(-90 14 {cy})" text-anchor="middle">USD per cluster-month</text>
"#,
            b = h - m,
            r = w - m,
            cx = w / 2.0,
            ty = h - 15.0,
            cy = h / 2.0
        );
        for n in 0..=6 {
            let xv = m + f64::from(n) / 6.0 * (w - 2.0 * m);
            let _ = writeln!(
                s,
                r#"<text x="{xv}" y="{}" text-anchor="middle">{n}</text>"#,
                h - m + 16.0
            );
        }
        let my = y(self.managed_per_cluster_month);
        let _ = writeln!(
            s,
            r##"<line x1="{m}" y1="{my}" x2="{}" y2="{my}" stroke="#c00" stroke-dasharray="4"/><text x="{}" y="{}" fill="#c00" text-anchor="end">managed multi-AZ ${:.0}</text>"##,
            w - m,
            w - m,
            my - 4.0,
            self.managed_per_cluster_month
        );
        for p in &self.policies {
            let (px, py) = (x(p.availability), y(p.cost.total));
            // Labels near the right edge read leftwards.
            let (tx, anchor) = if px > w / 2.0 {
                (px - 8.0, "end")
            } else {
                (px + 8.0, "start")
            };
            let _ = writeln!(
                s,
                r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#036"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}">{} ${:.0}, {:.3}%</text>"##,
                py - 6.0,
                p.name,
                p.cost.total,
                p.availability * 100.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The first cluster's member events over time, per policy.
    pub fn svg_timeline(&self) -> String {
        let rows: Vec<&PolicyResult> = self.policies.iter().filter(|p| p.timeline.is_some()).collect();
        let (w, row_h, m) = (900.0, 60.0, 110.0);
        let h = m / 2.0 + row_h * rows.len() as f64 + 40.0;
        let span = self.days * 86_400.0;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="{w}" height="{h}" fill="white"/>
<text x="10" y="16">the first cluster's members over {} days: green = placed on spot, orange = on on-demand, grey = removed, blue = promoted</text>
"#,
            self.days
        );
        for (r, p) in rows.iter().enumerate() {
            let y0 = 30.0 + row_h * r as f64;
            let _ = writeln!(s, r#"<text x="8" y="{}">{}</text>"#, y0 + row_h / 2.0, p.name);
            let _ = writeln!(
                s,
                r##"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
                y0 + row_h / 2.0,
                w - 10.0,
                y0 + row_h / 2.0
            );
            for (t, what, market) in p.timeline.as_ref().into_iter().flatten() {
                let x = m + t / span * (w - m - 10.0);
                let colour = if what.contains("promoted") {
                    "#04c"
                } else if what.contains("removed") {
                    "#888"
                } else if market == "spot" {
                    "#2a2"
                } else {
                    "#e80"
                };
                let _ = writeln!(
                    s,
                    r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}"><title>{:.0} s: {what}</title></line>"#,
                    y0 + 8.0,
                    y0 + row_h - 8.0,
                    t
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}
