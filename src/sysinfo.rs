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

// ---------------------------------------------------------------------------
// statfs / statvfs

/// The `statfs` magic number of the filesystem holding `path` (`f_type`).
pub fn fs_magic(path: &Path) -> Result<u64, SysinfoError> {
    let stat = nix::sys::statfs::statfs(path).map_err(|source| SysinfoError::PathCall {
        call: "statfs",
        path: path.to_path_buf(),
        source,
    })?;
    // `f_type` is a signed word whose width depends on the target; every
    // magic is a 32-bit value, so keep the low 32 bits to compare the same
    // way on every architecture (no sign extension of 0x9123683e and kin).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let magic = stat.filesystem_type().0 as u32;
    Ok(u64::from(magic))
}

/// The usual name of a filesystem `statfs` magic, when it is a common one.
///
/// ext2, ext3 and ext4 share one magic; it is named `ext4`, the driver that
/// mounts all three today.
pub fn fs_magic_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlay",
        0x6573_5546 => "fuse",
        0x6969 => "nfs",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x0102_1997 => "9p",
        0x2fc1_2fc1 => "zfs",
        0xf2f5_2010 => "f2fs",
        0x4d44 => "vfat",
        0x2011_bab0 => "exfat",
        0x5346_544e => "ntfs",
        0x7371_7368 => "squashfs",
        0x6175_6673 => "aufs",
        0x00c3_6400 => "ceph",
        0x9584_58f6 => "hugetlbfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        _ => return None,
    })
}

/// Whether the filesystem holding `path` is mounted read-only (`statvfs`
/// `ST_RDONLY`).
pub fn is_read_only(path: &Path) -> Result<bool, SysinfoError> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let stat = statvfs(path).map_err(|source| SysinfoError::PathCall {
        call: "statvfs",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(stat.flags().contains(FsFlags::ST_RDONLY))
}

// ---------------------------------------------------------------------------
// /proc/self/mountinfo

/// One line of `/proc/self/mountinfo`, with the escapes undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The directory of the mounted filesystem that appears here (field 4;
    /// not `/` for bind mounts and for cgroup namespaces).
    pub root: PathBuf,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, `nodev`, `noexec`, ...).
    pub mount_options: Vec<String>,
    /// The filesystem type (`tmpfs`, `ext4`, `cgroup2`, ...).
    pub fs_type: String,
    /// The mount source (a device, or a free-form name such as `tmpfs`).
    pub source: String,
    /// Per-superblock options (`size=16k`, `mode=1770`, `memory`, ...).
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Whether the per-mount options hold `flag` (e.g. `nosuid`).
    pub fn has_mount_option(&self, flag: &str) -> bool {
        self.mount_options.iter().any(|option| option == flag)
    }

    /// The value of a `name=value` superblock option (e.g. `size`).
    pub fn super_option(&self, name: &str) -> Option<&str> {
        self.super_options.iter().find_map(|option| {
            option
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }

    /// Whether the superblock options hold the bare flag `name` (a cgroup v1
    /// mount lists its controllers this way, e.g. `memory`).
    pub fn has_super_flag(&self, name: &str) -> bool {
        self.super_options.iter().any(|option| option == name)
    }
}

/// Undo the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash) in a mountinfo field. A backslash not followed
/// by three octal digits is kept as it is.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        if field[index] == b'\\' {
            if let Some(digits) = field.get(index + 1..index + 4) {
                if digits.iter().all(|digit| (b'0'..=b'7').contains(digit)) {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        index += 4;
                        continue;
                    }
                }
            }
        }
        out.push(field[index]);
        index += 1;
    }
    out
}

fn escaped_path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_octal(field)))
}

fn escaped_string(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_octal(field)).into_owned()
}

