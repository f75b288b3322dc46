//! Local people and their roles. A user without a row, or with no role, is pending.

use consulta_core::{OwnedUserId, Role, Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, from_millis, parse_user, to_millis};

/// What the store knows of one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Their Matrix id.
    pub user_id: OwnedUserId,
    /// Their role; `None` while pending.
    pub role: Option<Role>,
    /// The display name given when the account was created, if any.
    pub display_name: Option<String>,
    /// When Consulta first recorded them.
    pub created_at: Timestamp,
    /// When their record last changed.
    pub updated_at: Timestamp,
}

fn parse_role(value: Option<String>) -> Result<Option<Role>, StoreError> {
    value
        .map(|v| {
            v.parse::<Role>().map_err(|_| StoreError::Corrupt {
                what: "role",
                value: v,
            })
        })
        .transpose()
}

fn user_from_row(row: AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: parse_user(row.try_get("user_id")?)?,
        role: parse_role(row.try_get("role")?)?,
        display_name: row.try_get("display_name")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

impl Store {
    /// Sets (or, with `None`, revokes) a user's role and returns the previous one. The caller audits.
    pub async fn set_role(
        &self,
        user: &UserId,
        role: Option<Role>,
        now: Timestamp,
    ) -> Result<Option<Role>, StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        let previous = sqlx::query("SELECT role FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<Option<String>, _>("role"))
            .transpose()?
            .flatten();
        sqlx::query(
            "INSERT INTO users (user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (user_id) DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
        )
        .bind(user.as_str())
        .bind(role.map(Role::as_str))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        parse_role(previous)
    }

    /// A user's role, or `None` if they are pending or unknown.
    pub async fn role(&self, user: &UserId) -> Result<Option<Role>, StoreError> {
        let row = sqlx::query("SELECT role FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => parse_role(row.try_get("role")?),
            None => Ok(None),
        }
    }

    /// Everything recorded about a user.
    pub async fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query("SELECT user_id, role, display_name, created_at, updated_at FROM users WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(self.pool())
            .await?
            .map(user_from_row)
            .transpose()
    }

    /// Users with the given role, by id.
    pub async fn users_with_role(&self, role: Role) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(
            "SELECT user_id, role, display_name, created_at, updated_at FROM users WHERE role = $1 \
             ORDER BY user_id",
        )
        .bind(role.as_str())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(user_from_row)
        .collect()
    }
}
