//! Who may start a conversation and whom they may add: the clinical rules of messaging.
//!
//! These decisions run *before* anything exists: Synapse's `synapse-http-antispam` module asks the
//! appservice, which gathers the facts (roles, the room's consultation) and asks this module. They are
//! pure, so the whole table below is unit-tested without a server.
//!
//! | actor    | create a room | invite a patient           | invite a doctor | invite anyone else |
//! |----------|---------------|----------------------------|-----------------|--------------------|
//! | doctor   | yes           | yes (a validated patient)  | yes             | not pending users  |
//! | admin    | yes           | no (doctors start those)   | yes             | not pending users  |
//! | patient  | no            | no                         | no              | no                 |
//! | pending  | no            | no                         | no              | no                 |
//! | bot      | yes           | yes                        | yes             | yes                |
//! | remote   | —             | only from allow-listed clinic servers                               |
//!
//! Anyone local may invite Consulta's bot (a pending user's only contact). A consultation holds one doctor
//! and one patient; a third member is allowed only with care teams enabled, added by the consultation's
//! doctor, and never a second patient.

use crate::Role;

/// What Consulta knows about a party to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// One of Consulta's own users (the bot's namespace).
    Bot,
    /// A user of this homeserver, with their role (`None`: pending).
    Local(Option<Role>),
    /// A user of another homeserver; `allowed` when that server is on the clinic's partner list.
    Remote {
        /// Whether the server is on `policy.allowed_servers`.
        allowed: bool,
    },
}

impl Party {
    /// A doctor, an admin or a partner clinic's user: someone on the care side.
    fn is_staff(self) -> bool {
        matches!(
            self,
            Party::Local(Some(Role::Doctor | Role::Admin)) | Party::Remote { allowed: true }
        )
    }
}

/// What the room already is, as far as the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomContext {
    /// Not a consultation (yet). Counts are of joined or invited members other than the inviter and bots.
    Other {
        /// Local patients in the room.
        patients: u32,
        /// Doctors, admins and partner users in the room.
        staff: u32,
        /// The room already grants the invitee power: a room creator (room v12's `additional_creators`,
        /// which Element's "Start chat" sets for invitees) or a power level above zero.
        invitee_has_power: bool,
    },
    /// A recorded consultation.
    Consultation {
        /// Whether the inviter is the consultation's doctor.
        inviter_is_its_doctor: bool,
        /// Whether the invitee is the consultation's patient (e.g. invited back after leaving).
        invitee_is_its_patient: bool,
    },
}

impl RoomContext {
    /// A room nobody else is in yet, as during `createRoom`.
    pub const EMPTY: RoomContext = RoomContext::Other {
        patients: 0,
        staff: 0,
        invitee_has_power: false,
    };
}

/// Settings of the clinic that change decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicySettings {
    /// Allow a third member (another doctor, a nurse) in a consultation.
    pub care_teams: bool,
}

/// Why something was refused. Each has a message its recipient can understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A patient tried to create a room.
    PatientCannotCreateRoom,
    /// A patient tried to invite someone.
    PatientCannotInvite,
    /// A pending user tried to create a room or invite someone.
    PendingIsolated,
    /// Someone tried to invite a pending user.
    InviteePending,
    /// The inviter's or invitee's server is not a partner clinic.
    ServerNotAllowed,
    /// An admin tried to start a conversation with a patient.
    OnlyDoctorsInvitePatients,
    /// A third member or a second patient in a consultation.
    TwoPartyConsultation,
    /// Someone other than the consultation's doctor tried to add a member.
    NotTheConsultationsDoctor,
    /// A user from another server tried to create a room here.
    RemoteCannotCreateRoom,
    /// The room would give the invited patient power over it (e.g. as a co-creator).
    PatientWouldHavePower,
}

