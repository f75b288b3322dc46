-- Appointments: fast "next N for a user" listings, and patients' appointment requests.
-- Keep in step with ../postgres/0004_appointments.sql.

-- Upcoming scheduled appointments of one doctor or one patient, in start order: the listing and the
-- double-booking check read the index in order and stop after N rows. `end_at` rides along so that the
-- "not ended yet" / "overlaps" filter is decided in the index, without reading the rows it rejects. The
-- 0001 indexes (doctor|patient, start_at) keep serving range listings of every status.
CREATE INDEX appointments_doctor_upcoming ON appointments (doctor, status, start_at, end_at);
CREATE INDEX appointments_patient_upcoming ON appointments (patient, status, start_at, end_at);
-- Changes in order, for whoever follows them (the bot's notices): booked, rescheduled, cancelled.
CREATE INDEX appointments_by_update ON appointments (updated_at, id);

-- A patient asks one of their doctors for an appointment; the doctor accepts (booking `appointment_id`)
-- or declines, or the patient withdraws it.
CREATE TABLE appointment_requests (
    id               TEXT PRIMARY KEY NOT NULL,
    patient          TEXT NOT NULL,
    doctor           TEXT NOT NULL,
    preferred_start  INTEGER,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes > 0),
    kind             TEXT NOT NULL CHECK (kind IN ('video', 'in_person')),
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined', 'withdrawn')),
    created_at       INTEGER NOT NULL,
    decided_by       TEXT,
    decided_at       INTEGER,
    appointment_id   TEXT REFERENCES appointments (id)
);
CREATE INDEX appointment_requests_by_doctor ON appointment_requests (doctor, status, created_at);
CREATE INDEX appointment_requests_by_patient ON appointment_requests (patient, status, created_at);