fn split_options(field: &[u8]) -> Vec<String> {
    escaped_string(field)
        .split(',')
        .filter(|option| !option.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parse one mountinfo line; `None` when it is malformed.
fn parse_mountinfo_line(line: &[u8]) -> Option<MountInfo> {
    // Fields are separated by single spaces; anything that was a space in a
    // path is escaped as `\040`, so splitting on spaces is exact.
    let fields: Vec<&[u8]> = line
        .split(|byte| *byte == b' ')
        .filter(|field| !field.is_empty())
        .collect();
    // id, parent, major:minor, root, mount point, options, then zero or more
    // optional fields ended by a lone "-", then type, source, super options.
    let separator = fields
        .iter()
        .skip(6)
        .position(|field| *field == b"-")
        .map(|offset| offset + 6)?;
    let root = fields.get(3)?;
    let mount_point = fields.get(4)?;
    if !mount_point.starts_with(b"/") {
        return None;
    }
    let fs_type = fields.get(separator + 1)?;
    Some(MountInfo {
        root: escaped_path(root),
        mount_point: escaped_path(mount_point),
        mount_options: split_options(fields.get(5)?),
        fs_type: escaped_string(fs_type),
        source: fields
            .get(separator + 2)
            .map(|field| escaped_string(field))
            .unwrap_or_default(),
        super_options: fields
            .get(separator + 3)
            .map(|field| split_options(field))
            .unwrap_or_default(),
    })
}

/// Parse the text of `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    parse_mountinfo_bytes(text.as_bytes())
}

/// Parse the raw bytes of `/proc/self/mountinfo`. Mount points may hold
/// bytes that are not UTF-8 (the kernel escapes only whitespace and `\`), so
/// the file is read as bytes and paths stay exact.
pub fn parse_mountinfo_bytes(bytes: &[u8]) -> Vec<MountInfo> {
    bytes
        .split(|byte| *byte == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect()
}

/// The mount that contains `path`: the one whose mount point is the longest
/// prefix of it, compared whole component by whole component (so `/dev`
/// contains `/dev/shm/x` but `/devices` does not). When mounts are stacked
/// on one point the last listed, the one on top, wins. `path` must already
/// be absolute and canonical.
pub fn find_containing_mount<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    let mut best: Option<(usize, &MountInfo)> = None;
    for mount in mounts {
        if !path.starts_with(&mount.mount_point) {
            continue;
        }
        let depth = mount.mount_point.components().count();
        // `>=`: a later mount on the same point is stacked on top.
        if best.is_none_or(|(best_depth, _)| depth >= best_depth) {
            best = Some((depth, mount));
        }
    }
    best.map(|(_, mount)| mount)
}

/// Read `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Result<Vec<MountInfo>, SysinfoError> {
    Ok(parse_mountinfo_bytes(&read_bytes(Path::new(MOUNTINFO))?))
}

/// The mount that contains `path` (canonicalized first, so symlinks lead to
/// the real mount).
pub fn mount_containing(path: &Path) -> Result<MountInfo, SysinfoError> {
    let canonical = std::fs::canonicalize(path).map_err(|source| SysinfoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mounts = read_mountinfo()?;
    find_containing_mount(&mounts, &canonical)
        .cloned()
        .ok_or(SysinfoError::NoMount { path: canonical })
}

// ---------------------------------------------------------------------------
// /proc/self/status

/// The seccomp mode of a process (`Seccomp:` in `/proc/self/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    /// 0: no seccomp.
    Disabled,
    /// 1: strict mode (read, write, exit only).
    Strict,
    /// 2: a BPF filter is installed.
    Filter,
    /// A value this code does not know.
    Other(u32),
}

impl SeccompMode {
    fn from_number(value: u32) -> Self {
        match value {
            0 => Self::Disabled,
            1 => Self::Strict,
            2 => Self::Filter,
            other => Self::Other(other),
        }
    }
}

/// The fields of `/proc/self/status` the self-check reads; `None` for a
/// field that is absent or malformed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `NoNewPrivs`: whether `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: Option<bool>,
    /// `CapEff`: the effective capability set, as a bit mask.
    pub cap_eff: Option<u64>,
    /// `Seccomp`: the seccomp mode.
    pub seccomp: Option<SeccompMode>,
}

impl ProcStatus {
    /// Whether the effective set holds `CAP_IPC_LOCK` (false when unknown).
    pub fn has_cap_ipc_lock(&self) -> bool {
        self.cap_eff
            .is_some_and(|caps| caps & (1u64 << CAP_IPC_LOCK) != 0)
    }
}

