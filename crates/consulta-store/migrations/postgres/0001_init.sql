-- Consulta's schema, PostgreSQL flavour. Times are Unix milliseconds (UTC); ids are text.
-- Keep in step with ../sqlite/0001_init.sql: same tables, columns and meanings.

CREATE TABLE users (
    user_id      TEXT PRIMARY KEY NOT NULL,
    role         TEXT CHECK (role IN ('patient', 'doctor', 'admin')),
    display_name TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX users_by_role ON users (role);

CREATE TABLE consultations (
    room_id    TEXT PRIMARY KEY NOT NULL,
    doctor     TEXT NOT NULL,
    patient    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('open', 'archived', 'purged')),
    created_at BIGINT NOT NULL,
    closed_at  BIGINT
);
CREATE INDEX consultations_by_doctor ON consultations (doctor, status);
CREATE INDEX consultations_by_patient ON consultations (patient, status);

CREATE TABLE appointments (
    id               TEXT PRIMARY KEY NOT NULL,
    doctor           TEXT NOT NULL,
    patient          TEXT NOT NULL,
    start_at         BIGINT NOT NULL,
    end_at           BIGINT NOT NULL,
    duration_minutes BIGINT NOT NULL CHECK (duration_minutes > 0),
    kind             TEXT NOT NULL CHECK (kind IN ('video', 'in_person')),
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled', 'completed', 'no_show')),
    reason           TEXT NOT NULL,
    room_id          TEXT,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_by       TEXT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX appointments_by_doctor ON appointments (doctor, start_at);
CREATE INDEX appointments_by_patient ON appointments (patient, start_at);

CREATE TABLE transactions (
    seq          BIGSERIAL PRIMARY KEY,
    txn_id       TEXT NOT NULL UNIQUE,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT,
    event_count  BIGINT NOT NULL,
    body         TEXT
);
CREATE INDEX transactions_pending ON transactions (processed_at, seq);

CREATE TABLE audit_events (
    seq    BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_events_by_at ON audit_events (at);
