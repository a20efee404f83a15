//! No trace in memory: once a secret is deleted, expired, popped, replaced
//! or read-once-consumed, and the connection that carried it has closed,
//! its bytes are nowhere in the server's memory.
//!
//! The test runs the real binary (whose global allocator wipes freed heap
//! blocks), drives it over mTLS with random markers as values, and then
//! reads the whole address space through `/proc/<pid>/mem` looking for
//! them. That needs root (the server makes itself non-dumpable, and only
//! `CAP_SYS_PTRACE` reads a non-dumpable process), so the test skips
//! otherwise. Two controls keep it from passing vacuously: a marker is
//! found while it is still stored, and a marker that is never deleted is
//! still found at the end.

mod common;

use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::process::{free_port, is_root, ServerProcess, BIN};
use common::Pki;
use tmpvault::cmd::client::{Client, ClientError, PutOptions};
use tmpvault::posture::alloc::ZeroizingAllocator;
use tmpvault::tls::pki::ClientName;
use tokio::time::{sleep, Instant};
use zeroize::Zeroizing;

/// The test's own copies of the markers (request bodies, responses) are
/// wiped as they are freed too. Only the server is scanned, so this is
/// hygiene, not what the test relies on.
#[global_allocator]
static ALLOCATOR: ZeroizingAllocator = ZeroizingAllocator;

/// Hex characters in a marker: 128 random bits, which no other byte string
/// in the server will match by chance.
const MARKER_LEN: usize = 32;
/// Time for a connection task to finish dropping its buffers after the
/// server has closed the socket.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// The product wipes an expired secret within a second of its deadline.
const EXPIRY_GRACE: Duration = Duration::from_secs(1);
/// Bytes read from `/proc/<pid>/mem` at a time.
const SCAN_CHUNK: usize = 4 << 20;

/// Starts `tmpvault serve` as root (`--allow-root`), with a private scratch
/// dir and a log file in the PKI directory (a tmpfs).
fn start_server(pki: &Pki, port: u16) -> ServerProcess {
    let scratch = pki.scratch_dir().join("scratch");
    fs::create_dir(&scratch).expect("create the scratch dir");
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700))
        .expect("chmod the scratch dir");
    let log = pki.scratch_dir().join("server.log");
    let log_file = File::create(&log).expect("create the server log");
    let child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--scratch-dir")
        .arg(&scratch)
        .arg("--tls-cert")
        .arg(&pki.server.cert)
        .arg("--tls-key")
        .arg(&pki.server.key)
        .arg("--client-ca")
        .arg(&pki.server.client_ca)
        .arg("--allow-root")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log file"))
        .stderr(log_file)
        .spawn()
        .expect("start tmpvault serve");
    ServerProcess::new(child, log)
}

/// A random marker: 32 lowercase hex characters, wiped on drop.
struct Marker {
    name: &'static str,
    hex: Zeroizing<[u8; MARKER_LEN]>,
}

