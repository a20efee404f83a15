//! cgroup memory limit

use super::*;

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
