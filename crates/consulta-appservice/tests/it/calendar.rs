//! The calendar page and the iCal feed against a real Synapse: the Care desk pins the page as a widget,
//! the assistant sends a sign-in link, a doctor books from the page in headless Chromium at 360 px and
//! the patient sees the slot (screenshots under target/screenshots/calendar, checked pixel by pixel);
//! sessions and links expire; the feed is private, shows no reason and stops when revoked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use consulta_core::{ManualClock, Role};
use consulta_testkit::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::appointments::{bearer, call, openid};
use crate::desk::{command, join_desk, sync, wait_for_assistant, wait_for_text};
use crate::person;
use crate::rest_support::eventually;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Where the screenshots are kept (a CI artifact): `target/screenshots/calendar`.
fn screenshot_dir() -> PathBuf {
    // The workspace root without `..` components, so that paths under it compare as such.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/<name> sits two levels below the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("screenshots/calendar")
}

fn session(token: &str) -> String {
    format!("Session {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_bundle_is_the_pinned_npm_release() {
    let installed = browser_dir().join("node_modules/matrix-widget-api/dist/api.min.js");
    let npm = std::fs::read_to_string(&installed).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run tests/run, or `npm ci` in tests/browser",
            installed.display()
        )
    });
    assert!(
        npm == consulta_appservice::api::WIDGET_API,
        "web/vendor/matrix-widget-api-1.19.0.min.js differs from the npm package pinned in tests/browser"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_books_from_the_calendar_page_and_the_patient_sees_it() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run tests/run, or apt-get install chromium"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/browser/node_modules is missing: run tests/run, or `npm ci` in tests/browser"
    );
    let mut stack = Stack::start().await.unwrap();
    let doctor = person(&stack, "drcalendar", Some(Role::Doctor)).await;
    let patient = person(&stack, "patcalendar", Some(Role::Patient)).await;
    sync(&doctor).await;
    wait_for_assistant(&stack, &doctor).await;

    // The Care desk carries the calendar as a pinned widget.
    stack.appservice.care_desk_room(&doctor.id()).await.unwrap();
    let desk = join_desk(&stack, &doctor).await;
    let state = |kind: &'static str, key: &'static str| {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{desk}/state/{kind}/{key}",
            stack.synapse.base_url()
        );
        let token = doctor.user.access_token.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let widget = state("im.vector.modular.widgets", "consulta_calendar").await;
    let page = stack.appservice.calendar_page_url();
    assert_eq!(widget["type"], "m.custom", "{widget}");
    assert_eq!(
        widget["url"],
        format!("{page}?theme=$org.matrix.msc2873.client_theme")
    );
    assert_eq!(widget["creatorUserId"], stack.appservice.bot().as_str());
    let layout = state("io.element.widgets.layout", "").await;
    assert_eq!(
        layout["widgets"]["consulta_calendar"]["container"], "top",
        "{layout}"
    );

    // A desk without the widget (opened before the calendar existed) gets it at the next start.
    let bot = stack.appservice.bot().clone();
    stack
        .appservice
        .homeserver()
        .put_state(
            &desk,
            "im.vector.modular.widgets",
            "consulta_calendar",
            &json!({}),
            &bot,
        )
        .await
        .unwrap();
    stack.restart_appservice().await.unwrap();
    let repinned = eventually("the calendar is pinned again", || async {
        let content = stack
            .appservice
            .homeserver()
            .state(
                &desk,
                "im.vector.modular.widgets",
                "consulta_calendar",
                &bot,
            )
            .await
            .unwrap()?;
        content.get("url").is_some().then_some(content)
    })
    .await;
    assert_eq!(repinned, widget);

    // The doctor asks the assistant for a link (Element X shows no widgets); the patient uses REST.
    command(&doctor, &desk, "!calendar").await;
    let texts = wait_for_text(&stack, &doctor, &desk, "Your calendar: ").await;
    let text = texts
        .iter()
        .find(|t| t.contains("Your calendar: "))
        .unwrap();
    let doctor_link = regex::Regex::new(r"https?://\S+#link=[A-Za-z0-9]{64}")
        .unwrap()
        .find(text)
        .unwrap_or_else(|| panic!("no link in {text:?}"))
        .as_str()
        .to_owned();
    assert!(doctor_link.starts_with(&page), "{doctor_link}");

    // `!ical` gives a feed URL that works until `!ical off`.
    command(&doctor, &desk, "!ical").await;
    let texts = wait_for_text(&stack, &doctor, &desk, "Your private calendar feed: ").await;
    let feed = regex::Regex::new(r"https?://\S+/_consulta/ical/[A-Za-z0-9]{64}\.ics")
        .unwrap()
        .find(
            texts
                .iter()
                .find(|t| t.contains("calendar feed: "))
                .unwrap(),
        )
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(fetch(&feed).await.0, 200);
    command(&doctor, &desk, "!ical off").await;
    wait_for_text(
        &stack,
        &doctor,
        &desk,
        "Your calendar feed link no longer works.",
    )
    .await;
    assert_eq!(fetch(&feed).await.0, 404);
    let patient_link = sign_in_link(&stack, &patient).await;

    // The page, driven like a person would: keyboard to "Book", the form, the slot.
    let day = (Utc::now() + Duration::days(1)).date_naive();
    let out = screenshot_dir();
    let _ = std::fs::remove_dir_all(&out);
    let openid_token = openid(&stack, &patient).await;
    let script = json!({
        "pageUrl": page,
        "openId": {
            "access_token": openid_token.strip_prefix("OpenID ").unwrap(),
            "token_type": "Bearer",
            "matrix_server_name": "clinic.test",
            "expires_in": 3600,
        },
        "doctorLink": doctor_link,
        "patientLink": patient_link,
        "patient": patient.id(),
        "date": day.to_string(),
        "time": "10:30",
        "movedTo": "11:00",
        "outDir": out,
    });
    let output = tokio::time::timeout(
        StdDuration::from_secs(120),
        Command::new("node")
            .arg(browser_dir().join("calendar.mjs"))
            .arg(script.to_string())
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .env("CONSULTA_CHROMIUM", CHROMIUM)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run timed out")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CALENDAR_RESULT "))
        .unwrap_or_else(|| panic!("no CALENDAR_RESULT line:\n{stdout}\n{stderr}"));
    let r: Value = serde_json::from_str(line).unwrap();
    eprintln!("browser: {r:#}");
    assert!(
        output.status.success() && r["problems"].as_array().unwrap().is_empty(),
        "calendar.mjs failed ({}): {:#}\n{stderr}",
        output.status,
        r["problems"]
    );

    // Signed in, and the token gone from the address bar.
    assert_eq!(r["doctorWho"], format!("Signed in as {}", doctor.id()));
    assert!(
        !r["doctorUrlAfterSignIn"]
            .as_str()
            .unwrap()
            .contains("link=")
    );
    assert_eq!(
        r["doctorAfterReload"], r["doctorWho"],
        "a reload keeps the session"
    );
    assert!(
        r["secondUse"]
            .as_str()
            .unwrap()
            .contains("expired or was used"),
        "a link works once: {}",
        r["secondUse"]
    );

    // Keyboard and accessibility.
    assert_eq!(r["bookReachedByKeyboard"], true);
    assert_eq!(r["focusInDialog"], "f-patient");
    assert_eq!(
        r["focusAfterBooking"], r["bookedId"],
        "focus moves to the new slot"
    );
    for audit in ["auditBefore", "auditDialog", "auditAfter", "auditPatient"] {
        let a = &r[audit];
        assert_eq!(a["unlabelled"], json!([]), "{audit}: unlabelled controls");
        assert_eq!(a["overflow"], false, "{audit}: wider than 360 px");
        for (what, ratio) in a["contrast"].as_object().unwrap() {
            assert!(
                ratio.as_f64().unwrap() >= 4.5,
                "{audit}: {what} contrast {ratio} below WCAG AA"
            );
        }
    }

    // The booking was real: stored at the clinic time given, with its details (checked through the
    // audit of who changed it last, since the page has since moved and cancelled it).
    let (status, list) = call(
        &stack,
        Some(&bearer(&doctor)),
        Method::GET,
        &format!("/appointments?from={day}T00:00&to={day}T23:59"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let booked = &list["appointments"][0];
    assert_eq!(list["appointments"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(booked["id"], r["bookedId"]);
    assert_eq!(booked["duration_minutes"], 45);
    assert_eq!(booked["kind"], "video");
    assert_eq!(booked["reason"], "Follow-up from the calendar");
    assert_eq!(booked["patient"], patient.id().as_str());
    let doctor_text = r["doctorSlotText"].as_str().unwrap();
    assert!(doctor_text.contains("10:30–11:15"), "{doctor_text}");
    assert!(doctor_text.contains(patient.id().as_str()), "{doctor_text}");

    // The patient sees the same slot, with the doctor's name and without the doctor's controls.
    let patient_text = r["patientSlotText"].as_str().unwrap();
    assert!(patient_text.contains("10:30–11:15"), "{patient_text}");
    assert!(
        patient_text.contains(doctor.id().as_str()),
        "{patient_text}"
    );
    assert_eq!(r["patientSeesBook"], false);
    assert_eq!(r["patientSlotButtons"], 0);

    // Moved and cancelled from the page: the store has the new time and the cancellation, the
    // dialog kept the patient fixed, and a cancelled slot offers no more actions.
    assert_eq!(booked["start"], format!("{day}T11:00:00Z"));
    assert_eq!(booked["status"], "cancelled");
    assert_eq!(booked["updated_by"], doctor.id().as_str());
    assert_eq!(r["rescheduleTitle"], "Reschedule the appointment");
    assert_eq!(r["reschedulePatientLocked"], true);
    assert!(
        r["movedStatus"].as_str().unwrap().starts_with("Moved to"),
        "{}",
        r["movedStatus"]
    );
    assert_eq!(
        r["focusInConfirm"], "confirm-keep",
        "the safe choice has the focus"
    );
    assert!(
        r["cancelledText"].as_str().unwrap().contains("(cancelled)"),
        "{}",
        r["cancelledText"]
    );
    assert_eq!(r["cancelledButtons"], 0);
    let audit = stack.appservice.store().recent_audit(200).await.unwrap();
    let by_page = audit
        .iter()
        .filter(|a| {
            a.detail.contains("via calendar")
                && a.action == consulta_core::AuditAction::AppointmentChanged
        })
        .count();
    assert!(
        by_page >= 3,
        "book, move and cancel audited as the calendar's: {audit:#?}"
    );

    // The screenshots show the slot: most of its box is the video slot's colour, which an empty week
    // does not contain at all.
    for shot in [
        "doctorWeekPixels",
        "doctorAgendaPixels",
        "patientWeekPixels",
    ] {
        let share = r[shot]["inSlot"].as_f64().unwrap();
        assert!(
            share > 0.5,
            "{shot}: only {share} of the slot is its colour"
        );
    }
    // Before booking, only anti-aliased edges come near that colour.
    let empty = r["emptyWeekPixels"]["slotPixels"].as_u64().unwrap();
    let slot = r["doctorWeekPixels"]["slotPixels"].as_u64().unwrap();
    assert!(
        empty * 100 < slot,
        "an empty week has {empty} slot-coloured pixels, the booked slot {slot}"
    );
    for shot in r["screenshots"].as_array().unwrap() {
        let path = PathBuf::from(shot.as_str().unwrap());
        assert!(
            path.starts_with(&out) && path.exists(),
            "{}",
            path.display()
        );
    }
    eprintln!("screenshots in {}", out.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_the_ical_feed_is_private_and_revocable() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let stack = Stack::start_with(StackOptions {
        clock: clock.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let doctor = person(&stack, "drfeed", Some(Role::Doctor)).await;
    let patient = person(&stack, "patfeed", Some(Role::Patient)).await;
    let other = person(&stack, "otherfeed", Some(Role::Patient)).await;
    let start = (Utc::now() + Duration::days(2))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .unwrap()
        .and_utc();

    // A widget's OpenID token buys a session; so does a link, once.
    let (status, widget) = call(
        &stack,
        Some(&openid(&stack, &doctor).await),
        Method::POST,
        "/calendar/session",
        None,
    )
    .await;
    assert_eq!(status, 201, "{widget}");
    assert_eq!(widget["user_id"], doctor.id().as_str());
    assert_eq!(widget["role"], "doctor");
    assert_eq!(widget["today"], clock_today(&clock));
    let doctor_session = session(widget["session"].as_str().unwrap());

    let link = sign_in_link(&stack, &patient).await;
    let token = link.split("#link=").nth(1).unwrap().to_owned();
    let (status, first) = redeem(&stack, json!({"link": token})).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = redeem(&stack, json!({"link": token})).await;
    assert_eq!(
        (status, second["code"].as_str()),
        (401, Some("unauthenticated")),
        "{second}"
    );
    let patient_session = session(first["session"].as_str().unwrap());
    let (status, garbage) = redeem(&stack, json!({"link": "x'; DROP"})).await;
    assert_eq!(status, 401, "{garbage}");
    let (status, _) = redeem(&stack, json!({"nope": 1})).await;
    assert_eq!(status, 400);

    // Sessions work on the appointments API, with the same rules as any other credential.
    let (status, booked) = call(
        &stack,
        Some(&doctor_session),
        Method::POST,
        "/appointments",
        Some(json!({"patient": patient.id(), "start": start.to_rfc3339(), "duration_minutes": 30, "reason": "Viral load, CD4"})),
    )
    .await;
    assert_eq!(status, 201, "{booked}");
    let (status, refused) = call(
        &stack,
        Some(&patient_session),
        Method::POST,
        "/appointments",
        Some(json!({"patient": patient.id(), "start": start.to_rfc3339()})),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("not_allowed")),
        "{refused}"
    );
    let (status, theirs) = call(
        &stack,
        Some(&patient_session),
        Method::GET,
        &format!("/appointments?user={}", other.id()),
        None,
    )
    .await;
    assert!(status == 403 || status == 404, "{status} {theirs}");

    // The feed: the patient's appointment, its time and kind, no reason and no names.
    let (status, feed) = call(
        &stack,
        Some(&patient_session),
        Method::POST,
        "/calendar/feed",
        None,
    )
    .await;
    assert_eq!(status, 201, "{feed}");
    let url = feed["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/_consulta/ical/", stack.appservice_url)),
        "{url}"
    );
    let (status, content_type, body) = fetch(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/calendar; charset=utf-8");
    let unfolded = body.replace("\r\n ", "");
    assert!(
        unfolded.contains(&format!(
            "\r\nDTSTART:{}\r\n",
            start.format("%Y%m%dT%H%M%SZ")
        )),
        "{body}"
    );
    assert!(
        unfolded.contains(&format!(
            "\r\nUID:{}@clinic.test\r\n",
            booked["id"].as_str().unwrap()
        )),
        "{body}"
    );
    assert!(
        unfolded.contains("SUMMARY:Video consultation (Consulta)"),
        "{body}"
    );
    for secret in ["Viral", "CD4", "drfeed", "patfeed"] {
        assert!(!body.contains(secret), "{secret} in the feed:\n{body}");
    }

    // Cancelled appointments stay in the feed, marked, so phones remove them.
    let id = booked["id"].as_str().unwrap();
    let (status, _) = call(
        &stack,
        Some(&doctor_session),
        Method::POST,
        &format!("/appointments/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, body) = fetch(&url).await;
    assert!(body.contains("\r\nSTATUS:CANCELLED\r\n"), "{body}");

    // A new link replaces the old; revoking ends it; guesses get the same 404.
    let (_, renewed) = call(
        &stack,
        Some(&bearer(&patient)),
        Method::POST,
        "/calendar/feed",
        None,
    )
    .await;
    let renewed = renewed["url"].as_str().unwrap().to_owned();
    assert_ne!(renewed, url);
    assert_eq!(fetch(&url).await.0, 404, "the old link stopped");
    assert_eq!(fetch(&renewed).await.0, 200);
    let (status, revoked) = call(
        &stack,
        Some(&patient_session),
        Method::DELETE,
        "/calendar/feed",
        None,
    )
    .await;
    assert_eq!((status, revoked["revoked"].as_bool()), (200, Some(true)));
    assert_eq!(fetch(&renewed).await.0, 404, "revoked");
    let guess = format!(
        "{}/_consulta/ical/{}.ics",
        stack.appservice_url,
        "A".repeat(64)
    );
    assert_eq!(fetch(&guess).await.0, 404);

    // Sessions end after `calendar_session_hours` (12 by default) and on sign-out.
    clock.advance(Duration::hours(12) + Duration::minutes(1));
    let (status, ended) = call(
        &stack,
        Some(&doctor_session),
        Method::GET,
        "/calendar/session",
        None,
    )
    .await;
    assert_eq!(status, 401, "{ended}");
    let (_, fresh) = call(
        &stack,
        Some(&bearer(&patient)),
        Method::POST,
        "/calendar/session",
        None,
    )
    .await;
    let fresh = session(fresh["session"].as_str().unwrap());
    assert_eq!(
        call(&stack, Some(&fresh), Method::GET, "/calendar/session", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &stack,
            Some(&fresh),
            Method::DELETE,
            "/calendar/session",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&stack, Some(&fresh), Method::GET, "/calendar/session", None)
            .await
            .0,
        401
    );
}

fn clock_today(clock: &ManualClock) -> String {
    use consulta_core::Clock;
    clock.now().date_naive().to_string()
}

async fn fetch(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// A sign-in link for `p`, from the REST API.
async fn sign_in_link(stack: &Stack, p: &crate::Person) -> String {
    let (status, link) = call(
        stack,
        Some(&bearer(p)),
        Method::POST,
        "/calendar/link",
        None,
    )
    .await;
    assert_eq!(status, 201, "{link}");
    link["url"].as_str().unwrap().to_owned()
}

/// Posts `body` to `/calendar/session` without credentials (how a sign-in link is redeemed).
async fn redeem(stack: &Stack, body: Value) -> (u16, Value) {
    call(stack, None, Method::POST, "/calendar/session", Some(body)).await
}