/// Parse the text of `/proc/self/status`.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut status = ProcStatus::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name {
            "NoNewPrivs" => {
                status.no_new_privs = match value {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            "CapEff" => status.cap_eff = u64::from_str_radix(value, 16).ok(),
            "Seccomp" => status.seccomp = value.parse().ok().map(SeccompMode::from_number),
            _ => {}
        }
    }
    status
}

/// Read `/proc/self/status`.
pub fn proc_status() -> Result<ProcStatus, SysinfoError> {
    Ok(parse_status(&read_text(Path::new(STATUS))?))
}

/// The names of the capabilities in a mask, as Docker and Kubernetes spell
/// them (`NET_BIND_SERVICE`); bits this code does not know as `CAP_<bit>`.
pub fn capability_names(mask: u64) -> Vec<String> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(
            |bit| match usize::try_from(bit).ok().and_then(|i| NAMES.get(i)) {
                Some(name) => (*name).to_owned(),
                None => format!("CAP_{bit}"),
            },
        )
        .collect()
}

// ---------------------------------------------------------------------------
// cgroup memory limit

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupEntry {
    /// The hierarchy id; 0 for the cgroup v2 unified hierarchy.
    pub hierarchy_id: u32,
    /// The v1 controllers bound to this hierarchy (empty for v2).
    pub controllers: Vec<String>,
    /// The cgroup's path, relative to the hierarchy's root as this process's
    /// cgroup namespace sees it.
    pub path: String,
}

/// Parse the text of `/proc/self/cgroup`; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|line| {
            // The path is last and may itself hold ':'.
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(CgroupEntry {
                hierarchy_id,
                controllers,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// Which cgroup interface holds the memory limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The v1 `memory` controller (`memory.limit_in_bytes`).
    V1,
    /// The v2 unified hierarchy (`memory.max`).
    V2,
}

impl CgroupVersion {
    /// The file that holds the limit in this version.
    pub fn limit_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        }
    }
}

/// Where this process's memory cgroup is in the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLocation {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// Where that cgroup hierarchy is mounted; limits are looked up from
    /// `dir` up to here, since an ancestor's limit binds too.
    pub mount_point: PathBuf,
    /// The directory of this process's own cgroup.
    pub dir: PathBuf,
}

/// Where the memory cgroup of this process lives, from the parsed
/// `/proc/self/cgroup` and `/proc/self/mountinfo`.
///
/// A v1 `memory` controller wins over the v2 hierarchy (on a hybrid host
/// the controller is bound to v1, and the v2 tree has no `memory.max`).
/// When the hierarchy is not in mountinfo, the conventional place under
/// `/sys/fs/cgroup` is assumed.
pub fn locate_memory_cgroup(
    cgroups: &[CgroupEntry],
    mounts: &[MountInfo],
) -> Option<CgroupLocation> {
    let v1 = cgroups
        .iter()
        .find(|entry| entry.controllers.iter().any(|name| name == "memory"));
    let (version, entry) = match v1 {
        Some(entry) => (CgroupVersion::V1, entry),
        None => (
            CgroupVersion::V2,
            cgroups
                .iter()
                .find(|entry| entry.hierarchy_id == 0 && entry.controllers.is_empty())?,
        ),
    };
    let mount = mounts.iter().rev().find(|mount| match version {
        CgroupVersion::V1 => mount.fs_type == "cgroup" && mount.has_super_flag("memory"),
        CgroupVersion::V2 => mount.fs_type == "cgroup2",
    });
    let (mount_point, mount_root) = match mount {
        Some(mount) => (mount.mount_point.clone(), mount.root.clone()),
        None => (
            PathBuf::from(match version {
                CgroupVersion::V1 => "/sys/fs/cgroup/memory",
                CgroupVersion::V2 => "/sys/fs/cgroup",
            }),
            PathBuf::from("/"),
        ),
    };
    // The path in /proc/self/cgroup is relative to the hierarchy's root;
    // the mount may show only a subtree of it (field 4 of mountinfo, e.g.
    // `/docker/<id>` bind-mounted into a container). A path outside that
    // subtree (`/../..` from another cgroup namespace) cannot be reached,
    // so the mount's own root is the closest cgroup there is.
    let relative = Path::new(&entry.path)
        .strip_prefix(&mount_root)
        .ok()
        .filter(|rest| {
            rest.components()
                .all(|part| matches!(part, std::path::Component::Normal(_)))
        })
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Some(CgroupLocation {
        version,
        dir: mount_point.join(relative),
        mount_point,
    })
}

