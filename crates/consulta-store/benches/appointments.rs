//! Benchmark of appointments in a large SQLite store.
//!
//! Loads `APPT_N` appointments (default 1 000 000) for 500 doctors and 50 000 patients into a fresh
//! SQLite file, then measures through the store's public API:
//! 1. "next 20" for one user (`Store::next_appointments`), for doctors (≈2 000 appointments each) and
//!    for patients (≈20 each), `APPT_QUERIES` calls each (default 20 000);
//! 2. booking (`Store::book_appointment`: the collision check in both calendars and the insert, one
//!    transaction), `APPT_BOOKINGS` calls (default 5 000) at random times of day and night, a third of
//!    them refused as collisions.
//!
//! Run: `cargo bench -p consulta-store --bench appointments` (figures in docs/benchmarks.md). With
//! `APPT_DB=/path/file.db` the loaded file is kept and reused by later runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::time::Instant;

use chrono::{DateTime, Duration as Span};
use consulta_core::{
    Appointment, AppointmentId, AppointmentKind, AppointmentStatus, OwnedUserId, Timestamp,
};
use consulta_store::{Booked, Store};
use consulta_testkit::bench::{Rng, Stats, TABLE_HEADER, env_or, load_average};
use sqlx::Row;
use uuid::Uuid;

const DOCTORS: u64 = 500;
const PATIENTS: u64 = 50_000;
/// Appointments per doctor per working day (08:00–16:00, 30 minutes each).
const SLOTS_PER_DAY: u64 = 16;

fn doctor(i: u64) -> String {
    format!("@doctor{i}:clinic.bench")
}

fn patient(i: u64) -> String {
    format!("@patient{i}:clinic.bench")
}

fn user(s: &str) -> OwnedUserId {
    OwnedUserId::try_from(s).unwrap()
}

/// Start of the k-th slot of a doctor's calendar, counting working days from `day0`.
fn slot_start(day0: Timestamp, k: u64) -> Timestamp {
    let day = (k / SLOTS_PER_DAY) as i64;
    let slot = (k % SLOTS_PER_DAY) as i64;
    day0 + Span::days(day) + Span::hours(8) + Span::minutes(30 * slot)
}

