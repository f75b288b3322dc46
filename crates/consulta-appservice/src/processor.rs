//! Processing of recorded transactions, off the acknowledgement path.
//!
//! The transaction handler records each new transaction in the store and wakes this loop; the loop
//! takes pending transactions from the store in arrival order, hands every event to the feature
//! handlers, and marks the transaction processed. Because the store is the queue, a crash or restart
//! loses nothing: unprocessed transactions are picked up on the next start.

use std::sync::Arc;
use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Notify, broadcast};

use consulta_store::PendingTransaction;

use crate::consultations::MemberEvent;
use crate::read_state::{MessageEvent, ReceiptEvent};
use crate::state::AppState;

/// How many pending transactions one pass takes from the store.
const BATCH: u32 = 32;

/// An event Consulta has processed; ids and type only, never content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedEvent {
    /// The transaction that carried it.
    pub txn_id: String,
    /// `events` (room timeline and state) or `ephemeral` (receipts, typing, presence).
    pub source: EventSource,
    /// The event type, e.g. `m.room.message`.
    pub event_type: String,
    /// The event id, for timeline events.
    pub event_id: Option<OwnedEventId>,
    /// The room, when the event has one.
    pub room_id: Option<OwnedRoomId>,
    /// The sender, when the event has one.
    pub sender: Option<OwnedUserId>,
}

/// Which list of the transaction an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Persistent room events.
    Timeline,
    /// Receipts, typing notifications, presence.
    Ephemeral,
}

/// The body of `PUT /_matrix/app/v1/transactions/{txnId}`, with events left raw until a handler needs them.
#[derive(Debug, Deserialize)]
pub struct TransactionBody {
    /// Room events.
    pub events: Vec<Box<RawValue>>,
    /// Ephemeral events (stable key; the legacy MSC2409 key is accepted too).
    #[serde(default, alias = "de.sorunome.msc2409.ephemeral")]
    pub ephemeral: Vec<Box<RawValue>>,
}

/// The fields every handler needs to route an event.
#[derive(Debug, Deserialize)]
struct EventHeader {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    event_id: Option<OwnedEventId>,
    #[serde(default)]
    room_id: Option<OwnedRoomId>,
    #[serde(default)]
    sender: Option<OwnedUserId>,
}

/// Wakes the processing loop and lets others observe what it processed.
#[derive(Debug, Clone)]
pub struct Processor {
    wake: Arc<Notify>,
    processed: broadcast::Sender<ProcessedEvent>,
}

impl Default for Processor {
    fn default() -> Self {
        Self::new()
    }
}

impl Processor {
    /// A processor with nothing running yet; see [`Processor::run`].
    pub fn new() -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            processed: broadcast::channel(1024).0,
        }
    }

    /// Signals that a new transaction is waiting. Never blocks.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every event processed from now on (lagging receivers miss the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<ProcessedEvent> {
        self.processed.subscribe()
    }

    /// The processing loop; runs until the task is dropped.
    pub async fn run(self, state: AppState) {
        let (store, clock) = (state.store().clone(), state.clock().clone());
        let mut failures = 0u32;
        loop {
            match store.pending_transactions(BATCH).await {
                Ok(batch) if batch.is_empty() => {
                    failures = 0;
                    // A periodic look keeps the loop honest even if a wake-up were ever missed.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), self.wake.notified()).await;
                }
                Ok(batch) => {
                    failures = 0;
                    for txn in batch {
                        let processed = self.process(&state, &txn).await;
                        if let Err(e) = store.finish_transaction(&txn.txn_id, clock.now()).await {
                            tracing::error!(txn_id = %txn.txn_id, error = %e, "cannot mark transaction processed");
                        }
                        // Announced once the transaction is marked done, so that a listener
                        // never sees an event whose transaction still looks pending.
                        for event in processed {
                            let _ = self.processed.send(event);
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(200u64 << failures.min(7));
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read pending transactions");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn process(&self, state: &AppState, txn: &PendingTransaction) -> Vec<ProcessedEvent> {
        let mut processed = Vec::new();
        let body: TransactionBody = match serde_json::from_str(&txn.body) {
            Ok(body) => body,
            Err(e) => {
                // Bodies are validated before they are recorded; this only happens if the row was tampered with.
                tracing::error!(txn_id = %txn.txn_id, error = %e, "recorded transaction does not parse; skipped");
                return processed;
            }
        };
        let lists = [
            (EventSource::Timeline, &body.events),
            (EventSource::Ephemeral, &body.ephemeral),
        ];
        for (source, events) in lists {
            for raw in events {
                let header = match serde_json::from_str::<EventHeader>(raw.get()) {
                    Ok(header) => header,
                    Err(e) => {
                        tracing::warn!(txn_id = %txn.txn_id, error = %e, "event without a usable type; skipped");
                        continue;
                    }
                };
                handle(state, source, &header, raw).await;
                processed.push(processed_event(&txn.txn_id, source, header));
            }
        }
        processed
    }
}

fn processed_event(txn_id: &str, source: EventSource, header: EventHeader) -> ProcessedEvent {
    tracing::debug!(
        event_type = %header.event_type,
        event_id = ?header.event_id,
        room_id = ?header.room_id,
        "event"
    );
    ProcessedEvent {
        txn_id: txn_id.to_owned(),
        source,
        event_type: header.event_type,
        event_id: header.event_id,
        room_id: header.room_id,
        sender: header.sender,
    }
}

/// Hands one event to the feature that owns it. Handlers log their own failures: one bad event never
/// stops the queue.
async fn handle(state: &AppState, source: EventSource, header: &EventHeader, raw: &RawValue) {
    match (source, header.event_type.as_str()) {
        (EventSource::Timeline, "m.room.member") => {
            match serde_json::from_str::<MemberEvent>(raw.get()) {
                Ok(event) => state.handle_member_event(event).await,
                Err(e) => {
                    tracing::warn!(event_id = ?header.event_id, error = %e, "malformed member event; skipped")
                }
            }
        }
        (EventSource::Timeline, "m.room.message" | "m.room.encrypted") => {
            match serde_json::from_str::<MessageEvent>(raw.get()) {
                Ok(event) => state.handle_message_event(event).await,
                Err(e) => {
                    tracing::warn!(event_id = ?header.event_id, error = %e, "malformed message event; skipped")
                }
            }
        }
        (EventSource::Ephemeral, "m.receipt") => {
            match serde_json::from_str::<ReceiptEvent>(raw.get()) {
                Ok(event) => state.handle_receipt_event(event).await,
                Err(e) => {
                    tracing::warn!(room_id = ?header.room_id, error = %e, "malformed receipt; skipped")
                }
            }
        }
        _ => {}
    }
}
