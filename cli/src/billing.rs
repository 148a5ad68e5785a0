//! `highrise usage`: the org's metered usage, per cluster and dimension.

use crate::client::{print_json, utc, Api, Conn, Output};
use anyhow::{Context, Result};
use highrise_api::Usage;

#[derive(clap::Args)]
pub struct UsageArgs {
    /// One cluster: its name, or its id (a deleted cluster's too).
    #[arg(long)]
    cluster: Option<String>,
    /// From this time: RFC 3339 with its offset, a date (midnight UTC) or Unix seconds
    /// (default: the start of this month, UTC).
    #[arg(long, value_parser = unix_seconds)]
    from: Option<i64>,
    /// Up to this time (default: now).
    #[arg(long, value_parser = unix_seconds)]
    to: Option<i64>,
    /// One line per hour instead of sums over the range.
    #[arg(long)]
    hourly: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn usage(args: UsageArgs) -> Result<()> {
    let api = Api::from(&args.conn)?;
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(c) = args.cluster {
        q.push(("cluster", c));
    }
    for (k, v) in [("from", args.from), ("to", args.to)] {
        if let Some(v) = v {
            q.push((k, v.to_string()));
        }
    }
    if args.hourly {
        q.push(("hourly", "true".into()));
    }
    let u: Usage = api
        .send(api.http.get(format!("{}/v1/usage", api.url)).query(&q))
        .await?;
    if args.conn.output == Output::Json {
        return print_json(&u);
    }
    println!("usage from {} to {}", utc(u.from), utc(u.to));
    if u.records.is_empty() {
        println!("(none)");
        return Ok(());
    }
    println!(
        "{:<20} {:<36} {:<14} {:<20} {:>16}{}",
        "CLUSTER",
        "DIMENSION",
        "CLOUD",
        "REGION",
        "QUANTITY",
        if args.hourly { "  HOUR" } else { "" }
    );
    for r in &u.records {
        let name = if r.cluster.is_empty() {
            &r.cluster_id
        } else {
            &r.cluster
        };
        println!(
            "{:<20} {:<36} {:<14} {:<20} {:>16}{}",
            name,
            r.dimension,
            r.cloud,
            r.region,
            quantity(&r.dimension, r.quantity),
            r.hour.map(|h| format!("  {}", utc(h))).unwrap_or_default()
        );
    }
    Ok(())
}

/// A time as people write it: `2026-12-01T12:00:00Z` (any offset), `2026-12-01` (midnight
/// UTC) or Unix seconds.
fn unix_seconds(s: &str) -> Result<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().context("Unix seconds out of range");
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    let hint = "use a time with its offset (2026-12-01T12:00:00Z), a date (2026-12-01) or Unix seconds";
    // A date alone: a time without its offset would be a guess.
    if s.len() != "2026-12-01".len() {
        anyhow::bail!("{hint}");
    }
    let date: jiff::civil::Date = s.parse().context(hint)?;
    Ok(date.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second())
}

/// A quantity in the unit people read: instance time in hours (the counter's unit is the
/// millisecond), anything else as counted.
fn quantity(dimension: &str, q: u64) -> String {
    if dimension.starts_with("instance_ms:") {
        format!("{:.3} h", q as f64 / 3_600_000.0)
    } else {
        q.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_read_as_people_write_them() {
        assert_eq!(super::unix_seconds("1796083200").unwrap(), 1_796_083_200);
        assert_eq!(super::unix_seconds("2026-12-01T00:00:00Z").unwrap(), 1_796_083_200);
        assert_eq!(super::unix_seconds("2026-12-01T01:00:00+01:00").unwrap(), 1_796_083_200);
        assert_eq!(super::unix_seconds("2026-12-01").unwrap(), 1_796_083_200);
        for bad in ["", "last tuesday", "2026-12-01T00:00:00", "-5"] {
            assert!(super::unix_seconds(bad).is_err(), "{bad}");
        }
    }
}