impl Marker {
    fn new(name: &'static str) -> Marker {
        let mut random = Zeroizing::new([0u8; MARKER_LEN / 2]);
        getrandom::fill(&mut random[..]).expect("random bytes");
        let mut hex = Zeroizing::new([0u8; MARKER_LEN]);
        for (index, byte) in random.iter().enumerate() {
            hex[2 * index] = b"0123456789abcdef"[usize::from(byte >> 4)];
            hex[2 * index + 1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
        }
        Marker { name, hex }
    }

    fn bytes(&self) -> &[u8] {
        &self.hex[..]
    }

    /// A request body holding the marker.
    fn body(&self) -> Bytes {
        Bytes::copy_from_slice(self.bytes())
    }
}

/// One occurrence of a marker in the server's memory.
#[derive(Clone, Debug)]
struct Hit {
    address: u64,
    /// The mapping: its path, `[heap]`, `[stack]`, or `[anon]`.
    region: String,
}

/// What a scan of the server's memory found.
struct Scan {
    /// Hits per marker, in the order the markers were given.
    hits: Vec<Vec<Hit>>,
    names: Vec<&'static str>,
    regions_read: usize,
    regions_skipped: usize,
    bytes_read: u64,
}

impl Scan {
    fn hits(&self, marker: &Marker) -> &[Hit] {
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
            for hit in hits {
                write!(f, " [{:#x} in {}]", hit.address, hit.region)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A readable mapping from `/proc/<pid>/maps`.
struct Region {
    start: u64,
    end: u64,
    label: String,
}

fn readable_regions(pid: u32) -> Vec<Region> {
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
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
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
fn scan(pid: u32, markers: &[&Marker]) -> Scan {
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
fn open_connections(port: u16) -> usize {
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

fn is_not_found(result: &Result<Zeroizing<Vec<u8>>, ClientError>) -> bool {
    matches!(result, Err(ClientError::Problem { status: 404, .. }))
}

/// GETs `key` until it answers 404, or panics after `deadline`.
async fn wait_for_not_found(client: &Client, key: &str, deadline: Instant) {
    loop {
        if is_not_found(&client.get(key).await) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} still served");
        sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn find_all_finds_every_occurrence() {
    assert_eq!(find_all(b"abcabcab", b"abc"), [0, 3]);
    assert_eq!(find_all(b"aabc", b"abc"), [1]);
    assert_eq!(find_all(b"xyz", b"abc"), Vec::<usize>::new());
    assert_eq!(find_all(b"ab", b"abc"), Vec::<usize>::new());
    assert_eq!(find_all(b"", b"abc"), Vec::<usize>::new());
}

#[test]
fn regions_of_this_process_are_listed() {
    let regions = readable_regions(std::process::id());
    assert!(regions.iter().any(|region| region.label == "[stack]"));
    assert!(regions.iter().all(|region| region.start < region.end));
    assert!(!regions
        .iter()
        .any(|region| region.label.starts_with("[vvar")));
}

#[tokio::test]
async fn no_secret_survives_in_server_memory() {
    if !is_root() {
        eprintln!("skipping: reading a non-dumpable process's memory needs root");
        return;
    }
    let pki = Pki::new();
    let port = free_port();
    let mut server = start_server(&pki, port);
    let files = pki.client_files("client", ClientName::CommonName("residue".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).expect("client");
    server.wait_until_serving(&client).await;
    let pid = server.pid();

    let deleted = Marker::new("A (deleted)");
    let expired = Marker::new("B (expired)");
    let popped = Marker::new("C (popped)");
    let replaced = Marker::new("D (replaced)");
    let read_once = Marker::new("E (read once)");
    let kept = Marker::new("F (kept)");
    let all = [&deleted, &expired, &popped, &replaced, &read_once, &kept];
    let defaults = PutOptions::default();

    // B first, so its deadline and the purge after it have long passed by
    // the time of the final scan.
    let ttl = PutOptions {
        ttl: Some("1s"),
        ..PutOptions::default()
    };
    client
        .put("residue/b", expired.body(), &ttl)
        .await
        .expect("put B");
    let expiry_deadline = Instant::now() + Duration::from_secs(1);

    client
        .put("residue/a", deleted.body(), &defaults)
        .await
        .expect("put A");
    let value = client.get("residue/a").await.expect("get A");
    assert!(value[..] == *deleted.bytes(), "A comes back as stored");
    drop(value);

    // Control: a stored secret is found, so the scan can see the heap.
    let stored = scan(pid, &all);
    eprintln!("while A is stored:\n{stored}");
    assert!(
        !stored.hits(&deleted).is_empty(),
        "the scan must find a stored marker\n{stored}"
    );

    client.delete("residue/a").await.expect("delete A");

    client
        .push("residue/c", popped.body(), None)
        .await
        .expect("push C");
    let item = client.pop("residue/c", false).await.expect("pop C");
    assert!(item[..] == *popped.bytes(), "C pops as pushed");
    drop(item);

    client
        .put("residue/d", replaced.body(), &defaults)
        .await
        .expect("put D");
    client
        .put(
            "residue/d",
            Bytes::from_static(b"a replacement value"),
            &defaults,
        )
        .await
        .expect("replace D");

    let once = PutOptions {
        max_reads: Some(1),
        ..PutOptions::default()
    };
    client
        .put("residue/e", read_once.body(), &once)
        .await
        .expect("put E");
    let value = client.get("residue/e").await.expect("get E");
    assert!(value[..] == *read_once.bytes(), "E comes back as stored");
    drop(value);
    assert!(is_not_found(&client.get("residue/e").await), "E is used up");

    client
        .put("residue/f", kept.body(), &defaults)
        .await
        .expect("put F");

    wait_for_not_found(
        &client,
        "residue/b",
        expiry_deadline + Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep_until(expiry_deadline + EXPIRY_GRACE).await;

    // Close every connection and wait until the server has closed its end
    // too, then give the connection tasks a moment to finish dropping.
    drop(client);
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

    let after = scan(pid, &all);
    eprintln!("after deletion, connections closed:\n{after}");
    assert!(
        !after.hits(&kept).is_empty(),
        "the scan must still find the marker that was never deleted\n{after}"
    );
    let survivors: Vec<&str> = all
        .iter()
        .filter(|marker| marker.name != kept.name && !after.hits(marker).is_empty())
        .map(|marker| marker.name)
        .collect();
    assert!(
        survivors.is_empty(),
        "secret bytes survived in server memory: {survivors:?}\n{after}"
    );
    assert!(
        server.is_running(),
        "the server is still running:\n{}",
        server.log()
    );
}
