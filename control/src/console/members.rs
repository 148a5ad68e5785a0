//! Members and the audit log: the org's people with their roles (invite — the token shown
//! once —, change a role, remove), and who did what, from where, with what result.

use super::page::{self, csrf_field, time};
use super::*;
use axum::extract::{Path, Query};
use axum::response::Html;
use highrise_api::{AuditEntry, InviteMember, InvitedMember, OrgMember, UpdateMember};
use maud::{html, Markup};
use serde::Deserialize;

/// The audit entries the page shows, newest first.
const AUDIT_SHOWN: usize = 200;

fn role_select(name: &str, selected: Role, label: &str) -> Markup {
    html! {
        select name=(name) aria-label=(label) {
            @for r in Role::ALL {
                @if r == selected { option value=(r.as_str()) selected { (r.as_str()) } }
                @else { option value=(r.as_str()) { (r.as_str()) } }
            }
        }
    }
}

fn members_page(signed: &Signed, members: &[OrgMember], invited: Option<&InvitedMember>) -> Markup {
    let manage = signed.may(Action::WriteMembers);
    let body = html! {
        h1 { "Members" }
        @if let Some(i) = invited {
            section.card.secret role="status" {
                p { strong { (i.member.email) " is invited as " (i.member.role.as_str()) ". Give them this token: it is shown only this once." } }
                div.field-head {
                    code.copy data-name="invite-token" data-value=(i.invite_token) { (i.invite_token) }
                    button.secondary.small type="button" data-copy=(i.invite_token) aria-label="Copy the invitation token" { "Copy" }
                }
                p.muted { "They accept it with " code { "highrise member accept <token>" } " and choose a password; then they sign in here. It is valid until " (time(i.invite_expires_at)) "." }
            }
        }
        section.card {
            div.table-wrap { table {
                thead { tr { th { "Email" } th { "Role" } th { "Status" } th.hide-narrow { "Since" } @if manage { th { span.muted { "Change" } } } } }
                tbody { @for m in members {
                    tr data-member=(m.email) {
                        td { (m.email) } td { (m.role.as_str()) } td { (page::badge(&m.status)) }
                        td.hide-narrow { (time(m.created_at)) }
                        @if manage {
                            td { div.actions {
                                form.inline method="post" action={ "/console/members/" (segment(&m.user_id)) "/role" } {
                                    (csrf_field(&signed.csrf))
                                    (role_select("role", m.role, &format!("Role of {}", m.email)))
                                    button.secondary.small type="submit" { "Change" }
                                }
                                form.inline method="post" action={ "/console/members/" (segment(&m.user_id)) "/remove" } {
                                    (csrf_field(&signed.csrf))
                                    button.secondary.small type="submit" aria-label={ "Remove " (m.email) } { "Remove" }
                                }
                            } }
                        }
                    }
                } }
            } }
        }
        @if manage {
            section.card {
                h2 { "Invite someone" }
                form.stack method="post" action="/console/members" {
                    (csrf_field(&signed.csrf))
                    div.row {
                        label { "Email" input type="email" name="email" required autocomplete="off"; }
                        label { "Role" (role_select("role", Role::Developer, "Role")) }
                    }
                    div { button.primary type="submit" { "Invite" } }
                }
                p.muted { "Roles: owner (everything), admin (all but owners), developer (clusters and backups), viewer (read only), billing (usage and invoices)." }
            }
        }
    };
    page::page("Members", Some(signed), "members", body)
}

async fn members(signed: &Signed) -> Result<Vec<OrgMember>, Failure> {
    signed.api.get("/v1/members?limit=1000").await
}

pub(super) async fn list(signed: Signed) -> Result<Html<String>, Failure> {
    let members = members(&signed).await?;
    Ok(Html(members_page(&signed, &members, None).into_string()))
}

#[derive(Deserialize)]
pub(super) struct InviteForm {
    email: String,
    role: String,
}

