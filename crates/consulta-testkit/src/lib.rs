//! Real parts on tap for Consulta's tests and dev stack.
//!
//! [`synapse`] installs a pinned Synapse from PyPI into a cached virtualenv (once per machine), writes a
//! loopback homeserver config with Consulta's registration and gate, starts it and stops it.
//! [`stack`] starts the appservice in-process next to it. [`postgres`] starts a throwaway PostgreSQL
//! cluster for the store's PostgreSQL backend. Tests and `consulta dev` use the same code, so what the
//! tests prove is what a developer runs.

pub mod bench;
pub mod install;
pub mod postgres;
pub mod stack;
pub mod synapse;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use postgres::Postgres;
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

/// Asks the kernel to send `signal` to the child if the thread that spawned it dies (a killed test run).
///
/// The request is made after any `uid`/`gid` change configured on `command` (the standard library runs
/// `pre_exec` closures last), which matters because changing credentials clears it.
pub(crate) fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    #[allow(
        unsafe_code,
        reason = "pre_exec runs between fork and exec; prctl is async-signal-safe"
    )]
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Stops a child: `signal`, then SIGKILL if it has not exited after `grace`.
pub(crate) fn stop_child(mut child: Child, signal: libc::c_int, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        #[allow(unsafe_code, reason = "sending a signal to our own child process")]
        // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is touched.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
