//! Cluster pages: the list with the create form and its monthly estimate (from the price
//! book, before anything is submitted), the page created clusters land on (their password
//! shown once), a cluster's page — live status and topology, connection, backups with a
//! point-in-time restore, switchover, size (standbys and plan), a move to another cloud,
//! events, deletion with a typed confirmation.

use super::page::{self, badge, csrf_field, time};
use super::*;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use highrise_api::{
    Backup, BackupPolicy, CloudInfo, Cluster, ClusterEvent, CreateCluster, CreatedCluster, MoveCluster, Operation,
    RestoreFrom, Switchover, UpdateCluster,
};
use maud::{html, Markup};
use serde::Deserialize;

/// The clusters a page of the list shows.
const LIST_LIMIT: u32 = 100;
/// The events a cluster's page shows, newest first.
const EVENTS_SHOWN: usize = 30;
/// How often a cluster's live part refreshes itself.
const LIVE_EVERY: &str = "every 2s";

fn api_path(name: &str) -> String {
    format!("/v1/clusters/{}", segment(name))
}

fn page_path(name: &str) -> String {
    format!("/console/clusters/{}", segment(name))
}

#[derive(Deserialize, Default)]
pub(super) struct Done {
    done: Option<String>,
    /// The list's page: where the previous one ended.
    cursor: Option<String>,
}

fn notice(done: &Done) -> Markup {
    let text = match done.done.as_deref() {
        Some("switchover") => "Switchover requested: the most advanced standby becomes the primary.",
        Some("backup") => "Backup requested: it appears below as it runs.",
        Some("deleted") => "The cluster is being deleted.",
        Some("update") => "Change requested: members are added, removed or rebuilt below.",
        Some("move") => "Move requested: members are built in the other cloud, then the primary switches over.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

// ---------------------------------------------------------------------------------------
// The list and the create form
// ---------------------------------------------------------------------------------------

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(done): Query<Done>,
) -> Result<Html<String>, Failure> {
    let (clusters, next): (Vec<Cluster>, _) = signed
        .api
        .page(&match &done.cursor {
            Some(c) => format!("/v1/clusters?limit={LIST_LIMIT}&cursor={}", segment(c)),
            None => format!("/v1/clusters?limit={LIST_LIMIT}"),
        })
        .await?;
    let clouds: Vec<CloudInfo> = signed.api.get("/v1/clouds").await?;
    let body = html! {
        h1 { "Clusters" }
        (notice(&done))
        section.card {
            @if clusters.is_empty() && done.cursor.is_some() {
                p.empty { "No more clusters. " a href="/console/clusters" { "Back to the first page" } }
            } @else if clusters.is_empty() {
                div.empty {
                    p { strong { "No clusters yet." } }
                    @if signed.may(Action::WriteClusters) {
                        p { "Create your first one below: it runs in a minute or two." }
                    } @else {
                        p { "Your role (" (signed.me.role.as_str()) ") can look but not create; ask an admin or a developer of your org." }
                    }
                }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr {
                            th { "Name" } th { "Status" } th { "Cloud" } th.hide-narrow { "Region" }
                            th { "Plan" } th.hide-narrow { "Market" } th.hide-narrow { "Members" } th.hide-narrow { "Created" }
                        } }
                        tbody {
                            @for c in &clusters {
                                tr {
                                    td { a href=(page_path(&c.name)) { (c.name) } }
                                    td { (badge(status_str(c))) }
                                    td { (c.cloud) }
                                    td.hide-narrow { (c.region) }
                                    td { (c.plan) }
                                    td.hide-narrow { @if c.spot { "spot" } @else { "on demand" } }
                                    td.hide-narrow { (c.members.len()) }
                                    td.hide-narrow { (time(c.created_at)) }
                                }
                            }
                        }
                    }
                }
                @if next.is_some() || done.cursor.is_some() {
                    nav.pages aria-label="Pages" {
                        @if done.cursor.is_some() { a href="/console/clusters" { "First page" } }
                        @if let Some(n) = &next { a href={ "/console/clusters?cursor=" (segment(n)) } { "Next page" } }
                    }
                }
            }
        }
        @if signed.may(Action::WriteClusters) {
            (create_form(&console, &signed, &clouds))
        }
    };
    Ok(Html(
        page::page("Clusters", Some(&signed), "clusters", body).into_string(),
    ))
}