fn role(s: &str) -> Result<Role, Failure> {
    s.parse().map_err(|message| Failure {
        status: StatusCode::BAD_REQUEST,
        message,
    })
}

pub(super) async fn invite(Posted { signed, form }: Posted<InviteForm>) -> Result<Html<String>, Failure> {
    let req = InviteMember {
        email: form.email,
        role: role(&form.role)?,
    };
    let invited: InvitedMember = signed.api.post("/v1/members", &req).await?;
    let members = members(&signed).await?;
    Ok(Html(members_page(&signed, &members, Some(&invited)).into_string()))
}

#[derive(Deserialize)]
pub(super) struct RoleForm {
    role: String,
}

pub(super) async fn change_role(
    Path(user): Path<String>,
    Posted { signed, form }: Posted<RoleForm>,
) -> Result<Response, Failure> {
    let req = UpdateMember {
        role: role(&form.role)?,
    };
    signed
        .api
        .patch(&format!("/v1/members/{}", segment(&user)), &req)
        .await?;
    Ok(see_other("/console/members"))
}

pub(super) async fn remove(
    Path(user): Path<String>,
    Posted {
        signed,
        form: NoFields {},
    }: Posted<NoFields>,
) -> Result<Response, Failure> {
    signed.api.delete(&format!("/v1/members/{}", segment(&user))).await?;
    Ok(see_other("/console/members"))
}

#[derive(Deserialize, Default)]
pub(super) struct AuditFilter {
    #[serde(default)]
    target: String,
    #[serde(default)]
    actor: String,
}

/// The newest [`AUDIT_SHOWN`] entries matching the filter: the API pages oldest first, so
/// the last pages are read.
async fn newest_audit(signed: &Signed, filter: &AuditFilter) -> Result<Vec<AuditEntry>, Failure> {
    let mut query = String::from("limit=1000");
    for (k, v) in [("target", &filter.target), ("actor", &filter.actor)] {
        if !v.trim().is_empty() {
            query.push_str(&format!("&{k}={}", segment(v.trim())));
        }
    }
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let page: Vec<AuditEntry> = signed
            .api
            .get(&match cursor {
                Some(c) => format!("/v1/audit?{query}&cursor={c}"),
                None => format!("/v1/audit?{query}"),
            })
            .await?;
        let Some(last) = page.last().map(|e| e.seq) else { break };
        let full = page.len() == 1000;
        entries.extend(page);
        if entries.len() > AUDIT_SHOWN {
            entries.drain(..entries.len() - AUDIT_SHOWN);
        }
        if !full {
            break;
        }
        cursor = Some(last);
    }
    entries.reverse();
    Ok(entries)
}

pub(super) async fn audit(signed: Signed, Query(filter): Query<AuditFilter>) -> Result<Html<String>, Failure> {
    let entries = newest_audit(&signed, &filter).await?;
    let body = html! {
        h1 { "Audit log" }
        section.card {
            form.inline method="get" action="/console/audit" {
                label { "Target starts with" input type="text" name="target" value=(filter.target) placeholder="clusters/shop"; }
                label { "Actor" input type="text" name="actor" value=(filter.actor) placeholder="user:usr_…"; }
                button.secondary type="submit" { "Filter" }
            }
        }
        section.card {
            @if entries.is_empty() {
                p.empty { "No entries match. Every change made through the API, the CLI or this console is recorded here." }
            } @else {
                p.muted { "The newest " (entries.len()) " entries, newest first. The log is chained: " code { "highrise audit verify" } " finds an edited or removed entry." }
                div.table-wrap { table.wrap {
                    thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th.hide-narrow { "From" } th { "Result" } } }
                    tbody { @for e in &entries {
                        tr {
                            td { (time(e.at_ms.div_euclid(1000))) } td { (e.actor) } td { (e.action) } td { (e.target) }
                            td.hide-narrow { (e.source) } td { (e.result) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(Html(
        page::page("Audit log", Some(&signed), "audit", body).into_string(),
    ))
}
