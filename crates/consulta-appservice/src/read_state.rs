//! Read state of consultations: ingests messages and `m.receipt` from transactions, answers "what is
//! unread", and reminds patients of messages from their care team they have not read.
//!
//! Private receipts (`m.read.private`) reach Consulta too (its catch-all namespace covers the clinic's
//! people; see docs/SECURITY.md). They count for their author's own unread summary and are never shown
//! to the other party: what a doctor sees of a patient's reading comes from public receipts only.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration};
use consulta_core::read_state::{Unread, read_position, reminder_due};
use consulta_core::{ConsultationStatus, RoomId, Timestamp, UserId};
use consulta_store::{Receipt, StoreError};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::homeserver::HomeserverError;
use crate::state::AppState;

/// The text of an unread reminder: no content, no names, nothing medical.
pub const REMINDER_TEXT: &str = "You have an unread message from your care team.";

/// A message event's routing fields.
#[derive(Debug, Deserialize)]
pub struct MessageEvent {
    event_id: String,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    origin_server_ts: i64,
}

/// `m.receipt` as pushed to appservices: `{event_id: {receipt_type: {user_id: {ts}}}}`.
#[derive(Debug, Deserialize)]
pub struct ReceiptEvent {
    room_id: OwnedRoomId,
    content: BTreeMap<String, BTreeMap<String, BTreeMap<OwnedUserId, ReceiptData>>>,
}

#[derive(Debug, Deserialize)]
struct ReceiptData {
    #[serde(default)]
    ts: Option<i64>,
}

/// One consultation's read state, as the asking person may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsultationReadState {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The other party.
    pub with: OwnedUserId,
    /// Whether the asker is the doctor of this consultation.
    pub as_doctor: bool,
    /// Messages from the other party the asker has not read.
    pub unread: u64,
    /// When the oldest of them was sent.
    pub unread_since: Option<Timestamp>,
    /// How far the other party has read the asker's messages (public receipts only).
    pub other_read_up_to: Option<ReadMark>,
}

/// A public read receipt, as shown to the other party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadMark {
    /// The last event they marked read.
    pub event_id: String,
    /// When.
    pub at: Timestamp,
}

fn millis(ms: i64) -> Option<Timestamp> {
    DateTime::from_timestamp_millis(ms)
}

impl AppState {
    /// Records a message sent in a consultation room (ids and time only).
    pub async fn handle_message_event(&self, event: MessageEvent) {
        let Some(sent_at) = millis(event.origin_server_ts) else {
            return;
        };
        let result = async {
            if self.store().consultation(&event.room_id).await?.is_some() {
                self.store()
                    .record_message(&event.event_id, &event.room_id, &event.sender, sent_at)
                    .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(room_id = %event.room_id, error = %e, "cannot record consultation message");
        }
    }

    /// Records the read receipts of a consultation's doctor and patient.
    pub async fn handle_receipt_event(&self, event: ReceiptEvent) {
        let consultation = match self.store().consultation(&event.room_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(room_id = %event.room_id, error = %e, "cannot read consultation for a receipt");
                return;
            }
        };
        for (event_id, kinds) in &event.content {
            for (kind, readers) in kinds {
                let private = match kind.as_str() {
                    "m.read" => false,
                    "m.read.private" => true,
                    _ => continue,
                };
                for (reader, data) in readers {
                    if reader != &consultation.doctor && reader != &consultation.patient {
                        continue;
                    }
                    let Some(at) = data
                        .ts
                        .and_then(millis)
                        .or_else(|| Some(self.clock().now()))
                    else {
                        continue;
                    };
                    if let Err(e) = self
                        .store()
                        .record_receipt(&event.room_id, reader, private, event_id, at)
                        .await
                    {
                        tracing::error!(room_id = %event.room_id, error = %e, "cannot record receipt");
                    }
                }
            }
        }
    }

    /// How far `reader` has read in `room`, from every signal they gave (own view: private receipts count).
    async fn own_read_position(
        &self,
        room: &RoomId,
        reader: &UserId,
    ) -> Result<Option<Timestamp>, StoreError> {
        let public = self
            .store()
            .receipt(room, reader, false)
            .await?
            .map(|r| r.position);
        let private = self
            .store()
            .receipt(room, reader, true)
            .await?
            .map(|r| r.position);
        let own = self.store().last_message_at(room, reader).await?;
        Ok(read_position(public, private, own))
    }

    /// What `reader` has not read from `author` in `room`.
    pub async fn unread(
        &self,
        room: &RoomId,
        reader: &UserId,
        author: &UserId,
    ) -> Result<Unread, StoreError> {
        let position = self.own_read_position(room, reader).await?;
        self.store().messages_after(room, author, position).await
    }

