//! Reading the clinic assistant's end-to-end encrypted Care desk messages as a real client would.

use consulta_testkit::Stack;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use serde_json::{Value, json};

use crate::Person;
use crate::rest_support::eventually;

/// One sync, so that the client's device keys are on the homeserver before anyone encrypts to it.
pub async fn sync(p: &Person) {
    p.client
        .sync_once(SyncSettings::default().timeout(std::time::Duration::from_millis(500)))
        .await
        .unwrap();
}

/// Waits until the assistant's device has published its keys (it is up and can decrypt commands).
pub async fn wait_for_assistant(stack: &Stack, asker: &Person) {
    let bot = stack.appservice.bot().to_string();
    let device = stack.config.appservice.bot.device_id.clone();
    eventually("the assistant's device keys are published", || async {
        let answer: Value = reqwest::Client::new()
            .post(format!(
                "{}/_matrix/client/v3/keys/query",
                stack.synapse.base_url()
            ))
            .bearer_auth(&asker.user.access_token)
            .json(&json!({"device_keys": {&bot: []}}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["device_keys"][&bot][&device]["keys"]
            .is_object()
            .then_some(())
    })
    .await;
}

/// `p`'s Care desk, joined.
pub async fn join_desk(stack: &Stack, p: &Person) -> OwnedRoomId {
    let desk = eventually("the Care desk is opened", || async {
        stack.appservice.store().care_desk(&p.id()).await.unwrap()
    })
    .await;
    p.client.join_room_by_id(&desk).await.unwrap();
    sync(p).await;
    desk
}

/// The texts of the assistant's messages in `room`, decrypted, oldest first. Fails on a message the
/// client cannot decrypt: every assistant message must be readable by its recipient.
pub async fn assistant_texts(stack: &Stack, p: &Person, room: &OwnedRoomId) -> Vec<String> {
    sync(p).await;
    let room = p.client.get_room(room).unwrap();
    let mut options = MessagesOptions::backward();
    options.limit = 100u32.into();
    let messages = room.messages(options).await.unwrap();
    let mut texts = Vec::new();
    for event in messages.chunk.iter().rev() {
        let Ok(event) = event.raw().deserialize() else {
            continue;
        };
        if event.sender() != stack.appservice.bot() {
            continue;
        }
        match event {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(m)) => {
                if let Some(m) = m.as_original() {
                    texts.push(m.content.body().to_owned());
                }
            }
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomEncrypted(_)) => {
                panic!("{} cannot decrypt a message of the assistant", p.id())
            }
            _ => {}
        }
    }
    texts
}

/// Waits until one of the assistant's messages in `room` contains `needle`; returns all of them.
pub async fn wait_for_text(
    stack: &Stack,
    p: &Person,
    room: &OwnedRoomId,
    needle: &str,
) -> Vec<String> {
    eventually(&format!("the assistant says {needle:?}"), || async {
        let texts = assistant_texts(stack, p, room).await;
        texts.iter().any(|t| t.contains(needle)).then_some(texts)
    })
    .await
}

/// Sends a command in `p`'s Care desk (encrypted, as every client in the room does).
pub async fn command(p: &Person, desk: &OwnedRoomId, text: &str) {
    let room = p.client.get_room(desk).unwrap();
    room.send(RoomMessageEventContent::text_plain(text))
        .await
        .unwrap();
}
