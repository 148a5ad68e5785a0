//! Signing in and out: the login form (its CSRF token keyed by a random login cookie),
//! `POST /v1/login` in-process, the session cookie; sign-out ends the session in the API
//! (`POST /v1/logout`) and removes the cookie.

use super::page::{self, csrf_field};
use super::*;
use maud::html;

/// How long the login form's cookie lives (the form must be sent within it).
const LOGIN_FORM_SECS: i64 = 3600;

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    org: String,
}

fn login_page(nonce: &str, email: &str, problem: Option<&str>) -> maud::Markup {
    let body = html! {
        section.card.login {
            h1 { "Sign in to Highrise" }
            @if let Some(p) = problem {
                p.badge.bad role="alert" { (p) }
            }
            form.stack method="post" action="/console/login" {
                (csrf_field(&csrf_token(nonce, "login")))
                label { "Email" input type="email" name="email" value=(email) required autocomplete="username"; }
                label { "Password" input type="password" name="password" required autocomplete="current-password"; }
                label {
                    span { "Org " span.muted { "(only if you belong to several)" } }
                    input type="text" name="org" autocomplete="organization";
                }
                button.primary type="submit" { "Sign in" }
            }
            p.muted { "No account yet? An org's owner or admin invites you (" code { "highrise member invite" } "); accept the invitation with " code { "highrise member accept" } " to choose your password." }
        }
    };
    page::page("Sign in", None, "", body)
}

/// A new login cookie and the form keyed by it.
fn fresh_form(email: &str, status: StatusCode, problem: Option<&str>) -> Response {
    let nonce = crate::auth::random_hex(32);
    (
        status,
        [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &nonce, LOGIN_FORM_SECS))],
        axum::response::Html(login_page(&nonce, email, problem).into_string()),
    )
        .into_response()
}

pub(super) async fn form() -> Response {
    fresh_form("", StatusCode::OK, None)
}

pub(super) async fn sign_in(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let Some(nonce) = cookie(&parts, LOGIN_COOKIE) else {
        return fresh_form("", StatusCode::FORBIDDEN, Some("The sign-in form expired; try again."));
    };
    let bytes = match checked_form(body, &csrf_token(&nonce, "login")).await {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let form: LoginForm = match parse_form(&bytes) {
        Ok(f) => f,
        Err(bad) => return bad.into_response(),
    };
    let login = highrise_api::Login {
        email: form.email.clone(),
        password: form.password,
        org: Some(form.org.trim().to_string()).filter(|o| !o.is_empty()),
    };
    let api = Api::new(&console, None, &parts);
    match api.post::<highrise_api::Session>("/v1/login", &login).await {
        Ok(session) => {
            let max_age = session.expires_at - crate::store::now();
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/console".to_string()),
                    (header::SET_COOKIE, set_cookie(SESSION_COOKIE, &session.secret, max_age)),
                ],
                [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0))],
            )
                .into_response()
        }
        Err(f) => fresh_form(&form.email, f.status, Some(&f.message)),
    }
}

pub(super) async fn sign_out(
    Posted {
        signed,
        form: NoFields {},
    }: Posted<NoFields>,
) -> Response {
    // An already ended session is signed out all the same.
    if let Err(f) = signed.api.call(Method::POST, "/v1/logout", None).await {
        if f.status != StatusCode::UNAUTHORIZED {
            return f.into_response();
        }
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_string()),
            (header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0)),
        ],
    )
        .into_response()
}
