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

/// A loopback port free for both TCP and UDP, for a server started later.
///
/// The port is released before it is returned, so it must not come from the kernel's ephemeral range
/// (32768-60999 on Linux): there any outgoing connection, of this test or another running beside it,
/// may take it before the server binds it (seen in CI: Synapse found its port taken). Ports are
/// taken in turn from 20000-31999, starting at a point that differs between processes.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7_919).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(seed) % SPAN;
        let Ok(port) = u16::try_from(FIRST + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port in 20000-31999",
    ))
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
