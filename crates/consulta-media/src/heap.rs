//! The SFU process's heap on transparent huge pages.
//!
//! A node forwarding for many rooms touches each packet's connection, track and stream state once
//! per packet, spread over a heap of about 1 MiB a room: most of those touches miss the TLB as well
//! as the caches, and in a virtual machine every TLB miss is a walk of two page tables. Backing the
//! heap with 2 MiB pages takes most of those walks away (docs/benchmarks.md, "The heap on huge
//! pages": 11–20 % less CPU per forwarded packet in 1:1 rooms and rooms of four, 19 % in a
//! fan-out to 100, on this project's benchmark VM).
//!
//! Where the kernel gives huge pages only to memory that asks (`transparent_hugepage/enabled` at
//! `madvise`, as on this project's machines), glibc asks for its heap only when told so at
//! start-up, through the `glibc.malloc.hugetlb` tunable in `GLIBC_TUNABLES`, read before `main`.
//! glibc up to 2.42 asks for the main heap and for large blocks, not for the heaps it gives other
//! threads as they grow, and the SFU's media loop runs on a runtime worker: so
//! `glibc.malloc.arena_max=1` is added too, and every thread allocates from the main heap. (With
//! the setting at `always`, the kernel backs the heaps by itself and glibc ignores the tunable.)
//!
//! [`restart_with_huge_pages`] runs this program again in place (`execve` of its own path: same
//! process id, name and arguments) with those tunables added, before anything else has started.
//! The decision is `decide`, a pure function of the environment, the kernel's setting and the
//! program's path.
//! An operator whose `GLIBC_TUNABLES` names `glibc.malloc.hugetlb` (to `0` to opt out) is left
//! alone, and so is a process started under a preloaded library (a profiler that would not follow
//! the restart) or through the dynamic loader.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

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
    /// This process was restarted with these tunables (`glibc.malloc.hugetlb=1` among them).
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

