//! `highrise usage`, `highrise invoice` and `highrise billing`: the org's metered usage
//! per cluster and dimension, its monthly invoices priced from it, and its billing terms
//! (hard limit, alert webhook, commitment) with the spend alerts fired.

use crate::client::{print_json, urlencode, utc, Api, Conn, Output};
use anyhow::{Context, Result};
use highrise_api::{
    BillingSettings, BillingStatus, Credit, CreditGrant, Invoice, InvoiceSummary, MarginReport, MarketplaceLink,
    MarketplaceRecords, SetCommitment, Usage,
};
use highrise_billing::meter::{readable, readable_price};

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

#[derive(clap::Subcommand)]
pub enum InvoiceCommand {
    /// Every month's invoice, newest first (this month's is the bill so far).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One month's invoice, line by line (default: this month's).
    Show {
        /// The month, `YYYY-MM` (UTC).
        month: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// One month's invoice as a document to file: PDF (default) or HTML.
    Download {
        /// The month, `YYYY-MM` (UTC; default: this month).
        month: Option<String>,
        #[arg(long, default_value = "pdf", value_parser = ["pdf", "html"])]
        format: String,
        /// Where to write it (default: `invoice-YYYY-MM.pdf` here).
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// This month, `YYYY-MM` (UTC).
fn this_month() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m")
        .to_string()
}

pub async fn invoice(cmd: InvoiceCommand) -> Result<()> {
    match cmd {
        InvoiceCommand::Download {
            month,
            format,
            out,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let month = month.unwrap_or_else(this_month);
            let url = format!("{}/v1/invoices/{}/{format}", api.url, urlencode(&month));
            let body = api.download(api.http.get(url)).await?;
            let path = out.unwrap_or_else(|| format!("invoice-{month}.{format}").into());
            std::fs::write(&path, &body).with_context(|| format!("write {}", path.display()))?;
            println!("wrote {} ({} bytes)", path.display(), body.len());
            Ok(())
        }
        InvoiceCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let list: Vec<InvoiceSummary> = api.send(api.http.get(format!("{}/v1/invoices", api.url))).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!(
                "{:<8} {:<7} {:<10} {:>14} {:>14}",
                "MONTH", "STATUS", "NUMBER", "TOTAL", "DUE"
            );
            for i in list {
                println!(
                    "{:<8} {:<7} {:<10} {:>14} {:>14}",
                    i.month,
                    i.status,
                    i.number.as_deref().unwrap_or("-"),
                    format!("{} {}", i.total, i.currency),
                    format!("{} {}", i.due, i.currency)
                );
            }
            Ok(())
        }
        InvoiceCommand::Show { month, conn } => {
            let api = Api::from(&conn)?;
            let month = month.unwrap_or_else(this_month);
            let url = format!("{}/v1/invoices/{}", api.url, urlencode(&month));
            let inv: Invoice = api.send(api.http.get(url)).await?;
            if conn.output == Output::Json {
                return print_json(&inv);
            }
            let issued = match (&inv.number, inv.issued_at) {
                (Some(n), Some(at)) => format!(", {n} issued {}", utc(at)),
                _ => String::new(),
            };
            println!(
                "invoice {} ({}{issued}), {} to {}, prices of {}",
                inv.month,
                inv.status,
                utc(inv.period_start),
                utc(inv.period_end),
                inv.price_book
            );
            println!(
                "{:<20} {:<30} {:<22} {:>14} {:>12} {:>12}",
                "CLUSTER", "DIMENSION", "PLACE", "QUANTITY", "PRICE", "AMOUNT"
            );
            for l in &inv.lines {
                let name = if l.cluster.is_empty() {
                    &l.cluster_id
                } else {
                    &l.cluster
                };
                let late = if l.carried { " (late)" } else { "" };
                println!(
                    "{:<20} {:<30} {:<22} {:>14} {:>12} {:>12}",
                    name,
                    format!("{}{late}", l.dimension),
                    format!("{}/{}", l.cloud, l.region),
                    readable(&l.dimension, l.quantity),
                    readable_price(&l.dimension, &l.unit_price, l.per),
                    l.amount
                );
            }
            println!("{:>115}", format!("total {} {}", inv.total, inv.currency));
            if inv.credits_applied != "0.00" {
                println!("{:>115}", format!("credits -{} {}", inv.credits_applied, inv.currency));
            }
            if inv.commitment_applied != "0.00" {
                println!(
                    "{:>115}",
                    format!("prepaid commitment -{} {}", inv.commitment_applied, inv.currency)
                );
            }
            let through = match &inv.marketplace {
                Some(m) => format!(" (charged through the {m} marketplace)"),
                None => String::new(),
            };
            println!("{:>115}", format!("due {} {}{through}", inv.due, inv.currency));
            Ok(())
        }
    }
}

#[derive(clap::Subcommand)]
pub enum BillingCommand {
    /// This month's spend, the hard limit, the commitment's drawdown and the alerts.
    Show {
        #[command(flatten)]
        conn: Conn,
    },
    /// Set the monthly hard limit (new clusters are refused once reached) or the alert
    /// webhook; `none` clears either. What is not given stays.
    Set {
        /// USD, e.g. 500 or 499.99; `none` for no limit.
        #[arg(long)]
        hard_limit: Option<String>,
        /// An http(s) URL spend alerts are POSTed to; `none` for none.
        #[arg(long)]
        alert_webhook: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The margin report of an org's month (operator only): per cluster, its usage at list
    /// prices against what the land charges for it.
    Margin {
        /// The org (id or name).
        org: String,
        /// `YYYY-MM` (default: this month).
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Link an org to a cloud marketplace account (operator only): its clusters then run
    /// on that cloud only.
    Link {
        /// The org (id or name).
        org: String,
        /// `aws`, `azure` or `gcp`.
        marketplace: String,
        /// AWS: the customer's account id; Azure: the SaaS subscription id; GCP: the usage
        /// reporting id.
        account: String,
        /// AWS: the License Manager licence ARN.
        #[arg(long)]
        licence: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The usage records sent (or to be sent) to an org's marketplace, hour by hour, with
    /// what the marketplace answered (operator only).
    Records {
        /// The org (id or name).
        org: String,
        /// Only `pending`, `accepted`, `conflict`, `rejected` or `expired` ones.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Grant an org a credit (operator only): its invoices draw credits down first.
    Credit {
        /// The org (id or name).
        org: String,
        /// USD, e.g. 25 or 12.50.
        amount: String,
        /// Why (shown to the org).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Record an org's prepaid commitment (operator only).
    Commitment {
        /// The org (id or name).
        org: String,
        /// USD, e.g. 10000.
        amount: String,
        /// The period's start (RFC 3339, a date or Unix seconds; default: now).
        #[arg(long, value_parser = unix_seconds)]
        from: Option<i64>,
        /// The period's end (default: a year after its start).
        #[arg(long, value_parser = unix_seconds)]
        to: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn billing(cmd: BillingCommand) -> Result<()> {
    match cmd {
        BillingCommand::Records { org, state, conn } => {
            let api = Api::from(&conn)?;
            let mut req = api
                .http
                .get(format!("{}/v1/orgs/{}/marketplace/records", api.url, urlencode(&org)));
            if let Some(s) = state {
                req = req.query(&[("state", s)]);
            }
            let r: MarketplaceRecords = api.send(req).await?;
            if conn.output == Output::Json {
                return print_json(&r);
            }
            println!(
                "{:<20} {:<28} {:>10} {:<9} {:>8}  ANSWER",
                "HOUR (UTC)", "DIMENSION", "QUANTITY", "STATE", "ATTEMPTS"
            );
            for x in &r.records {
                let answer = x.receipt.as_deref().or(x.last_error.as_deref()).unwrap_or("");
                println!(
                    "{:<20} {:<28} {:>10} {:<9} {:>8}  {}{answer}",
                    utc(x.hour),
                    x.dimension,
                    x.quantity,
                    x.state,
                    x.attempts,
                    if x.in_doubt { "(in doubt) " } else { "" },
                );
            }
            Ok(())
        }
        BillingCommand::Margin { org, month, conn } => {
            let api = Api::from(&conn)?;
            let mut req = api.http.get(format!("{}/v1/orgs/{}/margin", api.url, urlencode(&org)));
            if let Some(m) = month {
                req = req.query(&[("month", m)]);
            }
            let r: MarginReport = api.send(req).await?;
            if conn.output == Output::Json {
                return print_json(&r);
            }
            println!("margin of {} in {} (USD)", r.org_id, r.month);
            println!(
                "{:<20} {:<34} {:>14} {:>14} {:>14} {:>8}",
                "CLUSTER", "DIMENSIONS", "PRICE", "COST", "MARGIN", "MARGIN%"
            );
            for c in &r.clusters {
                println!(
                    "{:<20} {:<34} {:>14} {:>14} {:>14} {:>8}",
                    c.cluster,
                    c.dimensions.join(","),
                    c.price,
                    c.cost,
                    c.margin,
                    c.margin_pct.as_deref().unwrap_or("-")
                );
            }
            println!(
                "{:<20} {:<34} {:>14} {:>14} {:>14} {:>8}",
                "total",
                "",
                r.price,
                r.cost,
                r.margin,
                r.margin_pct.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        BillingCommand::Show { conn } => {
            let api = Api::from(&conn)?;
            let b: BillingStatus = api.send(api.http.get(format!("{}/v1/billing", api.url))).await?;
            show_billing(&b, conn.output)
        }
        BillingCommand::Set {
            hard_limit,
            alert_webhook,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let now: BillingStatus = api.send(api.http.get(format!("{}/v1/billing", api.url))).await?;
            let pick = |given: Option<String>, had: Option<String>| match given.as_deref() {
                Some("none") => None,
                Some(_) => given,
                None => had,
            };
            let req = BillingSettings {
                hard_limit: pick(hard_limit, now.hard_limit),
                alert_webhook: pick(alert_webhook, now.alert_webhook),
            };
            let b: BillingStatus = api
                .send(api.http.put(format!("{}/v1/billing", api.url)).json(&req))
                .await?;
            show_billing(&b, conn.output)
        }
        BillingCommand::Link {
            org,
            marketplace,
            account,
            licence,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let req = MarketplaceLink {
                marketplace,
                account,
                licence,
                linked_at: None,
            };
            let url = format!("{}/v1/orgs/{}/marketplace", api.url, urlencode(&org));
            let b: BillingStatus = api.send(api.http.put(url).json(&req)).await?;
            show_billing(&b, conn.output)
        }
        BillingCommand::Credit {
            org,
            amount,
            reason,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let url = format!("{}/v1/orgs/{}/credits", api.url, urlencode(&org));
            let c: Credit = api
                .send(api.http.post(url).json(&CreditGrant { amount, reason }))
                .await?;
            if conn.output == Output::Json {
                return print_json(&c);
            }
            println!("granted credit {} of {} USD: {}", c.id, c.amount, c.reason);
            Ok(())
        }
        BillingCommand::Commitment {
            org,
            amount,
            from,
            to,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let from = match from {
                Some(f) => f,
                None => jiff::Timestamp::now().as_second(),
            };
            let req = SetCommitment {
                amount,
                from,
                to: to.unwrap_or(from + 365 * 86_400),
            };
            let url = format!("{}/v1/orgs/{}/commitment", api.url, urlencode(&org));
            let b: BillingStatus = api.send(api.http.put(url).json(&req)).await?;
            show_billing(&b, conn.output)
        }
    }
}

fn show_billing(b: &BillingStatus, output: Output) -> Result<()> {
    if output == Output::Json {
        return print_json(b);
    }
    println!("{} so far: {} USD", b.month, b.month_spent);
    match &b.hard_limit {
        Some(l) => println!("hard limit: {l} USD a month (new clusters are refused once reached)"),
        None => println!("hard limit: none"),
    }
    println!("alert webhook: {}", b.alert_webhook.as_deref().unwrap_or("none"));
    match &b.commitment {
        Some(c) => println!(
            "commitment: {} USD from {} to {}: {} spent, {} left",
            c.amount,
            utc(c.from),
            utc(c.to),
            c.spent,
            c.balance
        ),
        None => println!("commitment: none"),
    }
    println!("credit balance: {} USD", b.credit_balance);
    for c in &b.credits {
        println!("credit {}: {} USD, {}", utc(c.granted_at), c.amount, c.reason);
    }
    if let Some(m) = &b.marketplace {
        println!(
            "paid through: {} marketplace, account {} (its clusters run on {} only)",
            m.marketplace, m.account, m.marketplace
        );
    }
    for a in &b.alerts {
        let delivery = match (a.delivered_at, &a.last_error) {
            (Some(t), _) => format!("delivered {}", utc(t)),
            (None, Some(e)) => format!("not delivered ({} attempts): {e}", a.attempts),
            (None, None) => "not sent (no webhook)".to_string(),
        };
        println!(
            "alert {}: {}% of {} reached ({} spent), {}",
            utc(a.fired_at),
            a.threshold,
            a.budget,
            a.spent,
            delivery
        );
    }
    Ok(())
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
            readable(&r.dimension, r.quantity),
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
