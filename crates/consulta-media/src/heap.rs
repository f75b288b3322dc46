//! The SFU process's heap on transparent huge pages.
//!
//! A node forwarding for many rooms touches each packet's connection, track and stream state once
//! per packet, spread over a heap of about 1 MiB a room: most of those touches miss the TLB as well
//! as the caches, and in a virtual machine every TLB miss is a walk of two page tables. Backing the
//! heap with 2 MiB pages takes most of those walks away (docs/benchmarks.md, "The heap on huge
//! pages": 16 % less CPU per forwarded packet in 1:1 rooms, 19 % in a fan-out to 100, on this
//! project's benchmark VM).
//!
//! Where the kernel gives huge pages only to memory that asks (`transparent_hugepage/enabled` at
//! `madvise`, the default of Debian and Ubuntu), glibc asks for its heap only when told so at
//! start-up, through the `glibc.malloc.hugetlb` tunable in `GLIBC_TUNABLES`, read before `main`.
//! glibc up to 2.42 asks for the main heap and for large blocks, not for the heaps it gives other
//! threads as they grow, and the SFU's media loop runs on a runtime worker: so
//! `glibc.malloc.arena_max=1` is added too, and every thread allocates from the main heap. (With
//! the setting at `always`, the kernel backs the heaps by itself and glibc ignores the tunable.)
//!
//! [`restart_with_huge_pages`] runs this program again in place (`execve` of `/proc/self/exe`:
//! same process id, same arguments) with those tunables added, before anything else has started.
//! An operator whose `GLIBC_TUNABLES` names `glibc.malloc.hugetlb` (to `0` to opt out) is left
//! alone, and so is a process started under a preloaded library (a profiler that would not follow
//! the restart) or through the dynamic loader.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::process::CommandExt as _;

/// The environment variable glibc reads its tunables from.
pub const TUNABLES: &str = "GLIBC_TUNABLES";
/// Set on the restart, so that a process whose tunables glibc dropped (a secure-mode start: setuid,
/// file capabilities) does not restart again, and says so.
const RESTARTED: &str = "CONSULTA_HEAP_RESTARTED";
/// The tunable that has glibc `madvise` its heap for transparent huge pages (glibc 2.35 and later).
const HUGE_PAGES: &str = "glibc.malloc.hugetlb";
/// One malloc arena, the main one, whose heap glibc advises as it grows.
const ONE_ARENA: &str = "glibc.malloc.arena_max";
/// Where the kernel says whether transparent huge pages can be had: `always`, `madvise` or `never`,
/// the one in force in brackets.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Why the heap is, or is not, on huge pages; for the log once logging is set up.
#[derive(Debug)]
pub enum HeapPages {
    /// This process was restarted with these tunables.
    Restarted(OsString),
    /// The operator's `GLIBC_TUNABLES` names the huge-pages tunable: left as it is.
    Chosen(OsString),
    /// The kernel backs every heap with huge pages by itself (`always`).
    ByTheKernel,
    /// Ordinary pages, for the reason given.
    Ordinary(&'static str),
    /// The restart failed; the process goes on with ordinary pages.
    RestartFailed(std::io::Error),
}

impl HeapPages {
    /// Says in the log how the heap is backed, once logging is set up.
    pub fn log(&self) {
        match self {
            Self::Restarted(tunables) => tracing::info!(
                glibc_tunables = %tunables.to_string_lossy(),
                "heap on transparent huge pages: restarted with GLIBC_TUNABLES"
            ),
            Self::Chosen(tunables) => tracing::info!(
                glibc_tunables = %tunables.to_string_lossy(),
                "heap pages as the operator's GLIBC_TUNABLES chooses"
            ),
            Self::ByTheKernel => {
                tracing::info!("heap on transparent huge pages: the kernel's setting is always")
            }
            Self::Ordinary(reason) => tracing::info!("heap on ordinary pages: {reason}"),
            Self::RestartFailed(e) => tracing::warn!(
                error = %e,
                "heap on ordinary pages: running again with huge pages failed"
            ),
        }
    }
}

/// What `GLIBC_TUNABLES` should become for a heap on huge pages, given its value now and the
/// kernel's `transparent_hugepage/enabled`; `None` when nothing should change: the huge-pages
/// tunable is already named (by the operator, who then owns the malloc settings), or the kernel
/// setting is not `madvise`. The value's other tunables are kept, one arena included if named.
pub fn tunables_for_huge_pages(current: Option<&OsStr>, thp_enabled: &str) -> Option<OsString> {
    if current.is_some_and(|c| names(c, HUGE_PAGES)) || thp_mode(thp_enabled) != Some("madvise") {
        return None;
    }
    let mut value = current.map(|c| c.as_bytes().to_vec()).unwrap_or_default();
    while value.last() == Some(&b':') {
        value.pop();
    }
    let mut add = |tunable: &str| {
        if !value.is_empty() {
            value.push(b':');
        }
        value.extend_from_slice(tunable.as_bytes());
    };
    add(&format!("{HUGE_PAGES}=1"));
    if !current.is_some_and(|c| names(c, ONE_ARENA)) {
        add(&format!("{ONE_ARENA}=1"));
    }
    Some(OsString::from_vec(value))
}

/// The setting in force in `transparent_hugepage/enabled` (the one in brackets).
fn thp_mode(thp_enabled: &str) -> Option<&str> {
    thp_enabled
        .split_whitespace()
        .find_map(|mode| mode.strip_prefix('[')?.strip_suffix(']'))
}

/// Whether a `GLIBC_TUNABLES` value sets `tunable` (to anything).
fn names(tunables: &OsStr, tunable: &str) -> bool {
    tunables
        .as_bytes()
        .split(|&b| b == b':')
        .any(|t| t.split(|&b| b == b'=').next() == Some(tunable.as_bytes()))
}

/// The `GLIBC_TUNABLES` value a process started now should get for a heap on huge pages, from
/// this process's environment and this machine's kernel; `None` when it should keep its own
/// (see [`tunables_for_huge_pages`]), and on anything but glibc on Linux. For a parent that starts
/// such a process itself, as the bench does.
pub fn huge_page_tunables() -> Option<OsString> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    let thp_enabled = std::fs::read_to_string(THP_ENABLED).unwrap_or_default();
    tunables_for_huge_pages(std::env::var_os(TUNABLES).as_deref(), &thp_enabled)
}

