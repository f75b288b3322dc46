//! Consultation rooms: their shape, and the backstop that undoes what slipped past the gate.
//!
//! A doctor may start a conversation from Element ("Start chat" creates a `trusted_private_chat`, which
//! gives the invitee the creator's power) or through Consulta. Either way, once the patient's invite is
//! seen, Consulta makes the room what a consultation must be, acting as the doctor: invite-only, end-to-end
//! encrypted, history for members only, no guests, the patient at power level 0, the doctor moderating.

use consulta_core::{
    AuditAction, Consultation, ConsultationStatus, Decision, RoomContext, decide_invite,
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::homeserver::HomeserverError;
use crate::state::AppState;

/// Power level needed to invite, kick, ban, redact others and change state in a consultation.
const MODERATOR: i64 = 50;

/// The parts of an `m.room.member` event the handlers need.
#[derive(Debug, Deserialize)]
pub struct MemberEvent {
    /// Room.
    pub room_id: OwnedRoomId,
    /// Who sent it (the inviter, for an invite).
    pub sender: OwnedUserId,
    /// Whose membership it is.
    pub state_key: OwnedUserId,
    /// `{membership: …}`.
    pub content: MemberContent,
    /// When the homeserver received it (ms since the epoch).
    #[serde(default)]
    pub origin_server_ts: i64,
}

/// Content of a member event.
#[derive(Debug, Deserialize)]
pub struct MemberContent {
    /// `invite`, `join`, `leave`, `ban` or `knock`.
    pub membership: String,
}

/// The power levels a consultation needs, applied to what the room has. Returns `None` if nothing changes.
pub fn consultation_power_levels(current: &Value, patient: &UserId) -> Option<Value> {
    let mut levels = current.as_object().cloned().unwrap_or_default();
    let before = levels.clone();
    for key in ["invite", "kick", "ban", "redact", "state_default"] {
        let at_least_moderator = levels
            .get(key)
            .and_then(Value::as_i64)
            .is_some_and(|v| v >= MODERATOR);
        if !at_least_moderator {
            levels.insert(key.to_owned(), json!(MODERATOR));
        }
    }
    levels.insert("users_default".to_owned(), json!(0));
    if let Some(users) = levels.get_mut("users").and_then(Value::as_object_mut) {
        users.remove(patient.as_str());
    }
    (levels != before).then_some(Value::Object(levels))
}

/// The `createRoom` body of a consultation: the room is born in its final shape.
pub fn consultation_room_body(patient: &UserId) -> Value {
    json!({
        "preset": "private_chat",
        "is_direct": true,
        "invite": [patient],
        "initial_state": [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}},
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
        ],
        "power_level_content_override": {
            "invite": MODERATOR, "kick": MODERATOR, "ban": MODERATOR, "redact": MODERATOR,
            "state_default": MODERATOR, "events_default": 0, "users_default": 0,
        },
    })
}

/// Why a consultation could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The homeserver refused or failed (the gate's refusal message is inside).
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] consulta_store::StoreError),
}

impl AppState {
    /// Starts (or finds) the consultation between `doctor` and `patient`, creating the room as the doctor.
    /// The gate checks the roles on the way, exactly as for a client's request.
    pub async fn start_consultation(
        &self,
        doctor: &UserId,
        patient: &UserId,
    ) -> Result<(OwnedRoomId, bool), StartError> {
        if let Some(existing) = self
            .store()
            .open_consultation_between(doctor, patient)
            .await?
        {
            return Ok((existing.room_id, false));
        }
        let room = self
            .homeserver()
            .create_room(&consultation_room_body(patient), Some(doctor))
            .await?;
        tracing::info!(room_id = %room, %doctor, %patient, "consultation started");
        Ok((room, true))
    }

    /// After refusing to invite a patient into a room that would give them power, opens a proper
    /// consultation instead and takes the doctor out of the now-useless room if nobody else is in it.
    pub async fn replace_powered_room(&self, doctor: &UserId, patient: &UserId, orphan: &RoomId) {
        match self.start_consultation(doctor, patient).await {
            Ok((room, _)) => {
                tracing::info!(room_id = %room, replaced = %orphan, "consultation opened in place of a powered room")
            }
            Err(e) => {
                tracing::error!(%doctor, %patient, error = %e, "cannot open a consultation in place of a powered room");
                return;
            }
        }
        let alone = match self.homeserver().members(orphan, doctor).await {
            Ok(members) => members.iter().all(|m| {
                m.user_id == doctor || !(m.membership == "join" || m.membership == "invite")
            }),
            Err(_) => false,
        };
        if alone && let Err(e) = self.homeserver().leave(orphan, doctor).await {
            tracing::warn!(room_id = %orphan, error = %e, "cannot leave the replaced room");
        }
    }

