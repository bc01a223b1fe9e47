//! `coffer bench --fresh-server`: a server of this same binary on a
//! temporary data directory and a free loopback port, started for one run
//! and removed after it, so a benchmark never measures state left over from
//! an earlier one.

use anyhow::Context;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags passed through to the fresh server, at most.
pub const SERVER_OPTIONS_MAX: usize = 64;
/// Recovery of an empty data directory takes milliseconds; this only
/// bounds a server that never comes up.
const READY_WAIT_MAX: Duration = Duration::from_secs(30);
/// Lines of the server's log quoted when it fails to start.
const LOG_LINES_QUOTED_MAX: usize = 20;

pub struct FreshServer {
    child: Child,
    /// Removed when the server is dropped (after the process is gone).
    directory: tempfile::TempDir,
    pub url: String,
}

impl FreshServer {
    /// Starts `coffer serve` with `options` and waits until `/readyz`
    /// answers 200. The server's output goes to a log file in its
    /// directory, quoted in the error if it does not come up.
    pub async fn start(options: &[String], http: &reqwest::Client) -> anyhow::Result<FreshServer> {
        assert!(
            options.len() <= SERVER_OPTIONS_MAX,
            "checked with the other bench options"
        );
        let directory = tempfile::Builder::new()
            .prefix("coffer-bench-")
            .tempdir()
            .context("creating the fresh server's directory")?;
        let address = free_loopback_address()?;
        let log = File::create(directory.path().join("server.log"))?;
        let child = Command::new(std::env::current_exe().context("finding this binary")?)
            .arg("serve")
            .arg("--listen")
            .arg(&address)
            .arg("--data-dir")
            .arg(directory.path().join("data"))
            .args(options)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the fresh server")?;
        let mut server = FreshServer {
            child,
            directory,
            url: format!("http://{address}"),
        };
        server.wait_until_ready(http).await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        let ready = format!("{}/readyz", self.url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the fresh server exited ({status}) while starting:\n{}",
                    self.log_tail()
                );
            }
            let answer = http.get(&ready).timeout(Duration::from_secs(1)).send().await;
            if answer.is_ok_and(|answer| answer.status().is_success()) {
                return Ok(());
            }
            if started.elapsed() > READY_WAIT_MAX {
                anyhow::bail!(
                    "the fresh server was not ready after {} s:\n{}",
                    READY_WAIT_MAX.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.directory.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_LINES_QUOTED_MAX)..].join("\n")
    }
}

impl Drop for FreshServer {
    /// SIGKILL, not a graceful stop: its directory goes next, so the
    /// snapshot a graceful stop writes would be thrown away.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now. Another process may take it
/// before the server binds it; the server then exits with the bind error,
/// which the caller reports.
fn free_loopback_address() -> anyhow::Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.to_string())
}
