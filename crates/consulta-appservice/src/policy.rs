//! The policy service: gathers the facts `consulta_core::policy` decides on, and applies its decisions.
//!
//! Facts come from the store (roles, consultations, room membership as Consulta knows it), the config
//! (role map, partner servers, care teams) and, only when a patient is invited into a room that is not a
//! consultation, from the homeserver (whether the room already gives them power).
//! Any failure to gather a fact is an error, which the gate turns into a refusal: it fails closed.

use consulta_core::{
    AuditAction, Consultation, ConsultationStatus, Decision, Party, PolicySettings, Refusal, Role,
    RoomContext, RoomId, UserId, decide_create_room, decide_invite,
};
use consulta_store::StoreError;

use crate::homeserver::HomeserverError;
use crate::state::AppState;

/// Why a decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The homeserver did not answer.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
}

/// How an invite reached the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteOrigin {
    /// A local user invites (the room may be ours).
    Local,
    /// Another server sends an invite for one of our users (the room lives there).
    Federated,
}

impl AppState {
    /// Whether `user` is one of Consulta's own (bot namespace on our server).
    pub fn is_bot(&self, user: &UserId) -> bool {
        user == self.bot()
            || (self.is_local(user)
                && user
                    .localpart()
                    .starts_with(self.config().appservice.namespace_prefix.as_str()))
    }