fn status_str(c: &Cluster) -> &'static str {
    match c.status {
        highrise_api::ClusterStatus::Creating => "creating",
        highrise_api::ClusterStatus::Running => "running",
        highrise_api::ClusterStatus::Degraded => "degraded",
        highrise_api::ClusterStatus::Deleting => "deleting",
    }
}

fn create_form(console: &Console, signed: &Signed, clouds: &[CloudInfo]) -> Markup {
    let first = clouds
        .first()
        .and_then(|c| c.regions.first().map(|r| format!("{}/{}", c.name, r.name)))
        .unwrap_or_default();
    let initial = EstimateQuery {
        location: Some(first),
        ..EstimateQuery::default()
    };
    html! {
        section.card {
            h2 { "Create a cluster" }
            form #create.stack method="post" action="/console/clusters" {
                (csrf_field(&signed.csrf))
                // The estimate follows the fields (on this wrapper, not the form: htmx
                // would hold the request until the whole form is valid).
                div.stack hx-get="/console/estimate" hx-trigger="change, keyup changed delay:300ms from:#replicas"
                    hx-target="#estimate" hx-include="closest form" {
                div.row {
                    label { "Name" input type="text" name="name" required pattern="[a-z]([a-z0-9\\-]{0,61}[a-z0-9])?" placeholder="shop" autocomplete="off"; }
                    label { "Cloud and region"
                        select name="location" {
                            @for c in clouds { @for r in &c.regions {
                                option value={ (c.name) "/" (r.name) } { (c.name) " · " (r.name) }
                            } }
                        }
                    }
                    label { "Plan"
                        select name="plan" {
                            option value="small" { "small — 1 slot, 10 GiB" }
                            option value="medium" { "medium — 2 slots, 50 GiB" }
                            option value="large" { "large — 4 slots, 200 GiB" }
                        }
                    }
                    label { "Standbys" input #replicas type="number" name="replicas" min="0" max="3" value="1"; }
                }
                div.row {
                    label { "Durability"
                        select name="durability" {
                            option value="async" { "async — WAL in object storage within a second" }
                            option value="sync" { "sync — a commit waits for object storage" }
                        }
                    }
                    label { "Base backup every"
                        select name="backup_hours" {
                            option value="24" { "day" }
                            option value="6" { "6 hours" }
                            option value="1" { "hour" }
                        }
                    }
                    label { "Keep backups (days)" input type="number" name="retain_days" min="0" max="3650" value="7"; }
                    label.check { input type="checkbox" name="spot" value="on"; "Run on spot capacity" }
                }
                }
                div #estimate.estimate aria-live="polite" { (estimate_for(console, &initial)) }
                div { button.primary type="submit" { "Create cluster" } }
            }
        }
    }
}

/// The create form's fields, as the estimate reads them (all optional: a half-filled form
/// still gets an estimate or says what is missing).
#[derive(Deserialize, Default)]
pub(super) struct EstimateQuery {
    location: Option<String>,
    plan: Option<String>,
    replicas: Option<String>,
    spot: Option<String>,
}

fn estimate_for(console: &Console, q: &EstimateQuery) -> Markup {
    let (cloud, region) = q
        .location
        .as_deref()
        .and_then(|l| l.split_once('/'))
        .unwrap_or(("", ""));
    let plan = q.plan.as_deref().unwrap_or("small");
    let Some(disk) = highrise_planner::plan_storage_bytes(plan) else {
        return html! { span { "Choose a plan to see its price." } };
    };
    let Some(replicas) = q
        .replicas
        .as_deref()
        .map_or(Some(1), |r| r.trim().parse::<u32>().ok())
        .filter(|r| *r <= 3)
    else {
        return html! { span { "Standbys are 0 to 3." } };
    };
    let spot = q.spot.as_deref() == Some("on");
    let shape = highrise_billing::estimate::Shape {
        cloud,
        region,
        plan,
        spot,
        members: replicas + 1,
        disk_gib: disk >> 30,
    };
    match highrise_billing::estimate::monthly(&console.state.cfg.list_prices.0, &shape, crate::store::now()) {
        Ok(e) => html! {
            span { "Estimated " strong data-estimate=(crate::invoicing::money(e.total)) { "$" (crate::invoicing::money(e.total)) } " a month" }
            span.muted {
                " — " (replicas + 1) @if replicas == 0 { " member" } @else { " members" }
                " × 730 h " @if spot { "on spot" } @else { "on demand" }
                " $" (crate::invoicing::money(e.instances)) ", disk $" (crate::invoicing::money(e.disk))
                ". You pay for what runs, by the second."
            }
        },
        Err(e) => html! { span { "No price for that choice yet (" (e) ")." } },
    }
}

