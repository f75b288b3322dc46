//! Installing Synapse from PyPI into a cached virtualenv.
//!
//! The virtualenv lives outside the repository (`$CONSULTA_CACHE_DIR`, else `$XDG_CACHE_HOME/consulta`,
//! else `~/.cache/consulta`), one directory per pinned version, and is reused by every test and dev
//! stack on the machine. A file lock makes concurrent first runs wait for one installer instead of
//! racing, and a marker file written last means a half-finished install is redone, never used.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The Synapse release Consulta is built and tested against.
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// The HTTP gate module Synapse loads to ask Consulta before rooms and invites exist.
pub const ANTISPAM_VERSION: &str = "0.5.1";

const MARKER: &str = ".consulta-install-complete";

/// The cache directory for Consulta's provisioned tools.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONSULTA_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("consulta");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("consulta")
}

/// The interpreter to create the virtualenv with: `$CONSULTA_PYTHON`, else `python3`.
fn base_python() -> String {
    std::env::var("CONSULTA_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// An exclusive lock on a file, released when dropped.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the lock's lifetime.
        #[allow(
            unsafe_code,
            reason = "flock(2) has no safe wrapper in std at this MSRV"
        )]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        #[allow(
            unsafe_code,
            reason = "flock(2) has no safe wrapper in std at this MSRV"
        )]
        // SAFETY: the descriptor is still open; unlocking cannot affect memory safety.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Makes sure the pinned Synapse is installed and returns the virtualenv's Python interpreter.
///
/// The first call on a machine installs it (about half a minute, with pip's progress on stderr); later
/// calls return at once.
pub fn ensure_synapse() -> anyhow::Result<PathBuf> {
    let root = cache_dir();
    fs::create_dir_all(&root)
        .with_context(|| format!("cannot create cache directory {}", root.display()))?;
    let venv = root.join(format!(
        "synapse-{SYNAPSE_VERSION}-antispam-{ANTISPAM_VERSION}"
    ));
    let python = venv.join("bin").join("python");
    if venv.join(MARKER).exists() {
        return Ok(python);
    }
    let _lock = FileLock::acquire(&root.join("synapse-install.lock"))?;
    if venv.join(MARKER).exists() {
        return Ok(python); // another process finished while we waited
    }
    eprintln!(
        "consulta: installing Synapse {SYNAPSE_VERSION} and synapse-http-antispam {ANTISPAM_VERSION} from PyPI \
         into {} (first run on this machine only)",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("cannot remove half-installed {}", venv.display()))?;
    }
    run(
        Command::new(base_python()).args(["-m", "venv"]).arg(&venv),
        "create the Synapse virtualenv",
    )?;
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            &format!("matrix-synapse=={SYNAPSE_VERSION}"),
            &format!("synapse-http-antispam=={ANTISPAM_VERSION}"),
        ]),
        "install Synapse with pip",
    )?;
    run(
        Command::new(&python).args([
            "-c",
            "import synapse, synapse_http_antispam; print(synapse.__version__)",
        ]),
        "import the installed Synapse",
    )?;
    fs::write(venv.join(MARKER), SYNAPSE_VERSION)?;
    eprintln!("consulta: Synapse {SYNAPSE_VERSION} installed");
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start the command to {what}"))?;
    if !status.success() {
        bail!("failed to {what} ({status}); see the output above");
    }
    Ok(())
}