impl Refusal {
    /// What the person who tried is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::PatientCannotCreateRoom => "Conversations are started by your care team.",
            Refusal::PatientCannotInvite => "Only your care team can add people to a conversation.",
            Refusal::PendingIsolated => {
                "Your account is waiting for the clinic to confirm it. Until then you can only talk to the clinic assistant."
            }
            Refusal::InviteePending => {
                "This person's account has not been confirmed by the clinic yet."
            }
            Refusal::ServerNotAllowed => "This server is not one of the clinic's partners.",
            Refusal::OnlyDoctorsInvitePatients => "Only doctors start conversations with patients.",
            Refusal::TwoPartyConsultation => {
                "A consultation is between one doctor and one patient."
            }
            Refusal::NotTheConsultationsDoctor => {
                "Only the doctor of this consultation can add people to it."
            }
            Refusal::RemoteCannotCreateRoom => "Rooms on this server are created by its own users.",
            Refusal::PatientWouldHavePower => {
                "This room would give the patient control over it, so Consulta is opening a proper consultation with them for you instead."
            }
        }
    }

    /// A stable machine-readable name, for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::PatientCannotCreateRoom => "patient_cannot_create_room",
            Refusal::PatientCannotInvite => "patient_cannot_invite",
            Refusal::PendingIsolated => "pending_isolated",
            Refusal::InviteePending => "invitee_pending",
            Refusal::ServerNotAllowed => "server_not_allowed",
            Refusal::OnlyDoctorsInvitePatients => "only_doctors_invite_patients",
            Refusal::TwoPartyConsultation => "two_party_consultation",
            Refusal::NotTheConsultationsDoctor => "not_the_consultations_doctor",
            Refusal::RemoteCannotCreateRoom => "remote_cannot_create_room",
            Refusal::PatientWouldHavePower => "patient_would_have_power",
        }
    }
}

/// The answer to "may this happen?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason.
    Refuse(Refusal),
}

/// May `actor` create a room on this homeserver?
pub fn decide_create_room(actor: Party) -> Decision {
    match actor {
        Party::Bot | Party::Local(Some(Role::Doctor | Role::Admin)) => Decision::Allow,
        Party::Local(Some(Role::Patient)) => Decision::Refuse(Refusal::PatientCannotCreateRoom),
        Party::Local(None) => Decision::Refuse(Refusal::PendingIsolated),
        Party::Remote { .. } => Decision::Refuse(Refusal::RemoteCannotCreateRoom),
    }
}

