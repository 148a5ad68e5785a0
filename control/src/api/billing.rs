//! The org's billing terms and how its spend stands against them: the monthly hard
//! limit and the alert webhook (set by the org), the prepaid commitment (recorded by the
//! operator) and the spend alerts fired.

use super::*;
use crate::billing;
use crate::store::BillingTermsRow;
use highrise_billing::export::State as RecordState;
use highrise_billing::marketplace::Marketplace;
use rust_decimal::Decimal;

/// An amount in USD as the schema's pattern has it: up to 12 digits, at most two decimals.
fn parse_amount(field: &str, s: &str) -> ApiResult<Decimal> {
    let bad = || {
        ApiError::invalid(format!(
            "{field}: an amount in USD with at most two decimals, like 1000.50"
        ))
    };
    let (whole, cents) = s.split_once('.').unwrap_or((s, ""));
    let digits =
        |p: &str, min: usize, max: usize| (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole, 1, 12) || !(cents.is_empty() && !s.contains('.') || digits(cents, 1, 2)) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn internal(what: &'static str) -> impl FnOnce(anyhow::Error) -> ApiError {
    move |e| ApiError::internal(what, format!("{e:#}"))
}

/// The org's billing terms, this month's spend, its commitment's drawdown and its alerts.
#[utoipa::path(get, path = "/v1/billing",
    responses((status = 200, body = BillingStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_billing(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<BillingStatus>> {
    require(&caller, Action::ReadUsage)?;
    Ok(Json(status(&state, &caller.org_id).await?))
}

async fn status(state: &AppState, org_id: &str) -> ApiResult<BillingStatus> {
    let now = now();
    let terms = state
        .store
        .billing_terms(org_id)
        .await
        .map_err(store_err("billing terms"))?;
    let (from, to) = billing::month_of(now).map_err(internal("this month"))?;
    let month_spent = billing::spent(state, org_id, from, to)
        .await
        .map_err(internal("this month's spend"))?;
    let commitment = match billing::commitment_spent(state, org_id, &terms, now)
        .await
        .map_err(internal("the commitment's spend"))?
    {
        Some((amount, spent)) => Some(CommitmentStatus {
            amount: crate::invoicing::money(amount),
            from: terms.commitment_from.unwrap_or(0),
            to: terms.commitment_to.unwrap_or(0),
            spent: crate::invoicing::money(spent),
            balance: crate::invoicing::money((amount - spent).max(Decimal::ZERO)),
        }),
        None => None,
    };
    let credits: Vec<Credit> = state
        .store
        .credits(org_id)
        .await
        .map_err(store_err("credits"))?
        .into_iter()
        .map(|c| Credit {
            id: c.id,
            amount: c.amount,
            reason: c.reason,
            granted_at: c.granted_at,
        })
        .collect();
    let issued = state
        .store
        .issued_invoices(org_id)
        .await
        .map_err(store_err("invoices"))?;
    let credit_balance = crate::invoicing::credit_balance(&state.store, org_id, &issued)
        .await
        .map_err(internal("the credit balance"))?;
    let alerts = state
        .store
        .alerts(org_id)
        .await
        .map_err(store_err("alerts"))?
        .into_iter()
        .map(|a| SpendAlert {
            org_id: a.org_id,
            period: a.period,
            threshold: u32::try_from(a.threshold).unwrap_or(0),
            spent: a.spent,
            budget: a.budget,
            fired_at: a.fired_at,
            delivered_at: a.delivered_at,
            attempts: u32::try_from(a.attempts).unwrap_or(0),
            last_error: a.last_error,
        })
        .collect();
    Ok(BillingStatus {
        month: jiff::Timestamp::from_second(from)
            .map(|t| t.strftime("%Y-%m").to_string())
            .unwrap_or_default(),
        month_spent: crate::invoicing::money(month_spent),
        hard_limit: terms.hard_limit.clone(),
        alert_webhook: terms.alert_webhook.clone(),
        commitment,
        credits,
        credit_balance: crate::invoicing::money(credit_balance),
        marketplace: state
            .store
            .marketplace_link(org_id)
            .await
            .map_err(store_err("marketplace link"))?
            .map(|l| MarketplaceLink {
                marketplace: l.marketplace,
                account: l.account,
                licence: l.licence,
                linked_at: Some(l.linked_at),
            }),
        alerts,
    })
}

/// Whether `w` is a webhook URL as the schema's pattern has it: `http(s)://`, a host of
/// letters, digits, dots and hyphens (1 to 253), an optional port, then an optional path
/// of printable ASCII but the space (up to 2000).
fn webhook_ok(w: &str) -> bool {
    let Some(rest) = w.strip_prefix("http://").or_else(|| w.strip_prefix("https://")) else {
        return false;
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let (host, port) = authority
        .split_once(':')
        .map_or((authority, None), |(h, p)| (h, Some(p)));
    (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && path.len() <= 2001
        && path.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// Set the org's monthly hard limit and alert webhook (each replaces what was set; `null`
/// clears it).
#[utoipa::path(put, path = "/v1/billing", request_body = BillingSettings,
    responses((status = 200, body = BillingStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn set_billing(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<BillingSettings>,
) -> ApiResult<Json<BillingStatus>> {
    caller.audit_target("billing".to_string());
    require(&caller, Action::WriteBilling)?;
    let hard_limit = match &req.hard_limit {
        Some(l) => Some(crate::invoicing::money(parse_amount("hard_limit", l)?)),
        None => None,
    };
    if let Some(w) = &req.alert_webhook {
        if !webhook_ok(w) {
            return Err(ApiError::invalid(
                "alert_webhook: an http:// or https:// URL: a host name or IPv4 address, an optional port and path",
            ));
        }
    }
    let mut terms = state
        .store
        .billing_terms(&caller.org_id)
        .await
        .map_err(store_err("billing terms"))?;
    terms.hard_limit = hard_limit;
    terms.alert_webhook = req.alert_webhook.clone();
    state
        .store
        .set_billing_terms(&caller.org_id, &terms, now())
        .await
        .map_err(store_err("billing terms"))?;
    Ok(Json(status(&state, &caller.org_id).await?))
}

/// Grant an org a credit (operator only): its invoices draw credits down before its
/// commitment.
#[utoipa::path(post, path = "/v1/orgs/{org}/credits", request_body = CreditGrant,
    params(("org" = String, Path, description = "Org id or name")),
    responses((status = 201, body = Credit), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn grant_credit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiJson(req): ApiJson<CreditGrant>,
) -> ApiResult<(StatusCode, Json<Credit>)> {
    caller.audit_target(format!("orgs/{org}/credits"));
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may grant credits"));
    }
    let amount = parse_amount("amount", &req.amount)?;
    if !(1..=200).contains(&req.reason.chars().count()) {
        return Err(ApiError::invalid("reason: 1 to 200 characters"));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    let row = crate::store::CreditRow {
        id: auth::new_id("cr"),
        org_id: o.id,
        amount: crate::invoicing::money(amount),
        reason: req.reason,
        granted_at: now(),
    };
    state.store.grant_credit(&row).await.map_err(store_err("credit"))?;
    Ok((
        StatusCode::CREATED,
        Json(Credit {
            id: row.id,
            amount: row.amount,
            reason: row.reason,
            granted_at: row.granted_at,
        }),
    ))
}

/// Record an org's prepaid commitment (operator only): the amount its usage in the period
/// draws down; alerts fire at 50, 80 and 100% of it.
#[utoipa::path(put, path = "/v1/orgs/{org}/commitment", request_body = SetCommitment,
    params(("org" = String, Path, description = "Org id or name")),
    responses((status = 200, body = BillingStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_commitment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiJson(req): ApiJson<SetCommitment>,
) -> ApiResult<Json<BillingStatus>> {
    caller.audit_target(format!("orgs/{org}/commitment"));
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may record commitments"));
    }
    let amount = parse_amount("amount", &req.amount)?;
    let in_range = |t: i64| (0..=9_999_999_999).contains(&t);
    if !in_range(req.from) || !in_range(req.to) || req.from >= req.to {
        return Err(ApiError::invalid("from, to: Unix seconds, from before to"));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    let terms = state
        .store
        .billing_terms(&o.id)
        .await
        .map_err(store_err("billing terms"))?;
    let terms = BillingTermsRow {
        commitment: Some(crate::invoicing::money(amount)),
        commitment_from: Some(req.from),
        commitment_to: Some(req.to),
        ..terms
    };
    state
        .store
        .set_billing_terms(&o.id, &terms, now())
        .await
        .map_err(store_err("billing terms"))?;
    Ok(Json(status(&state, &o.id).await?))
}

/// Link an org to a cloud marketplace account (operator only, when the marketplace's
/// subscription arrives): from then on its clusters run on that cloud only.
#[utoipa::path(put, path = "/v1/orgs/{org}/marketplace", request_body = MarketplaceLink,
    params(("org" = String, Path, description = "Org id or name")),
    responses((status = 200, body = BillingStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn link_marketplace(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiJson(req): ApiJson<MarketplaceLink>,
) -> ApiResult<Json<BillingStatus>> {
    caller.audit_target(format!("orgs/{org}/marketplace"));
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may link orgs to marketplaces"));
    }
    let m = Marketplace::parse(&req.marketplace).ok_or_else(|| ApiError::invalid("marketplace: aws, azure or gcp"))?;
    m.check_account(&req.account, req.licence.as_deref())
        .map_err(ApiError::invalid)?;
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    // Its clusters must already be where the marketplace's cloud counts them.
    let land = &state.cfg.land_prices;
    let elsewhere: Vec<String> = state
        .store
        .list_clusters(&o.id, None, None, 10_000)
        .await
        .map_err(store_err("clusters"))?
        .into_iter()
        .filter(|c| billing::cloud_family(land, &c.cloud, &c.region) != m.cloud())
        .map(|c| format!("{} ({}/{})", c.name, c.cloud, c.region))
        .collect();
    if !elsewhere.is_empty() {
        return Err(ApiError::conflict(format!(
            "{} bills only what runs on {}: move these clusters there first: {}",
            m.title(),
            m.cloud(),
            elsewhere.join(", ")
        )));
    }
    let row = crate::store::MarketplaceRow {
        marketplace: m.as_str().into(),
        account: req.account.clone(),
        licence: req.licence.clone(),
        linked_at: now(),
    };
    state
        .store
        .link_marketplace(&o.id, &row)
        .await
        .map_err(store_err("marketplace link"))?;
    Ok(Json(status(&state, &o.id).await?))
}

/// 409 unless `cloud`/`region` is where the org's marketplace (if it pays through one)
/// counts its consumption.
pub(super) async fn check_marketplace(
    state: &AppState,
    org_id: &str,
    cloud: &str,
    region: &str,
    doing: &str,
) -> ApiResult<()> {
    let Some(m) = billing::marketplace_of(state, org_id)
        .await
        .map_err(internal("the org's marketplace"))?
    else {
        return Ok(());
    };
    let family = billing::cloud_family(&state.cfg.land_prices, cloud, region);
    if highrise_billing::marketplace::allows(Some(m), &family) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "marketplace",
        format!(
            "the org pays through the {}, which counts only what runs on {}: {doing} {cloud}/{region} ({family}) \
             would take its usage off the customer's commitment; choose a cloud of {}",
            m.title(),
            m.cloud(),
            m.cloud()
        ),
    ))
}

/// The first cloud of the land that the org's marketplace counts, if it pays through one
/// (where a cluster goes when its create names no cloud).
pub(super) async fn marketplace_cloud(state: &AppState, org_id: &str) -> ApiResult<Option<String>> {
    let Some(m) = billing::marketplace_of(state, org_id)
        .await
        .map_err(internal("the org's marketplace"))?
    else {
        return Ok(None);
    };
    Ok(billing::marketplace_clouds(state, m).into_iter().next())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct MarginQuery {
    /// The month, `YYYY-MM` (UTC; default: this month).
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: Option<String>,
}

/// The margin report of an org's month (operator only): per cluster, its usage at list
/// prices against what the land charges for it.
#[utoipa::path(get, path = "/v1/orgs/{org}/margin",
    params(("org" = String, Path, description = "Org id or name"), MarginQuery),
    responses((status = 200, body = MarginReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn margin_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<MarginQuery>,
) -> ApiResult<Json<MarginReport>> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may read margins"));
    }
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    let first = match &q.month {
        Some(m) => invoices::parse_month(m)?,
        None => invoices::month_of(jiff::Timestamp::now()),
    };
    let (from, to) = billing::month_of(invoices::unix(first)?).map_err(internal("the month"))?;
    let (lines, _) = billing::priced(&state, &o.id, from, to)
        .await
        .map_err(internal("price the month"))?;
    let land = &state.cfg.land_prices;
    let rows = highrise_billing::margin::margins(&lines, |d, c, r| billing::unit_cost(land, d, c, r))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "uncosted", e.to_string()))?;
    let exact = |d: Decimal| format!("{:.6}", d);
    let pct = |margin: Decimal, price: Decimal| {
        (!price.is_zero()).then(|| format!("{:.2}", margin * Decimal::from(100) / price))
    };
    let (price, cost) = rows
        .iter()
        .fold((Decimal::ZERO, Decimal::ZERO), |(p, c), r| (p + r.price, c + r.cost));
    Ok(Json(MarginReport {
        org_id: o.id,
        month: first.strftime("%Y-%m").to_string(),
        clusters: rows
            .iter()
            .map(|r| ClusterMargin {
                cluster_id: r.cluster_id.clone(),
                cluster: r.cluster.clone(),
                dimensions: r.dimensions.clone(),
                price: exact(r.price),
                cost: exact(r.cost),
                margin: exact(r.margin),
                margin_pct: pct(r.margin, r.price),
            })
            .collect(),
        price: exact(price),
        cost: exact(cost),
        margin: exact(price - cost),
        margin_pct: pct(price - cost, price),
    }))
}

/// 409 when the org's spend this month has reached its hard limit (new clusters wait
/// until the limit is raised or the month ends).
pub(super) async fn check_hard_limit(state: &AppState, org_id: &str) -> ApiResult<()> {
    match billing::over_hard_limit(state, org_id, now()).await {
        Ok(None) => Ok(()),
        Ok(Some((spent, limit))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "spend_limit",
            format!(
                "this month's spend ({}) has reached the org's hard limit ({}): no new clusters until the \
                 limit is raised (highrise billing set --hard-limit) or the month ends",
                crate::invoicing::money(spent),
                crate::invoicing::money(limit)
            ),
        )),
        Err(e) => Err(internal("check the hard limit")(e)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    /// Only the records in this state.
    #[param(pattern = "^(pending|accepted|conflict|rejected|expired)$")]
    state: Option<String>,
}

/// The usage records sent (or to be sent) to an org's marketplace, with what the
/// marketplace answered (operator only).
#[utoipa::path(get, path = "/v1/orgs/{org}/marketplace/records",
    params(("org" = String, Path, description = "Org id or name"), RecordsQuery),
    responses((status = 200, body = MarketplaceRecords), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn marketplace_records(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecordsQuery>,
) -> ApiResult<Json<MarketplaceRecords>> {
    if !caller.may(Action::Operate) {
        return Err(ApiError::forbidden("only the operator may read marketplace records"));
    }
    let wanted = match q.state.as_deref() {
        Some(s) => Some(
            RecordState::parse(s)
                .ok_or_else(|| ApiError::invalid("state: pending, accepted, conflict, rejected or expired"))?,
        ),
        None => None,
    };
    let o = state.store.find_org(&org).await.map_err(store_err("org"))?;
    let rows = state
        .store
        .marketplace_records(&o.id)
        .await
        .map_err(store_err("marketplace records"))?;
    Ok(Json(MarketplaceRecords {
        org_id: o.id,
        records: rows
            .into_iter()
            .filter(|r| wanted.is_none_or(|w| r.state == w.as_str()))
            .map(|r| MarketplaceRecord {
                marketplace: r.marketplace,
                account: r.account,
                dimension: r.dimension,
                hour: r.hour,
                quantity: u64::try_from(r.quantity).unwrap_or(0),
                state: r.state,
                attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
                in_doubt: r.in_doubt,
                last_error: r.last_error,
                receipt: r.receipt,
                staged_at: r.staged_at,
                settled_at: r.settled_at,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_are_read_strictly() {
        for ok in ["0", "10", "1000.5", "1000.50", "999999999999.99"] {
            assert!(super::parse_amount("a", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".5", "1.", "1.234", "-1", "1e3", "1,000", "1000000000000", " 1"] {
            assert!(super::parse_amount("a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhooks_are_urls_a_client_can_call() {
        for ok in [
            "http://hooks.example.com",
            "https://10.0.0.1:8443/spend?x=[1]",
            "http://a/",
            "https://h:1/p#f",
        ] {
            assert!(super::webhook_ok(ok), "{ok}");
        }
        for bad in [
            "http://",
            "http://[",
            "https://[::1]/x",
            "http://a b",
            "ftp://a",
            "http://a:/",
            "http://a:123456",
            "http://a_b",
            "http://a@b",
        ] {
            assert!(!super::webhook_ok(bad), "{bad}");
        }
    }
}
