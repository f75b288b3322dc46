//! Benchmark of the appointments REST API over HTTP, on the 1 M-appointment SQLite file of the store
//! benchmark.
//!
//! Serves `app(state)` on loopback and calls it with a keep-alive HTTP client, one request at a time,
//! as the calendar page does (`Authorization: Session`, checked against the store):
//! 1. `GET /_consulta/v1/appointments/next?limit=20` for doctors (≈2 000 appointments each) and patients
//!    (≈20 each), each call also audited;
//! 2. `POST /_consulta/v1/appointments` at random times of day and night, a share refused as collisions.
//!
//! In the same run it calls `Store::next_appointments` directly for the same users, and prints the
//! ratio: what HTTP, authentication, the rules and the audit add to the query.
//!
//! Run the store benchmark with `APPT_DB` first, then this one on the same file (which it copies, so
//! that its bookings do not change the original):
//! `APPT_DB=/tmp/appt.db cargo bench -p consulta-store --bench appointments`
//! `APPT_DB=/tmp/appt.db cargo bench -p consulta-appservice --bench rest`
//! (`REST_QUERIES`, default 5 000 per kind of user; `REST_BOOKINGS`, default 2 000.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration as Span};
use consulta_appservice::config::{Config, EXAMPLE, generate_missing_secrets};
use consulta_appservice::{AppState, app};
use consulta_core::{ManualClock, OwnedUserId, Role, Timestamp};
use consulta_store::Store;
use consulta_testkit::bench::{Rng, Stats, TABLE_HEADER, env_or, load_average, ms};
use serde_json::{Value, json};

/// The store benchmark's population and clock (see crates/consulta-store/benches/appointments.rs).
const DOCTORS: u64 = 500;
const PATIENTS: u64 = 50_000;
const NOW_SECS: i64 = 1_800_000_000;
/// Users signed in for the run (each gets a role and a session).
const SIGNED_IN: u64 = 200;

fn user(s: String) -> OwnedUserId {
    OwnedUserId::try_from(s).unwrap()
}

struct Person {
    id: OwnedUserId,
    session: String,
}

async fn sign_in(
    state: &AppState,
    ids: Vec<OwnedUserId>,
    role: Role,
    now: Timestamp,
) -> Vec<Person> {
    let mut people = Vec::new();
    for id in ids {
        state.store().set_role(&id, Some(role), now).await.unwrap();
        let session = state.open_calendar_session(&id).await.unwrap();
        people.push(Person {
            id,
            session: format!("Session {}", session.token.expose()),
        });
    }
    people
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let queries = env_or("REST_QUERIES", 5_000) as usize;
    let bookings = env_or("REST_BOOKINGS", 2_000) as usize;
    let Some(source) = std::env::var_os("APPT_DB") else {
        eprintln!(
            "Set APPT_DB to the file of `APPT_DB=/tmp/appt.db cargo bench -p consulta-store --bench appointments` (run that first)"
        );
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rest.db");
    std::fs::copy(&source, &path).unwrap();
    println!("load average at start: {}", load_average());

    let url = format!("sqlite://{}", path.display());
    let overrides = vec![
        ("CONSULTA_DATABASE__URI".to_owned(), url.clone()),
        (
            "CONSULTA_HOMESERVER__DOMAIN".to_owned(),
            "clinic.bench".to_owned(),
        ),
        ("CONSULTA_LOGGING__LEVEL".to_owned(), "warn".to_owned()),
    ];
    let config =
        Config::from_yaml_with_env(&generate_missing_secrets(EXAMPLE).0, overrides).unwrap();
    let store = Store::connect(&url, 8).await.unwrap();
    let now: Timestamp = DateTime::from_timestamp(NOW_SECS, 0).unwrap();
    let state = AppState::new(config, store.clone(), Arc::new(ManualClock::new(now))).unwrap();

    let mut rng = Rng(7);
    let doctors = sign_in(
        &state,
        (0..SIGNED_IN)
            .map(|_| user(format!("@doctor{}:clinic.bench", rng.below(DOCTORS))))
            .collect(),
        Role::Doctor,
        now,
    )
    .await;
    let patients = sign_in(
        &state,
        (0..SIGNED_IN)
            .map(|_| user(format!("@patient{}:clinic.bench", rng.below(PATIENTS))))
            .collect(),
        Role::Patient,
        now,
    )
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/_consulta/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    // Warm the page cache and the connection as a running server would have them.
    for p in doctors.iter().chain(&patients) {
        store.next_appointments(&p.id, now, 20).await.unwrap();
    }
    let warm = http
        .get(format!("{base}/appointments/next"))
        .header("authorization", &doctors[0].session);
    assert_eq!(warm.send().await.unwrap().status(), 200);

    println!();
    println!("{TABLE_HEADER}");
    let mut ratios = Vec::new();
    for (kind, people) in [("doctor", &doctors), ("patient", &patients)] {
        let (mut over_http, mut direct) =
            (Vec::with_capacity(queries), Vec::with_capacity(queries));
        let mut found = 0;
        for i in 0..queries {
            let p = &people[i % people.len()];
            let t = Instant::now();
            let response = http
                .get(format!("{base}/appointments/next?limit=20"))
                .header("authorization", &p.session)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            over_http.push(t.elapsed());
            found += body["appointments"].as_array().unwrap().len();
            let t = Instant::now();
            store.next_appointments(&p.id, now, 20).await.unwrap();
            direct.push(t.elapsed());
        }
        assert!(found > 0, "the {kind}s have upcoming appointments");
        let (http_stats, store_stats) = (Stats::of(over_http).unwrap(), Stats::of(direct).unwrap());
        println!(
            "{}",
            http_stats.row(&format!("GET next 20 of a {kind} (HTTP, session, audit)"))
        );
        println!(
            "{}",
            store_stats.row("the same query on the store, same users")
        );
        ratios.push((
            kind,
            ms(http_stats.p50) / ms(store_stats.p50),
            ms(http_stats.p99) / ms(store_stats.p99),
        ));
    }

    let days = (1_000_000 / (DOCTORS * 16)) as i64;
    let mut rng = Rng(store
        .next_appointments(&doctors[0].id, now, 1)
        .await
        .unwrap()
        .len() as u64
        + 99);
    let mut samples = Vec::with_capacity(bookings);
    let (mut booked, mut busy) = (0, 0);
    for _ in 0..bookings {
        let d = &doctors[rng.below(SIGNED_IN) as usize];
        let p = &patients[rng.below(SIGNED_IN) as usize];
        let day = rng.below(days as u64 * 2 / 3) as i64 + 1;
        let start = now + Span::days(day) + Span::minutes(15 * rng.below(96) as i64);
        let body = json!({"patient": p.id, "start": start.to_rfc3339(), "duration_minutes": 30, "reason": "Follow-up"});
        let t = Instant::now();
        let response = http
            .post(format!("{base}/appointments"))
            .header("authorization", &d.session)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let _ = response.bytes().await.unwrap();
        samples.push(t.elapsed());
        match status {
            201 => booked += 1,
            409 => busy += 1,
            other => panic!("booking answered {other}"),
        }
    }
    println!(
        "{}",
        Stats::of(samples)
            .unwrap()
            .row(&format!("POST appointment (HTTP, session, rules, audit): {booked} booked, {busy} refused as collisions"))
    );
    println!();
    for (kind, p50, p99) in ratios {
        println!("HTTP / store, next 20 of a {kind}: p50 × {p50:.1}, p99 × {p99:.1}");
    }
    println!("load average at end: {}", load_average());
}
