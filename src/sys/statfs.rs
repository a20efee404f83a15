//! statfs / statvfs

use super::*;

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
