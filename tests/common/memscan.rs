//! Reading a server process's memory for secret bytes: the residue tests'
//! scanner. Through `/proc/<pid>/mem`, which for a non-dumpable process
//! only root (`CAP_SYS_PTRACE`) may read; callers skip otherwise.

use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, Instant};
use zeroize::Zeroizing;

use super::process::{ServerProcess, BIN};
use super::Pki;

/// Hex characters in a marker: 128 random bits, which no other byte string
/// in the server will match by chance.
pub const MARKER_LEN: usize = 32;
/// Time for a connection task to finish dropping its buffers after the
/// server has closed the socket.
pub const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Bytes read from `/proc/<pid>/mem` at a time.
const SCAN_CHUNK: usize = 4 << 20;

/// Starts `tmpvault serve` as root (`--allow-root`) with `extra` flags, a
/// private scratch dir and a log file in the PKI directory (a tmpfs).
pub fn start_server(pki: &Pki, port: u16, extra: &[&str]) -> ServerProcess {
    start_server_in(pki, port, &server_scratch(pki), extra)
}

/// A new 0700 scratch directory for a server, beside `pki`'s certificates.
pub fn server_scratch(pki: &Pki) -> PathBuf {
    let scratch = pki.scratch_dir().join("scratch");
    fs::create_dir(&scratch).expect("create the scratch dir");
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
        .expect("chmod the scratch dir");
    scratch
}

/// `tmpvault serve` on `scratch`, a 0700 directory that may hold an
/// earlier server's snapshot; its output to `server.log` beside the
/// certificates (truncated at each start).
pub fn start_server_in(pki: &Pki, port: u16, scratch: &Path, extra: &[&str]) -> ServerProcess {
    let log = pki.scratch_dir().join("server.log");
    let log_file = File::create(&log).expect("create the server log");
    let child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--scratch-dir")
        .arg(scratch)
        .arg("--tls-cert")
        .arg(&pki.server.cert)
        .arg("--tls-key")
        .arg(&pki.server.key)
        .arg("--client-ca")
        .arg(&pki.server.client_ca)
        .arg("--allow-root")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log file"))
        .stderr(log_file)
        .spawn()
        .expect("start tmpvault serve");
    ServerProcess::new(child, log)
}

/// A random marker: 32 lowercase hex characters, wiped on drop.
pub struct Marker {
    pub name: &'static str,
    pub hex: Zeroizing<[u8; MARKER_LEN]>,
}

impl Marker {
    pub fn new(name: &'static str) -> Marker {
        let mut random = Zeroizing::new([0u8; MARKER_LEN / 2]);
        getrandom::fill(&mut random[..]).expect("random bytes");
        let mut hex = Zeroizing::new([0u8; MARKER_LEN]);
        for (index, byte) in random.iter().enumerate() {
            hex[2 * index] = b"0123456789abcdef"[usize::from(byte >> 4)];
            hex[2 * index + 1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
        }
        Marker { name, hex }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.hex[..]
    }

    /// A request body holding the marker.
    pub fn body(&self) -> Bytes {
        Bytes::copy_from_slice(self.bytes())
    }
}

/// One occurrence of a marker in the server's memory.
#[derive(Clone, Debug)]
pub struct Hit {
    pub address: u64,
    /// The mapping: its path, `[heap]`, `[stack]`, or `[anon]`.
    pub region: String,
}

/// What a scan of the server's memory found.
pub struct Scan {
    /// Hits per marker, in the order the markers were given.
    pub hits: Vec<Vec<Hit>>,
    pub names: Vec<&'static str>,
    pub regions_read: usize,
    pub regions_skipped: usize,
    pub bytes_read: u64,
}

impl Scan {
    pub fn hits(&self, marker: &Marker) -> &[Hit] {
        let index = self
            .names
            .iter()
            .position(|name| *name == marker.name)
            .expect("the marker was scanned for");
        &self.hits[index]
    }
}

impl fmt::Display for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scanned {} MiB in {} regions ({} unreadable, skipped)",
            self.bytes_read >> 20,
            self.regions_read,
            self.regions_skipped
        )?;
        for (name, hits) in self.names.iter().zip(&self.hits) {
            write!(f, "  marker {name}: {} hit(s)", hits.len())?;
            // The first few: a value repeated over 48 KiB is found hundreds
            // of times.
            for hit in hits.iter().take(4) {
                write!(f, " [{:#x} in {}]", hit.address, hit.region)?;
            }
            if hits.len() > 4 {
                write!(f, " ...")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A readable mapping from `/proc/<pid>/maps`.
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub label: String,
}

pub fn readable_regions(pid: u32) -> Vec<Region> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/<pid>/maps");
    maps.lines()
        .filter_map(|line| {
            // start-end perms offset dev inode [path]
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let path = fields.nth(3).unwrap_or("");
            if !perms.starts_with('r') || path.starts_with("[vvar") || path == "[vsyscall]" {
                return None;
            }
            Some(Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                label: if path.is_empty() { "[anon]" } else { path }.to_owned(),
            })
        })
        .collect()
}

