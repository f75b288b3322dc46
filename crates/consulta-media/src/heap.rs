//! The SFU process's heap on transparent huge pages.
//!
//! A node forwarding for many rooms touches each packet's connection, track and stream state once
//! per packet, spread over a heap of about 1 MiB a room: most of those touches miss the TLB as well
//! as the caches, and in a virtual machine every TLB miss is a walk of two page tables. Backing the
//! heap with 2 MiB pages takes most of those walks away (docs/benchmarks.md, "The heap on huge
//! pages": 16 % less CPU per forwarded packet in 1:1 rooms, 19 % in a fan-out to 100, on this
//! project's benchmark VM).
//!
//! glibc backs its heap with transparent huge pages only when told so at start-up, through the
//! `glibc.malloc.hugetlb` tunable in `GLIBC_TUNABLES`, which it reads before `main`. So
//! [`restart_with_huge_pages`] runs this program again in place (`execve`, same process id, same
//! arguments) with the tunable added, before anything else has started. An operator who sets the
//! tunable (to `0` to opt out) is left alone, and so is a kernel with transparent huge pages off.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::process::CommandExt as _;

/// The environment variable glibc reads its tunables from.
pub const TUNABLES: &str = "GLIBC_TUNABLES";
/// The tunable that has glibc `madvise` its heap for transparent huge pages (glibc 2.35 and later).
const HUGE_PAGES: &str = "glibc.malloc.hugetlb";
/// Where the kernel says whether transparent huge pages can be had: `always`, `madvise` or `never`,
/// the one in force in brackets.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Why the heap is, or is not, on huge pages; for the log once logging is set up.
#[derive(Debug)]
pub enum HeapPages {
    /// `GLIBC_TUNABLES` names the tunable: this process's restart set it, or the operator did.
    Chosen(OsString),
    /// The kernel offers no transparent huge pages (or this is not glibc on Linux).
    Unavailable,
    /// The restart failed; the process goes on with ordinary pages.
    RestartFailed(std::io::Error),
}

impl HeapPages {
    /// Says in the log how the heap is backed, once logging is set up.
    pub fn log(&self) {
        match self {
            Self::Chosen(tunables) => tracing::info!(
                glibc_tunables = %tunables.to_string_lossy(),
                "heap pages as GLIBC_TUNABLES chooses"
            ),
            Self::Unavailable => tracing::info!(
                "heap on ordinary pages: no transparent huge pages from this kernel or C library"
            ),
            Self::RestartFailed(e) => tracing::warn!(
                error = %e,
                "heap on ordinary pages: running again with huge pages failed"
            ),
        }
    }
}

/// What `GLIBC_TUNABLES` should become for a heap on huge pages, given its value now and the
/// kernel's `transparent_hugepage/enabled`; `None` when nothing should change: the tunable is
/// already set (by the operator, or by the restart this leads to, which ends the loop), or the
/// kernel has huge pages off or unknown. Other tunables in the value are kept.
pub fn tunables_for_huge_pages(current: Option<&OsStr>, thp_enabled: &str) -> Option<OsString> {
    if current.is_some_and(names_huge_pages) {
        return None;
    }
    let in_force = thp_enabled
        .split_whitespace()
        .find_map(|mode| mode.strip_prefix('[')?.strip_suffix(']'))?;
    if !matches!(in_force, "always" | "madvise") {
        return None;
    }
    let mut value = current
        .filter(|c| !c.is_empty())
        .map(|c| {
            let mut v = c.to_owned().into_vec();
            v.push(b':');
            v
        })
        .unwrap_or_default();
    value.extend_from_slice(format!("{HUGE_PAGES}=1").as_bytes());
    Some(OsString::from_vec(value))
}

/// Whether a `GLIBC_TUNABLES` value sets the huge-pages tunable (to anything).
fn names_huge_pages(tunables: &OsStr) -> bool {
    tunables
        .as_bytes()
        .split(|&b| b == b':')
        .any(|tunable| tunable.split(|&b| b == b'=').next() == Some(HUGE_PAGES.as_bytes()))
}

/// Runs this program again in place with its heap on transparent huge pages, unless
/// [`tunables_for_huge_pages`] says there is nothing to change. Call it first thing in `main`,
/// before any thread, socket or file is opened: `execve` keeps the process id and open
/// descriptors but nothing else. Returns only when no restart happened, saying why.
pub fn restart_with_huge_pages() -> HeapPages {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return HeapPages::Unavailable;
    }
    let current = std::env::var_os(TUNABLES);
    if let Some(current) = current.as_deref()
        && names_huge_pages(current)
    {
        return HeapPages::Chosen(current.to_owned());
    }
    let thp_enabled = std::fs::read_to_string(THP_ENABLED).unwrap_or_default();
    let Some(value) = tunables_for_huge_pages(current.as_deref(), &thp_enabled) else {
        return HeapPages::Unavailable;
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return HeapPages::RestartFailed(e),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    HeapPages::RestartFailed(command.args(args).env(TUNABLES, value).exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(current: Option<&str>, thp: &str) -> Option<String> {
        tunables_for_huge_pages(current.map(OsStr::new), thp)
            .map(|v| v.into_string().expect("utf-8"))
    }

    #[test]
    fn the_tunable_is_added_when_the_kernel_offers_huge_pages_and_nobody_chose() {
        for thp in ["always [madvise] never\n", "[always] madvise never\n"] {
            assert_eq!(
                plan(None, thp).as_deref(),
                Some("glibc.malloc.hugetlb=1"),
                "{thp}"
            );
            assert_eq!(
                plan(Some(""), thp).as_deref(),
                Some("glibc.malloc.hugetlb=1")
            );
            assert_eq!(
                plan(Some("glibc.malloc.arena_max=2"), thp).as_deref(),
                Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
                "the operator's other tunables are kept"
            );
        }
    }

    #[test]
    fn nothing_changes_when_the_tunable_is_set_or_the_kernel_has_none() {
        let thp = "always [madvise] never\n";
        for chosen in [
            "glibc.malloc.hugetlb=1",
            "glibc.malloc.hugetlb=0",
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0",
            "glibc.malloc.hugetlb",
        ] {
            assert_eq!(plan(Some(chosen), thp), None, "{chosen}");
        }
        assert_eq!(
            plan(Some("glibc.malloc.hugetlbx=1"), thp).as_deref(),
            Some("glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1"),
            "only the tunable itself counts as chosen"
        );
        for thp in [
            "always madvise [never]\n",
            "",
            "always madvise never",
            "[bogus]",
        ] {
            assert_eq!(plan(None, thp), None, "{thp:?}");
        }
    }
}
