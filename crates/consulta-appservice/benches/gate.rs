//! Benchmark of the pre-event gate.
//!
//! 1. The policy endpoint alone: decisions per second and latency percentiles under concurrent calls,
//!    for an allowed invite into a consultation (facts from the store) and a refused room creation
//!    (which also writes an audit record).
//! 2. Synapse's `createRoom` with and without the gate, on the same Synapse in the same run: Synapse
//!    skips spam-checker callbacks for server admins, so a server admin's createRoom is the baseline
//!    and a doctor's goes through the gate. The two are interleaved to cancel drift.
//!
//! Run: `cargo bench -p consulta-appservice --bench gate` (env `GATE_CALLS`, `GATE_CONCURRENCY`, `ROOMS`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::time::{Duration, Instant};

use consulta_core::{Consultation, ConsultationStatus, OwnedRoomId, Role, UserId};
use consulta_testkit::Stack;
use consulta_testkit::bench::{Stats, env_or, ms};
use serde_json::{Value, json};

/// Makes the createRoom body of the i-th room of a case.
type BodyFor<'a> = Box<dyn Fn(usize) -> Value + 'a>;

/// Fires `total` gate calls from `concurrency` tasks; returns (wall time, per-call latencies).
async fn hammer(
    url: String,
    secret: String,
    body: Value,
    expect: u16,
    total: usize,
    concurrency: usize,
) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let per_task = total / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, secret, body) =
            (client.clone(), url.clone(), secret.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&secret)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await.unwrap();
                latencies.push(t.elapsed());
                assert_eq!(status, expect);
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (started.elapsed(), all)
}

