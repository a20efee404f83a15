//! scratch.*

use super::*;

/// The scratch dir's checks (tmpfs, private mode, owner) for any
/// directory: `tmpvault run --file` writes secrets only where the scratch
/// dir itself could be.
pub fn private_dir_checks(dir: &Path) -> Vec<Check> {
    let place = Environment::detect();
    let magic = sys::fs_magic(dir);
    let metadata = fs::metadata(dir);
    vec![
        scratch_tmpfs(place, dir, &magic),
        scratch_mode(place, dir, &metadata),
        scratch_owner(place, dir, &metadata),
    ]
}

pub(super) fn scratch_tmpfs(
    place: Environment,
    dir: &Path,
    magic: &Result<u64, sys::SysinfoError>,
) -> Check {
    const ID: &str = "scratch.tmpfs";
    let shown = dir.display();
    let fix = hints::scratch_tmpfs(place, dir);
    match magic {
        Err(error) => Check::fail(
            ID,
            format!("cannot tell which filesystem scratch dir {shown} is on ({error}): {fix}"),
        ),
        Ok(magic) if *magic == TMPFS_MAGIC => {
            Check::pass(ID, format!("scratch dir {shown} is on tmpfs"))
        }
        Ok(magic) => {
            // The mount table names ext2/3/4 and friends exactly, where the
            // magic cannot; the magic is what decides.
            let name = sys::mount_containing(dir)
                .ok()
                .map(|mount| mount.fs_type)
                .or_else(|| sys::fs_magic_name(*magic).map(str::to_owned))
                .unwrap_or_else(|| "an unknown filesystem".to_owned());
            Check::fail(
                ID,
                format!("scratch dir {shown} is on {name} ({magic:#x}), not tmpfs: {fix}"),
            )
        }
    }
}

/// Whether a scratch dir mode is private enough: nothing for others, and
/// group write only with the sticky bit (so group members cannot remove or
/// replace each other's files).
pub(super) fn scratch_mode_problem(mode: u32) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        Some("others have access")
    } else if mode & 0o020 != 0 && mode & 0o1000 == 0 {
        Some("the group may write without the sticky bit")
    } else {
        None
    }
}

/// The detail of a scratch dir that cannot be looked at (most often: it
/// does not exist), with the fix that makes it: the scratch.tmpfs one.
pub(super) fn unreadable_scratch(place: Environment, dir: &Path, error: &std::io::Error) -> String {
    format!(
        "cannot stat scratch dir {}: {error}: {}",
        dir.display(),
        hints::scratch_tmpfs(place, dir)
    )
}

pub(super) fn scratch_mode(
    place: Environment,
    dir: &Path,
    metadata: &std::io::Result<Metadata>,
) -> Check {
    const ID: &str = "scratch.mode";
    let shown = dir.display();
    match metadata {
        Err(error) => Check::fail(ID, unreadable_scratch(place, dir, error)),
        Ok(metadata) if !metadata.is_dir() => {
            Check::fail(ID, format!("scratch dir {shown} is not a directory"))
        }
        Ok(metadata) => {
            let mode = mode_of(metadata);
            match scratch_mode_problem(mode) {
                None => Check::pass(ID, format!("scratch dir {shown} has mode {mode:04o}")),
                Some(problem) => Check::fail(
                    ID,
                    format!(
                        "scratch dir {shown} has mode {mode:04o}: {problem}; {}",
                        hints::scratch_mode(place, dir)
                    ),
                ),
            }
        }
    }
}

pub(super) fn scratch_owner(
    place: Environment,
    dir: &Path,
    metadata: &std::io::Result<Metadata>,
) -> Check {
    const ID: &str = "scratch.owner";
    let shown = dir.display();
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, unreadable_scratch(place, dir, error)),
    };
    let (uid, gid) = (metadata.uid(), metadata.gid());
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if uid == euid {
        Check::pass(
            ID,
            format!("scratch dir {shown} is owned by uid {uid}, the process's user"),
        )
    } else if gid == egid {
        Check::pass(
            ID,
            format!("scratch dir {shown} belongs to gid {gid}, the process's group"),
        )
    } else {
        Check::fail(
            ID,
            format!(
                "scratch dir {shown} is owned by {uid}:{gid}, the process runs as {euid}:{egid}: \
                 {}",
                hints::scratch_owner(place, dir)
            ),
        )
    }
}

pub(super) fn scratch_mount(place: Environment, dir: &Path) -> Check {
    const ID: &str = "scratch.mount";
    let mount = match sys::mount_containing(dir) {
        Ok(mount) => mount,
        Err(error) => {
            return Check::warn(
                ID,
                format!("cannot find the mount of the scratch dir: {error}"),
            )
        }
    };
    // tmpfs treats size=0 as "no limit".
    let size = mount.super_option("size").filter(|size| {
        size.trim_start_matches('0')
            .chars()
            .any(|c| c.is_ascii_digit())
    });
    // What is missing, as said in the detail and as the mount option to add.
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if size.is_none() {
        missing.push(("a size= limit", "size=16m"));
    }
    for flag in ["nosuid", "nodev", "noexec"] {
        if !mount.has_mount_option(flag) {
            missing.push((flag, flag));
        }
    }
    let where_ = format!("{} mount on {}", mount.fs_type, mount.mount_point.display());
    match size {
        Some(size) if missing.is_empty() => Check::pass(
            ID,
            format!("{where_} has size={size}, nosuid, nodev, noexec"),
        ),
        _ => {
            let (said, options): (Vec<&str>, Vec<&str>) = missing.into_iter().unzip();
            Check::warn(
                ID,
                format!(
                    "{where_} lacks {}: {}",
                    said.join(", "),
                    hints::scratch_mount(place, dir, &mount.mount_point, &options)
                ),
            )
        }
    }
}
