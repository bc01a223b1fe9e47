//! Starting the real `coffer` binary for tests.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
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
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