    /// Whether `user` belongs to this homeserver.
    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name().as_str() == self.config().homeserver.domain
    }

    /// A local user's role: the store's record if there is one (set by an admin or a doctor, including
    /// an explicit revocation), else the config's `permissions` map, else none (pending).
    pub async fn role_of(&self, user: &UserId) -> Result<Option<Role>, StoreError> {
        match self.store().user(user).await? {
            Some(record) => Ok(record.role),
            None => Ok(self.config().configured_role(user)),
        }
    }

    /// What `user` is to the policy.
    pub async fn party(&self, user: &UserId) -> Result<Party, StoreError> {
        if self.is_bot(user) {
            Ok(Party::Bot)
        } else if self.is_local(user) {
            Ok(Party::Local(self.role_of(user).await?))
        } else {
            let server = user.server_name().as_str();
            Ok(Party::Remote {
                allowed: self
                    .config()
                    .policy
                    .allowed_servers
                    .iter()
                    .any(|s| s == server),
            })
        }
    }

    fn policy_settings(&self) -> PolicySettings {
        PolicySettings {
            care_teams: self.config().policy.care_teams,
        }
    }

    /// May `user` create a room?
    pub async fn decide_create_room(&self, user: &UserId) -> Result<Decision, PolicyError> {
        Ok(decide_create_room(self.party(user).await?))
    }

    /// May `inviter` invite `invitee` into `room`? When a doctor's first invite of a patient into a room
    /// is allowed, the room is recorded as their consultation before the answer goes back, so that a
    /// concurrent second invite already sees it.
    pub async fn decide_invite(
        &self,
        inviter: &UserId,
        invitee: &UserId,
        room: &RoomId,
        origin: InviteOrigin,
    ) -> Result<Decision, PolicyError> {
        let (inviter_party, invitee_party) =
            (self.party(inviter).await?, self.party(invitee).await?);
        let settings = self.policy_settings();
        // Who invites whom settles most cases without looking at the room.
        let without_room =
            decide_invite(inviter_party, invitee_party, RoomContext::EMPTY, settings);
        if let Decision::Refuse(_) = without_room {
            return Ok(without_room);
        }
        if inviter_party == Party::Bot
            || invitee_party == Party::Bot
            || origin == InviteOrigin::Federated
        {
            return Ok(without_room);
        }
        let context = self
            .room_context(inviter, invitee, invitee_party, room)
            .await?;
        let decision = decide_invite(inviter_party, invitee_party, context, settings);
        if decision == Decision::Refuse(Refusal::PatientWouldHavePower)
            && inviter_party == Party::Local(Some(Role::Doctor))
        {
            // The doctor meant to talk to this patient: open a proper consultation for them, after this
            // answer has let Synapse finish the request that asked.
            let (state, doctor, patient, orphan) = (
                self.clone(),
                inviter.to_owned(),
                invitee.to_owned(),
                room.to_owned(),
            );
            tokio::spawn(
                async move { state.replace_powered_room(&doctor, &patient, &orphan).await },
            );
        }
        let first_patient = matches!(context, RoomContext::Other { .. })
            && inviter_party == Party::Local(Some(Role::Doctor))
            && invitee_party == Party::Local(Some(Role::Patient));
        if decision == Decision::Allow && matches!(context, RoomContext::Other { .. }) {
            // The next decision about this room must see this invite before any transaction tells us.
            // (Consultations are decided from their record; inviters never count themselves.)
            self.store()
                .record_membership(room, invitee, "invite", self.clock().now())
                .await?;
        }
        if decision == Decision::Allow && first_patient {
            let consultation = Consultation {
                room_id: room.to_owned(),
                doctor: inviter.to_owned(),
                patient: invitee.to_owned(),
                created_at: self.clock().now(),
                status: ConsultationStatus::Open,
                closed_at: None,
            };
            if !self.store().insert_consultation(&consultation).await? {
                // Someone recorded this room in between: decide again against what is recorded.
                let context = self
                    .room_context(inviter, invitee, invitee_party, room)
                    .await?;
                return Ok(decide_invite(
                    inviter_party,
                    invitee_party,
                    context,
                    settings,
                ));
            }
            tracing::info!(room_id = %room, doctor = %inviter, patient = %invitee, "consultation recorded");
        }
        Ok(decision)
    }

    /// The room's situation as seen from this invite.
    async fn room_context(
        &self,
        inviter: &UserId,
        invitee: &UserId,
        invitee_party: Party,
        room: &RoomId,
    ) -> Result<RoomContext, PolicyError> {
        if let Some(c) = self.store().consultation(room).await? {
            return Ok(RoomContext::Consultation {
                inviter_is_its_doctor: c.doctor == inviter,
                // A deleted consultation is out of the patient's reach: they are never invited back.
                invitee_is_its_patient: c.patient == invitee
                    && c.status == ConsultationStatus::Open,
            });
        }
        let invitee_has_power = invitee_party == Party::Local(Some(Role::Patient))
            && self.room_grants_power(room, inviter, invitee).await?;
        let (mut patients, mut staff) = (0u32, 0u32);
        for member in self.store().present_members(room).await? {
            if member == inviter || member == invitee {
                continue;
            }
            match self.party(&member).await? {
                Party::Local(Some(Role::Patient)) => patients += 1,
                Party::Bot => {}
                _ => staff += 1,
            }
        }
        Ok(RoomContext::Other {
            patients,
            staff,
            invitee_has_power,
        })
    }

    /// Whether the room already gives `invitee` power: listed as a creator (room v12) or above level 0.
    async fn room_grants_power(
        &self,
        room: &RoomId,
        reader: &UserId,
        invitee: &UserId,
    ) -> Result<bool, PolicyError> {
        let hs = self.homeserver();
        let create = hs
            .state(room, "m.room.create", "", reader)
            .await?
            .unwrap_or_default();
        let listed = |v: &serde_json::Value| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(invitee.as_str())))
        };
        if create.get("additional_creators").is_some_and(listed) {
            return Ok(true);
        }
        // From room version 12 creators outrank everyone, so a level given to the invitee can be taken
        // back by the doctor (and is, when the room is reshaped). Before that, a level equal to the
        // doctor's could never be lowered: it has to be caught now.
        let version = create
            .get("room_version")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("1");
        if version.parse::<u32>().is_ok_and(|v| v >= 12) {
            return Ok(false);
        }
        let levels = hs
            .state(room, "m.room.power_levels", "", reader)
            .await?
            .unwrap_or_default();
        let level = levels
            .get("users")
            .and_then(|u| u.get(invitee.as_str()))
            .or_else(|| levels.get("users_default"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        Ok(level > 0)
    }

    /// Records a refusal in the audit log.
    pub async fn audit_refusal(
        &self,
        actor: &UserId,
        target: Option<String>,
        action: &str,
        code: &str,
    ) {
        self.audit(
            Some(actor.to_owned()),
            AuditAction::ActionRefused,
            target,
            &format!("{action}: {code}"),
        )
        .await;
    }
}
