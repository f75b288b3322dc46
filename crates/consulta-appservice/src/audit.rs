//! The audit log writer: group commit.
//!
//! Every audited action waits until its record is committed, so nothing audited is lost, but records
//! that arrive together share one transaction. Under concurrent refusals that turns N commits (each
//! appending several pages to SQLite's log, one after the other) into one.

use consulta_core::AuditRecord;
use consulta_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most records committed together.
const GROUP: usize = 256;

type Pending = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// Handle to the writer task; writes directly when no runtime was available to start one.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    store: Store,
    tx: Option<mpsc::Sender<Pending>>,
}

impl AuditWriter {
    /// Starts the writer task on the current tokio runtime, if there is one.
    pub fn start(store: Store) -> Self {
        let tx = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (tx, rx) = mpsc::channel(4 * GROUP);
            runtime.spawn(write_groups(store.clone(), rx));
            tx
        });
        Self { store, tx }
    }

    /// Appends one record and returns once it is committed.
    pub async fn append(&self, record: AuditRecord) -> Result<(), StoreError> {
        if let Some(tx) = &self.tx {
            let (ack, done) = oneshot::channel();
            match tx.send((record, ack)).await {
                Ok(()) => {
                    return match done.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(StoreError::Corrupt {
                            what: "audit write",
                            value: e,
                        }),
                        Err(_) => Err(StoreError::Corrupt {
                            what: "audit write",
                            value: "writer stopped".into(),
                        }),
                    };
                }
                // The writer is gone (shutting down): write it ourselves.
                Err(mpsc::error::SendError((record, _))) => {
                    return self.store.append_audit(&record).await;
                }
            }
        }
        self.store.append_audit(&record).await
    }
}

async fn write_groups(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let records: Vec<AuditRecord> = group.iter().map(|(r, _)| r.clone()).collect();
        let result = store
            .append_audits(&records)
            .await
            .map_err(|e| e.to_string());
        for (_, ack) in group.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}
