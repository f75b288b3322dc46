-- Read state of consultations: ids and times only, never content.
-- Keep in step with ../sqlite/0002_read_state.sql.

-- Messages (plain or encrypted) in consultation rooms: who sent which event when.
CREATE TABLE consultation_messages (
    event_id TEXT PRIMARY KEY NOT NULL,
    room_id  TEXT NOT NULL,
    sender   TEXT NOT NULL,
    sent_at  BIGINT NOT NULL
);
CREATE INDEX consultation_messages_by_room ON consultation_messages (room_id, sender, sent_at);

-- Each person's furthest read receipt per room and kind (public m.read or private m.read.private).
-- `position` is the receipted message's time when known, else the receipt's time.
CREATE TABLE read_receipts (
    room_id  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    private  BIGINT NOT NULL CHECK (private IN (0, 1)),
    event_id TEXT NOT NULL,
    read_at  BIGINT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, private)
);

-- Unread reminders sent: up to which message time the last reminder covered.
CREATE TABLE unread_reminders (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    covered_upto BIGINT NOT NULL,
    sent_at      BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The private room in which the clinic assistant talks to each person.
CREATE TABLE care_desks (
    user_id    TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
