//! The append-only audit log.

use consulta_core::{AuditAction, AuditRecord};
use sqlx::Row;

use crate::{Store, StoreError, from_millis, parse_user, to_millis};

fn parse_action(value: String) -> Result<AuditAction, StoreError> {
    value.parse().map_err(|_| StoreError::Corrupt {
        what: "audit action",
        value,
    })
}

impl Store {
    /// Appends one record.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query("INSERT INTO audit_events (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(to_millis(record.at))
            .bind(record.actor.as_ref().map(|u| u.as_str()))
            .bind(record.action.as_str())
            .bind(record.target.as_deref())
            .bind(record.detail.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Appends several records in one transaction (one commit for the whole group).
    pub async fn append_audits(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        let mut tx = self.pool().begin().await?;
        for record in records {
            sqlx::query("INSERT INTO audit_events (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(to_millis(record.at))
                .bind(record.actor.as_ref().map(|u| u.as_str()))
                .bind(record.action.as_str())
                .bind(record.target.as_deref())
                .bind(record.detail.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` records, newest first.
    pub async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        sqlx::query(
            "SELECT at, actor, action, target, detail FROM audit_events ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(|row| {
            Ok(AuditRecord {
                at: from_millis(row.try_get("at")?)?,
                actor: row
                    .try_get::<Option<String>, _>("actor")?
                    .map(parse_user)
                    .transpose()?,
                action: parse_action(row.try_get("action")?)?,
                target: row.try_get("target")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect()
    }
}
