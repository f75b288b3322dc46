-- Consulta's schema, SQLite flavour. Times are Unix milliseconds (UTC); ids are text.
-- Keep in step with ../postgres/0001_init.sql: same tables, columns and meanings.

-- Local people and their role at the clinic. No row, or a NULL role, means "pending".
CREATE TABLE users (
    user_id      TEXT PRIMARY KEY NOT NULL,
    role         TEXT CHECK (role IN ('patient', 'doctor', 'admin')),
    display_name TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX users_by_role ON users (role);

-- A consultation is a Matrix room shared by one doctor and one patient.
CREATE TABLE consultations (
    room_id    TEXT PRIMARY KEY NOT NULL,
    doctor     TEXT NOT NULL,
    patient    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('open', 'archived', 'purged')),
    created_at INTEGER NOT NULL,
    closed_at  INTEGER
);
CREATE INDEX consultations_by_doctor ON consultations (doctor, status);
CREATE INDEX consultations_by_patient ON consultations (patient, status);

CREATE TABLE appointments (
    id               TEXT PRIMARY KEY NOT NULL,
    doctor           TEXT NOT NULL,
    patient          TEXT NOT NULL,
    start_at         INTEGER NOT NULL,
    end_at           INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes > 0),
    kind             TEXT NOT NULL CHECK (kind IN ('video', 'in_person')),
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled', 'completed', 'no_show')),
    reason           TEXT NOT NULL,
    room_id          TEXT,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_by       TEXT NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX appointments_by_doctor ON appointments (doctor, start_at);
CREATE INDEX appointments_by_patient ON appointments (patient, start_at);

-- Transactions pushed by the homeserver. A row is written before the push is acknowledged; the body is
-- kept only until the events are processed, then cleared.
CREATE TABLE transactions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id       TEXT NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    processed_at INTEGER,
    event_count  INTEGER NOT NULL,
    body         TEXT
);
CREATE INDEX transactions_pending ON transactions (processed_at, seq);

CREATE TABLE audit_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_events_by_at ON audit_events (at);
