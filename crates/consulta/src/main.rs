//! `consulta`: the one binary. Runs the appservice, writes its config and registration, and starts the
//! development stack.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports to its user on stdout"
)]

mod dev;
mod setup;
mod sfu;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use consulta_appservice::SystemClock;
use consulta_appservice::config::{Config, LogFormat};

/// Consulta: telemedicine on Matrix. Care-team messaging, appointments and video consultations.
#[derive(Debug, Parser)]
#[command(name = "consulta", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the commented example configuration to a file.
    GenerateConfig {
        /// Where to write it.
        #[arg(short, long, default_value = "config.yaml")]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Generate missing secrets in the config (once) and write the appservice registration for the homeserver.
    GenerateRegistration {
        /// The configuration file; placeholder secrets in it are replaced, comments are kept.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
        /// Where to write the registration.
        #[arg(short, long, default_value = "consulta-registration.yaml")]
        registration: PathBuf,
    },
    /// Run the appservice.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Manage accounts and roles (run on the clinic's server, with the service's config).
    Users {
        /// The configuration file.
        #[arg(short, long, default_value = "config.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Start a development stack on loopback: Synapse (installed on first use) and the appservice, with
    /// demo accounts. Stops on Ctrl-C.
    Dev(dev::DevArgs),
    /// Run the SFU: LiveKit-compatible signalling and media for video consultations.
    Sfu(sfu::SfuArgs),
}

pub(crate) fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime's threads: the SFU runs again in place with its heap on huge pages.
    let heap = match &cli.command {
        Command::Sfu(args) => sfu::prepare_heap(args),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("consulta: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, heap)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consulta: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(
    command: Command,
    heap: Option<consulta_media::heap::HeapPages>,
) -> anyhow::Result<()> {
    match command {
        Command::GenerateConfig { output, force } => setup::generate_config(&output, force),
        Command::GenerateRegistration {
            config,
            registration,
        } => setup::generate_registration(&config, &registration),
        Command::Run { config } => run(config).await,
        Command::Users { config, command } => users::run(&config, command).await,
        Command::Sfu(args) => sfu::run(args, heap).await,
        Command::Dev(args) => {
            init_logging("info,consulta=info", LogFormat::Pretty);
            dev::run(args).await
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    init_logging(&config.logging.level, config.logging.format);
    config.check_ready_to_run()?;
    let listener = consulta_appservice::bind(&config).await?;
    let state = consulta_appservice::build_state(config, Arc::new(SystemClock)).await?;
    let shutdown = shutdown_signal();
    tracing::info!(
        listen = %listener.local_addr().context("listener has no address")?,
        homeserver = state.homeserver().base_url(),
        "Consulta appservice started"
    );
    let pinger = tokio::spawn(consulta_appservice::ping_homeserver_until_reachable(
        state.clone(),
    ));
    consulta_appservice::serve(listener, state, shutdown).await?;
    pinger.abort();
    tracing::info!("Consulta appservice stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM. The handlers are in place when this returns, before the future
/// is first polled, so a signal that comes right after a "started" line is not lost (its default
/// action would end the process without the clean shutdown).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
    }
}