/// What `GLIBC_TUNABLES` should become for a heap on huge pages, given its value now, whether the
/// operator set `MALLOC_ARENA_MAX` (glibc's older name for the arena tunable), and the kernel's
/// `transparent_hugepage/enabled`; `None` when nothing should change: the huge-pages tunable is
/// already named (by the operator, who then owns the malloc settings), or the kernel setting is not
/// `madvise`. The value's other tunables are kept, and an arena count the operator chose.
pub fn tunables_for_huge_pages(
    current: Option<&OsStr>,
    arenas_chosen: bool,
    thp_enabled: &str,
) -> Option<OsString> {
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
    if !arenas_chosen && !current.is_some_and(|c| names(c, ONE_ARENA)) {
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

/// What the restart is decided on, read from the process and the machine.
#[derive(Debug, Default)]
struct Facts {
    /// `GLIBC_TUNABLES`.
    tunables: Option<OsString>,
    /// `MALLOC_ARENA_MAX` is set.
    arenas_chosen: bool,
    /// The restart's mark is set: this is the restarted process.
    restarted: bool,
    /// Built for glibc on Linux.
    glibc: bool,
    /// `transparent_hugepage/enabled`, `None` when it could not be read.
    thp_enabled: Option<String>,
    /// `LD_PRELOAD` is set.
    preloaded: bool,
    /// The running program's path, as the kernel gives it (`(deleted)` after an upgrade).
    exe: Option<PathBuf>,
}

/// A restart, or why there is none.
#[derive(Debug)]
enum Decision {
    Restart {
        program: PathBuf,
        tunables: OsString,
    },
    Keep(HeapPages),
}

/// Decides the restart, in this order: the restarted process never restarts again; an operator's
/// choice stands; then the platform, the kernel's setting, a preloaded library and a start through
/// the dynamic loader each keep ordinary pages.
fn decide(facts: Facts) -> Decision {
    let hugetlb_on = |t: &OsStr| {
        t.as_bytes()
            .split(|&b| b == b':')
            .any(|t| t == format!("{HUGE_PAGES}=1").as_bytes())
    };
    if facts.restarted {
        return Decision::Keep(match facts.tunables {
            Some(tunables) if hugetlb_on(&tunables) => HeapPages::Restarted(tunables),
            _ => HeapPages::Ordinary("glibc dropped the tunables on the restart (a secure start?)"),
        });
    }
    if let Some(tunables) = facts.tunables.as_ref().filter(|t| names(t, HUGE_PAGES)) {
        return Decision::Keep(HeapPages::Chosen(tunables.clone()));
    }
    if !facts.glibc {
        return Decision::Keep(HeapPages::Ordinary("not glibc on Linux"));
    }
    let Some(thp_enabled) = facts.thp_enabled else {
        return Decision::Keep(HeapPages::Ordinary(
            "the kernel's transparent_hugepage setting cannot be read",
        ));
    };
    match thp_mode(&thp_enabled) {
        Some("always") => return Decision::Keep(HeapPages::ByTheKernel),
        Some("madvise") => {}
        _ => {
            return Decision::Keep(HeapPages::Ordinary(
                "the kernel offers no transparent huge pages",
            ));
        }
    }
    if facts.preloaded {
        return Decision::Keep(HeapPages::Ordinary(
            "LD_PRELOAD is set (a profiler would not follow a restart)",
        ));
    }
    let Some(exe) = facts.exe else {
        return Decision::Keep(HeapPages::Ordinary("the running program's path is unknown"));
    };
    let name = exe.file_name().map(OsStr::as_bytes).unwrap_or_default();
    if name.starts_with(b"ld-") || name.starts_with(b"ld64.so") {
        return Decision::Keep(HeapPages::Ordinary("started through the dynamic loader"));
    }
    let Some(tunables) =
        tunables_for_huge_pages(facts.tunables.as_deref(), facts.arenas_chosen, &thp_enabled)
    else {
        return Decision::Keep(HeapPages::Ordinary("nothing to change"));
    };
    // The program by its path, so that the process keeps its name (`ps`, `pgrep`, systemd);
    // the running image itself when its file was replaced or removed since (an upgrade).
    let program = if exe.as_os_str().as_bytes().ends_with(b" (deleted)") {
        PathBuf::from("/proc/self/exe")
    } else {
        exe
    };
    Decision::Restart { program, tunables }
}

/// The facts of this process and machine.
fn facts() -> Facts {
    Facts {
        tunables: std::env::var_os(TUNABLES),
        arenas_chosen: std::env::var_os("MALLOC_ARENA_MAX").is_some(),
        restarted: std::env::var_os(RESTARTED).is_some(),
        glibc: cfg!(all(target_os = "linux", target_env = "gnu")),
        thp_enabled: std::fs::read_to_string(THP_ENABLED).ok(),
        preloaded: std::env::var_os("LD_PRELOAD").is_some(),
        exe: std::env::current_exe().ok(),
    }
}

/// The `GLIBC_TUNABLES` value a process started now should get for a heap on huge pages, from
/// this process's environment and this machine's kernel; `None` when it should keep its own
/// (see [`tunables_for_huge_pages`]), and on anything but glibc on Linux. For a parent that starts
/// such a process itself, as the bench does.
pub fn huge_page_tunables() -> Option<OsString> {
    let facts = facts();
    if !facts.glibc {
        return None;
    }
    tunables_for_huge_pages(
        facts.tunables.as_deref(),
        facts.arenas_chosen,
        facts.thp_enabled.as_deref().unwrap_or_default(),
    )
}

/// Runs this program again in place with its heap on transparent huge pages, unless there is
/// nothing to change. Call it first thing in `main`, before any thread, socket or file is opened:
/// `execve` keeps the process id and the descriptors without close-on-exec, nothing else.
/// Returns only when no restart happened, saying why.
pub fn restart_with_huge_pages() -> HeapPages {
    let (program, tunables) = match decide(facts()) {
        Decision::Keep(pages) => return pages,
        Decision::Restart { program, tunables } => (program, tunables),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command
        .args(args)
        .env(TUNABLES, tunables)
        .env(RESTARTED, "1")
        .exec();
    HeapPages::RestartFailed(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: &str = "always [madvise] never\n";
    const OURS: &str = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1";

    fn plan(current: Option<&str>, thp: &str) -> Option<String> {
        tunables_for_huge_pages(current.map(OsStr::new), false, thp)
            .map(|v| v.into_string().expect("utf-8"))
    }

    #[test]
    fn the_tunables_are_added_where_the_kernel_waits_to_be_asked_and_nobody_chose() {
        assert_eq!(plan(None, MADVISE).as_deref(), Some(OURS));
        assert_eq!(plan(Some(""), MADVISE).as_deref(), Some(OURS));
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
        assert_eq!(
            tunables_for_huge_pages(None, true, MADVISE),
            Some(OsString::from("glibc.malloc.hugetlb=1")),
            "MALLOC_ARENA_MAX is the operator's arena count too"
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

    /// A process that would be restarted: glibc, `madvise`, nothing chosen, started by its path.
    fn restartable() -> Facts {
        Facts {
            glibc: true,
            thp_enabled: Some(MADVISE.to_owned()),
            exe: Some(PathBuf::from("/usr/bin/consulta")),
            ..Facts::default()
        }
    }

    fn kept(facts: Facts) -> String {
        match decide(facts) {
            Decision::Keep(HeapPages::Ordinary(why)) => format!("ordinary: {why}"),
            Decision::Keep(other) => format!("{other:?}"),
            Decision::Restart { program, tunables } => {
                format!("restart {} {}", program.display(), tunables.display())
            }
        }
    }

    #[test]
    fn the_restart_runs_the_program_by_its_path_with_the_tunables_and_only_once() {
        assert_eq!(
            kept(restartable()),
            format!("restart /usr/bin/consulta {OURS}")
        );
        assert_eq!(
            kept(Facts {
                exe: Some(PathBuf::from("/usr/bin/consulta (deleted)")),
                ..restartable()
            }),
            format!("restart /proc/self/exe {OURS}"),
            "an upgraded binary: the running image"
        );
        assert_eq!(
            kept(Facts {
                restarted: true,
                tunables: Some(OURS.into()),
                ..restartable()
            }),
            format!("Restarted({OURS:?})")
        );
        for dropped in [
            None,
            Some("glibc.malloc.arena_max=1"),
            Some("glibc.malloc.hugetlb=0"),
        ] {
            assert!(
                kept(Facts {
                    restarted: true,
                    tunables: dropped.map(Into::into),
                    ..restartable()
                })
                .starts_with("ordinary: glibc dropped"),
                "{dropped:?}: marked, and never restarted again"
            );
        }
    }

    #[test]
    fn each_reason_to_keep_ordinary_pages_comes_in_its_order() {
        let chosen = "glibc.malloc.hugetlb=0";
        assert_eq!(
            kept(Facts {
                tunables: Some(chosen.into()),
                glibc: false,
                preloaded: true,
                ..restartable()
            }),
            format!("Chosen({chosen:?})"),
            "the operator's choice comes before everything but the mark"
        );
        let cases: [(Facts, &str); 7] = [
            (
                Facts {
                    glibc: false,
                    ..restartable()
                },
                "ordinary: not glibc",
            ),
            (
                Facts {
                    thp_enabled: None,
                    ..restartable()
                },
                "ordinary: the kernel's transparent_hugepage setting cannot",
            ),
            (
                Facts {
                    thp_enabled: Some("[always] madvise never".into()),
                    preloaded: true,
                    ..restartable()
                },
                "ByTheKernel",
            ),
            (
                Facts {
                    thp_enabled: Some("always madvise [never]".into()),
                    ..restartable()
                },
                "ordinary: the kernel offers no",
            ),
            (
                Facts {
                    preloaded: true,
                    exe: None,
                    ..restartable()
                },
                "ordinary: LD_PRELOAD",
            ),
            (
                Facts {
                    exe: None,
                    ..restartable()
                },
                "ordinary: the running program's path",
            ),
            (
                Facts {
                    exe: Some("/lib64/ld-linux-x86-64.so.2".into()),
                    ..restartable()
                },
                "ordinary: started through the dynamic loader",
            ),
        ];
        for (facts, expected) in cases {
            let got = kept(facts);
            assert!(got.starts_with(expected), "{got} is not {expected}");
        }
        assert!(
            kept(Facts {
                exe: Some("/lib/ld64.so.2".into()),
                ..restartable()
            })
            .starts_with("ordinary: started through the dynamic loader")
        );
    }
}
