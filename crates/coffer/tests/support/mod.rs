//! Starting the real `coffer` binary for tests.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a load client saw of a transfer it sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    Committed,
    Rejected,
    /// No answer (the server died, or answered 503): applied or not.
    Unknown,
}

/// A transfer a load client sent, and what it saw.
pub struct Transfer {
    pub from: String,
    pub to: String,
    pub amount: i64,
    pub seen: Seen,
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `coffer` on a random port over `data` and waits for the
    /// address it logs once recovered and bound.
    pub fn start(data: &std::path::Path) -> Server {
        Server::start_with(data, &[])
    }

    pub fn start_with(data: &std::path::Path, extra: &[String]) -> Server {
        Server::start_on("127.0.0.1:0", data, extra)
    }

    /// Starts `coffer` listening on `listen`.
    pub fn start_on(listen: &str, data: &std::path::Path, extra: &[String]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["--listen", listen, "--log-format", "json", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coffer");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        // COFFER_TEST_SERVER_LOG=FILE keeps every server's log, for debugging.
        let mut copy = std::env::var("COFFER_TEST_SERVER_LOG").ok().map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the log copy")
        });
        std::thread::spawn(move || {
            // Read to the end whatever the bytes: a reader that stopped at
            // a line that is not UTF-8 would leave the pipe full and the
            // server blocked on its next log line.
            let mut reader = BufReader::new(stderr);
            let mut bytes = Vec::new();
            while reader.read_until(b'\n', &mut bytes).is_ok_and(|read| read > 0) {
                let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
                bytes.clear();
                if let Some(copy) = &mut copy {
                    use std::io::Write;
                    let _ = writeln!(copy, "{line}");
                }
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if entry["fields"]["message"] == "coffer is serving" {
                        let _ = sender.send(entry["fields"]["address"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("coffer reports its address");
        Server {
            child,
            base: format!("http://{address}"),
        }
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "coffer exits cleanly on SIGTERM: {exit}");
    }

    /// Sends a signal by name (`STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Says that a test needing a service did not run, past the harness's
/// capture so that CI sees it.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `tansu` binary on the PATH, if any.
pub fn which_tansu() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|directory| std::path::Path::new(directory).join("tansu"))
        .find(|path| path.exists())
}

/// A tansu process, killed when dropped: a test that fails leaves no
/// broker behind.
pub struct Broker(std::process::Child);

impl std::ops::Deref for Broker {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tansu (in memory) listening on `port` and telling clients to use `advertised`.
pub fn start_broker(port: u16, advertised: u16) -> Broker {
    start_broker_on(port, advertised, "memory://tansu/", Path::new("."))
}

/// A tansu on `storage`; `directory` is its working directory (tansu's
/// SQLite engine resolves `sqlite://FILE` against it).
pub fn start_broker_on(port: u16, advertised: u16, storage: &str, directory: &Path) -> Broker {
    try_start_broker_on(port, advertised, storage, directory)
        .unwrap_or_else(|| panic!("tansu did not start on {storage}, port {port}"))
}

/// As `start_broker_on`, `None` when tansu exits instead of serving (a
/// build without that storage engine stops at once).
pub fn try_start_broker_on(port: u16, advertised: u16, storage: &str, directory: &Path) -> Option<Broker> {
    let mut child = std::process::Command::new(which_tansu().unwrap())
        .current_dir(directory)
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
        .args(["--storage-engine", storage])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tansu");
    for _ in 0..100 {
        if child.try_wait().expect("tansu's status").is_some() {
            return None;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return child
                .try_wait()
                .expect("tansu's status")
                .is_none()
                .then_some(Broker(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
