//! Running the binary and reading what it prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `consulta` command, with the environment cleared of `CONSULTA_` overrides from the caller.
pub fn consulta(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consulta"));
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("CONSULTA_") && key.contains("__") {
            command.env_remove(key);
        }
    }
    command
}

pub fn output(command: &mut Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    )
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, signal: i32) {
    #[allow(unsafe_code, reason = "kill(2) on our own child")]
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe {
        libc::kill(i32::try_from(child.id()).unwrap(), signal);
    }
}

/// Collects a child's output line by line on a thread, so the test can wait for a line with a timeout.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn follow(child: &mut Child) -> Self {
        let (tx, rx) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// Starts `command` with its output piped. The process is stopped when the handle is dropped, so
/// that a test failing before it stops the process leaves nothing running (SIGTERM, then SIGKILL
/// after 10 s: `consulta dev` stops the Synapse it started on SIGTERM).
pub fn piped(command: &mut Command) -> Running {
    Running(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// A child process, stopped on drop if it is still running.
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        signal(&self.0, libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child to exit, killing it after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
