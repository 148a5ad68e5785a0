//! The org's invoices: each calendar month's usage (UTC) priced by the list-price book —
//! the running month as a draft ("the bill so far"), a closed month as issued (frozen,
//! numbered; `crate::invoicing`). JSON, and as documents to file: PDF and HTML
//! (`crate::documents`).

use super::*;
use crate::invoicing;

/// The org's invoices, newest first: every month from its first usage to this one.
#[utoipa::path(get, path = "/v1/invoices",
    responses((status = 200, body = [InvoiceSummary]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_invoices(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<InvoiceSummary>>> {
    require(&caller, Action::ReadUsage)?;
    let now = now();
    let failed = |e: anyhow::Error| ApiError::internal("invoices", format!("{e:#}"));
    let mut out: Vec<InvoiceSummary> = state
        .store
        .issued_invoices(&caller.org_id)
        .await
        .map_err(store_err("invoices"))?
        .into_iter()
        .map(|row| InvoiceSummary {
            month: row.month,
            status: "issued".into(),
            number: Some(invoicing::number(row.number)),
            total: row.total,
            due: row.due,
            currency: invoicing::CURRENCY.into(),
        })
        .collect();
    // Then every month not issued yet, to this one.
    let current = crate::billing::month_of(now).map_err(failed)?.0;
    let mut month = invoicing::first_unissued(&state.store, &caller.org_id)
        .await
        .map_err(failed)?
        .unwrap_or(current);
    while month <= current {
        let inv = invoice_of(&state, &caller.org_id, month, now).await?;
        out.push(InvoiceSummary {
            month: inv.month,
            status: inv.status,
            number: inv.number,
            total: inv.total,
            due: inv.due,
            currency: inv.currency,
        });
        month = crate::billing::month_of(month).map_err(failed)?.1;
    }
    out.reverse();
    Ok(Json(out))
}

/// One month's invoice (`YYYY-MM`, UTC); this month's is the bill so far.
#[utoipa::path(get, path = "/v1/invoices/{month}",
    params(("month" = String, Path, description = "The month, `YYYY-MM`", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")),
    responses((status = 200, body = Invoice), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_invoice(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(month): ApiPath<String>,
) -> ApiResult<Json<Invoice>> {
    Ok(Json(month_invoice(&state, &caller, &month).await?))
}

/// The caller's invoice of `month` (`YYYY-MM`), refused before the month begins.
async fn month_invoice(state: &AppState, caller: &Caller, month: &str) -> ApiResult<Invoice> {
    require(caller, Action::ReadUsage)?;
    let first = parse_month(month)?;
    let now = jiff::Timestamp::now();
    if first > month_of(now) {
        return Err(ApiError::not_found(format!(
            "invoice {month} (the month has not begun)"
        )));
    }
    invoice_of(state, &caller.org_id, unix(first)?, now.as_second()).await
}

/// One month's invoice as a PDF to file.
#[utoipa::path(get, path = "/v1/invoices/{month}/pdf",
    params(("month" = String, Path, description = "The month, `YYYY-MM`", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")),
    responses((status = 200, content_type = "application/pdf", body = Vec<u8>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn invoice_pdf(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(month): ApiPath<String>,
) -> ApiResult<Response> {
    document(&state, &caller, &month, Document::Pdf).await
}

/// One month's invoice as an HTML page (to read, or print).
#[utoipa::path(get, path = "/v1/invoices/{month}/html",
    params(("month" = String, Path, description = "The month, `YYYY-MM`", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")),
    responses((status = 200, content_type = "text/html", body = String), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn invoice_html(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(month): ApiPath<String>,
) -> ApiResult<Response> {
    document(&state, &caller, &month, Document::Html).await
}

enum Document {
    Pdf,
    Html,
}

/// The caller's invoice of `month` rendered as `kind`, with its file name.
async fn document(state: &AppState, caller: &Caller, month: &str, kind: Document) -> ApiResult<Response> {
    let inv = month_invoice(state, caller, month).await?;
    let org = state.store.find_org(&caller.org_id).await.map_err(store_err("org"))?;
    let billed = crate::documents::Billed {
        name: &org.name,
        id: &caller.org_id,
    };
    let (content_type, ext, body) = match kind {
        Document::Pdf => ("application/pdf", "pdf", crate::documents::pdf(&inv, &billed)),
        Document::Html => (
            "text/html; charset=utf-8",
            "html",
            crate::documents::html(&inv, &billed).into_bytes(),
        ),
    };
    Ok(attachment(content_type, &format!("invoice-{}.{ext}", inv.month), body))
}

fn attachment(content_type: &str, filename: &str, body: Vec<u8>) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_string()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `YYYY-MM` as the month's first day.
pub(super) fn parse_month(month: &str) -> ApiResult<jiff::civil::Date> {
    let bad = || ApiError::invalid(format!("month: {month:?} is not YYYY-MM"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    jiff::civil::Date::new(y, m, 1).map_err(|_| bad())
}

/// The first day of `t`'s month, UTC.
pub(super) fn month_of(t: jiff::Timestamp) -> jiff::civil::Date {
    t.to_zoned(jiff::tz::TimeZone::UTC).date().first_of_month()
}

pub(super) fn unix(d: jiff::civil::Date) -> ApiResult<i64> {
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| ApiError::internal("a month's start", e))
}

/// The org's invoice of the month starting at `start` (Unix seconds).
async fn invoice_of(state: &AppState, org_id: &str, start: i64, now: i64) -> ApiResult<Invoice> {
    let prices = invoicing::Pricing {
        book: &state.cfg.list_prices.0,
        version: &state.cfg.list_prices.1,
    };
    invoicing::invoice(&state.store, prices, org_id, start, now)
        .await
        .map_err(|e| {
            tracing::error!("the invoice of {org_id} for {start}: {e:#}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unpriced", format!("{e:#}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_read_strictly() {
        assert_eq!(parse_month("2026-12").unwrap().to_string(), "2026-12-01");
        assert_eq!(parse_month("0001-01").unwrap().to_string(), "0001-01-01");
        for bad in ["2026-13", "2026-1", "26-12", "2026-12-01", "2026_12", "", "-001-01"] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }
}
