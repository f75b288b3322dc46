//! `consulta dev`: the whole stack on loopback with demo accounts, for trying Consulta in Element.

use std::path::PathBuf;

use anyhow::Context;
use consulta_appservice::SystemClock;
use consulta_core::{Clock, Role, UserId};
use consulta_media::config::SfuSettings;
use consulta_testkit::{Stack, StackOptions};

/// Options of `consulta dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Port for Synapse's client API.
    #[arg(long, default_value_t = 8008)]
    homeserver_port: u16,
    /// Port for the appservice.
    #[arg(long, default_value_t = 29400)]
    appservice_port: u16,
    /// Port for the SFU's signalling (WebSocket `/rtc`) and `/metrics`.
    #[arg(long, default_value_t = 7880)]
    sfu_port: u16,
    /// UDP port for all SFU media.
    #[arg(long, default_value_t = 7882)]
    sfu_udp_port: u16,
    /// Keep state here between runs (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const DEMO_ACCOUNTS: [(&str, &str, Role); 3] = [
    ("doctor", "Dr. Demo Doctor", Role::Doctor),
    ("patient1", "Demo Patient One", Role::Patient),
    ("patient2", "Demo Patient Two", Role::Patient),
];

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions {
        dir: args.data_dir.clone(),
        synapse_port: Some(args.homeserver_port),
        appservice_port: Some(args.appservice_port),
        ..StackOptions::default()
    })
    .await
    .with_context(|| {
        format!(
            "cannot start the dev stack (are ports {} and {} free? see --homeserver-port/--appservice-port)",
            args.homeserver_port, args.appservice_port
        )
    })?;
    consulta_appservice::ping_homeserver_until_reachable(stack.appservice.clone()).await;

    let sfu_secret = consulta_appservice::Secret::generate();
    let sfu_settings = SfuSettings::parse(&format!(
        "listen: 127.0.0.1:{}\nudp_bind: 127.0.0.1:{}\nkeys:\n  consulta: {}\n",
        args.sfu_port,
        args.sfu_udp_port,
        sfu_secret.expose()
    ))?;
    let sfu = crate::sfu::start(&sfu_settings).await.with_context(|| {
        format!(
            "cannot start the SFU (are TCP {} and UDP {} free? see --sfu-port/--sfu-udp-port)",
            args.sfu_port, args.sfu_udp_port
        )
    })?;

    let credentials = stack.config_dir().join("demo-accounts.txt");
    let accounts = if credentials.exists() {
        std::fs::read_to_string(&credentials)?
    } else {
        let mut lines = String::new();
        for (localpart, _display_name, role) in DEMO_ACCOUNTS {
            let password: String = consulta_appservice::Secret::generate()
                .expose()
                .chars()
                .take(16)
                .collect();
            let user = stack
                .synapse
                .register_user(localpart, &password, false)
                .await?;
            let user_id = UserId::parse(user.user_id.as_str())?;
            stack
                .appservice
                .store()
                .set_role(&user_id, Some(role), SystemClock.now())
                .await?;
            // Opens their Care desk, with the calendar pinned, before they first sign in (roles set
            // through the API or CLI do the same).
            stack
                .appservice
                .welcome(&user_id, role == Role::Doctor)
                .await?;
            lines.push_str(&format!(
                "    {role:<8} {:<24} password: {password}\n",
                user.user_id
            ));
        }
        std::fs::write(&credentials, &lines)?;
        lines
    };

    let shutdown = crate::shutdown_signal();
    println!();
    println!("Consulta dev stack is ready.");
    println!(
        "  Homeserver URL (enter it in Element or any Matrix client): {}",
        stack.synapse.base_url()
    );
    println!("  Server name: {}", stack.synapse.server_name());
    println!("  Appservice:  {}", stack.appservice_url);
    println!(
        "  SFU:         ws://{} (media on UDP {}; API key `consulta`, secret {})",
        sfu.http_addr(),
        sfu.udp_addr(),
        sfu_secret.expose()
    );
    println!("  Demo accounts:");
    print!("{accounts}");
    println!("  State and logs: {}", stack.config_dir().display());
    println!("Press Ctrl-C to stop.");

    shutdown.await;
    println!("Stopping…");
    sfu.shut_down().await;
    stack.stop().await?;
    println!("Stopped.");
    Ok(())
}