/// Parse the content of `memory.max` (v2) or `memory.limit_in_bytes` (v1):
/// `Ok(None)` for no limit (`max`, or v1's huge sentinel), `Err` with what
/// was wrong otherwise.
pub fn parse_memory_limit(text: &str) -> Result<Option<u64>, String> {
    let value = text.trim();
    if value == "max" {
        return Ok(None);
    }
    match value.parse::<u64>() {
        Ok(bytes) if bytes >= V1_UNLIMITED_THRESHOLD => Ok(None),
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => Err(format!(
            "expected a number of bytes or \"max\", found {value:?}"
        )),
    }
}

/// The memory limit of this process's cgroup, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// The tightest limit on the way from this cgroup up to the hierarchy's
    /// root, in bytes; `None` when there is none.
    pub limit: Option<u64>,
    /// The file the limit came from (this cgroup's own file when there is
    /// no limit).
    pub file: PathBuf,
}

/// Read the memory limit of this process's cgroup: the smallest limit of
/// its cgroup and every ancestor up to the hierarchy's mount point.
pub fn read_cgroup_memory() -> Result<CgroupMemory, SysinfoError> {
    let cgroups = parse_proc_cgroup(&read_text(Path::new(PROC_CGROUP))?);
    // Without mountinfo the conventional /sys/fs/cgroup paths still work.
    let mounts = read_mountinfo().unwrap_or_default();
    let location =
        locate_memory_cgroup(&cgroups, &mounts).ok_or_else(|| SysinfoError::NoMemoryCgroup {
            what: "neither a v1 memory controller nor a v2 hierarchy is listed".to_owned(),
        })?;
    let file_name = location.version.limit_file();
    let mut tightest: Option<(u64, PathBuf)> = None;
    let mut own_file: Option<PathBuf> = None;
    let mut dir = Some(location.dir.as_path());
    while let Some(current) = dir.filter(|current| current.starts_with(&location.mount_point)) {
        let file = current.join(file_name);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let limit = parse_memory_limit(&text).map_err(|what| SysinfoError::Parse {
                    path: file.clone(),
                    what,
                })?;
                if let Some(bytes) = limit {
                    if tightest.as_ref().is_none_or(|(best, _)| bytes < *best) {
                        tightest = Some((bytes, file.clone()));
                    }
                }
                own_file.get_or_insert(file);
            }
            // The v2 root cgroup has no memory.max; a cgroup without the
            // memory controller enabled has none either. Keep climbing.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(SysinfoError::Read { path: file, source }),
        }
        dir = current.parent();
    }
    match (tightest, own_file) {
        (Some((bytes, file)), _) => Ok(CgroupMemory {
            version: location.version,
            limit: Some(bytes),
            file,
        }),
        (None, Some(file)) => Ok(CgroupMemory {
            version: location.version,
            limit: None,
            file,
        }),
        (None, None) => Err(SysinfoError::NoMemoryCgroup {
            what: format!("no {file_name} under {}", location.dir.display()),
        }),
    }
}

/// The cgroup memory limit of this process in bytes, or `None` when there
/// is none or it cannot be read. The server's default `--max-memory` budget
/// is half of it.
pub fn cgroup_memory_limit() -> Option<u64> {
    read_cgroup_memory().ok()?.limit
}

// ---------------------------------------------------------------------------
// /proc/meminfo, core_pattern

/// `SwapTotal` from the text of `/proc/meminfo`, in bytes.
pub fn parse_swap_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))?;
    let mut words = line.split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let multiplier = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    amount.checked_mul(multiplier)
}

/// The total swap of the host in bytes (`SwapTotal` in `/proc/meminfo`).
pub fn swap_total() -> Result<u64, SysinfoError> {
    let path = Path::new(MEMINFO);
    parse_swap_total(&read_text(path)?).ok_or_else(|| SysinfoError::Parse {
        path: path.to_path_buf(),
        what: "no readable SwapTotal line".to_owned(),
    })
}

