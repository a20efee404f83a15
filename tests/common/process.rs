//! The real `tmpvault` binary as a child process, for the tests that need a
//! process of their own (signals, `/proc`, another user): a guard that
//! kills and reaps it when dropped, so a failing assertion never leaves a
//! server running, and waits with deadlines that show the server's log.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tmpvault::cmd::client::Client;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tmpvault");
/// How long a server may take to start serving.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server may take to drain and exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Whether the tests run as root (some can only run then).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A free port on 127.0.0.1: bind port 0, note the port, let it go.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A server process whose stdout and stderr go to `log`; killed (and
/// reaped) when dropped.
pub struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Takes over a spawned `child` that writes to `log`.
    pub fn new(child: Child, log: PathBuf) -> ServerProcess {
        ServerProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll the server").is_none()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// Polls until the server answers over mTLS, or panics (with its log)
    /// when it exits or [`START_DEADLINE`] passes.
    pub async fn wait_until_serving(&mut self, client: &Client) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                panic!("the server exited with {status}:\n{}", self.log());
            }
            let attempt = client.request(Method::GET, "/v1/secrets", &[], Bytes::new());
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                assert!(response.status.is_success(), "{:?}", response.status);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not serve within {START_DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit, or panics after
    /// [`STOP_DEADLINE`].
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM).await
    }

    /// Sends `signal` and waits for the exit, or panics after
    /// [`STOP_DEADLINE`].
    pub async fn signal(&mut self, signal: Signal) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("a pid fits in i32"));
        kill(pid, signal).unwrap_or_else(|error| panic!("send {signal}: {error}"));
        self.wait_exit(STOP_DEADLINE, &format!("of {signal}")).await
    }

    /// Waits for the process to exit by itself, or panics (with its log)
    /// after `deadline`; `after` says what the wait follows, for the message.
    pub async fn wait_exit(&mut self, deadline: Duration, after: &str) -> ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the process") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the process did not exit within {deadline:?} {after}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
