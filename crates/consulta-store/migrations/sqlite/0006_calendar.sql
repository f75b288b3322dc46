-- Credentials of the calendar page and the iCal feed. Keep in step with ../postgres/0006_calendar.sql.
--
-- Only a SHA-256 digest of each token is kept, so a copy of the database opens no calendar.
--   link:    a short-lived sign-in link the assistant sends (Element X shows no widgets); used once.
--   session: what the page holds after a link or a widget's OpenID token; expires.
--   feed:    a private iCal feed URL; lasts until revoked (one live feed per user).
CREATE TABLE calendar_tokens (
    token_digest TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('link', 'session', 'feed')),
    user_id      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    used_at      INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX calendar_tokens_by_user ON calendar_tokens (user_id, kind);
CREATE INDEX calendar_tokens_by_expiry ON calendar_tokens (expires_at);
