//! Billing terms (commitment, hard limit, alert webhook) per org, the spend alerts fired
//! for them with their webhook deliveries, and the marketplace an org pays through.

use super::*;

/// An org's billing terms; amounts are decimal strings as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingTermsRow {
    pub commitment: Option<String>,
    pub commitment_from: Option<i64>,
    pub commitment_to: Option<i64>,
    pub hard_limit: Option<String>,
    pub alert_webhook: Option<String>,
}

/// The marketplace an org pays through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketplaceRow {
    pub marketplace: String,
    pub account: String,
    pub licence: Option<String>,
    pub linked_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub org_id: String,
    pub period: String,
    pub threshold: i64,
    pub spent: String,
    pub budget: String,
    pub fired_at: i64,
    pub delivered_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

fn alert(r: &AnyRow) -> Result<AlertRow> {
    Ok(AlertRow {
        org_id: r.try_get("org_id")?,
        period: r.try_get("period")?,
        threshold: r.try_get("threshold")?,
        spent: r.try_get("spent")?,
        budget: r.try_get("budget")?,
        fired_at: r.try_get("fired_at")?,
        delivered_at: r.try_get("delivered_at")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
    })
}

fn terms(r: &AnyRow) -> Result<BillingTermsRow> {
    Ok(BillingTermsRow {
        commitment: r.try_get("commitment")?,
        commitment_from: r.try_get("commitment_from")?,
        commitment_to: r.try_get("commitment_to")?,
        hard_limit: r.try_get("hard_limit")?,
        alert_webhook: r.try_get("alert_webhook")?,
    })
}

impl Store {
    /// The org's terms (all empty when none were set).
    pub async fn billing_terms(&self, org_id: &str) -> Result<BillingTermsRow> {
        let row = sqlx::query(
            "SELECT commitment, commitment_from, commitment_to, hard_limit, alert_webhook \
             FROM billing_terms WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(terms).transpose().map(Option::unwrap_or_default)
    }

    pub async fn set_billing_terms(&self, org_id: &str, t: &BillingTermsRow, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO billing_terms (org_id, commitment, commitment_from, commitment_to, hard_limit, alert_webhook, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id) DO UPDATE SET \
             commitment = excluded.commitment, commitment_from = excluded.commitment_from, \
             commitment_to = excluded.commitment_to, hard_limit = excluded.hard_limit, \
             alert_webhook = excluded.alert_webhook, updated_at = excluded.updated_at",
        )
        .bind(org_id)
        .bind(&t.commitment)
        .bind(t.commitment_from)
        .bind(t.commitment_to)
        .bind(&t.hard_limit)
        .bind(&t.alert_webhook)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Orgs with a commitment (whose spend is watched for alerts).
    pub async fn orgs_with_commitments(&self) -> Result<Vec<(String, BillingTermsRow)>> {
        let rows = sqlx::query(
            "SELECT org_id, commitment, commitment_from, commitment_to, hard_limit, alert_webhook \
             FROM billing_terms WHERE commitment IS NOT NULL ORDER BY org_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("org_id")?, terms(r)?))).collect()
    }

    /// Fires an alert once: false when this org, period and threshold fired already.
    pub async fn fire_alert(&self, a: &AlertRow) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO billing_alerts (org_id, period, threshold, spent, budget, fired_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, period, threshold) DO NOTHING",
        )
        .bind(&a.org_id)
        .bind(&a.period)
        .bind(a.threshold)
        .bind(&a.spent)
        .bind(&a.budget)
        .bind(a.fired_at)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The org's alerts, newest first.
    pub async fn alerts(&self, org_id: &str) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query("SELECT * FROM billing_alerts WHERE org_id = $1 ORDER BY fired_at DESC, threshold DESC")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert).collect()
    }

    /// Alerts whose webhook has not taken them yet (oldest first).
    pub async fn undelivered_alerts(&self) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query("SELECT * FROM billing_alerts WHERE delivered_at IS NULL ORDER BY fired_at, threshold")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert).collect()
    }

    /// Records a delivery attempt: delivered at `at`, or failed with `error`.
    pub async fn alert_attempted(&self, a: &AlertRow, at: i64, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE billing_alerts SET attempts = attempts + 1, last_error = $1, delivered_at = $2 \
             WHERE org_id = $3 AND period = $4 AND threshold = $5",
        )
        .bind(error)
        .bind(error.is_none().then_some(at))
        .bind(&a.org_id)
        .bind(&a.period)
        .bind(a.threshold)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn marketplace_link(&self, org_id: &str) -> Result<Option<MarketplaceRow>> {
        let row =
            sqlx::query("SELECT marketplace, account, licence, linked_at FROM marketplace_links WHERE org_id = $1")
                .bind(org_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(MarketplaceRow {
                marketplace: r.try_get("marketplace")?,
                account: r.try_get("account")?,
                licence: r.try_get("licence")?,
                linked_at: r.try_get("linked_at")?,
            })
        })
        .transpose()
    }

    /// Every live cluster of an org that pays through a marketplace, and which one:
    /// `(cluster id, marketplace)`.
    pub async fn marketplace_clusters(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT c.id, m.marketplace FROM clusters c JOIN marketplace_links m ON m.org_id = c.org_id \
             WHERE c.deleted_at IS NULL ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("marketplace")?)))
            .collect()
    }

    /// Links the org to a marketplace account (replacing a link it had).
    pub async fn link_marketplace(&self, org_id: &str, m: &MarketplaceRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO marketplace_links (org_id, marketplace, account, licence, linked_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org_id) DO UPDATE SET marketplace = excluded.marketplace, account = excluded.account, \
             licence = excluded.licence, linked_at = excluded.linked_at",
        )
        .bind(org_id)
        .bind(&m.marketplace)
        .bind(&m.account)
        .bind(&m.licence)
        .bind(m.linked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
