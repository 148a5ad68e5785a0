//! The land's TLS trust: the certificate of the control plane's CA, which signs every
//! proxy's certificate. Public: a client needs it before it has any credentials, and it
//! is no secret.

use super::*;

/// The CA certificate (PEM) to verify the proxies with: `sslrootcert` for
/// `sslmode=verify-full`.
#[utoipa::path(get, path = "/v1/tls/ca", security(()),
    responses((status = 200, description = "The CA certificate, PEM", content_type = "application/x-pem-file", body = String),
        (status = 404, body = ErrorBody, description = "This control plane runs without a CA")))]
pub(super) async fn ca_certificate(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let pem = state
        .cfg
        .ca
        .as_ref()
        .map(|ca| ca.cert_pem().to_string())
        .ok_or_else(|| ApiError::not_found("CA certificate"))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}