/// Bulk-loads `n` appointments straight into the file (bypassing the per-booking check: the
/// generated calendars never overlap per doctor).
async fn load(url: &str, n: u64, day0: Timestamp, rng: &mut Rng) {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&pool)
        .await
        .unwrap();
    const ROWS: u64 = 500;
    let created = day0.timestamp_millis();
    let mut i = 0;
    while i < n {
        let mut tx = pool.begin().await.unwrap();
        for _ in 0..20 {
            if i >= n {
                break;
            }
            let rows = ROWS.min(n - i);
            let mut sql = String::from(
                "INSERT INTO appointments (id, doctor, patient, start_at, end_at, duration_minutes, \
                 kind, status, reason, room_id, created_by, created_at, updated_by, updated_at) VALUES ",
            );
            for r in 0..rows {
                if r > 0 {
                    sql.push(',');
                }
                let b = r * 9;
                sql.push_str(&format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, 30, 'video', ?{}, ?{}, NULL, ?{}, {created}, ?{}, {created})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                ));
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for _ in 0..rows {
                let d = i % DOCTORS;
                let start = slot_start(day0, i / DOCTORS);
                let status = if rng.below(20) == 0 {
                    "cancelled"
                } else {
                    "scheduled"
                };
                query = query
                    .bind(Uuid::now_v7().to_string())
                    .bind(doctor(d))
                    .bind(patient(rng.below(PATIENTS)))
                    .bind(start.timestamp_millis())
                    .bind((start + Span::minutes(30)).timestamp_millis())
                    .bind(status)
                    .bind("Follow-up visit")
                    .bind(doctor(d))
                    .bind(doctor(d));
                i += 1;
            }
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    pool.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = env_or("APPT_N", 1_000_000);
    let queries = env_or("APPT_QUERIES", 20_000) as usize;
    let bookings = env_or("APPT_BOOKINGS", 5_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    // APPT_DB keeps the loaded file for later runs (the load takes minutes; the measurements do not).
    let path = std::env::var_os("APPT_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("bench.db"));
    let url = format!("sqlite://{}", path.display());
    println!("load average at start: {}", load_average());

    let now: Timestamp = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let days = n.div_ceil(DOCTORS * SLOTS_PER_DAY) as i64;
    // A third of each calendar lies in the past.
    let day0 = now - Span::days(days / 3);
    let mut rng = Rng(42);
    if path.exists() {
        println!("reusing {}", path.display());
    } else {
        // The schema as the appservice creates it, then the bulk load.
        Store::connect(&url, 1).await.unwrap().close().await;
        let started = Instant::now();
        load(&url, n, day0, &mut rng).await;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "loaded {n} appointments ({DOCTORS} doctors, {PATIENTS} patients, {days} days) in {:.1} s; file {:.0} MiB",
            started.elapsed().as_secs_f64(),
            size as f64 / (1024.0 * 1024.0)
        );
    }

    let store = Store::connect(&url, 4).await.unwrap();
    let count: i64 = {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .connect(&url)
            .await
            .unwrap();
        let row = sqlx::query("SELECT count(*) AS n FROM appointments")
            .fetch_one(&pool)
            .await
            .unwrap();
        for row in sqlx::query(
            "EXPLAIN QUERY PLAN SELECT id FROM appointments WHERE doctor = 'x' AND status = 'scheduled' \
             AND start_at > 0 AND end_at > 0 ORDER BY start_at LIMIT 20",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        {
            println!("plan: {}", row.get::<String, _>("detail"));
        }
        pool.close().await;
        row.get("n")
    };
    assert!(count as u64 >= n, "{count} appointments, expected {n}");
    println!("{count} appointments in the store");

    // Warm the page cache as a running server would have it.
    for d in 0..DOCTORS {
        store
            .next_appointments(&user(&doctor(d)), now, 20)
            .await
            .unwrap();
    }

    println!();
    println!("{TABLE_HEADER}");
    for (name, who) in [
        ("next 20 of a doctor (~2 000 appointments each)", 0),
        ("next 20 of a patient (~20 appointments each)", 1),
    ] {
        let mut samples = Vec::with_capacity(queries);
        let mut found = 0;
        for _ in 0..queries {
            let u = if who == 0 {
                user(&doctor(rng.below(DOCTORS)))
            } else {
                user(&patient(rng.below(PATIENTS)))
            };
            let t = Instant::now();
            let list = store.next_appointments(&u, now, 20).await.unwrap();
            samples.push(t.elapsed());
            found += list.len();
        }
        println!("{}", Stats::of(samples).unwrap().row(name));
        assert!(found > 0);
    }

    // Seeded by the store's size, so that a run on a reused file does not replay the bookings (and
    // collisions) of the run before.
    let mut rng = Rng(count as u64);
    let mut samples = Vec::with_capacity(bookings);
    let (mut done, mut busy) = (0, 0);
    for _ in 0..bookings {
        let d = doctor(rng.below(DOCTORS));
        // Anywhere in the calendar's future, day and night, on a 15-minute grid: inside working hours it
        // collides with the loaded calendar, outside it books.
        let day = rng.below(days as u64 * 2 / 3) as i64 + 1;
        let start = now + Span::days(day) + Span::minutes(15 * rng.below(96) as i64);
        let a = Appointment {
            id: AppointmentId::from_uuid(Uuid::now_v7()),
            doctor: user(&d),
            patient: user(&patient(rng.below(PATIENTS))),
            start,
            duration_minutes: 30,
            kind: AppointmentKind::Video,
            status: AppointmentStatus::Scheduled,
            reason: "Follow-up visit".into(),
            room_id: None,
            created_by: user(&d),
            created_at: now,
            updated_by: user(&d),
            updated_at: now,
        };
        let t = Instant::now();
        match store.book_appointment(&a).await.unwrap() {
            Booked::Done => done += 1,
            Booked::Busy(_) => busy += 1,
            Booked::Stale => unreachable!(),
        }
        samples.push(t.elapsed());
    }
    println!(
        "{}",
        Stats::of(samples).unwrap().row(&format!(
            "book (check both calendars + insert): {done} booked, {busy} refused as collisions"
        ))
    );
    println!();
    println!("load average at end: {}", load_average());
    store.close().await;
}