/// May `inviter` invite `invitee` into a room in `room`'s situation?
pub fn decide_invite(
    inviter: Party,
    invitee: Party,
    room: RoomContext,
    settings: PolicySettings,
) -> Decision {
    use Decision::{Allow, Refuse};
    match (inviter, invitee) {
        (Party::Bot, _) => return Allow,
        (Party::Remote { allowed: false }, _) | (_, Party::Remote { allowed: false }) => {
            return Refuse(Refusal::ServerNotAllowed);
        }
        (Party::Local(_), Party::Bot) => return Allow,
        (Party::Local(None), _) => return Refuse(Refusal::PendingIsolated),
        (Party::Local(Some(Role::Patient)), _) => return Refuse(Refusal::PatientCannotInvite),
        (_, Party::Local(None)) => return Refuse(Refusal::InviteePending),
        _ => {}
    }
    // The inviter is now a doctor, an admin or a partner clinic's user; the invitee is not pending.
    let invitee_is_patient = invitee == Party::Local(Some(Role::Patient));
    match room {
        RoomContext::Consultation {
            inviter_is_its_doctor,
            invitee_is_its_patient,
        } => {
            if !inviter_is_its_doctor {
                Refuse(Refusal::NotTheConsultationsDoctor)
            } else if invitee_is_its_patient {
                Allow
            } else if invitee_is_patient || !settings.care_teams {
                Refuse(Refusal::TwoPartyConsultation)
            } else {
                Allow
            }
        }
        RoomContext::Other {
            patients,
            staff,
            invitee_has_power,
        } => {
            if invitee_is_patient {
                if inviter == Party::Local(Some(Role::Admin)) {
                    Refuse(Refusal::OnlyDoctorsInvitePatients)
                } else if invitee_has_power {
                    Refuse(Refusal::PatientWouldHavePower)
                } else if patients > 0 || (staff > 0 && !settings.care_teams) {
                    Refuse(Refusal::TwoPartyConsultation)
                } else {
                    Allow
                }
            } else if invitee.is_staff() || invitee == Party::Bot {
                if patients > 0 && !settings.care_teams {
                    Refuse(Refusal::TwoPartyConsultation)
                } else {
                    Allow
                }
            } else {
                // Every other kind was settled above; refuse rather than guess if one is ever added.
                Refuse(Refusal::TwoPartyConsultation)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: Party = Party::Bot;
    const DOCTOR: Party = Party::Local(Some(Role::Doctor));
    const ADMIN: Party = Party::Local(Some(Role::Admin));
    const PATIENT: Party = Party::Local(Some(Role::Patient));
    const PENDING: Party = Party::Local(None);
    const PARTNER: Party = Party::Remote { allowed: true };
    const STRANGER: Party = Party::Remote { allowed: false };
    const ALL: [Party; 7] = [BOT, DOCTOR, ADMIN, PATIENT, PENDING, PARTNER, STRANGER];

    fn name(p: Party) -> &'static str {
        match p {
            BOT => "bot",
            DOCTOR => "doctor",
            ADMIN => "admin",
            PATIENT => "patient",
            PENDING => "pending",
            PARTNER => "partner",
            STRANGER => "stranger",
        }
    }

    #[test]
    fn room_creation_by_every_kind_of_actor() {
        use Refusal::*;
        let expected = [
            (BOT, None),
            (DOCTOR, None),
            (ADMIN, None),
            (PATIENT, Some(PatientCannotCreateRoom)),
            (PENDING, Some(PendingIsolated)),
            (PARTNER, Some(RemoteCannotCreateRoom)),
            (STRANGER, Some(RemoteCannotCreateRoom)),
        ];
        assert_eq!(expected.len(), ALL.len());
        for (actor, refusal) in expected {
            let want = refusal.map_or(Decision::Allow, Decision::Refuse);
            assert_eq!(
                decide_create_room(actor),
                want,
                "{} creates a room",
                name(actor)
            );
        }
    }

    /// The table, written out by hand for a fresh room (no other members, no care teams):
    /// one row per inviter, one column per invitee, in the order of `ALL`.
    #[test]
    fn invites_in_a_fresh_room_follow_the_table_exactly() {
        use Refusal::*;
        const A: Option<Refusal> = None;
        let table: [(Party, [Option<Refusal>; 7]); 7] = [
            //            bot  doctor                      admin  patient                       pending              partner  stranger
            (BOT, [A, A, A, A, A, A, A]),
            (
                DOCTOR,
                [A, A, A, A, Some(InviteePending), A, Some(ServerNotAllowed)],
            ),
            (
                ADMIN,
                [
                    A,
                    A,
                    A,
                    Some(OnlyDoctorsInvitePatients),
                    Some(InviteePending),
                    A,
                    Some(ServerNotAllowed),
                ],
            ),
            (
                PATIENT,
                [
                    A,
                    Some(PatientCannotInvite),
                    Some(PatientCannotInvite),
                    Some(PatientCannotInvite),
                    Some(PatientCannotInvite),
                    Some(PatientCannotInvite),
                    Some(ServerNotAllowed),
                ],
            ),
            (
                PENDING,
                [
                    A,
                    Some(PendingIsolated),
                    Some(PendingIsolated),
                    Some(PendingIsolated),
                    Some(PendingIsolated),
                    Some(PendingIsolated),
                    Some(ServerNotAllowed),
                ],
            ),
            (
                PARTNER,
                [A, A, A, A, Some(InviteePending), A, Some(ServerNotAllowed)],
            ),
            (STRANGER, [Some(ServerNotAllowed); 7]),
        ];
        for (inviter, row) in table {
            for (invitee, refusal) in ALL.into_iter().zip(row) {
                let want = refusal.map_or(Decision::Allow, Decision::Refuse);
                for care_teams in [false, true] {
                    let got = decide_invite(
                        inviter,
                        invitee,
                        RoomContext::EMPTY,
                        PolicySettings { care_teams },
                    );
                    assert_eq!(
                        got,
                        want,
                        "{} invites {} (care teams {care_teams})",
                        name(inviter),
                        name(invitee)
                    );
                }
            }
        }
    }

    #[test]
    fn patients_and_pending_users_never_invite_anyone_but_the_bot_in_any_room() {
        let rooms = [
            RoomContext::EMPTY,
            RoomContext::Other {
                patients: 1,
                staff: 1,
                invitee_has_power: true,
            },
            RoomContext::Consultation {
                inviter_is_its_doctor: true,
                invitee_is_its_patient: true,
            },
            RoomContext::Consultation {
                inviter_is_its_doctor: false,
                invitee_is_its_patient: false,
            },
        ];
        for inviter in [PATIENT, PENDING] {
            for invitee in ALL {
                for room in rooms {
                    for care_teams in [false, true] {
                        let d =
                            decide_invite(inviter, invitee, room, PolicySettings { care_teams });
                        assert_eq!(
                            d == Decision::Allow,
                            invitee == BOT,
                            "{} → {}",
                            name(inviter),
                            name(invitee)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_consultation_holds_one_doctor_and_one_patient_unless_care_teams_are_on() {
        use Refusal::*;
        let its_doctor = |invitee_is_its_patient| RoomContext::Consultation {
            inviter_is_its_doctor: true,
            invitee_is_its_patient,
        };
        let off = PolicySettings { care_teams: false };
        let on = PolicySettings { care_teams: true };
        // Its doctor may invite its patient back.
        assert_eq!(
            decide_invite(DOCTOR, PATIENT, its_doctor(true), off),
            Decision::Allow
        );
        // Never a second patient, care teams or not.
        for s in [off, on] {
            assert_eq!(
                decide_invite(DOCTOR, PATIENT, its_doctor(false), s),
                Decision::Refuse(TwoPartyConsultation)
            );
        }
        // A colleague only with care teams.
        for colleague in [DOCTOR, ADMIN, PARTNER] {
            assert_eq!(
                decide_invite(DOCTOR, colleague, its_doctor(false), off),
                Decision::Refuse(TwoPartyConsultation)
            );
            assert_eq!(
                decide_invite(DOCTOR, colleague, its_doctor(false), on),
                Decision::Allow
            );
        }
        // Only its doctor adds people.
        let not_its_doctor = RoomContext::Consultation {
            inviter_is_its_doctor: false,
            invitee_is_its_patient: false,
        };
        for inviter in [DOCTOR, ADMIN, PARTNER] {
            for s in [off, on] {
                assert_eq!(
                    decide_invite(inviter, DOCTOR, not_its_doctor, s),
                    Decision::Refuse(NotTheConsultationsDoctor)
                );
            }
        }
        // The bot is never refused.
        assert_eq!(
            decide_invite(BOT, PATIENT, its_doctor(false), off),
            Decision::Allow
        );
    }

    #[test]
    fn a_room_that_already_has_a_patient_or_a_colleague_gets_no_second_party_without_care_teams() {
        use Refusal::*;
        let off = PolicySettings { care_teams: false };
        let on = PolicySettings { care_teams: true };
        let with_patient = RoomContext::Other {
            patients: 1,
            staff: 0,
            invitee_has_power: false,
        };
        let with_colleague = RoomContext::Other {
            patients: 0,
            staff: 1,
            invitee_has_power: false,
        };
        assert_eq!(
            decide_invite(DOCTOR, PATIENT, with_patient, on),
            Decision::Refuse(TwoPartyConsultation)
        );
        assert_eq!(
            decide_invite(DOCTOR, DOCTOR, with_patient, off),
            Decision::Refuse(TwoPartyConsultation)
        );
        assert_eq!(
            decide_invite(DOCTOR, DOCTOR, with_patient, on),
            Decision::Allow
        );
        assert_eq!(
            decide_invite(DOCTOR, PATIENT, with_colleague, off),
            Decision::Refuse(TwoPartyConsultation)
        );
        assert_eq!(
            decide_invite(DOCTOR, PATIENT, with_colleague, on),
            Decision::Allow
        );
        assert_eq!(
            decide_invite(DOCTOR, DOCTOR, with_colleague, off),
            Decision::Allow,
            "staff rooms are free"
        );
    }

    #[test]
    fn a_patient_is_never_invited_into_a_room_that_gives_them_power() {
        let powered = RoomContext::Other {
            patients: 0,
            staff: 0,
            invitee_has_power: true,
        };
        for s in [
            PolicySettings { care_teams: false },
            PolicySettings { care_teams: true },
        ] {
            for inviter in [DOCTOR, PARTNER] {
                assert_eq!(
                    decide_invite(inviter, PATIENT, powered, s),
                    Decision::Refuse(Refusal::PatientWouldHavePower)
                );
            }
            // Colleagues may hold power in staff rooms; the bot acts for the clinic.
            assert_eq!(decide_invite(DOCTOR, DOCTOR, powered, s), Decision::Allow);
            assert_eq!(decide_invite(BOT, PATIENT, powered, s), Decision::Allow);
        }
    }

    #[test]
    fn every_refusal_has_a_message_and_a_distinct_code() {
        use Refusal::*;
        let all = [
            PatientCannotCreateRoom,
            PatientCannotInvite,
            PendingIsolated,
            InviteePending,
            ServerNotAllowed,
            OnlyDoctorsInvitePatients,
            TwoPartyConsultation,
            NotTheConsultationsDoctor,
            RemoteCannotCreateRoom,
            PatientWouldHavePower,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(
            all.iter()
                .all(|r| r.message().ends_with('.') && !r.message().contains("M_"))
        );
        assert_eq!(
            PatientCannotCreateRoom.message(),
            "Conversations are started by your care team."
        );
    }
}