/// Runs this program again in place with its heap on transparent huge pages, unless there is
/// nothing to change. Call it first thing in `main`, before any thread, socket or file is opened:
/// `execve` keeps the process id and the descriptors without close-on-exec, nothing else.
/// Returns only when no restart happened, saying why.
pub fn restart_with_huge_pages() -> HeapPages {
    let current = std::env::var_os(TUNABLES);
    if std::env::var_os(RESTARTED).is_some() {
        return match current {
            Some(tunables) if names(&tunables, HUGE_PAGES) => HeapPages::Restarted(tunables),
            _ => HeapPages::Ordinary("glibc dropped the tunables on the restart (a secure start?)"),
        };
    }
    if let Some(tunables) = current.filter(|c| names(c, HUGE_PAGES)) {
        return HeapPages::Chosen(tunables);
    }
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return HeapPages::Ordinary("not glibc on Linux");
    }
    let thp_enabled = std::fs::read_to_string(THP_ENABLED).unwrap_or_default();
    match thp_mode(&thp_enabled) {
        Some("always") => return HeapPages::ByTheKernel,
        Some("madvise") => {}
        _ => return HeapPages::Ordinary("the kernel offers no transparent huge pages"),
    }
    if std::env::var_os("LD_PRELOAD").is_some() {
        return HeapPages::Ordinary("LD_PRELOAD is set (a profiler would not follow a restart)");
    }
    let through_loader = std::env::current_exe().is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|name| name.as_bytes().starts_with(b"ld-"))
    });
    if through_loader {
        return HeapPages::Ordinary("started through the dynamic loader");
    }
    let Some(value) = huge_page_tunables() else {
        return HeapPages::Ordinary("nothing to change");
    };
    let mut args = std::env::args_os();
    // The running image itself, even if its file was replaced or removed since (an upgrade).
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command
        .args(args)
        .env(TUNABLES, value)
        .env(RESTARTED, "1")
        .exec();
    HeapPages::RestartFailed(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: &str = "always [madvise] never\n";

    fn plan(current: Option<&str>, thp: &str) -> Option<String> {
        tunables_for_huge_pages(current.map(OsStr::new), thp)
            .map(|v| v.into_string().expect("utf-8"))
    }

    #[test]
    fn the_tunables_are_added_where_the_kernel_waits_to_be_asked_and_nobody_chose() {
        let ours = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1";
        assert_eq!(plan(None, MADVISE).as_deref(), Some(ours));
        assert_eq!(plan(Some(""), MADVISE).as_deref(), Some(ours));
        assert_eq!(
            plan(Some("glibc.malloc.tcache_count=16"), MADVISE).as_deref(),
            Some("glibc.malloc.tcache_count=16:glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"),
            "the operator's other tunables are kept"
        );
        assert_eq!(
            plan(Some("glibc.malloc.arena_max=4::"), MADVISE).as_deref(),
            Some("glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"),
            "the operator's arenas are kept, and no empty entry is made"
        );
    }

    #[test]
    fn nothing_changes_when_the_tunable_is_named_or_the_kernel_does_not_wait_to_be_asked() {
        for chosen in [
            "glibc.malloc.hugetlb=1",
            "glibc.malloc.hugetlb=0",
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0",
            "glibc.malloc.hugetlb",
        ] {
            assert_eq!(plan(Some(chosen), MADVISE), None, "{chosen}");
        }
        assert_eq!(
            plan(Some("glibc.malloc.hugetlbx=1"), MADVISE).as_deref(),
            Some("glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"),
            "only the tunable itself counts as named"
        );
        for thp in [
            "[always] madvise never\n",
            "always madvise [never]\n",
            "",
            "always madvise never",
            "[bogus]",
        ] {
            assert_eq!(plan(None, thp), None, "{thp:?}");
        }
    }
}
