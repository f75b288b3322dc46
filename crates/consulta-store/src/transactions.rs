//! Transactions pushed by the homeserver: recorded before they are acknowledged, processed after.
//!
//! The table doubles as a durable queue: a transaction whose events have not been processed yet keeps its
//! body, and a restarted appservice picks it up again. Once processed, the body (which may contain
//! unencrypted message text) is cleared; only the id, the time and the event count remain, so that a
//! replayed txnId is still recognised.

use consulta_core::Timestamp;
use sqlx::Row;

use crate::{Store, StoreError, to_millis};

/// What recording a transaction found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this txnId is seen: it is queued for processing.
    New,
    /// The homeserver sent this txnId before (a retry); nothing was queued.
    Duplicate,
}

/// A recorded transaction whose events still wait for processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransaction {
    /// The homeserver's transaction id.
    pub txn_id: String,
    /// The JSON body as received.
    pub body: String,
}

impl Store {
    /// Records a transaction before it is acknowledged. Idempotent per `txn_id`.
    pub async fn record_transaction(
        &self,
        txn_id: &str,
        body: &str,
        event_count: usize,
        now: Timestamp,
    ) -> Result<Recorded, StoreError> {
        let _write = self.write_lock().await;
        let result = sqlx::query(
            "INSERT INTO transactions (txn_id, received_at, event_count, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (txn_id) DO NOTHING",
        )
        .bind(txn_id)
        .bind(to_millis(now))
        .bind(i64::try_from(event_count).unwrap_or(i64::MAX))
        .bind(body)
        .execute(self.pool())
        .await?;
        Ok(if result.rows_affected() == 1 {
            Recorded::New
        } else {
            Recorded::Duplicate
        })
    }

    /// The oldest transactions not yet processed, in arrival order.
    pub async fn pending_transactions(
        &self,
        limit: u32,
    ) -> Result<Vec<PendingTransaction>, StoreError> {
        let rows = sqlx::query(
            "SELECT txn_id, body FROM transactions WHERE processed_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(PendingTransaction {
                    txn_id: row.try_get("txn_id")?,
                    body: row
                        .try_get::<Option<String>, _>("body")?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Marks a transaction processed and drops its body.
    pub async fn finish_transaction(&self, txn_id: &str, now: Timestamp) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        sqlx::query("UPDATE transactions SET processed_at = $1, body = NULL WHERE txn_id = $2")
            .bind(to_millis(now))
            .bind(txn_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// How many transactions were ever recorded (processed or not).
    pub async fn transaction_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM transactions")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
