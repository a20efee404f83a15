//! Readings of the system the self-check and the hardening are built on.
//!
//! Every reading is split in two: a pure parser that takes the text of a
//! `/proc` or cgroup file (unit-tested below on sample text, malformed input
//! included) and a small I/O function that reads the real file or makes the
//! real system call and hands the result to the parser. Nothing here panics:
//! a missing or odd file becomes a [`SysinfoError`] that says what was being
//! read, so the self-check can turn it into a warning with a reason.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

mod cgroup;
mod limits;
mod meminfo;
mod mounts;
mod statfs;
mod status;

pub use self::cgroup::*;
pub use self::limits::*;
pub use self::meminfo::*;
pub use self::mounts::*;
pub use self::statfs::*;
pub use self::status::*;

/// Where the kernel lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Per-process status: `NoNewPrivs`, `CapEff`, `Seccomp`.
const STATUS: &str = "/proc/self/status";
/// The cgroups this process belongs to, one line per hierarchy.
const PROC_CGROUP: &str = "/proc/self/cgroup";
/// System memory figures, read here for `SwapTotal`.
const MEMINFO: &str = "/proc/meminfo";
/// Where the kernel sends core dumps (a file name pattern or `|program`).
const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

/// cgroup v1 reports "no limit" as the largest page-aligned `i64`
/// (9223372036854771712); anything this large is not a real limit.
const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// The `statfs` magic of tmpfs (`TMPFS_MAGIC`).
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// The `statfs` magic of ramfs (`RAMFS_MAGIC`): memory-backed too, but
/// without a size limit.
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The bit of `CAP_IPC_LOCK` in a capability set.
pub const CAP_IPC_LOCK: u32 = 14;

/// What went wrong while taking a reading; each variant names the file or
/// the call, so a self-check detail can quote it as is.
#[derive(Debug, thiserror::Error)]
pub enum SysinfoError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call on a path failed.
    #[error("{call} {}: {source}", path.display())]
    PathCall {
        /// The call, e.g. `statfs`.
        call: &'static str,
        /// The path it was made on.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A system call without a path failed.
    #[error("{call}: {source}")]
    Call {
        /// The call, e.g. `getrlimit(RLIMIT_CORE)`.
        call: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A file was read but did not hold what it should.
    #[error("parsing {}: {what}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// No line of `/proc/self/mountinfo` covers the path.
    #[error("no mount in /proc/self/mountinfo contains {}", path.display())]
    NoMount {
        /// The (canonicalized) path looked up.
        path: PathBuf,
    },
    /// `/proc/self/cgroup` names no memory controller this process can find.
    #[error("no memory cgroup found through /proc/self/cgroup: {what}")]
    NoMemoryCgroup {
        /// Why not.
        what: String,
    },
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, SysinfoError> {
    std::fs::read(path).map_err(|source| SysinfoError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, SysinfoError> {
    std::fs::read_to_string(path).map_err(|source| SysinfoError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