    /// The read state of every open consultation of `user`, as they may see it.
    pub async fn read_state_of(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConsultationReadState>, StoreError> {
        let mut out = Vec::new();
        for c in self.store().consultations_of(user).await? {
            if c.status != ConsultationStatus::Open {
                continue;
            }
            let as_doctor = c.doctor == user;
            let other = if as_doctor { &c.patient } else { &c.doctor };
            let unread = self.unread(&c.room_id, user, other).await?;
            let other_read_up_to = self.store().receipt(&c.room_id, other, false).await?.map(
                |Receipt {
                     event_id, read_at, ..
                 }| ReadMark {
                    event_id,
                    at: read_at,
                },
            );
            out.push(ConsultationReadState {
                room_id: c.room_id.clone(),
                with: other.clone(),
                as_doctor,
                unread: unread.count,
                unread_since: unread.since,
                other_read_up_to,
            });
        }
        Ok(out)
    }

    /// Queues every unread reminder that is due at the clock's `now` for the assistant to deliver; returns
    /// how many were queued. Each reminder is claimed in the store first, so concurrent runs never queue it
    /// twice, and the outbox key makes a replay after a crash a no-op.
    pub async fn send_due_reminders(&self) -> Result<usize, StoreError> {
        let after = Duration::hours(i64::from(self.config().policy.unread_reminder_hours));
        if after <= Duration::zero() {
            return Ok(0);
        }
        let now = self.clock().now();
        let mut sent = 0;
        for candidate in self.store().reminder_candidates(now - after).await? {
            let c = &candidate.consultation;
            let position = self.own_read_position(&c.room_id, &c.patient).await?;
            let floor = [position, candidate.covered_upto]
                .into_iter()
                .flatten()
                .max();
            let unread = self
                .store()
                .messages_after(&c.room_id, &c.doctor, floor)
                .await?;
            if !reminder_due(unread.since, now, after) {
                continue;
            }
            let Some(newest) = self.store().last_message_at(&c.room_id, &c.doctor).await? else {
                continue;
            };
            if !self
                .store()
                .claim_reminder(&c.room_id, &c.patient, newest, now)
                .await?
            {
                continue;
            }
            let key = consulta_core::notices::unread_key(&c.room_id, newest, &c.patient);
            match self.enqueue_notice(&key, &c.patient, REMINDER_TEXT).await {
                Ok(_) => {
                    tracing::info!(room_id = %c.room_id, patient = %c.patient, "unread reminder queued");
                    sent += 1;
                }
                Err(e) => {
                    tracing::error!(room_id = %c.room_id, error = %e, "cannot queue unread reminder; will retry");
                    self.store()
                        .release_reminder(&c.room_id, &c.patient, candidate.covered_upto)
                        .await?;
                }
            }
        }
        Ok(sent)
    }

    /// The clinic assistant's private room with `user`, opened on first use, with the calendar pinned.
    pub async fn care_desk_room(&self, user: &UserId) -> Result<OwnedRoomId, HomeserverError> {
        let store_error = |e: StoreError| HomeserverError::BadResponse(format!("store: {e}"));
        if let Some(room) = self.store().care_desk(user).await.map_err(store_error)? {
            return Ok(room);
        }
        let body = json!({
            "preset": "private_chat",
            "is_direct": true,
            "invite": [user],
            "name": "Care desk",
            "topic": "Your clinic's assistant: appointments, reminders and help.",
            "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}},
                {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": WIDGETS_EVENT, "state_key": CALENDAR_WIDGET_ID,
                 "content": calendar_widget(&self.calendar_page_url(), self.bot())},
                {"type": LAYOUT_EVENT, "state_key": "", "content": calendar_layout()},
            ],
        });
        let room = self.homeserver().create_room(&body, None).await?;
        self.store()
            .set_care_desk(user, &room, self.clock().now())
            .await
            .map_err(store_error)
    }
}

/// State key and id of the calendar widget in Care desk rooms.
pub const CALENDAR_WIDGET_ID: &str = "consulta_calendar";

/// Element's room widget state event type.
const WIDGETS_EVENT: &str = "im.vector.modular.widgets";

/// Element's widget layout state event type.
const LAYOUT_EVENT: &str = "io.element.widgets.layout";

impl AppState {
    /// Pins the calendar in every Care desk that lacks it or shows an old page URL (desks opened before
    /// the calendar existed, or `appointments.calendar_url` changed). Returns how many were updated;
    /// a room that fails is logged and left for the next start.
    pub async fn pin_calendar_in_care_desks(&self) -> Result<usize, StoreError> {
        let widget = calendar_widget(&self.calendar_page_url(), self.bot());
        let mut pinned = 0;
        for room in self.store().care_desk_rooms().await? {
            let hs = self.homeserver();
            let current = match hs
                .state(&room, WIDGETS_EVENT, CALENDAR_WIDGET_ID, self.bot())
                .await
            {
                Ok(current) => current,
                Err(e) => {
                    tracing::warn!(room_id = %room, error = %e, "cannot read a Care desk's widgets");
                    continue;
                }
            };
            if current.as_ref().and_then(|c| c.get("url")) == widget.get("url") {
                continue;
            }
            let done = async {
                hs.put_state(
                    &room,
                    WIDGETS_EVENT,
                    CALENDAR_WIDGET_ID,
                    &widget,
                    self.bot(),
                )
                .await?;
                hs.put_state(&room, LAYOUT_EVENT, "", &calendar_layout(), self.bot())
                    .await
            };
            match done.await {
                Ok(()) => pinned += 1,
                Err(e) => {
                    tracing::warn!(room_id = %room, error = %e, "cannot pin the calendar in a Care desk")
                }
            }
        }
        Ok(pinned)
    }
}

/// The content of the `im.vector.modular.widgets` state event that puts the calendar page in a room.
/// Element fills in the theme variable and appends `widgetId` and `parentUrl`, which the page's widget
/// API needs.
pub fn calendar_widget(page_url: &str, creator: &UserId) -> serde_json::Value {
    json!({
        "id": CALENDAR_WIDGET_ID,
        "type": "m.custom",
        "name": "Calendar",
        "url": format!("{page_url}?theme=$org.matrix.msc2873.client_theme"),
        "creatorUserId": creator,
        "waitForIframeLoad": true,
        "data": {"title": "Your appointments"},
    })
}

/// The content of the `io.element.widgets.layout` state event that pins the calendar at the top.
pub fn calendar_layout() -> serde_json::Value {
    json!({"widgets": {CALENDAR_WIDGET_ID: {"container": "top", "index": 0, "width": 100, "height": 60}}})
}
