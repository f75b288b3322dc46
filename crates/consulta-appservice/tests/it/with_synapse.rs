//! The appservice beside a real Synapse, with a real matrix-sdk client.

use std::time::Duration;

use consulta_appservice::EventSource;
use consulta_core::Role;
use consulta_testkit::Stack;

use crate::person;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoomRequest;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_matrix_client_reaches_the_transaction_handler() {
    let stack = Stack::start().await.unwrap();
    let mut processed = stack.appservice.processor().subscribe();
    let doctor = person(&stack, "drsmith", Some(Role::Doctor)).await.client;

    let room = doctor.create_room(CreateRoomRequest::new()).await.unwrap();
    let sent = room
        .send(RoomMessageEventContent::text_plain("a clinical note"))
        .await
        .unwrap();

    let event = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), processed.recv())
            .await
            .expect("Synapse pushed no transaction with the message within 30 s")
            .unwrap();
        if event.event_id.as_deref() == Some(&*sent.response.event_id) {
            break event;
        }
    };
    assert_eq!(event.source, EventSource::Timeline);
    assert_eq!(event.event_type, "m.room.message");
    assert_eq!(event.room_id.as_deref(), Some(room.room_id()));
    assert_eq!(event.sender.unwrap().as_str(), stack.user_id("drsmith"));
    assert!(stack.appservice.store().transaction_count().await.unwrap() >= 1);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_round_trip_works_through_synapse() {
    let stack = Stack::start().await.unwrap();
    let rtt = stack
        .appservice
        .homeserver()
        .ping("it-ping-1")
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(10));
    assert_eq!(
        stack.appservice.last_ping().as_deref(),
        Some("it-ping-1"),
        "Synapse called our ping route"
    );

    let round_trip =
        consulta_appservice::ping_homeserver_until_reachable(stack.appservice.clone()).await;
    assert!(round_trip < Duration::from_secs(10));
    assert_eq!(
        stack.appservice.last_ping().as_deref(),
        Some("consulta-start-1")
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_refuses_an_appservice_with_the_wrong_as_token() {
    let stack = Stack::start().await.unwrap();
    let impostor = consulta_appservice::HomeserverClient::new(
        stack.synapse.base_url(),
        consulta_appservice::Secret::new("not-our-token"),
        &stack.config.appservice.id,
    )
    .unwrap();
    let err = impostor.ping("x").await.unwrap_err();
    assert!(err.to_string().contains("M_UNKNOWN_TOKEN"), "{err}");
    assert_eq!(stack.appservice.last_ping(), None);
    stack.stop().await.unwrap();
}