pub(super) async fn estimate(
    State(console): State<Arc<Console>>,
    _signed: Signed,
    Query(q): Query<EstimateQuery>,
) -> Html<String> {
    Html(estimate_for(&console, &q).into_string())
}

#[derive(Deserialize)]
pub(super) struct CreateForm {
    name: String,
    location: String,
    plan: String,
    replicas: u32,
    durability: String,
    backup_hours: i64,
    retain_days: u32,
    spot: Option<String>,
}

pub(super) async fn create(Posted { signed, form }: Posted<CreateForm>) -> Result<Html<String>, Failure> {
    let (cloud, region) = form.location.split_once('/').ok_or_else(|| Failure {
        status: StatusCode::BAD_REQUEST,
        message: "Choose a cloud and region.".into(),
    })?;
    let req = CreateCluster {
        name: form.name.trim().to_string(),
        cloud: Some(cloud.to_string()),
        region: Some(region.to_string()),
        plan: Some(form.plan),
        replicas: Some(form.replicas),
        spot: Some(form.spot.as_deref() == Some("on")),
        durability: Some(form.durability),
        backup_policy: Some(BackupPolicy {
            interval_seconds: form.backup_hours.saturating_mul(3600),
            retain_days: form.retain_days,
            ..BackupPolicy::default()
        }),
        ..CreateCluster::default()
    };
    let created: CreatedCluster = signed.api.post("/v1/clusters", &req).await?;
    Ok(Html(created_page(&signed, &created, "created").into_string()))
}

/// A named value with a button that copies it (`data-name` says which, `data-value` holds
/// it whole).
fn copyable(name: &str, key: &str, value: &str) -> Markup {
    let id = format!("copy-{key}");
    html! {
        div.field {
            div.field-head {
                span.field-name #(id) { (name) }
                button.secondary.small type="button" data-copy=(value) aria-label={ "Copy " (name) } { "Copy" }
            }
            code.copy aria-labelledby=(id) data-name=(key) data-value=(value) { (value) }
        }
    }
}

/// A cluster's connection strings and the `psql` command; `verified` checks the proxy's
/// certificate against the control plane's CA.
fn connection(uri: &str, verified: Option<&str>) -> Markup {
    html! {
        (copyable("Connection string", "connection-uri", uri))
        (copyable("psql", "psql", &format!("psql \"{uri}\"")))
        @if let Some(v) = verified {
            (copyable("Verifying the server (sslmode=verify-full)", "verified-uri", v))
            p.muted { "To verify, save the CA certificate (" a href="/v1/tls/ca" { "/v1/tls/ca" } ", or " code { "highrise cluster connect" } ") and add " code { "sslrootcert=" } " its path." }
        }
    }
}

/// The page a new cluster (created or restored) lands on: its password, shown this once.
fn created_page(signed: &Signed, created: &CreatedCluster, how: &str) -> Markup {
    let c = &created.cluster;
    let body = html! {
        h1 { "Cluster " (c.name) " is being " (how) }
        section.card {
            p { "It is " (badge(status_str(c))) " now and will be running in a minute or two; its page shows it live." }
            div.secret {
                p { strong { "Copy the password now: it is shown only this once." } }
                (connection(&created.connection_uri, created.verified_uri.as_deref()))
            }
            p { a href=(page_path(&c.name)) { "Open the cluster's page" } }
        }
    };
    page::page(&format!("Cluster {}", c.name), Some(signed), "clusters", body)
}

// ---------------------------------------------------------------------------------------
// A cluster's page
// ---------------------------------------------------------------------------------------