/// The kernel's core dump pattern (`/proc/sys/kernel/core_pattern`),
/// without the trailing newline.
pub fn core_pattern() -> Result<String, SysinfoError> {
    Ok(read_text(Path::new(CORE_PATTERN))?.trim_end().to_owned())
}

/// Whether a core pattern hands dumps to a program (`|/path/to/helper`)
/// rather than writing a file.
pub fn core_pattern_is_pipe(pattern: &str) -> bool {
    pattern.trim_start().starts_with('|')
}

// ---------------------------------------------------------------------------
// Resource limits and dumpability

/// A resource limit; `None` means unlimited (`RLIM_INFINITY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimit {
    /// The limit the kernel enforces.
    pub soft: Option<u64>,
    /// The ceiling the soft limit may be raised to without privilege.
    pub hard: Option<u64>,
}

fn limit_value(raw: libc::rlim_t) -> Option<u64> {
    (raw != RLIM_INFINITY).then_some(raw)
}

fn resource_limit(resource: Resource, call: &'static str) -> Result<ResourceLimit, SysinfoError> {
    let (soft, hard) = getrlimit(resource).map_err(|source| SysinfoError::Call { call, source })?;
    Ok(ResourceLimit {
        soft: limit_value(soft),
        hard: limit_value(hard),
    })
}

/// `RLIMIT_MEMLOCK`: how many bytes the process may lock.
pub fn memlock_limit() -> Result<ResourceLimit, SysinfoError> {
    resource_limit(Resource::RLIMIT_MEMLOCK, "getrlimit(RLIMIT_MEMLOCK)")
}

/// `RLIMIT_CORE`: the largest core file the kernel will write.
pub fn core_limit() -> Result<ResourceLimit, SysinfoError> {
    resource_limit(Resource::RLIMIT_CORE, "getrlimit(RLIMIT_CORE)")
}

