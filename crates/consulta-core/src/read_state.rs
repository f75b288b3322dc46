//! Read state of a consultation: what each side has read, and when a patient should be reminded.
//!
//! Positions are times: a message is read once the reader's read position reaches its `sent_at`. A read
//! receipt on a known message moves the position to that message's time; a receipt on anything else
//! moves it to the receipt's own time; writing a message moves it to that message (clients treat what
//! you answer as read). Only ids and times are involved, never content.

use chrono::Duration;

use crate::Timestamp;

/// Where a reader has read up to, from what Consulta saw.
pub fn read_position(
    public_receipt: Option<Timestamp>,
    private_receipt: Option<Timestamp>,
    own_last_message: Option<Timestamp>,
) -> Option<Timestamp> {
    [public_receipt, private_receipt, own_last_message]
        .into_iter()
        .flatten()
        .max()
}

/// Unread messages from the other side of a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unread {
    /// How many.
    pub count: u64,
    /// When the oldest of them was sent.
    pub since: Option<Timestamp>,
}

/// Whether a patient who has had a message from their doctor unread since `unread_since` (counting only
/// messages newer than the last reminder) should get a reminder now. `after` of zero disables reminders.
pub fn reminder_due(unread_since: Option<Timestamp>, now: Timestamp, after: Duration) -> bool {
    after > Duration::zero() && unread_since.is_some_and(|since| since + after <= now)
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn t(h: i64) -> Timestamp {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::hours(h)
    }

    #[test]
    fn the_furthest_signal_wins() {
        assert_eq!(read_position(None, None, None), None);
        assert_eq!(read_position(Some(t(1)), None, None), Some(t(1)));
        assert_eq!(
            read_position(Some(t(1)), Some(t(3)), Some(t(2))),
            Some(t(3))
        );
        assert_eq!(
            read_position(None, None, Some(t(2))),
            Some(t(2)),
            "answering counts as reading"
        );
    }

    #[test]
    fn reminders_fire_once_the_delay_has_passed_and_never_when_disabled() {
        let day = Duration::hours(24);
        assert!(!reminder_due(None, t(100), day), "nothing unread");
        assert!(!reminder_due(Some(t(0)), t(23), day));
        assert!(reminder_due(Some(t(0)), t(24), day), "exactly at the delay");
        assert!(reminder_due(Some(t(0)), t(30), day));
        assert!(
            !reminder_due(Some(t(0)), t(30), Duration::zero()),
            "0 hours disables reminders"
        );
    }
}
