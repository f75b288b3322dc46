//! `consulta users …`: account and role administration from the clinic's server (the first admin is
//! created this way). Runs against the same store and homeserver as the service, and audits the same way.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use consulta_appservice::roles::Actor;
use consulta_appservice::{Config, SystemClock};
use consulta_core::{Role, UserId};

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an account on the homeserver (needs homeserver.admin_token); prints its initial password once.
    Create {
        /// Username (localpart), e.g. `drsmith`.
        username: String,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Role: patient, doctor or admin (default: pending).
        #[arg(long)]
        role: Option<Role>,
    },
    /// Give a user a role: patient, doctor, admin, or `pending` to revoke it.
    SetRole {
        /// Full Matrix user ID.
        user: String,
        /// patient, doctor, admin or pending.
        role: String,
    },
    /// List users with a role.
    List {
        /// patient, doctor or admin.
        #[arg(long)]
        role: Role,
    },
    /// Deactivate an account (it can no longer log in) and revoke its role.
    Deactivate {
        /// Full Matrix user ID.
        user: String,
    },
}

pub async fn run(config_path: &Path, command: UsersCommand) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let state = consulta_appservice::build_state(config, Arc::new(SystemClock)).await?;
    let parse_user =
        |s: &str| UserId::parse(s).with_context(|| format!("{s:?} is not a Matrix user ID"));
    match command {
        UsersCommand::Create {
            username,
            display_name,
            role,
        } => {
            let account = state
                .create_account(Actor::Cli, &username, display_name.as_deref(), role)
                .await?;
            println!(
                "Created {} with role {}.",
                account.user_id,
                role.map_or("pending", Role::as_str)
            );
            println!(
                "Initial password (shown once; ask them to change it): {}",
                account.password.expose()
            );
        }
        UsersCommand::SetRole { user, role } => {
            let user = parse_user(&user)?;
            let role = if role == "pending" {
                None
            } else {
                Some(role.parse::<Role>()?)
            };
            state.change_role(Actor::Cli, &user, role).await?;
            println!("{user} is now {}.", role.map_or("pending", Role::as_str));
        }
        UsersCommand::List { role } => {
            for user in state.store().users_with_role(role).await? {
                println!(
                    "{}\t{}\tsince {}",
                    user.user_id,
                    role,
                    user.updated_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        UsersCommand::Deactivate { user } => {
            let user = parse_user(&user)?;
            state.deactivate_account(Actor::Cli, &user).await?;
            println!("{user} is deactivated and no longer has a role.");
        }
    }
    state.store().close().await;
    Ok(())
}
