//! API keys: the org's keys, a create form whose answer shows the secret once, revoking.

use super::page::{self, csrf_field, time};
use super::*;
use axum::extract::Path;
use axum::response::Html;
use highrise_api::{ApiKey, CreateApiKey, CreatedApiKey};
use maud::{html, Markup};
use serde::Deserialize;

/// The roles a key can be given, most to least.
const ROLES: [Role; 5] = Role::ALL;

fn keys_page(signed: &Signed, keys: &[ApiKey], created: Option<&CreatedApiKey>) -> Markup {
    let live: Vec<&ApiKey> = keys.iter().filter(|k| k.revoked_at.is_none()).collect();
    let body = html! {
        h1 { "API keys" }
        @if let Some(c) = created {
            section.card.secret role="status" {
                p { strong { "Key " (c.key.name) " created. Copy its secret now: it is shown only this once." } }
                div.field-head {
                    code.copy #new-secret data-name="secret" data-value=(c.secret) { (c.secret) }
                    button.secondary.small type="button" data-copy=(c.secret) aria-label="Copy the secret" { "Copy" }
                }
                p.muted { "Use it as " code { "Authorization: Bearer <secret>" } ", or " code { "HIGHRISE_API_KEY" } " for the CLI." }
            }
        }
        section.card {
            @if live.is_empty() {
                p.empty { "No API keys. Create one for scripts and CI; people sign in with their own accounts." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Name" } th { "Role" } th.hide-narrow { "Project" } th.hide-narrow { "Created" } th { "Expires" } @if signed.may(Action::WriteKeys) { th { span.muted { "Revoke" } } } } }
                    tbody { @for k in &live {
                        tr data-key=(k.name) {
                            td { (k.name) } td { (k.role.as_str()) }
                            td.hide-narrow { (k.project.as_deref().unwrap_or("all")) }
                            td.hide-narrow { (time(k.created_at)) }
                            td { @match k.expires_at { Some(e) => (time(e)), None => "never" } }
                            @if signed.may(Action::WriteKeys) {
                                td { form.inline method="post" action={ "/console/api-keys/" (segment(&k.id)) "/revoke" } {
                                    (csrf_field(&signed.csrf))
                                    button.secondary type="submit" aria-label={ "Revoke " (k.name) } { "Revoke" }
                                } }
                            }
                        }
                    } }
                } }
            }
        }
        @if signed.may(Action::WriteKeys) {
            section.card {
                h2 { "Create an API key" }
                form.stack method="post" action="/console/api-keys" {
                    (csrf_field(&signed.csrf))
                    div.row {
                        label { "Name" input type="text" name="name" required maxlength="64" autocomplete="off"; }
                        label { "Role"
                            select name="role" {
                                @for r in ROLES {
                                    @if r == Role::Developer { option value=(r.as_str()) selected { (r.as_str()) } }
                                    @else { option value=(r.as_str()) { (r.as_str()) } }
                                }
                            }
                        }
                        label { "Expires after (days, empty: never)" input type="number" name="expires_days" min="1" max="3650"; }
                    }
                    div { button.primary type="submit" { "Create key" } }
                }
            }
        }
    };
    page::page("API keys", Some(signed), "api-keys", body)
}

async fn live_keys(signed: &Signed) -> Result<Vec<ApiKey>, Failure> {
    let keys: Vec<ApiKey> = signed.api.get("/v1/api-keys?limit=1000").await?;
    // Sessions are keys too; the page lists the keys people made for programs.
    Ok(keys.into_iter().filter(|k| k.name != "session").collect())
}

pub(super) async fn list(signed: Signed) -> Result<Html<String>, Failure> {
    let keys = live_keys(&signed).await?;
    Ok(Html(keys_page(&signed, &keys, None).into_string()))
}

#[derive(Deserialize)]
pub(super) struct CreateForm {
    name: String,
    role: String,
    #[serde(default)]
    expires_days: String,
}

pub(super) async fn create(Posted { signed, form }: Posted<CreateForm>) -> Result<Html<String>, Failure> {
    let bad = |message: &str| Failure {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    };
    let role: Role = form.role.parse().map_err(|e: String| bad(&e))?;
    let expires_in_seconds = match form.expires_days.trim() {
        "" => None,
        d => Some(
            d.parse::<i64>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| bad("A key expires after 1 to 3650 days, or never."))?
                * 86_400,
        ),
    };
    let req = CreateApiKey {
        name: form.name,
        role: Some(role),
        project: None,
        expires_in_seconds,
    };
    let created: CreatedApiKey = signed.api.post("/v1/api-keys", &req).await?;
    let keys = live_keys(&signed).await?;
    Ok(Html(keys_page(&signed, &keys, Some(&created)).into_string()))
}

pub(super) async fn revoke(
    Path(id): Path<String>,
    Posted {
        signed,
        form: NoFields {},
    }: Posted<NoFields>,
) -> Result<Response, Failure> {
    signed.api.delete(&format!("/v1/api-keys/{}", segment(&id))).await?;
    Ok(see_other("/console/api-keys"))
}
