//! Child processes (tmpvault, the baseline, Redis, redis-benchmark): spawned
//! under a guard that always kills and reaps them, waited on with a
//! deadline, and read through `/proc`.
//!
//! The release profile aborts on panic, so `Drop` alone would not stop the
//! children of a panicking run: every live child's pid is also kept in a
//! registry, and the panic hook (installed in `main`) sends SIGKILL to each
//! through [`kill_all`] before the process aborts.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

use crate::failure::{Failure, Step};

/// Pids of the children alive now, for the panic hook.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long a pipe may stay open after its child exited.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How long a child gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which the kernel
/// fixes at 100 per second on every architecture we run on.
const TICKS_PER_SECOND: u64 = 100;

/// SIGKILLs every child still registered: for the panic hook, which runs
/// before a release build aborts and so before any `Drop`.
pub fn kill_all() {
    // `try_lock`: the panic may have happened while the lock was held.
    if let Ok(live) = LIVE.try_lock() {
        for pid in live.iter() {
            let _ = kill(pid_of(*pid), Signal::SIGKILL);
        }
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forgets a reaped child: its pid may be reused by an unrelated process.
fn unregister(id: u32) {
    live().retain(|pid| *pid != id);
}

/// A running child that is stopped (SIGTERM, then SIGKILL) and reaped when
/// dropped.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `command`, naming it `name` in messages.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> Result<ChildGuard, Failure> {
        let name = name.into();
        let child = command
            .spawn()
            .step(|| format!("starting {name} ({command:?})"))?;
        live().push(child.id());
        Ok(ChildGuard { child, name })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (and is now reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            unregister(self.child.id());
        }
        status
    }

    /// The child's stdin, if it was piped.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's stdout, if it was piped.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the child to exit by itself, at most `timeout`; kills it
    /// after that. Async so the runtime keeps serving while we wait.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(Failure::new(
                    format!("waiting for {}", self.name),
                    format!("still running after {timeout:?}; killed"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL and a reap. Idempotent.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = pid_of(self.child.id());
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        unregister(self.child.id());
    }

    /// CPU time the child has used so far (user + system).
    pub fn cpu_time(&self) -> Result<Duration, Failure> {
        cpu_time(self.pid())
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> Result<u64, Failure> {
        rss(self.pid())
    }

    /// The anonymous part of it now, in bytes.
    pub fn rss_anon(&self) -> Result<u64, Failure> {
        rss_anon(self.pid())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// utime + stime of a process, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration, Failure> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).step(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; the
    // fields after the last ')' are plain numbers. utime and stime are fields
    // 14 and 15, i.e. the 12th and 13th after the state (field 3).
    let after = text
        .rfind(')')
        .map(|at| &text[at + 1..])
        .ok_or_else(|| Failure::new(format!("parsing {path}"), "no ')' after the name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64, Failure> {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| Failure::new(format!("parsing {path}"), "utime/stime missing"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}

/// CPU time (user + system) of this process so far: the in-repo load
/// generator's, read around a run in which nothing else of ours works.
pub fn own_cpu_time() -> Result<Duration, Failure> {
    rusage(UsageWho::RUSAGE_SELF)
}

/// CPU time of this process's children that have exited and been waited
/// for: read around one oha or redis-benchmark run, the difference is that
/// run's (the servers under test are reaped only at the end).
pub fn reaped_children_cpu_time() -> Result<Duration, Failure> {
    rusage(UsageWho::RUSAGE_CHILDREN)
}

fn rusage(who: UsageWho) -> Result<Duration, Failure> {
    let usage = getrusage(who).step(|| "reading getrusage".into())?;
    let time = |value: TimeVal| {
        Duration::from_secs(value.tv_sec().unsigned_abs())
            + Duration::from_micros(value.tv_usec().unsigned_abs())
    };
    Ok(time(usage.user_time()) + time(usage.system_time()))
}

/// With `--pin`: the CPUs of the servers under test, and what the pinning
/// was, for the preamble.
struct Pinning {
    servers: CpuSet,
    cpus: usize,
    text: String,
}

static PINNING: OnceLock<Pinning> = OnceLock::new();

/// `--pin`: this process (the in-repo generator, and the oha and
/// redis-benchmark runs it starts, which inherit it) on the last CPU it may
/// use, and every server, as each measured run starts, on the others, so
/// that generator and servers stop taking each other's time slices. Call
/// it before any thread is started: threads inherit their creator's CPUs.
pub fn pin() -> Result<(), Failure> {
    let step = || "pinning the load generator and the servers (--pin)".to_owned();
    let allowed = sched_getaffinity(Pid::from_raw(0)).step(step)?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect();
    let Some((&generator_cpu, server_cpus)) =
        cpus.split_last().filter(|(_, rest)| !rest.is_empty())
    else {
        return Err(Failure::new(step(), "needs at least 2 CPUs"));
    };
    let mut generator = CpuSet::new();
    generator.set(generator_cpu).step(step)?;
    let mut servers = CpuSet::new();
    for &cpu in server_cpus {
        servers.set(cpu).step(step)?;
    }
    pin_threads(std::process::id(), &generator)?;
    let listed: Vec<String> = server_cpus.iter().map(usize::to_string).collect();
    let text = format!(
        "pinned (--pin): servers on CPU {}, load generators on CPU {generator_cpu}",
        listed.join(",")
    );
    let _ = PINNING.set(Pinning {
        servers,
        cpus: cpus.len(),
        text,
    });
    Ok(())
}

/// Moves every thread of the server `pid` onto the servers' CPUs, when
/// `--pin` was given.
pub fn pin_server(pid: u32) -> Result<(), Failure> {
    match PINNING.get() {
        Some(pinning) => pin_threads(pid, &pinning.servers),
        None => Ok(()),
    }
}

/// What `--pin` did, if it was given.
pub fn pinning() -> Option<&'static str> {
    PINNING.get().map(|pinning| pinning.text.as_str())
}

/// The CPUs this process could use before any pinning.
pub fn machine_cpus() -> usize {
    PINNING.get().map_or_else(
        || std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        |pinning| pinning.cpus,
    )
}

fn pin_threads(pid: u32, cpus: &CpuSet) -> Result<(), Failure> {
    let dir = format!("/proc/{pid}/task");
    let step = || format!("setting the CPUs of the threads in {dir}");
    for entry in std::fs::read_dir(&dir).step(step)? {
        let entry = entry.step(step)?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        // A thread may have ended since the listing.
        match sched_setaffinity(Pid::from_raw(tid), cpus) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => return Err(error).step(step),
        }
    }
    Ok(())
}

/// True while `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|text| {
        text.rfind(')')
            .and_then(|at| text[at + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// VmRSS of a process in bytes, from `/proc/<pid>/status`.
pub fn rss(pid: u32) -> Result<u64, Failure> {
    status_bytes(pid, "VmRSS")
}

/// The anonymous part of the resident set (heap, stacks: what the process
/// wrote), in bytes; the rest is file-backed (the binary's and libraries'
/// pages) and shared memory.
pub fn rss_anon(pid: u32) -> Result<u64, Failure> {
    status_bytes(pid, "RssAnon")
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64, Failure> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).step(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| Failure::new(format!("parsing {path}"), format!("no {field} line")))
}

/// A loopback port that was free a moment ago. Another process could take
/// it before ours binds it; the readiness check then reports the child's
/// exit, and the run stops with that message.
pub fn free_port() -> Result<u16, Failure> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .step(|| "finding a free port on 127.0.0.1".into())?;
    let port = listener
        .local_addr()
        .step(|| "reading the free port".into())?
        .port();
    Ok(port)
}

/// `127.0.0.1:<free port>`.
pub fn free_address() -> Result<SocketAddr, Failure> {
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)))
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `command` to completion within `timeout` (killed after that),
/// with `input` on stdin; returns its stdout. stderr is discarded.
pub async fn run_captured(
    name: &str,
    mut command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String, Failure> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(name, &mut command)?;
    // Threads, not tasks: std pipes block. Both end when the child exits.
    let writer = match (input, child.take_stdin()) {
        (Some(input), Some(mut stdin)) => Some(std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })),
        _ => None,
    };
    let reader = child.take_stdout().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        })
    });
    let status = child.wait(timeout).await?;
    // The pipes close when the child exits; a grandchild holding one open
    // must not hold us, so the joins are bounded too.
    if let Some(writer) = writer {
        join_within(writer, PIPE_GRACE).await;
    }
    let output = match reader {
        Some(reader) => join_within(reader, PIPE_GRACE).await.unwrap_or_default(),
        None => String::new(),
    };
    if status.success() {
        Ok(output)
    } else {
        Err(Failure::new(
            format!("running {name}"),
            format!("{status}; output: {}", output.trim()),
        ))
    }
}

/// The thread's result if it finishes within `timeout`; otherwise it is
/// left to finish on its own (detached) and `None` is returned.
async fn join_within<T>(thread: std::thread::JoinHandle<T>, timeout: Duration) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    thread.join().ok()
}
