//! The org's audit log: read it (owners and admins) and check its chain.

use super::*;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Only entries by this actor (`user:<id>`, `key:<id>`).
    actor: Option<String>,
    /// Only entries whose target starts with this.
    target: Option<String>,
    /// Only entries at or after this time (Unix seconds).
    since: Option<i64>,
    /// Only entries at or before this time (Unix seconds).
    until: Option<i64>,
    /// Entries per page, 1–1000 (100 when omitted).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the previous page ended (its `x-next-cursor` header): a sequence number.
    #[param(pattern = "^[0-9]{1,18}$")]
    cursor: Option<String>,
}

fn entry_view(r: store::AuditRow) -> AuditEntry {
    AuditEntry {
        seq: r.seq,
        at_ms: r.at_ms,
        actor: r.actor,
        action: r.action,
        target: r.target,
        source: r.source,
        result: r.result,
        hash: r.hash,
    }
}

/// The org's audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = [AuditEntry], headers(("x-next-cursor" = String, description = "Pass as `cursor` for the next page"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Paged<AuditEntry>> {
    require(&caller, Action::ReadAudit)?;
    let page = Page::new(q.limit, q.cursor.as_deref())?;
    let after_seq = match &page.after {
        Some(a) => Some(
            Some(a)
                .filter(|a| a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|a| a.parse::<i64>().ok())
                .ok_or_else(bad_cursor)?,
        ),
        None => None,
    };
    let secs_ms = |s: Option<i64>| s.map(|s| s.saturating_mul(1000));
    let filter = store::AuditFilter {
        actor: q.actor,
        target: q.target,
        since_ms: secs_ms(q.since),
        until_ms: q.until.map(|s| s.saturating_mul(1000).saturating_add(999)),
        after_seq,
        limit: page.limit as i64 + 1,
    };
    let mut rows = state
        .store
        .audit(&caller.org_id, &filter)
        .await
        .map_err(store_err("audit log"))?;
    let p = page.paged(&mut rows, |r| r.seq.to_string());
    Ok(Paged {
        items: p.items.into_iter().map(entry_view).collect(),
        next: p.next,
    })
}

/// Check the org's audit chain from its first entry: an edited, removed or reordered
/// entry is reported with its position.
#[utoipa::path(post, path = "/v1/audit/verify",
    responses((status = 200, body = AuditVerification), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn verify_audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<AuditVerification>> {
    require(&caller, Action::ReadAudit)?;
    use crate::audit::{verify, Finding};
    let (mut next_seq, mut prev, mut checked) = (1i64, String::new(), 0u64);
    let mut after = 0i64;
    loop {
        let filter = store::AuditFilter {
            after_seq: Some(after),
            limit: 1000,
            ..Default::default()
        };
        let rows = state
            .store
            .audit(&caller.org_id, &filter)
            .await
            .map_err(store_err("audit log"))?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let (finding, p) = verify(&state.audit_key, &rows, next_seq, &prev);
        if let Finding::Broken { seq, problem } = finding {
            return Ok(Json(AuditVerification {
                ok: false,
                entries_checked: checked,
                first_bad_seq: Some(seq),
                problem: Some(problem),
            }));
        }
        checked += rows.len() as u64;
        next_seq = after + 1;
        prev = p;
    }
    Ok(Json(AuditVerification {
        ok: true,
        entries_checked: checked,
        first_bad_seq: None,
        problem: None,
    }))
}