    /// Makes the room of `c` a proper consultation, acting as its doctor. Idempotent. Encryption comes
    /// last, so a room that is encrypted has had every other step applied.
    pub async fn ensure_consultation_shape(&self, c: &Consultation) -> Result<(), HomeserverError> {
        let hs = self.homeserver();
        let (room, doctor) = (c.room_id.as_ref(), c.doctor.as_ref());
        let state = hs.room_state(room, doctor).await?;
        let current = state
            .get("m.room.power_levels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(levels) = consultation_power_levels(&current, &c.patient) {
            hs.put_state(room, "m.room.power_levels", "", &levels, doctor)
                .await?;
        }
        // (event type, content field, values that are acceptable, value to set otherwise)
        let fields: [(&str, &str, &[&str], &str); 4] = [
            ("m.room.join_rules", "join_rule", &["invite"], "invite"),
            (
                "m.room.history_visibility",
                "history_visibility",
                &["shared", "invited", "joined"],
                "invited",
            ),
            (
                "m.room.guest_access",
                "guest_access",
                &["forbidden"],
                "forbidden",
            ),
            (
                "m.room.encryption",
                "algorithm",
                &["m.megolm.v1.aes-sha2"],
                "m.megolm.v1.aes-sha2",
            ),
        ];
        for (event_type, field, acceptable, wanted) in fields {
            let value = state
                .get(event_type)
                .and_then(|v| v.get(field))
                .and_then(Value::as_str);
            if !value.is_some_and(|v| acceptable.contains(&v)) {
                hs.put_state(room, event_type, "", &json!({ field: wanted }), doctor)
                    .await?;
            }
        }
        Ok(())
    }

    /// Handles a membership event from a transaction: shapes new consultations and undoes what the gate
    /// would have refused (invites from servers without Consulta's rules, or by a server admin).
    pub async fn handle_member_event(&self, event: MemberEvent) {
        let at = chrono::DateTime::from_timestamp_millis(event.origin_server_ts)
            .unwrap_or_else(|| self.clock().now());
        let recorded = self
            .store()
            .record_membership(
                &event.room_id,
                &event.state_key,
                &event.content.membership,
                at,
            )
            .await;
        if let Err(e) = recorded {
            tracing::error!(room_id = %event.room_id, error = %e, "cannot record membership");
        }
        let consultation = match self.store().consultation(&event.room_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(room_id = %event.room_id, error = %e, "cannot read consultation; membership not checked");
                return;
            }
        };
        if event.content.membership == "invite" {
            if let Some(c) = &consultation
                && c.status == ConsultationStatus::Open
                && event.sender == c.doctor
                && event.state_key == c.patient
            {
                if let Err(e) = self.ensure_consultation_shape(c).await {
                    tracing::error!(room_id = %c.room_id, error = %e, "cannot shape consultation room");
                }
                return;
            }
            self.backstop_invite(&event, consultation.as_ref()).await;
        } else if event.content.membership == "join"
            && let Some(c) = &consultation
        {
            self.backstop_join(&event, c).await;
        }
    }

    async fn backstop_invite(&self, event: &MemberEvent, consultation: Option<&Consultation>) {
        let (inviter, invitee) = match (
            self.party(&event.sender).await,
            self.party(&event.state_key).await,
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return, // store unavailable: the gate already failed closed for new invites
        };
        let context = match consultation {
            Some(c) => RoomContext::Consultation {
                inviter_is_its_doctor: c.doctor == event.sender,
                invitee_is_its_patient: c.patient == event.state_key
                    && c.status == ConsultationStatus::Open,
            },
            None => RoomContext::EMPTY,
        };
        let settings = consulta_core::PolicySettings {
            care_teams: self.config().policy.care_teams,
        };
        let Decision::Refuse(refusal) = decide_invite(inviter, invitee, context, settings) else {
            return;
        };
        let undone = if self.is_local(&event.state_key) {
            // Reject the invite on the invitee's behalf: they never see it as pending.
            self.homeserver()
                .leave(&event.room_id, &event.state_key)
                .await
        } else if let Some(c) = consultation {
            self.homeserver()
                .kick(
                    &event.room_id,
                    &event.state_key,
                    refusal.message(),
                    &c.doctor,
                )
                .await
        } else {
            return;
        };
        self.report_backstop(
            &event.room_id,
            &event.sender,
            &event.state_key,
            refusal.code(),
            undone,
        )
        .await;
    }

    async fn backstop_join(&self, event: &MemberEvent, c: &Consultation) {
        let joiner = &event.state_key;
        if joiner == &c.doctor || joiner == &c.patient || self.is_bot(joiner) {
            return;
        }
        let Ok(party) = self.party(joiner).await else {
            return;
        };
        let colleague_allowed = self.config().policy.care_teams
            && matches!(
                party,
                consulta_core::Party::Local(Some(
                    consulta_core::Role::Doctor | consulta_core::Role::Admin
                )) | consulta_core::Party::Remote { allowed: true }
            );
        if colleague_allowed {
            return;
        }
        let reason = consulta_core::Refusal::TwoPartyConsultation;
        let undone = self
            .homeserver()
            .kick(&event.room_id, joiner, reason.message(), &c.doctor)
            .await;
        self.report_backstop(&event.room_id, joiner, joiner, "intruder_removed", undone)
            .await;
    }

    async fn report_backstop(
        &self,
        room: &RoomId,
        actor: &UserId,
        target: &UserId,
        code: &str,
        undone: Result<(), HomeserverError>,
    ) {
        let outcome = match &undone {
            Ok(()) => "undone",
            Err(_) => "undo_failed",
        };
        match undone {
            Ok(()) => {
                tracing::warn!(room_id = %room, %actor, %target, reason = code, "backstop undid a membership")
            }
            Err(e) => {
                tracing::error!(room_id = %room, %actor, %target, error = %e, "backstop could not undo a membership")
            }
        }
        self.audit(
            Some(actor.to_owned()),
            AuditAction::ActionRefused,
            Some(target.to_string()),
            &format!("backstop {room}: {code}: {outcome}"),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_private_chat_levels_become_consultation_levels() {
        // What Element's "Start chat" sets up: the invitee gets the creator's power.
        let patient = UserId::parse("@p:clinic.test").unwrap();
        let current =
            json!({"users": {"@p:clinic.test": 100}, "invite": 0, "kick": 50, "events_default": 0});
        let fixed = consultation_power_levels(&current, &patient).unwrap();
        assert_eq!(fixed["users"], json!({}));
        assert_eq!(fixed["invite"], 50);
        assert_eq!(fixed["kick"], 50);
        assert_eq!(fixed["redact"], 50);
        assert_eq!(fixed["state_default"], 50);
        assert_eq!(fixed["users_default"], 0);
        assert_eq!(fixed["events_default"], 0, "patients may write");
        assert_eq!(
            consultation_power_levels(&fixed, &patient),
            None,
            "idempotent"
        );
    }

    #[test]
    fn stricter_levels_are_kept() {
        let patient = UserId::parse("@p:clinic.test").unwrap();
        let current = json!({"users": {"@bot:clinic.test": 100}, "invite": 100, "kick": 100, "ban": 100,
            "redact": 100, "state_default": 100, "users_default": 0});
        assert_eq!(consultation_power_levels(&current, &patient), None);
    }
}

/// Why a consultation could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No open consultation in that room.
    #[error("no open consultation in that room")]
    NotFound,
    /// The caller is not its doctor.
    #[error("only the consultation's doctor can delete it")]
    NotItsDoctor,
    /// The homeserver refused or failed.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] consulta_store::StoreError),
}