/// Offsets of `needle` in `haystack`. `skip_until` finds the first byte
/// with std's `memchr`, which keeps the scan fast in a debug build.
pub fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    use std::io::BufRead as _;
    let mut offsets = Vec::new();
    let mut rest = haystack;
    while rest.skip_until(needle[0]).expect("reading a slice") > 0 {
        let at = haystack.len() - rest.len() - 1;
        if haystack[at] != needle[0] {
            break; // ran off the end without finding it
        }
        if haystack[at..].starts_with(needle) {
            offsets.push(at);
        }
    }
    offsets
}

/// Reads every readable mapping of process `pid` and finds every marker.
pub fn scan(pid: u32, markers: &[&Marker]) -> Scan {
    let mem = File::open(format!("/proc/{pid}/mem")).expect("open /proc/<pid>/mem");
    let mut result = Scan {
        hits: vec![Vec::new(); markers.len()],
        names: markers.iter().map(|marker| marker.name).collect(),
        regions_read: 0,
        regions_skipped: 0,
        bytes_read: 0,
    };
    // Chunks overlap by a marker's length less one, so a marker across a
    // chunk boundary is found (once: only starts before the overlap count).
    let mut buffer = Zeroizing::new(vec![0u8; SCAN_CHUNK + MARKER_LEN - 1]);
    for region in readable_regions(pid) {
        let mut start = region.start;
        let mut readable = true;
        while start < region.end {
            let wanted = usize::try_from(region.end - start)
                .expect("a region fits in memory")
                .min(buffer.len());
            let chunk = &mut buffer[..wanted];
            if mem.read_exact_at(chunk, start).is_err() {
                readable = false;
                break;
            }
            result.bytes_read += wanted.min(SCAN_CHUNK) as u64;
            for (index, marker) in markers.iter().enumerate() {
                for offset in find_all(chunk, marker.bytes()) {
                    if offset < SCAN_CHUNK {
                        result.hits[index].push(Hit {
                            address: start + offset as u64,
                            region: region.label.clone(),
                        });
                    }
                }
            }
            start += SCAN_CHUNK as u64;
        }
        if readable {
            result.regions_read += 1;
        } else {
            result.regions_skipped += 1;
        }
    }
    result
}

/// Server-side TCP connections on `port` that the server still holds:
/// sockets in `/proc/net/tcp` with that local port in a state before the
/// server's `close` (the listener, and the `TIME_WAIT` and `LAST_ACK`
/// sockets the kernel keeps after it, do not count). The server closes a
/// socket when it drops the connection, and with it the connection's hyper
/// and rustls buffers.
pub fn open_connections(port: u16) -> usize {
    // ESTABLISHED, SYN_RECV, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING.
    const HELD: [&str; 6] = ["01", "03", "04", "05", "08", "0B"];
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // sl local_address rem_address st ...
            let mut fields = line.split_whitespace().skip(1);
            let is_local = fields
                .next()
                .is_some_and(|address| address.ends_with(&local));
            let state = fields.nth(1);
            is_local && state.is_some_and(|state| HELD.contains(&state))
        })
        .count()
}

/// Waits until the server has closed every connection on `port`, then
/// [`CLOSE_GRACE`] for the connection tasks to finish dropping.
pub async fn wait_until_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_connections(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the server kept {} connection(s) open",
            open_connections(port)
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(CLOSE_GRACE).await;
}
