//! `highrise sim`: the fleet simulator's command line (the work is in `highrise-sim`).

use anyhow::{bail, Context, Result};
use highrise_planner::SpotPolicy;
use highrise_provider::market::{PriceBook, Trace, TraceReading};
use highrise_sim::{Calibration, Market, Policy, Shape, SimConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Spot capacity from trace files (any directory in the format of the spot-traces data
    /// set; each file one pool, named by its path).
    #[arg(long, conflicts_with = "interruptions_per_month")]
    traces: Option<PathBuf>,
    /// Read a trace's 1 as "capacity available" (default: 1 = no capacity, as recorded).
    #[arg(long)]
    trace_one_is_available: bool,
    /// A synthetic market instead: capacity outages per pool-month (0.05 = the clouds'
    /// best spot bucket).
    #[arg(long)]
    interruptions_per_month: Option<f64>,
    /// The price book (default: the repository's, prices/land.toml).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Step durations (default: the repository's sim/calibration.toml).
    #[arg(long)]
    calibration: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    clusters: u32,
    #[arg(long, default_value_t = 30.0)]
    days: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster shapes, cycled: single (single-node, durability sync), ha1 (primary + 1),
    /// ha2 (primary + 2).
    #[arg(long, value_delimiter = ',', default_value = "single,ha1,ha2")]
    shapes: Vec<String>,
    /// Plans, cycled.
    #[arg(long, value_delimiter = ',', default_value = "small,small,medium,large")]
    plans: Vec<String>,
    /// Clusters per cell (a group sharing hosts).
    #[arg(long, default_value_t = 32)]
    cell_size: u32,
    /// Print JSON instead of the table.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Write cost-vs-availability.svg and timeline.svg here.
    #[arg(long)]
    svg_dir: Option<PathBuf>,
    /// Durability of the HA shapes (single-node clusters are always sync): with sync, a
    /// cluster that loses every member is restored from object storage without loss.
    #[arg(long, default_value = "async", value_parser = ["async", "sync"])]
    ha_durability: String,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

pub fn sim(args: SimArgs) -> Result<()> {
    let market = match (&args.traces, args.interruptions_per_month) {
        (Some(dir), _) => {
            let reading = if args.trace_one_is_available {
                TraceReading::OneIsAvailable
            } else {
                TraceReading::OneIsPreempted
            };
            Market::Traces(
                Trace::load_dir(dir, reading).with_context(|| format!("load traces from {}", dir.display()))?,
            )
        }
        (None, Some(r)) if r.is_finite() && r >= 0.0 => Market::Synthetic { per_month: r },
        (None, Some(_)) => bail!("--interruptions-per-month must be a number >= 0"),
        (None, None) => bail!("give --traces DIR or --interruptions-per-month R"),
    };
    let prices = match &args.prices {
        Some(p) => PriceBook::load(p)?,
        None => PriceBook::repository()?,
    };
    let calibration = match &args.calibration {
        Some(p) => Calibration::parse(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)?,
        None => Calibration::repository()?,
    };
    let shapes = args
        .shapes
        .iter()
        .map(|s| match s.as_str() {
            "single" => Ok(Shape::SingleSync),
            "ha1" => Ok(Shape::PrimaryPlusOne),
            "ha2" => Ok(Shape::PrimaryPlusTwo),
            other => bail!("unknown shape {other:?}: use single, ha1 or ha2"),
        })
        .collect::<Result<Vec<_>>>()?;
    if !(args.days > 0.0 && args.days.is_finite()) {
        bail!("--days must be a positive number");
    }
    let cfg = SimConfig {
        market,
        prices,
        calibration,
        clusters: args.clusters,
        days: args.days,
        seed: args.seed,
        shapes,
        plans: args.plans,
        policies: Policy::ALL.to_vec(),
        cell_size: args.cell_size,
        spot: SpotPolicy::default(),
        timeline: args.svg_dir.is_some(),
        ha_sync: args.ha_durability == "sync",
    };
    let report = highrise_sim::run(&cfg)?;
    if let Some(dir) = &args.svg_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("cost-vs-availability.svg"), report.svg_cost_vs_availability())
            .context("write the cost chart")?;
        std::fs::write(dir.join("timeline.svg"), report.svg_timeline()).context("write the timeline chart")?;
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", report.text()),
    }
    Ok(())
}