async fn create_room(base: &str, token: &str, body: &Value) -> Duration {
    let t = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/createRoom"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        response.status().is_success(),
        "createRoom failed: {}",
        response.text().await.unwrap()
    );
    elapsed
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls = env_or("GATE_CALLS", 20_000) as usize;
    let concurrency = env_or("GATE_CONCURRENCY", 16) as usize;
    let rooms = env_or("ROOMS", 150) as usize;

    let stack = Stack::start().await.unwrap();
    let state = stack.appservice.clone();
    let now = state.clock().now();
    let doctor = UserId::parse(stack.user_id("drbench")).unwrap();
    let patient = UserId::parse(stack.user_id("patientbench")).unwrap();
    let colleague = stack
        .synapse
        .register_user("drcolleague", "bench password 1", false)
        .await
        .unwrap();
    let doctor_login = stack
        .synapse
        .register_user("drbench", "bench password 2", false)
        .await
        .unwrap();
    stack
        .synapse
        .register_user("patientbench", "bench password 3", false)
        .await
        .unwrap();
    for (user, role) in [(&doctor, Role::Doctor), (&patient, Role::Patient)] {
        state.store().set_role(user, Some(role), now).await.unwrap();
    }
    state
        .store()
        .set_role(
            &UserId::parse(colleague.user_id.as_str()).unwrap(),
            Some(Role::Doctor),
            now,
        )
        .await
        .unwrap();
    let room = OwnedRoomId::try_from("!bench:clinic.test").unwrap();
    state
        .store()
        .insert_consultation(&Consultation {
            room_id: room.clone(),
            doctor: doctor.clone(),
            patient: patient.clone(),
            created_at: now,
            status: ConsultationStatus::Open,
            closed_at: None,
        })
        .await
        .unwrap();

    println!(
        "Consulta gate benchmark — {} cores, SQLite store, Synapse {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        consulta_testkit::install::SYNAPSE_VERSION
    );
    println!();
    println!(
        "1. Policy endpoint, {calls} calls per case and level (HTTP keep-alive, loopback; the clients share the 2 cores)"
    );
    println!(
        "{:<42} {:>5} {:>11} {:>8} {:>8} {:>8} {:>9}",
        "case", "conc", "decisions/s", "mean ms", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let secret = state.config().antispam.secret.expose().to_owned();
    let cases: [(&str, &str, Value, u16); 2] = [
        (
            "allowed invite into a consultation",
            "user_may_invite",
            json!({"inviter": doctor, "invitee": patient, "room_id": room}),
            200,
        ),
        (
            "refused room creation (patient, audited)",
            "user_may_create_room",
            json!({"user_id": patient}),
            403,
        ),
    ];
    // Synapse asks the gate once per createRoom or invite: 4 concurrent callers is far above a clinic's
    // rate. The saturating level shows throughput; there, latency is mostly queueing.
    let mut worst_p99_realistic = Duration::ZERO;
    for (name, callback, body, expect) in cases {
        let url = format!("{}/_consulta/antispam/{callback}", stack.appservice_url);
        // Warm-up: connections, statement cache.
        hammer(
            url.clone(),
            secret.clone(),
            body.clone(),
            expect,
            concurrency * 20,
            concurrency,
        )
        .await;
        for level in [1, 4, concurrency] {
            let (wall, latencies) = hammer(
                url.clone(),
                secret.clone(),
                body.clone(),
                expect,
                calls,
                level,
            )
            .await;
            let s = Stats::of(latencies).unwrap();
            if level <= 4 {
                worst_p99_realistic = worst_p99_realistic.max(s.p99);
            }
            println!(
                "{:<42} {:>5} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>9.3}",
                name,
                level,
                s.n as f64 / wall.as_secs_f64(),
                ms(s.mean),
                ms(s.p50),
                ms(s.p99),
                ms(s.p999)
            );
        }
    }
    println!(
        "target: p99 < 2 ms with up to 4 concurrent callers → {} (worst {:.3} ms)",
        if worst_p99_realistic < Duration::from_millis(2) {
            "met"
        } else {
            "NOT met"
        },
        ms(worst_p99_realistic)
    );

    println!();
    println!(
        "2. Synapse createRoom, {rooms} rooms per case, interleaved (server admin = no gate; doctor = gate)"
    );
    let base = stack.synapse.base_url().to_owned();
    let admin_token = stack.config.homeserver.admin_token.expose().to_owned();
    let plain = json!({"preset": "private_chat"});
    let with_invite = json!({"preset": "private_chat", "invite": [colleague.user_id]});
    let patients: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..(rooms + 5) {
            let p = stack
                .synapse
                .register_user(&format!("benchpatient{i}"), "bench password 4", false)
                .await
                .unwrap();
            state
                .store()
                .set_role(
                    &UserId::parse(p.user_id.as_str()).unwrap(),
                    Some(Role::Patient),
                    now,
                )
                .await
                .unwrap();
            ids.push(p.user_id);
        }
        ids
    };
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>8}",
        "case", "mean ms", "p50 ms", "p99 ms", "ratio"
    );
    let mut overheads = Vec::new();
    // The baseline admin is a doctor to Consulta too, so the backstop leaves its invites alone.
    let admin_id = UserId::parse(stack.user_id("consulta-admin")).unwrap();
    state
        .store()
        .set_role(&admin_id, Some(Role::Doctor), now)
        .await
        .unwrap();
    let cases: [(&str, BodyFor); 3] = [
        ("createRoom", Box::new(|_| plain.clone())),
        (
            "createRoom + invite of a colleague",
            Box::new(|_| with_invite.clone()),
        ),
        // A new patient each time, so that each is the doctor's first consultation with them.
        (
            "createRoom + invite of a patient",
            Box::new(|i| json!({"preset": "private_chat", "invite": [patients[i]]})),
        ),
    ];
    for (name, make) in &cases {
        for w in 0..5 {
            create_room(&base, &admin_token, &make(rooms + w)).await;
        }
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for i in 0..rooms {
            let body = make(i);
            // Alternate which goes first so that neither always sees a warmer Synapse.
            if i % 2 == 0 {
                without.push(create_room(&base, &admin_token, &body).await);
                with.push(create_room(&base, &doctor_login.access_token, &body).await);
            } else {
                with.push(create_room(&base, &doctor_login.access_token, &body).await);
                without.push(create_room(&base, &admin_token, &body).await);
            }
        }
        let name: &str = name;
        let (a, b) = (Stats::of(without).unwrap(), Stats::of(with).unwrap());
        let ratio = b.mean.as_secs_f64() / a.mean.as_secs_f64();
        overheads.push((ratio - 1.0) * 100.0);
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            format!("{name}, without gate"),
            ms(a.mean),
            ms(a.p50),
            ms(a.p99),
            "1.000"
        );
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>8.3}",
            format!("{name}, with gate"),
            ms(b.mean),
            ms(b.p50),
            ms(b.p99),
            ratio
        );
    }
    let worst = overheads.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "gate overhead on createRoom: {}",
        overheads
            .iter()
            .map(|o| format!("{o:+.1} %"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "target: < 5 % → {}",
        if worst < 5.0 { "met" } else { "NOT met" }
    );
    stack.stop().await.unwrap();
}
