//! Runs the media echo server by hand: open the printed URL in a browser (or point
//! `tests/browser/echo.mjs` at it) and the camera comes back through `rtc`.
//!
//! Usage: `cargo run -p consulta-media --bin consulta-media-echo -- [ADDR]` (default 127.0.0.1:8089).
//! Media sockets bind to ADDR's IP; use a reachable IP to test from another machine.

use anyhow::Context;
use consulta_media::echo::EchoServer;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let server = EchoServer::start(listener)?;
    tracing::info!(url = %format!("http://{}/", server.addr()), "echo server listening; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    for (i, session) in server.stats().iter().enumerate() {
        tracing::info!(session = i, ?session, "session stats");
    }
    Ok(())
}