/// `PR_GET_DUMPABLE`: whether the process may dump core (and be ptraced by
/// its own user).
pub fn dumpable() -> Result<bool, SysinfoError> {
    nix::sys::prctl::get_dumpable().map_err(|source| SysinfoError::Call {
        call: "prctl(PR_GET_DUMPABLE)",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 25 0:27 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k,mode=1770
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 master:2 - ext4 /dev/vda rw
50 27 0:40 / /mnt/with\\040space rw,nosuid - tmpfs tmpfs rw,size=1m
51 27 0:41 / /devices rw - tmpfs tmpfs rw
";

    fn mounts() -> Vec<MountInfo> {
        parse_mountinfo(MOUNTINFO_SAMPLE)
    }

    #[test]
    fn parses_every_field_of_a_mountinfo_line() {
        let mounts = mounts();
        assert_eq!(mounts.len(), 10);
        let shm = &mounts[4];
        assert_eq!(shm.mount_point, Path::new("/dev/shm"));
        assert_eq!(shm.root, Path::new("/"));
        assert_eq!(shm.fs_type, "tmpfs");
        assert_eq!(shm.source, "shm");
        assert!(shm.has_mount_option("nosuid"));
        assert!(shm.has_mount_option("noexec"));
        assert!(!shm.has_mount_option("ro"));
        assert_eq!(shm.super_option("size"), Some("65536k"));
        assert_eq!(shm.super_option("mode"), Some("1770"));
        assert_eq!(shm.super_option("siz"), None);
    }

    #[test]
    fn optional_fields_before_the_separator_are_skipped() {
        let docker = &mounts()[7];
        assert_eq!(docker.root, Path::new("/var/lib/docker"));
        assert_eq!(docker.fs_type, "ext4");
        assert_eq!(docker.source, "/dev/vda");
    }

    #[test]
    fn octal_escapes_in_mount_points_are_undone() {
        let spaced = &mounts()[8];
        assert_eq!(spaced.mount_point, Path::new("/mnt/with space"));
        assert_eq!(unescape_octal(br"a\011b\012c\134d"), b"a\tb\nc\\d");
        // Not an escape: kept as is.
        assert_eq!(unescape_octal(br"a\09x\"), br"a\09x\");
        assert_eq!(unescape_octal(br"\777"), br"\777");
    }

    #[test]
    fn non_utf8_mount_points_stay_exact() {
        let line = b"60 27 0:50 / /mnt/\xff\xfe rw - tmpfs tmpfs rw\n";
        let mounts = parse_mountinfo_bytes(line);
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from(OsString::from_vec(b"/mnt/\xff\xfe".to_vec()))
        );
    }

    #[test]
    fn the_longest_mount_point_contains_the_path() {
        let mounts = mounts();
        let found = find_containing_mount(&mounts, Path::new("/dev/shm/tmpvault"));
        // Two mounts are stacked on /dev/shm: the later one is on top.
        assert_eq!(found.map(|mount| mount.source.as_str()), Some("shm"));
        let found = find_containing_mount(&mounts, Path::new("/dev/shm"));
        assert_eq!(found.map(|mount| mount.source.as_str()), Some("shm"));
        let found = find_containing_mount(&mounts, Path::new("/dev/null"));
        assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("devtmpfs"));
        let found = find_containing_mount(&mounts, Path::new("/work/x"));
        assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("ext4"));
        let found = find_containing_mount(&mounts, Path::new("/mnt/with space/x"));
        assert_eq!(
            found.map(|mount| mount.super_option("size")),
            Some(Some("1m"))
        );
    }

    #[test]
    fn prefixes_respect_component_boundaries() {
        let mounts = mounts();
        // "/dev" is a string prefix of "/devices" but not a path prefix.
        let found = find_containing_mount(&mounts, Path::new("/devices/x"));
        assert_eq!(
            found.map(|mount| mount.mount_point.as_path()),
            Some(Path::new("/devices"))
        );
        let found = find_containing_mount(&mounts, Path::new("/dev/shmem"));
        assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("devtmpfs"));
    }

    #[test]
    fn malformed_mountinfo_lines_are_skipped() {
        let text = "\
garbage
1 2 3
1 2 0:1 / /x rw shared:1
1 2 0:1 / relative rw - tmpfs tmpfs rw
1 2 0:1 / /ok rw - tmpfs
\u{0}\u{0}\u{0}
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, Path::new("/ok"));
        assert_eq!(mounts[0].source, "");
        assert!(mounts[0].super_options.is_empty());
        assert!(parse_mountinfo("").is_empty());
        assert!(find_containing_mount(&[], Path::new("/")).is_none());
    }

    #[test]
    fn parses_status_fields() {
        let text = "Name:\ttmpvault\nCapEff:\t000001fffeffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let status = parse_status(text);
        assert_eq!(status.no_new_privs, Some(true));
        assert_eq!(status.cap_eff, Some(0x0000_01ff_feff_ffff));
        assert_eq!(status.seccomp, Some(SeccompMode::Filter));
        assert!(status.has_cap_ipc_lock());

        let status = parse_status("CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n");
        assert_eq!(status.no_new_privs, Some(false));
        assert_eq!(status.cap_eff, Some(0));
        assert_eq!(status.seccomp, Some(SeccompMode::Disabled));
        assert!(!status.has_cap_ipc_lock());
    }

    #[test]
    fn malformed_status_fields_are_none() {
        let status = parse_status("CapEff:\tzz\nNoNewPrivs:\t7\nSeccomp:\t-1\nnonsense\n:\n");
        assert_eq!(status, ProcStatus::default());
        assert_eq!(parse_status(""), ProcStatus::default());
        let status = parse_status("Seccomp:\t9\n");
        assert_eq!(status.seccomp, Some(SeccompMode::Other(9)));
    }

    #[test]
    fn names_capabilities() {
        assert!(capability_names(0).is_empty());
        assert_eq!(
            capability_names((1 << 10) | (1 << 14)),
            ["NET_BIND_SERVICE", "IPC_LOCK"]
        );
        assert_eq!(capability_names(1 << 63), ["CAP_63"]);
        assert_eq!(capability_names(u64::MAX).len(), 64);
    }

    #[test]
    fn parses_proc_cgroup() {
        let text = "12:memory:/docker/abc\n1:name=systemd:/x:y\n0::/kubepods/pod1\nbad\nx:y:/z\n";
        let entries = parse_proc_cgroup(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].controllers, ["memory"]);
        assert_eq!(entries[1].path, "/x:y");
        assert_eq!(entries[2].hierarchy_id, 0);
        assert!(entries[2].controllers.is_empty());
    }

    #[test]
    fn locates_a_v1_memory_cgroup_through_mountinfo() {
        let cgroups = parse_proc_cgroup("4:memory:/process_api/abc\n0::/\n");
        let location = locate_memory_cgroup(&cgroups, &mounts());
        assert_eq!(
            location,
            Some(CgroupLocation {
                version: CgroupVersion::V1,
                mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
                dir: PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
            })
        );
    }

    #[test]
    fn locates_a_v2_cgroup_with_a_bind_mounted_root() {
        let mounts = parse_mountinfo(
            "30 20 0:26 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
        );
        let cgroups = parse_proc_cgroup("0::/kubepods/pod1/ctr\n");
        let location = locate_memory_cgroup(&cgroups, &mounts);
        assert_eq!(
            location.map(|found| (found.version, found.dir)),
            Some((CgroupVersion::V2, PathBuf::from("/sys/fs/cgroup/ctr")))
        );
        // A path outside the mounted subtree falls back to the mount root.
        let cgroups = parse_proc_cgroup("0::/../../elsewhere\n");
        let location = locate_memory_cgroup(&cgroups, &mounts);
        assert_eq!(
            location.map(|found| found.dir),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn falls_back_to_sys_fs_cgroup_without_mountinfo() {
        let cgroups = parse_proc_cgroup("0::/app\n");
        let location = locate_memory_cgroup(&cgroups, &[]);
        assert_eq!(
            location.map(|found| found.dir),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(locate_memory_cgroup(&[], &[]), None);
        let cgroups = parse_proc_cgroup("3:cpu:/app\n");
        assert_eq!(locate_memory_cgroup(&cgroups, &[]), None);
    }

    #[test]
    fn parses_memory_limits() {
        assert_eq!(parse_memory_limit("max\n"), Ok(None));
        assert_eq!(parse_memory_limit("536870912\n"), Ok(Some(536_870_912)));
        assert_eq!(parse_memory_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_memory_limit("4611686018427387904"), Ok(None));
        assert!(parse_memory_limit("").is_err());
        assert!(parse_memory_limit("-1").is_err());
        assert!(parse_memory_limit("lots").is_err());
        assert!(parse_memory_limit("99999999999999999999999").is_err());
    }

    #[test]
    fn parses_swap_total() {
        let text = "MemTotal:       1000 kB\nSwapTotal:       2048 kB\nSwapFree: 0 kB\n";
        assert_eq!(parse_swap_total(text), Some(2048 * 1024));
        assert_eq!(parse_swap_total("SwapTotal:       0 kB\n"), Some(0));
        assert_eq!(parse_swap_total("SwapTotal: x kB\n"), None);
        assert_eq!(parse_swap_total("SwapTotal: 1 MB\n"), None);
        assert_eq!(
            parse_swap_total("SwapTotal: 18446744073709551615 kB\n"),
            None
        );
        assert_eq!(parse_swap_total(""), None);
    }

    #[test]
    fn recognizes_piped_core_patterns() {
        assert!(core_pattern_is_pipe(
            "|/usr/lib/systemd/systemd-coredump %P"
        ));
        assert!(!core_pattern_is_pipe("core"));
        assert!(!core_pattern_is_pipe(""));
    }

    #[test]
    fn names_common_magics() {
        assert_eq!(fs_magic_name(TMPFS_MAGIC), Some("tmpfs"));
        assert_eq!(fs_magic_name(0xef53), Some("ext4"));
        assert_eq!(fs_magic_name(0x794c_7630), Some("overlay"));
        assert_eq!(fs_magic_name(0x1234), None);
    }

    #[test]
    fn real_readings_do_not_fail_on_linux() {
        assert_eq!(fs_magic(Path::new("/proc")).ok(), Some(0x9fa0));
        assert!(proc_status().is_ok());
        assert!(core_limit().is_ok());
        assert!(memlock_limit().is_ok());
        assert!(dumpable().is_ok());
        assert!(is_read_only(Path::new("/")).is_ok());
        let mount = mount_containing(Path::new("/proc/self"));
        assert_eq!(
            mount.ok().map(|mount| mount.fs_type),
            Some("proc".to_owned())
        );
        assert!(fs_magic(Path::new("/nonexistent/tmpvault")).is_err());
    }
}
