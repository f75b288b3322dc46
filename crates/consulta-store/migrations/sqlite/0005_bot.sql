-- The clinic assistant: its outbox of notices, its place in the appointment change feed, and the
-- commands it has carried out. Keep in step with ../postgres/0005_bot.sql.

-- Notices waiting for (or done with) delivery to a person's Care desk room. `dedupe_key` names the
-- notice (appointment version, reminder moment, recipient): a second copy is refused on insert, so
-- neither a restart nor a retry sends one twice. The body holds times and names, never a reason.
CREATE TABLE bot_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    recipient  TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at    INTEGER,
    event_id   TEXT
);
CREATE INDEX bot_outbox_by_sent ON bot_outbox (sent_at, id);

-- Where a follower of a feed has got to (the appointment change feed: updated_at and id).
CREATE TABLE bot_cursors (
    name TEXT PRIMARY KEY NOT NULL,
    at   INTEGER NOT NULL,
    id   TEXT
);

-- Commands carried out, by event: a command seen again after a restart is not carried out twice.
CREATE TABLE bot_commands (
    event_id    TEXT PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX bot_commands_by_received ON bot_commands (received_at);

-- Scheduled appointments by start, for the reminder scan.
CREATE INDEX appointments_by_status_start ON appointments (status, start_at);

-- Whose Care desk a room is, for commands arriving in it.
CREATE INDEX care_desks_by_room ON care_desks (room_id);