pub(super) async fn show(
    signed: Signed,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Result<Html<String>, Failure> {
    let c: Cluster = signed.api.get(&api_path(&name)).await?;
    let events: Vec<ClusterEvent> = signed
        .api
        .get(&format!("{}/events?limit=1000", api_path(&name)))
        .await?;
    let backups: Vec<Backup> = signed
        .api
        .get(&format!("{}/backups?limit=1000", api_path(&name)))
        .await?;
    let clouds: Vec<CloudInfo> = signed.api.get("/v1/clouds").await?;
    let metrics: highrise_api::ClusterMetrics = signed.api.get(&format!("{}/metrics", api_path(&name))).await?;
    let body = html! {
        p.muted { a href="/console/clusters" { "Clusters" } " / " (c.name) }
        h1 { (c.name) }
        (notice(&done))
        (live_part(&c))
        (super::charts::part(&c.name, &metrics, crate::store::now_ms()))
        div.grid {
            section.card {
                h2 { "Connect" }
                (connection(&c.connection_uri, c.verified_uri.as_deref()))
                p.muted { "Database " code { (c.database) } ", user " code { (c.user) } ". The password was shown once, when the cluster was created." }
            }
            section.card {
                h2 { "Settings" }
                dl.facts {
                    dt { "Cloud" } dd { (c.cloud) " · " (c.region) }
                    dt { "Plan" } dd { (c.plan) ", PostgreSQL " (c.pg_version) }
                    dt { "Standbys" } dd { (c.replicas) }
                    dt { "Market" } dd { @if c.spot { "spot" } @else { "on demand" } }
                    dt { "Durability" } dd { (c.durability) }
                    dt { "Backups" } dd { "every " (every(c.backup_policy.interval_seconds)) ", kept " (c.backup_policy.retain_days) " days" }
                    dt { "Created" } dd { (time(c.created_at)) }
                }
            }
        }
        @if signed.may(Action::WriteClusters) {
            (actions(&signed, &c, &clouds))
        }
        section.card {
            h2 { "Backups" }
            @if backups.is_empty() {
                p.empty { "No base backup yet: the first one is taken soon after the cluster starts." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Started" } th { "Kind" } th { "Status" } th.hide-narrow { "Size" } th.hide-narrow { "Finished" } } }
                    tbody { @for b in backups.iter().rev() {
                        tr data-backup=(b.id) {
                            td { (time(b.created_at)) } td { (b.kind) } td { (badge(&b.status)) }
                            td.hide-narrow { @if let Some(s) = b.size_bytes { (page::bytes(s)) } }
                            td.hide-narrow { @if let Some(f) = b.finished_at { (time(f)) } }
                        }
                    } }
                } }
            }
        }
        section.card {
            h2 { "Events" }
            @if events.is_empty() {
                p.empty { "Nothing has happened to this cluster yet." }
            } @else {
                ol.timeline { @for e in events.iter().rev().take(EVENTS_SHOWN) {
                    li { time { (time(e.at)) } strong { (e.kind.replace('_', " ")) } " — " (e.message) }
                } }
            }
        }
    };
    Ok(Html(page::page(&c.name, Some(&signed), "clusters", body).into_string()))
}

/// An interval as people say it: "day", "6 hours", "90 minutes".
fn every(secs: i64) -> String {
    let unit = |n: i64, one: &str| if n == 1 { one.to_string() } else { format!("{n} {one}s") };
    match secs {
        s if s > 0 && s % 86_400 == 0 => unit(s / 86_400, "day"),
        s if s > 0 && s % 3600 == 0 => unit(s / 3600, "hour"),
        s if s > 0 && s % 60 == 0 => unit(s / 60, "minute"),
        s => unit(s, "second"),
    }
}

