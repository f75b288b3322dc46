//! Real parts on tap for Consulta's tests and dev stack.
//!
//! [`synapse`] installs a pinned Synapse from PyPI into a cached virtualenv (once per machine), writes a
//! loopback homeserver config with Consulta's registration and gate, starts it and stops it.
//! [`stack`] starts the appservice in-process next to it. Tests and `consulta dev` use the same code,
//! so what the tests prove is what a developer runs.

pub mod install;
pub mod stack;
pub mod synapse;

pub use stack::{Stack, StackOptions};
pub use synapse::{RegisteredUser, Synapse, SynapseOptions};

/// Asks the OS for a free loopback TCP port.
///
/// The port is released before it is returned, so another process could take it in between; on a test
/// machine that race is rare, and the caller sees a clear bind error if it happens.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
