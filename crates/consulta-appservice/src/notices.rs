//! Planning the clinic assistant's notices: appointment changes (followed through the store's change
//! feed), reminders before appointments, and the day's joining instructions for video consultations.
//!
//! Planning only writes to the outbox (`bot_outbox`), each notice under a key that names it
//! (`consulta_core::notices`), so a notice is planned at most once whatever restarts happen; the
//! assistant (`crate::bot`) delivers the outbox. The texts come from `consulta_core::notices` and never
//! carry an appointment's reason.

use chrono::Duration;
use consulta_core::notices::{
    change_key, change_notice, change_text, day_of_due, day_of_key, day_of_text, due_reminder,
    reminder_key, reminder_text,
};
use consulta_core::{Appointment, AppointmentId, Timestamp, UserId};
use consulta_store::{FeedCursor, StoreError};

use crate::state::AppState;

/// The name of the appointment change feed's cursor.
const CHANGES_CURSOR: &str = "appointment-changes";

/// How far behind its cursor each pass re-reads the change feed. An appointment's `updated_at` is
/// taken before its transaction commits, so a write that waited for a lock can land behind a cursor
/// that has already moved past its time; re-reading the last minutes finds it, and versions seen
/// before produce the same outbox keys, so they add nothing.
const FEED_LOOKBACK: Duration = Duration::minutes(2);

/// How many rows one page of the feed or the reminder scan reads.
const PAGE: u32 = 200;

/// How long delivered notices and carried-out command ids are kept.
pub const OUTBOX_RETENTION: Duration = Duration::days(30);

/// What one planning round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planned {
    /// Change notices added to the outbox.
    pub changes: usize,
    /// Reminders added.
    pub reminders: usize,
    /// Day-of joining instructions added.
    pub day_of: usize,
}

impl Planned {
    /// All notices added.
    pub fn total(&self) -> usize {
        self.changes + self.reminders + self.day_of
    }
}

impl AppState {
    /// Opens `user`'s Care desk (with the calendar pinned) by queuing its welcome, once per person.
    pub async fn welcome(&self, user: &UserId, as_doctor: bool) -> Result<bool, StoreError> {
        let key = consulta_core::notices::welcome_key(user);
        self.enqueue_notice(&key, user, &consulta_core::notices::welcome_text(as_doctor))
            .await
    }

    /// Puts a notice for `recipient` in the outbox under `key` (once per key) and wakes the assistant.
    /// Returns whether it was added.
    pub async fn enqueue_notice(
        &self,
        key: &str,
        recipient: &UserId,
        body: &str,
    ) -> Result<bool, StoreError> {
        let added = self
            .store()
            .enqueue_notice(key, recipient, body, self.clock().now())
            .await?;
        if added {
            self.outbox_ready().notify_one();
        }
        Ok(added)
    }

    /// Plans every notice due at the clock's `now`.
    pub async fn plan_notices(&self) -> Result<Planned, StoreError> {
        let now = self.clock().now();
        let mut planned = Planned {
            changes: self.follow_appointment_changes(now).await?,
            ..Planned::default()
        };
        let (reminders, day_of) = self.plan_reminders(now).await?;
        planned.reminders = reminders;
        planned.day_of = day_of;
        Ok(planned)
    }

    /// Tells both parties about every appointment booked, changed or cancelled since the feed's cursor.
    /// Versions of appointments that have already ended are skipped: nobody needs telling any more.
    async fn follow_appointment_changes(&self, now: Timestamp) -> Result<usize, StoreError> {
        let tz = self.appointments().time_zone();
        let stored = self.store().feed_cursor(CHANGES_CURSOR).await?;
        let mut cursor = FeedCursor {
            at: stored
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |c| c.at - FEED_LOOKBACK),
            id: None,
        };
        let mut high = stored.map(|c| (c.at, c.id));
        let mut added = 0;
        loop {
            let after_id = cursor
                .id
                .as_deref()
                .and_then(|id| id.parse::<uuid::Uuid>().ok())
                .map(AppointmentId::from_uuid);
            let page = self
                .store()
                .appointments_changed_since(cursor.at, after_id, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            let next = FeedCursor {
                at: last.updated_at,
                id: Some(last.id.to_string()),
            };
            for a in &page {
                let Some(change) = change_notice(a) else {
                    continue;
                };
                if a.slot().end() <= now {
                    continue;
                }
                for recipient in [&a.patient, &a.doctor] {
                    let body = change_text(change, a, recipient, tz);
                    if self
                        .enqueue_notice(&change_key(a, recipient), recipient, &body)
                        .await?
                    {
                        added += 1;
                    }
                }
            }
            // The cursor moves only after the page's notices are in the outbox (a crash in between
            // replays the page, and the keys turn the replay into no-ops), and only forwards.
            let position = (next.at, next.id.clone());
            if high.as_ref().is_none_or(|h| position > *h) {
                self.store().set_feed_cursor(CHANGES_CURSOR, &next).await?;
                high = Some(position);
            }
            let full = page.len() == PAGE as usize;
            cursor = next;
            if !full {
                break;
            }
        }
        Ok(added)
    }

    /// Adds the reminders and day-of instructions due at `now` for appointments starting within the
    /// largest reminder offset (and the next day, for day-of instructions).
    async fn plan_reminders(&self, now: Timestamp) -> Result<(usize, usize), StoreError> {
        let config = &self.config().appointments;
        // Both were checked when the config was loaded; a failure here means no reminders, not a crash.
        let offsets = config.reminder_offsets().unwrap_or_default();
        let day_of_at = config.day_of_time().ok();
        let tz = self.appointments().time_zone();
        let horizon = offsets
            .iter()
            .copied()
            .max()
            .unwrap_or_else(Duration::zero)
            .max(Duration::days(1))
            // The range is half-open; an appointment exactly one offset away is due now.
            + Duration::minutes(1);
        let (mut reminders, mut day_of) = (0, 0);
        let mut after: Option<(Timestamp, AppointmentId)> = None;
        loop {
            let page = self
                .store()
                .scheduled_starting_between(now, now + horizon, after, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.start, last.id));
            for a in &page {
                if let Some(before) = due_reminder(a, &offsets, now) {
                    reminders += self
                        .add_once(
                            a,
                            |r| reminder_key(a, before, r),
                            |r| reminder_text(a, before, r, tz),
                        )
                        .await?;
                }
                if let Some(at) = day_of_at
                    && day_of_due(a, tz, at, now)
                {
                    day_of += self
                        .add_once(a, |r| day_of_key(a, r), |r| day_of_text(a, r, tz))
                        .await?;
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        Ok((reminders, day_of))
    }

    /// Enqueues a notice for both parties unless it is already in the outbox; returns how many were added.
    /// The read first keeps the scan, which sees the same due appointment every minute, off the writer.
    async fn add_once(
        &self,
        a: &Appointment,
        key: impl Fn(&UserId) -> String,
        text: impl Fn(&UserId) -> String,
    ) -> Result<usize, StoreError> {
        let mut added = 0;
        for recipient in [&a.patient, &a.doctor] {
            let key = key(recipient);
            if self.store().notice_state(&key).await?.is_some() {
                continue;
            }
            if self
                .enqueue_notice(&key, recipient, &text(recipient))
                .await?
            {
                added += 1;
            }
        }
        Ok(added)
    }
}
