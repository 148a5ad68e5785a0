//! `highrise cloud evacuate` and `highrise cloud evacuation`: move every cluster off a
//! cloud and follow the whole fleet's progress (moved, moving, waiting, failed with why).

use crate::client::{print_json, Api, Conn, Output};
use anyhow::{bail, Result};
use highrise_api::{EvacuateCloud, Evacuation, EvacuationState, EvacuationStatus};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Begins an evacuation; with `wait`, follows it to its end.
pub async fn evacuate(
    cloud: String,
    to: Option<String>,
    concurrency: Option<u32>,
    wait: bool,
    conn: &Conn,
) -> Result<()> {
    let api = Api::from(conn)?;
    let body = EvacuateCloud { to, concurrency };
    let e: Evacuation = api
        .send(
            api.http
                .post(format!("{}/v1/clouds/{cloud}/evacuate", api.url))
                .json(&body),
        )
        .await?;
    if !wait {
        return show(&e, conn.output);
    }
    if conn.output == Output::Text {
        eprintln!(
            "evacuating {} ({} clusters, {} at a time): evacuation {}",
            e.cloud,
            e.clusters.len(),
            e.concurrency,
            e.id
        );
    }
    let done = follow(&api, &e.id).await?;
    show(&done, conn.output)?;
    if done.counts.failed > 0 {
        bail!("{} cluster(s) could not be moved (see above)", done.counts.failed);
    }
    Ok(())
}

/// Shows an evacuation, pausing or resuming it first when asked.
pub async fn evacuation(id: String, pause: bool, resume: bool, wait: bool, conn: &Conn) -> Result<()> {
    let api = Api::from(conn)?;
    let path = format!("{}/v1/evacuations/{id}", api.url);
    let e: Evacuation = match (pause, resume) {
        (true, _) => api.send(api.http.post(format!("{path}/pause"))).await?,
        (_, true) => api.send(api.http.post(format!("{path}/resume"))).await?,
        _ if wait => follow(&api, &id).await?,
        _ => api.send(api.http.get(path)).await?,
    };
    show(&e, conn.output)
}

/// Polls until the evacuation is finished, a line (a spinner on a terminal) per change of
/// its counts.
async fn follow(api: &Api, id: &str) -> Result<Evacuation> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let e: Evacuation = api
            .send(api.http.get(format!("{}/v1/evacuations/{id}", api.url)))
            .await?;
        let c = e.counts;
        let line = format!(
            "{}: {} moved, {} moving, {} waiting, {} failed, {} staying",
            e.cloud, c.moved, c.moving, c.waiting, c.failed, c.staying
        );
        if line != last {
            if tty {
                bar.set_message(line.clone());
            } else {
                eprintln!("{line}");
            }
            last = line;
        }
        if e.status == EvacuationStatus::Finished {
            bar.finish_and_clear();
            if tty {
                eprintln!("{last} (in {:.0} s)", started.elapsed().as_secs_f64());
            }
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn show(e: &Evacuation, output: Output) -> Result<()> {
    if output == Output::Json {
        return print_json(e);
    }
    let status = serde_json::to_string(&e.status).unwrap_or_default();
    println!(
        "evacuation {} of {} → {}: {} ({} at a time)",
        e.id,
        e.cloud,
        e.to.as_deref().unwrap_or("the first other cloud that answers"),
        status.trim_matches('"'),
        e.concurrency
    );
    println!("{:<20} {:<10} {:<22} WHY", "CLUSTER", "STATE", "OPERATION");
    for c in &e.clusters {
        let state = match c.state {
            EvacuationState::Waiting => "waiting",
            EvacuationState::Moving => "moving",
            EvacuationState::Moved => "moved",
            EvacuationState::Failed => "failed",
            EvacuationState::Staying => "staying",
        };
        println!(
            "{:<20} {:<10} {:<22} {}",
            c.name.as_deref().unwrap_or(&c.cluster_id),
            state,
            c.operation_id.as_deref().unwrap_or("-"),
            c.why.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
