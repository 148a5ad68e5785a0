//! A cluster's charts over the last half hour, per member, as server-rendered SVG:
//! connections, transactions a second, replication lag, storage, WAL archive lag — from
//! the samples the control plane keeps of each member's heartbeats
//! (`GET /v1/clusters/{c}/metrics`). The part refreshes itself every 10 s.

use super::*;
use crate::metrics::{lag, rate};
use axum::extract::Path;
use axum::response::Html;
use highrise_api::{ClusterMetrics, MemberMetrics, MetricSample};
use maud::{html, Markup};

/// Lines' colours, a member each (the primary first); the legend's swatches are the
/// stylesheet's `.swatch.c0` … `.c3`.
const COLOURS: [&str; 4] = ["#1f5fbf", "#c2410c", "#15803d", "#7c3aed"];
const W: f64 = 360.0;
/// The shortest span a chart shows.
const MIN_SPAN_MS: i64 = 5 * 60 * 1000;
const H: f64 = 120.0;

#[derive(Clone, Copy)]
enum Unit {
    Count,
    PerSecond,
    Bytes,
}

fn amount(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::PerSecond => format!("{v:.1}/s"),
        Unit::Bytes => super::page::bytes(v.max(0.0) as u64),
    }
}

/// One line per labelled series of `(at_ms, value)` over `[from, to]`.
fn line_chart(id: &str, title: &str, unit: Unit, series: &[(String, Vec<(i64, f64)>)], from: i64, to: i64) -> Markup {
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let span = (to - from).max(1) as f64;
    let x = |t: i64| (t - from) as f64 / span * W;
    let y = |v: f64| H - v / top * H;
    let latest: Vec<String> = series
        .iter()
        .filter_map(|(label, p)| p.last().map(|(_, v)| format!("{label} {}", amount(unit, *v))))
        .collect();
    let summary = if latest.is_empty() {
        format!("{title}: no samples yet")
    } else {
        format!("{title}, latest: {}", latest.join(", "))
    };
    html! {
        figure.chart.small {
            figcaption { strong { (title) } span.muted { " up to " (amount(unit, max)) } }
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(summary) data-chart=(id) preserveAspectRatio="none" {
                line x1="0" y1=(H) x2=(W) y2=(H) stroke="#b9c2cd" {}
                @for (i, (label, points)) in series.iter().enumerate() {
                    @if points.len() > 1 {
                        polyline fill="none" stroke=(COLOURS[i % COLOURS.len()]) stroke-width="2" vector-effect="non-scaling-stroke"
                            data-series=(label)
                            points=(points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ")) {}
                    }
                }
            }
            @if series.len() > 1 {
                p.legend { @for (i, (label, _)) in series.iter().enumerate() {
                    span { span class={ "swatch c" (i % COLOURS.len()) } {} (label) }
                } }
            }
        }
    }
}

fn points(samples: &[MetricSample], f: impl Fn(&MetricSample) -> Option<u64>) -> Vec<(i64, u64)> {
    samples.iter().filter_map(|s| f(s).map(|v| (s.at_ms, v))).collect()
}

fn as_f64(p: Vec<(i64, u64)>) -> Vec<(i64, f64)> {
    p.into_iter().map(|(t, v)| (t, v as f64)).collect()
}

fn label(m: &MemberMetrics) -> String {
    format!("{} ({})", m.role, m.cloud)
}

pub(super) fn part(name: &str, metrics: &ClusterMetrics, now_ms: i64) -> Markup {
    // The window, or less while the samples cover less (a young cluster's lines would sit
    // at the right edge): at least five minutes.
    let first = metrics
        .members
        .iter()
        .filter_map(|m| m.samples.first().map(|s| s.at_ms))
        .min()
        .unwrap_or(now_ms);
    let from = (now_ms - metrics.window_ms).max(first.min(now_ms - MIN_SPAN_MS));
    let mut members: Vec<&MemberMetrics> = metrics.members.iter().collect();
    members.sort_by_key(|m| m.role != "primary");
    let each = |f: &dyn Fn(&MemberMetrics) -> Vec<(i64, f64)>| -> Vec<(String, Vec<(i64, f64)>)> {
        members.iter().map(|m| (label(m), f(m))).collect()
    };
    let primary_lsn = members
        .iter()
        .find(|m| m.role == "primary")
        .map(|p| points(&p.samples, |s| s.lsn))
        .unwrap_or_default();
    let standbys: Vec<(String, Vec<(i64, f64)>)> = members
        .iter()
        .filter(|m| m.role != "primary")
        .map(|m| (label(m), as_f64(lag(&primary_lsn, &points(&m.samples, |s| s.lsn)))))
        .collect();
    let archive: Vec<(String, Vec<(i64, f64)>)> = members
        .iter()
        .filter(|m| m.role == "primary")
        .map(|m| {
            let behind = m
                .samples
                .iter()
                .filter_map(|s| Some((s.at_ms, s.lsn?.saturating_sub(s.archived_lsn?) as f64)))
                .collect();
            (label(m), behind)
        })
        .collect();
    html! {
        section #charts.card hx-get={ "/console/clusters/" (segment(name)) "/charts" } hx-trigger="every 10s" hx-swap="outerHTML" {
            h2 { "Last " ((now_ms - from + 59_999) / 60_000) " minutes" }
            div.charts {
                (line_chart("connections", "Connections", Unit::Count, &each(&|m| as_f64(points(&m.samples, |s| s.connections.map(u64::from)))), from, now_ms))
                (line_chart("tps", "Transactions", Unit::PerSecond, &each(&|m| rate(&points(&m.samples, |s| s.xacts))), from, now_ms))
                (line_chart("lag", "Replication lag", Unit::Bytes, &standbys, from, now_ms))
                (line_chart("storage", "Storage", Unit::Bytes, &each(&|m| as_f64(points(&m.samples, |s| s.storage_bytes))), from, now_ms))
                (line_chart("archive", "WAL archive lag", Unit::Bytes, &archive, from, now_ms))
            }
            p.muted { "A sample every " (metrics.sample_every_ms / 1000) " s per member, kept by the control plane in memory: the charts start afresh when it restarts." }
        }
    }
}

pub(super) async fn charts(signed: Signed, Path(name): Path<String>) -> Result<Html<String>, Failure> {
    let metrics: ClusterMetrics = signed
        .api
        .get(&format!("/v1/clusters/{}/metrics", segment(&name)))
        .await?;
    Ok(Html(part(&name, &metrics, crate::store::now_ms()).into_string()))
}
