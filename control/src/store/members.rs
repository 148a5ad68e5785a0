//! Users (an email and a password hash) and their memberships of orgs, with the role each
//! has there and the invitation that made it.

use super::*;
use highrise_api::Role;

const MEMBER_COLS: &str = "m.org_id, m.user_id, u.email, m.role, m.invite_hash, m.invite_expires_at, m.created_at, \
    m.joined_at";

fn member(r: &AnyRow) -> Result<MemberRow> {
    Ok(MemberRow {
        org_id: r.try_get("org_id")?,
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        role: role(r.try_get("role")?)?,
        invite_hash: r.try_get("invite_hash")?,
        invite_expires_at: r.try_get("invite_expires_at")?,
        created_at: r.try_get("created_at")?,
        joined_at: r.try_get("joined_at")?,
    })
}

fn user(r: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    pub async fn user_by_email(&self, email: &str) -> Result<UserRow> {
        self.user_where("email", email).await
    }

    pub async fn user(&self, id: &str) -> Result<UserRow> {
        self.user_where("id", id).await
    }

    /// The user whose `column` (`id` or `email`, both unique) is `value`.
    async fn user_where(&self, column: &'static str, value: &str) -> Result<UserRow> {
        let sql = format!("SELECT id, email, password_hash, created_at FROM users WHERE {column} = $1");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        user(&row)
    }

    /// Invites `email` to the org with `role`: the user is created if new; a second
    /// invitation of a member is a conflict. Returns the member.
    pub async fn invite_member(
        &self,
        org_id: &str,
        new_user: &UserRow,
        role: Role,
        invite_hash: &str,
        expires_at: i64,
    ) -> Result<MemberRow> {
        let mut tx = self.begin().await?;
        // The user is made once, whoever invites first (racing invitations included).
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&new_user.id)
        .bind(&new_user.email)
        .bind(new_user.created_at)
        .execute(&mut *tx)
        .await?;
        let user_id: String = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(&new_user.email)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
        let res = sqlx::query(
            "INSERT INTO members (org_id, user_id, role, invite_hash, invite_expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(org_id)
        .bind(&user_id)
        .bind(role.as_str())
        .bind(invite_hash)
        .bind(expires_at)
        .bind(new_user.created_at)
        .execute(&mut *tx)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{} is already a member of this org",
                    new_user.email
                )))
            }
            r => r?,
        };
        tx.commit().await?;
        self.member(org_id, &user_id).await
    }

    /// A member of the org by user id or email.
    pub async fn member(&self, org_id: &str, user: &str) -> Result<MemberRow> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM members m JOIN users u ON u.id = m.user_id \
             WHERE m.org_id = $1 AND (u.id = $2 OR u.email = $2)"
        );
        let row = sqlx::query(&sql)
            .bind(org_id)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        member(&row)
    }

    pub async fn list_members(&self, org_id: &str) -> Result<Vec<MemberRow>> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.email"
        );
        let rows = sqlx::query(&sql).bind(org_id).fetch_all(&self.pool).await?;
        rows.iter().map(member).collect()
    }

    /// The orgs the user has joined, with the org's name.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<(MemberRow, String)>> {
        let sql = format!(
            "SELECT {MEMBER_COLS}, o.name AS org_name FROM members m JOIN users u ON u.id = m.user_id \
             JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 AND m.joined_at IS NOT NULL ORDER BY o.name"
        );
        let rows = sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((member(r)?, r.try_get("org_name")?))).collect()
    }

    /// Accepts an invitation: the member joins, and a user without a password gets
    /// `password_hash`.
    pub async fn accept_invite(&self, org_id: &str, user_id: &str, password_hash: Option<&str>, at: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        if let Some(h) = password_hash {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash IS NULL")
                .bind(h)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        let res = sqlx::query(
            "UPDATE members SET joined_at = $1, invite_hash = NULL, invite_expires_at = NULL \
             WHERE org_id = $2 AND user_id = $3 AND joined_at IS NULL",
        )
        .bind(at)
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives a member a new role; the last joined owner stays one.
    pub async fn set_member_role(&self, org_id: &str, user_id: &str, role: Role) -> Result<()> {
        let mut tx = self.begin().await?;
        if role != Role::Owner {
            keep_an_owner(&mut tx, org_id, user_id).await?;
        }
        sqlx::query("UPDATE members SET role = $1 WHERE org_id = $2 AND user_id = $3")
            .bind(role.as_str())
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a member and ends their sessions in the org; the last joined owner stays.
    pub async fn remove_member(&self, org_id: &str, user_id: &str, at: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        keep_an_owner(&mut tx, org_id, user_id).await?;
        sqlx::query("DELETE FROM members WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(at)
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Refuses a change that would take away the org's last joined owner: `user_id` is one
/// and no other joined member is.
async fn keep_an_owner(tx: &mut sqlx::Transaction<'_, sqlx::Any>, org_id: &str, user_id: &str) -> Result<()> {
    let others: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM members WHERE org_id = $1 AND role = 'owner' AND joined_at IS NOT NULL \
         AND user_id <> $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?;
    let is_owner = sqlx::query(
        "SELECT user_id FROM members WHERE org_id = $1 AND user_id = $2 AND role = 'owner' AND joined_at IS NOT NULL",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?
    .is_some();
    if is_owner && others == 0 {
        return Err(StoreError::Conflict(
            "that is the org's last owner: make another member owner first".into(),
        ));
    }
    Ok(())
}
