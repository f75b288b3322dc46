//! `consulta sfu`: the LiveKit-compatible SFU node (signalling on TCP, all media on one UDP port).

use std::path::{Path, PathBuf};

use anyhow::Context;
use consulta_appservice::config::LogFormat;
use consulta_media::config::{EXAMPLE, SfuSettings};
use consulta_media::heap::HeapPages;
use consulta_media::node::SfuNode;
use tokio::net::{TcpListener, UdpSocket};

/// Options of `consulta sfu`.
#[derive(Debug, clap::Args)]
pub struct SfuArgs {
    /// The SFU configuration file.
    #[arg(short, long, default_value = "sfu.yaml")]
    config: PathBuf,
    /// Write the commented example configuration to `--config` and exit.
    #[arg(long)]
    generate_config: bool,
}

/// Runs this process again with its heap on transparent huge pages when it is to forward media
/// (`consulta_media::heap`); called before any thread starts. Returns why it did not, for the log.
pub fn prepare_heap(args: &SfuArgs) -> Option<HeapPages> {
    (!args.generate_config).then(consulta_media::heap::restart_with_huge_pages)
}

pub async fn run(args: SfuArgs, heap: Option<HeapPages>) -> anyhow::Result<()> {
    if args.generate_config {
        return generate(&args.config);
    }
    let settings = SfuSettings::load(&args.config)?;
    crate::init_logging(&settings.log_level, LogFormat::Pretty);
    if let Some(heap) = heap {
        heap.log();
    }
    let mut node = start(&settings).await?;
    let shutdown = crate::shutdown_signal();
    tracing::info!(
        signalling = %node.http_addr(),
        media = %node.udp_addr(),
        "Consulta SFU started"
    );
    tokio::select! {
        () = shutdown => {}
        part = node.ended() => {
            drop(node);
            anyhow::bail!("the SFU's {part} stopped; exiting so that it is restarted");
        }
    }
    // Every client is told to join again, which livekit-client keeps trying while the node
    // restarts.
    node.shut_down().await;
    tracing::info!("Consulta SFU stopped");
    Ok(())
}

/// Binds the sockets `settings` name and starts a node on them.
pub async fn start(settings: &SfuSettings) -> anyhow::Result<SfuNode> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let udp = UdpSocket::bind(settings.udp_bind)
        .await
        .with_context(|| format!("cannot bind UDP {}", settings.udp_bind))?;
    Ok(SfuNode::start(settings.node_config(), listener, udp).await?)
}

/// Writes the example with a new API secret, readable by its owner only (the secret signs every
/// access token).
fn generate(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.exists(),
        "{} exists; remove it first or choose another --config",
        path.display()
    );
    let secret = consulta_appservice::Secret::generate();
    crate::setup::create_private(path, &EXAMPLE.replace("CHANGE_ME", secret.expose()))?;
    println!(
        "Wrote {} with a new API secret for key `consulta`.",
        path.display()
    );
    Ok(())
}
