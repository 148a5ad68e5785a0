//! The console's layout — head, header with the org and the user's role, navigation,
//! sign-out — and the pieces pages share: error pages, times, status badges, the CSRF
//! field.

use super::Signed;
use crate::access::Action;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

/// A section of the navigation, shown to the roles that may read it.
pub struct Section {
    pub id: &'static str,
    pub path: &'static str,
    pub label: &'static str,
    pub needs: Action,
}

pub const SECTIONS: [Section; 6] = [
    Section {
        id: "clusters",
        path: "/console/clusters",
        label: "Clusters",
        needs: Action::ReadClusters,
    },
    Section {
        id: "members",
        path: "/console/members",
        label: "Members",
        needs: Action::ReadMembers,
    },
    Section {
        id: "audit",
        path: "/console/audit",
        label: "Audit log",
        needs: Action::ReadAudit,
    },
    Section {
        id: "billing",
        path: "/console/billing",
        label: "Usage",
        needs: Action::ReadUsage,
    },
    Section {
        id: "api-keys",
        path: "/console/api-keys",
        label: "API keys",
        needs: Action::ReadKeys,
    },
    Section {
        id: "settings",
        path: "/console/settings",
        label: "Settings",
        needs: Action::ReadProjects,
    },
];

/// A whole page: `active` is the section it belongs to; without `signed`, no navigation.
pub fn page(title: &str, signed: Option<&Signed>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Highrise" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/assets/console.css";
                // No inline style from htmx: the content security policy admits none.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
                script src="/console/assets/htmx.min.js" defer {}
                script src="/console/assets/console.js" defer {}
                @if let Some(s) = signed {
                    meta name="csrf-token" content=(s.csrf);
                }
            }
            body {
                header.top {
                    a.brand href="/console/clusters" { "Highrise" }
                    @if let Some(s) = signed {
                        nav aria-label="Sections" {
                            @for section in SECTIONS.iter().filter(|x| s.may(x.needs)) {
                                @if section.id == active {
                                    a href=(section.path) aria-current="page" { (section.label) }
                                } @else {
                                    a href=(section.path) { (section.label) }
                                }
                            }
                        }
                        div.who {
                            span { (s.me.org) } " · "
                            span.role { (s.me.role.as_str()) }
                            form method="post" action="/console/logout" {
                                (csrf_field(&s.csrf))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden field every form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// An error page with `status`: what went wrong, in the API's words, and a way back.
pub fn error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        section.card.error {
            h1 { (title) }
            p role="alert" { (message) }
            p { "Go back to the page you came from, or " a href="/console" { "open the console" } "." }
        }
    };
    (status, Html(page(title, None, "", body).into_string())).into_response()
}

pub fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "There is no such page in the console.")
}

/// A Unix second as UTC, to the second.
pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// A Unix second's day (UTC), `2026-12-04`.
pub fn day(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// A status as a coloured badge (`running` green, `creating` and `deleting` amber, the
/// rest red).
pub fn badge(status: &str) -> Markup {
    let tone = match status {
        "running" | "complete" | "primary" | "streaming" | "active" | "issued" => "ok",
        "creating" | "deleting" | "pending" | "running_backup" | "starting" | "invited" | "draft" | "closed" => "busy",
        _ => "bad",
    };
    html! { span class={ "badge " (tone) } { (status.replace('_', " ")) } }
}

/// Bytes as people read them (GiB, MiB …).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string()
}