/// The part of a cluster's page that refreshes itself: status and members.
fn live_part(c: &Cluster) -> Markup {
    html! {
        section #live.card hx-get={ (page_path(&c.name)) "/live" } hx-trigger=(LIVE_EVERY) hx-swap="outerHTML" {
            h2 { "Status " span data-status=(status_str(c)) { (badge(status_str(c))) } }
            p.muted {
                @if let Some(used) = c.storage_used_bytes {
                    "Storage " (page::bytes(used)) " of " (page::bytes(c.storage_limit_bytes)) ". "
                }
                @if let Some(a) = &c.archive {
                    @if let Some(lsn) = &a.archived_lsn {
                        "WAL in object storage up to " span data-archived-lsn=(lsn) { (lsn) }
                        @if let Some(lag) = a.lag_bytes { " (" (page::bytes(lag)) " behind)" }
                        ". "
                    }
                    @if let Some(e) = &a.error { span.badge.bad { "archiving: " (e) } }
                }
            }
            div.table-wrap { table {
                thead { tr { th { "Role" } th { "State" } th { "Cloud" } th.hide-narrow { "Zone" } th.hide-narrow { "Market" } th { "Lag" } } }
                tbody {
                    @if c.members.is_empty() {
                        tr { td colspan="6" { "Finding capacity…" } }
                    }
                    @for m in &c.members {
                        tr data-role=(m.role) data-instance=(m.instance_id) {
                            td { strong { (m.role) } } td { (badge(&m.state)) } td { (m.cloud) }
                            td.hide-narrow { (m.zone) } td.hide-narrow { (m.market.replace('_', " ")) }
                            td { @match m.lag_bytes { Some(l) => (page::bytes(l)), None => "—" } }
                        }
                    }
                }
            } }
        }
    }
}

pub(super) async fn live(signed: Signed, Path(name): Path<String>) -> Result<Html<String>, Failure> {
    let c: Cluster = signed.api.get(&api_path(&name)).await?;
    Ok(Html(live_part(&c).into_string()))
}

fn actions(signed: &Signed, c: &Cluster, clouds: &[CloudInfo]) -> Markup {
    let base = page_path(&c.name);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    html! {
        section.card {
            h2 { "Actions" }
            div.actions {
                form.inline method="post" action={ (base) "/backups" } {
                    (csrf_field(&signed.csrf))
                    button.secondary type="submit" { "Take a backup now" }
                }
                @if c.replicas > 0 {
                    form.inline method="post" action={ (base) "/switchover" } {
                        (csrf_field(&signed.csrf))
                        button.secondary type="submit" { "Switch over to a standby" }
                    }
                }
            }
        }
        div.grid {
            section.card {
                h2 { "Size" }
                p.muted { "A new plan builds members of that size and switches over to them; standbys are added or removed." }
                form.stack method="post" action={ (base) "/update" } {
                    (csrf_field(&signed.csrf))
                    div.row {
                        label { "Standbys" input type="number" name="replicas" min="0" max="3" value=(c.replicas); }
                        label { "Plan"
                            select name="plan" {
                                @for p in highrise_planner::PLANS {
                                    @if p == c.plan { option value=(p) selected { (p) } } @else { option value=(p) { (p) } }
                                }
                            }
                        }
                    }
                    div { button.secondary type="submit" { "Apply" } }
                }
            }
            section.card {
                h2 { "Move to another cloud" }
                p.muted { "Members are built in the other cloud, then the primary switches over; the connection string stays." }
                form.stack method="post" action={ (base) "/move" } {
                    (csrf_field(&signed.csrf))
                    label { "Cloud"
                        select name="cloud" aria-label="Cloud to move to" {
                            @for other in clouds.iter().filter(|o| o.name != c.cloud) { option value=(other.name) { (other.name) } }
                        }
                    }
                    div { button.secondary type="submit" { "Move" } }
                }
            }
        }
        section.card {
            h2 { "Restore to a point in time" }
            p.muted { "Creates a new cluster from this one's backups and WAL, as it was at that moment (UTC)." }
            form.stack method="post" action={ (base) "/restore" } {
                (csrf_field(&signed.csrf))
                div.row {
                    label { "New cluster's name" input type="text" name="name" required pattern="[a-z]([a-z0-9\\-]{0,61}[a-z0-9])?" autocomplete="off"; }
                    label { "Time (UTC)" input type="datetime-local" name="time" step="1" value=(now) required; }
                }
                div { button.primary type="submit" { "Restore" } }
            }
        }
        section.card {
            h2 { "Delete" }
            p { "Deleting stops the cluster; its backups stay for restores until their retention ends." }
            form.inline method="post" action={ (base) "/delete" } {
                (csrf_field(&signed.csrf))
                label { span { "Type " code { (c.name) } " to confirm" } input type="text" name="confirm" required autocomplete="off"; }
                button.danger type="submit" { "Delete cluster" }
            }
        }
    }
}

