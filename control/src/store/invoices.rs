//! Issued invoices: each closed month's invoice as frozen, numbered in the order issued;
//! every unit of usage an issued invoice holds (cumulative, so late usage is carried
//! exactly once); and the credits granted to an org.

use super::*;

/// An issued invoice. Amounts are decimal strings as stored; `document` is the invoice as
/// the API shows it (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRow {
    pub org_id: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Taken when issued (ignored when issuing).
    pub number: i64,
    pub issued_at: i64,
    pub total: String,
    pub credits_applied: String,
    pub commitment_applied: String,
    /// The commitment drawn down (as `commitment_period` names it), if any.
    pub commitment_period: Option<String>,
    pub due: String,
    pub document: String,
}

/// A credit granted to an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRow {
    pub id: String,
    pub org_id: String,
    pub amount: String,
    pub reason: String,
    pub granted_at: i64,
}

fn issued(r: &AnyRow) -> Result<IssuedRow> {
    Ok(IssuedRow {
        org_id: r.try_get("org_id")?,
        month: r.try_get("month")?,
        number: r.try_get("number")?,
        issued_at: r.try_get("issued_at")?,
        total: r.try_get("total")?,
        credits_applied: r.try_get("credits_applied")?,
        commitment_applied: r.try_get("commitment_applied")?,
        commitment_period: r.try_get("commitment_period")?,
        due: r.try_get("due")?,
        document: r.try_get("document")?,
    })
}

impl Store {
    /// Orgs that have ever been metered (whose months are invoiced).
    pub async fn metered_orgs(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT org_id FROM meters ORDER BY org_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("org_id")?)).collect()
    }

    /// The last month (`YYYY-MM`) whose invoice was issued to the org.
    pub async fn last_issued_month(&self, org_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT MAX(month) AS month FROM invoices WHERE org_id = $1")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("month")?)
    }

    /// The org's issued invoice of `month`, if it was issued.
    pub async fn issued_invoice(&self, org_id: &str, month: &str) -> Result<Option<IssuedRow>> {
        let row = sqlx::query("SELECT * FROM invoices WHERE org_id = $1 AND month = $2")
            .bind(org_id)
            .bind(month)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(issued).transpose()
    }

    /// The org's issued invoices, oldest first.
    pub async fn issued_invoices(&self, org_id: &str) -> Result<Vec<IssuedRow>> {
        let rows = sqlx::query("SELECT * FROM invoices WHERE org_id = $1 ORDER BY month")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(issued).collect()
    }

    /// Every unit of the org's usage its issued invoices hold, per cluster, dimension and
    /// place (`hour` is `None`).
    pub async fn invoiced_usage(&self, org_id: &str) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT cluster_id, cluster_name, dimension, cloud, region, quantity FROM invoiced_usage \
             WHERE org_id = $1 ORDER BY cluster_id, dimension, cloud, region",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| super::usage::usage_row(r, false)).collect()
    }

    /// Issues an invoice in one transaction: the next number, the frozen document and
    /// the usage it holds added to what earlier invoices hold. The invoice's number is
    /// returned; a month issued already (by another control plane, or before a restart)
    /// is a [`StoreError::Conflict`] and changes nothing.
    pub async fn issue_invoice(&self, inv: &IssuedRow, holds: &[UsageRow]) -> Result<i64> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 AS next FROM invoices")
            .fetch_one(&mut *tx)
            .await?;
        let number: i64 = row.try_get("next")?;
        let inserted = sqlx::query(
            "INSERT INTO invoices (org_id, month, number, issued_at, total, credits_applied, commitment_applied, \
             commitment_period, due, document) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&inv.org_id)
        .bind(&inv.month)
        .bind(number)
        .bind(inv.issued_at)
        .bind(&inv.total)
        .bind(&inv.credits_applied)
        .bind(&inv.commitment_applied)
        .bind(&inv.commitment_period)
        .bind(&inv.due)
        .bind(&inv.document)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "invoice {} of {} (or its number) was issued meanwhile",
                    inv.month, inv.org_id
                )))
            }
            Err(e) => return Err(e.into()),
        }
        for u in holds {
            sqlx::query(
                "INSERT INTO invoiced_usage (org_id, cluster_id, cluster_name, dimension, cloud, region, quantity) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, cluster_id, dimension, cloud, region) \
                 DO UPDATE SET quantity = invoiced_usage.quantity + excluded.quantity",
            )
            .bind(&inv.org_id)
            .bind(&u.cluster_id)
            .bind(&u.cluster_name)
            .bind(&u.dimension)
            .bind(&u.cloud)
            .bind(&u.region)
            .bind(u.quantity)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(number)
    }

    pub async fn grant_credit(&self, c: &CreditRow) -> Result<()> {
        sqlx::query("INSERT INTO billing_credits (id, org_id, amount, reason, granted_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&c.id)
            .bind(&c.org_id)
            .bind(&c.amount)
            .bind(&c.reason)
            .bind(c.granted_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The credits granted to the org, oldest first.
    pub async fn credits(&self, org_id: &str) -> Result<Vec<CreditRow>> {
        let rows = sqlx::query("SELECT * FROM billing_credits WHERE org_id = $1 ORDER BY granted_at, id")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CreditRow {
                    id: r.try_get("id")?,
                    org_id: r.try_get("org_id")?,
                    amount: r.try_get("amount")?,
                    reason: r.try_get("reason")?,
                    granted_at: r.try_get("granted_at")?,
                })
            })
            .collect()
    }
}