impl AppState {
    /// The consultation's doctor deletes it: the patient is removed, the consultation closed, and the
    /// room archived (kept, out of the patient's reach) or purged, as the config says. Audited.
    pub async fn delete_consultation(
        &self,
        doctor: &UserId,
        room: &RoomId,
    ) -> Result<ConsultationStatus, DeleteError> {
        let c = self
            .store()
            .consultation(room)
            .await?
            .filter(|c| c.status == ConsultationStatus::Open);
        let Some(c) = c else {
            return Err(DeleteError::NotFound);
        };
        if c.doctor != doctor {
            self.audit(
                Some(doctor.to_owned()),
                AuditAction::ActionRefused,
                Some(room.to_string()),
                "delete: not_its_doctor",
            )
            .await;
            return Err(DeleteError::NotItsDoctor);
        }
        // Removing the patient first means that even a failed purge leaves them without access.
        let removed = self
            .homeserver()
            .kick(
                room,
                &c.patient,
                "This conversation was closed by your care team.",
                doctor,
            )
            .await;
        match removed {
            Ok(()) | Err(HomeserverError::Matrix { status: 403, .. }) => {} // 403: the patient already left
            Err(e) => return Err(e.into()),
        }
        let status = match self.config().policy.on_delete {
            crate::config::OnDelete::Archive => ConsultationStatus::Archived,
            crate::config::OnDelete::Purge => {
                self.homeserver().admin_purge_room(room).await?;
                ConsultationStatus::Purged
            }
        };
        self.store()
            .close_consultation(room, status, self.clock().now())
            .await?;
        self.audit(
            Some(doctor.to_owned()),
            AuditAction::ConsultationDeleted,
            Some(room.to_string()),
            &format!("patient {} removed; {}", c.patient, status.as_str()),
        )
        .await;
        tracing::info!(room_id = %room, %doctor, status = status.as_str(), "consultation deleted");
        Ok(status)
    }
}