pub(super) async fn switchover(
    Path(name): Path<String>,
    Posted {
        signed,
        form: NoFields {},
    }: Posted<NoFields>,
) -> Result<Response, Failure> {
    let _: Operation = signed
        .api
        .post(&format!("{}/switchover", api_path(&name)), &Switchover { to: None })
        .await?;
    Ok(see_other(&format!("{}?done=switchover", page_path(&name))))
}

pub(super) async fn backup(
    Path(name): Path<String>,
    Posted {
        signed,
        form: NoFields {},
    }: Posted<NoFields>,
) -> Result<Response, Failure> {
    let _: Backup = signed
        .api
        .json(Method::POST, &format!("{}/backups", api_path(&name)), None)
        .await?;
    Ok(see_other(&format!("{}?done=backup", page_path(&name))))
}

#[derive(Deserialize)]
pub(super) struct RestoreForm {
    name: String,
    time: String,
}

pub(super) async fn restore(
    Path(name): Path<String>,
    Posted { signed, form }: Posted<RestoreForm>,
) -> Result<Html<String>, Failure> {
    let source: Cluster = signed.api.get(&api_path(&name)).await?;
    // A `datetime-local` field has no offset; the form says UTC.
    let at = if form.time.len() == 16 {
        format!("{}:00Z", form.time)
    } else {
        format!("{}Z", form.time)
    };
    let req = CreateCluster {
        name: form.name.trim().to_string(),
        project: Some(source.project.clone()),
        cloud: Some(source.cloud.clone()),
        region: Some(source.region.clone()),
        plan: Some(source.plan.clone()),
        replicas: Some(0),
        durability: Some(source.durability.clone()),
        restore: Some(RestoreFrom {
            from: source.name.clone(),
            time: Some(at),
            lsn: None,
        }),
        ..CreateCluster::default()
    };
    let created: CreatedCluster = signed.api.post("/v1/clusters", &req).await?;
    Ok(Html(created_page(&signed, &created, "restored").into_string()))
}

#[derive(Deserialize)]
pub(super) struct DeleteForm {
    confirm: String,
}

pub(super) async fn delete(
    Path(name): Path<String>,
    Posted { signed, form }: Posted<DeleteForm>,
) -> Result<Response, Failure> {
    if form.confirm.trim() != name {
        return Err(Failure {
            status: StatusCode::BAD_REQUEST,
            message: format!("Type the cluster's name, {name}, to delete it; nothing was deleted."),
        });
    }
    let _: Operation = signed.api.json(Method::DELETE, &api_path(&name), None).await?;
    Ok(see_other("/console/clusters?done=deleted"))
}

#[derive(Deserialize)]
pub(super) struct UpdateForm {
    replicas: u32,
    plan: String,
}

pub(super) async fn update(
    Path(name): Path<String>,
    Posted { signed, form }: Posted<UpdateForm>,
) -> Result<Response, Failure> {
    let now: Cluster = signed.api.get(&api_path(&name)).await?;
    let change = UpdateCluster {
        replicas: Some(form.replicas).filter(|r| *r != now.replicas),
        plan: Some(form.plan).filter(|p| *p != now.plan),
        ..UpdateCluster::default()
    };
    if change.replicas.is_none() && change.plan.is_none() {
        return Ok(see_other(&page_path(&name)));
    }
    signed.api.patch(&api_path(&name), &change).await?;
    Ok(see_other(&format!("{}?done=update", page_path(&name))))
}

#[derive(Deserialize)]
pub(super) struct MoveForm {
    cloud: String,
}

pub(super) async fn move_to(
    Path(name): Path<String>,
    Posted { signed, form }: Posted<MoveForm>,
) -> Result<Response, Failure> {
    let req = MoveCluster {
        cloud: form.cloud,
        region: None,
    };
    let _: Operation = signed.api.post(&format!("{}/move", api_path(&name)), &req).await?;
    Ok(see_other(&format!("{}?done=move", page_path(&name))))
}
