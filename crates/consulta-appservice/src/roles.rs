//! Accounts and roles: what admins (CLI or REST) and doctors (validating patients) may change.
//! Every change of role is audited: who, whom, when, old → new, and through which channel.

use consulta_core::{AuditAction, Role, UserId};
use ruma::OwnedUserId;

use crate::homeserver::HomeserverError;
use crate::secret::Secret;
use crate::state::AppState;

/// Who asks for a change, for the audit log and permission checks.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// Someone with shell access on the clinic's server, using the `consulta` CLI.
    Cli,
    /// A Matrix user through the REST API.
    User(&'a UserId),
}

impl Actor<'_> {
    /// Who to record in the audit log, and through which channel.
    fn audit_identity(self) -> (Option<OwnedUserId>, &'static str) {
        match self {
            Actor::Cli => (None, "cli"),
            Actor::User(u) => (Some(u.to_owned()), "api"),
        }
    }
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] consulta_store::StoreError),
    /// The homeserver refused or failed.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    /// The user is not local to this homeserver.
    #[error("{0} is not an account of this homeserver")]
    NotLocal(OwnedUserId),
    /// The account already exists.
    #[error("{0} already exists")]
    Exists(OwnedUserId),
    /// Only pending users can be validated as patients.
    #[error("{0} is not pending (their role is {1})")]
    NotPending(OwnedUserId, Role),
    /// A localpart that cannot form a user ID, or is reserved for Consulta's bots.
    #[error("invalid username {0:?}: {1}")]
    InvalidLocalpart(String, String),
}

/// A freshly created account and its initial password (shown once, never stored by Consulta).
#[derive(Debug)]
pub struct NewAccount {
    /// The new user.
    pub user_id: OwnedUserId,
    /// The initial password.
    pub password: Secret,
}

impl AppState {
    /// Sets or revokes (`None`) a role, auditing old → new.
    pub async fn change_role(
        &self,
        actor: Actor<'_>,
        user: &UserId,
        role: Option<Role>,
    ) -> Result<(), RoleError> {
        if !self.is_local(user) || self.is_bot(user) {
            return Err(RoleError::NotLocal(user.to_owned()));
        }
        let before = self.role_of(user).await?;
        self.store()
            .set_role(user, role, self.clock().now())
            .await?;
        let name = |r: Option<Role>| r.map_or("pending", Role::as_str);
        let (actor_id, via) = actor.audit_identity();
        let detail = format!("{} -> {} via {via}", name(before), name(role));
        tracing::info!(user = %user, %detail, "role changed");
        self.audit(
            actor_id,
            AuditAction::RoleChanged,
            Some(user.to_string()),
            &detail,
        )
        .await;
        // Someone who can now use Consulta gets their Care desk, with the calendar, and a welcome
        // (once per person; a later role change sends none).
        if let Some(new) = role.filter(|r| Some(*r) != before) {
            let as_doctor = matches!(new, Role::Doctor | Role::Admin);
            if let Err(e) = self.welcome(user, as_doctor).await {
                tracing::warn!(user = %user, error = %e, "cannot queue the Care desk welcome");
            }
        }
        Ok(())
    }

    /// Creates an account on the homeserver (admin API) with an initial password, and gives it a role.
    pub async fn create_account(
        &self,
        actor: Actor<'_>,
        localpart: &str,
        display_name: Option<&str>,
        role: Option<Role>,
    ) -> Result<NewAccount, RoleError> {
        let invalid = |why: &str| RoleError::InvalidLocalpart(localpart.to_owned(), why.to_owned());
        if localpart.starts_with(self.config().appservice.namespace_prefix.as_str()) {
            return Err(invalid("reserved for Consulta's bots"));
        }
        let user = UserId::parse(format!("@{localpart}:{}", self.config().homeserver.domain))
            .map_err(|e| invalid(&e.to_string()))?;
        if self.homeserver().admin_user_exists(&user).await? {
            return Err(RoleError::Exists(user));
        }
        let password = Secret::generate();
        let password = Secret::new(password.expose().chars().take(20).collect::<String>());
        self.homeserver()
            .admin_create_user(&user, &password, display_name)
            .await?;
        let (actor_id, via) = actor.audit_identity();
        self.audit(
            actor_id,
            AuditAction::RoleChanged,
            Some(user.to_string()),
            &format!("account created via {via}"),
        )
        .await;
        if role.is_some() {
            self.change_role(actor, &user, role).await?;
        }
        Ok(NewAccount {
            user_id: user,
            password,
        })
    }

    /// Deactivates an account: it can no longer log in, and its role is revoked.
    pub async fn deactivate_account(
        &self,
        actor: Actor<'_>,
        user: &UserId,
    ) -> Result<(), RoleError> {
        if !self.is_local(user) || self.is_bot(user) {
            return Err(RoleError::NotLocal(user.to_owned()));
        }
        self.homeserver().admin_deactivate(user).await?;
        self.change_role(actor, user, None).await
    }

    /// A doctor validates a pending user as a patient.
    pub async fn validate_patient(&self, doctor: &UserId, user: &UserId) -> Result<(), RoleError> {
        if let Some(role) = self.role_of(user).await? {
            return Err(RoleError::NotPending(user.to_owned(), role));
        }
        self.change_role(Actor::User(doctor), user, Some(Role::Patient))
            .await
    }
}
