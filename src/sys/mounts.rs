//! /proc/self/mountinfo

use super::*;

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
pub(super) fn unescape_octal(field: &[u8]) -> Vec<u8> {
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

pub(super) fn escaped_path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_octal(field)))
}

pub(super) fn escaped_string(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_octal(field)).into_owned()
}

pub(super) fn split_options(field: &[u8]) -> Vec<String> {
    escaped_string(field)
        .split(',')
        .filter(|option| !option.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parse one mountinfo line; `None` when it is malformed.
pub(super) fn parse_mountinfo_line(line: &[u8]) -> Option<MountInfo> {
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
