//! Files whose contents decide who may do what: the server certificate,
//! the client CA bundle and the policy. Whoever can write one of them can
//! make themselves a client, or give themselves every permission within
//! `--reload-interval`, so they are held to the rule the TLS key is: only
//! the owner, and groups this process is in, may write the file, and
//! nobody else may replace it in its directory.
//!
//! The self-check fails on a file that breaks the rule (so `serve` does not
//! start), and a live reload keeps such a file out, with the reason.
//!
//! Paths are followed through symlinks, as the loaders follow them: a
//! Kubernetes Secret volume is a `..data` link to a directory of the real
//! files (mode 0644 or `defaultMode`, owned by root), and those files and
//! that directory are what is checked.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Write permission for the group.
const GROUP_WRITE: u32 = 0o020;
/// Write permission for others.
const OTHER_WRITE: u32 = 0o002;
/// The sticky bit: in a directory, only a file's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// One trusted file: what it is for, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedFile {
    /// "server certificate", "client CA bundle", "policy".
    pub what: &'static str,
    /// The configured path.
    pub path: PathBuf,
}

/// The trusted files of a configuration.
pub fn files(tls: &crate::tls::ServerTlsFiles, policy: Option<&Path>) -> Vec<TrustedFile> {
    let mut files = vec![
        TrustedFile {
            what: "server certificate",
            path: tls.cert.clone(),
        },
        TrustedFile {
            what: "client CA bundle",
            path: tls.client_ca.clone(),
        },
    ];
    files.extend(policy.map(|path| TrustedFile {
        what: "policy",
        path: path.to_owned(),
    }));
    files
}

/// Why `file` may be changed by someone it should not be, if it may.
pub fn problem(file: &TrustedFile) -> Option<String> {
    let shown = file.path.display();
    let what = file.what;
    let real = match fs::canonicalize(&file.path) {
        Ok(real) => real,
        Err(error) => return Some(format!("{what} {shown}: {error}")),
    };
    let metadata = match fs::metadata(&real) {
        Ok(metadata) => metadata,
        Err(error) => return Some(format!("{what} {shown}: {error}")),
    };
    if !metadata.is_file() {
        return Some(format!("{what} {shown} is not a regular file"));
    }
    if let Some(who) = writers(&metadata, false) {
        let mode = metadata.mode() & 0o7777;
        return Some(format!(
            "{what} {shown} has mode {mode:04o}: {who} may write it, and so choose who the server trusts; chmod go-w {shown}"
        ));
    }
    let directory = real.parent().unwrap_or(Path::new("/"));
    match fs::metadata(directory) {
        Ok(dir) => writers(&dir, true).map(|who| {
            let mode = dir.mode() & 0o7777;
            format!(
                "{what} {shown} is in {} (mode {mode:04o}), where {who} may replace it; chmod go-w (or +t) that directory",
                directory.display()
            )
        }),
        Err(error) => Some(format!("{what} {shown}: directory {}: {error}", directory.display())),
    }
}

/// Who besides the owner may write (for a directory: replace entries in)
/// what `metadata` describes, if anyone.
fn writers(metadata: &fs::Metadata, directory: bool) -> Option<String> {
    let mode = metadata.mode();
    if directory && mode & STICKY != 0 {
        // Others may add files but not rename or remove the owner's.
        return None;
    }
    if mode & OTHER_WRITE != 0 {
        return Some("every user".into());
    }
    if mode & GROUP_WRITE != 0 && !in_group(metadata.gid()) {
        return Some(format!(
            "group {}, which this process is not in,",
            metadata.gid()
        ));
    }
    None
}

/// Whether this process is in group `gid` (effective or supplementary).
fn in_group(gid: u32) -> bool {
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::getegid() == gid
        || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&gid))
}

/// Every problem of `files`, one line each.
pub fn problems(files: &[TrustedFile]) -> Vec<String> {
    files.iter().filter_map(problem).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn trusted(path: &Path) -> TrustedFile {
        TrustedFile {
            what: "policy",
            path: path.to_owned(),
        }
    }

    #[test]
    fn only_the_owner_and_our_groups_may_write() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let file = dir.path().join("policy.json");
        fs::write(&file, "{}").unwrap();
        for ok in [0o600, 0o644, 0o400, 0o664] {
            chmod(&file, ok);
            assert_eq!(problem(&trusted(&file)), None, "{ok:o}");
        }
        chmod(&file, 0o666);
        let problem = problem(&trusted(&file)).unwrap();
        assert!(
            problem.contains("mode 0666: every user may write it"),
            "{problem}"
        );
        assert!(problem.contains("chmod go-w"), "{problem}");
    }

    #[test]
    fn a_directory_others_may_write_lets_them_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        fs::write(&file, "x").unwrap();
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let found = problem(&trusted(&file)).unwrap();
        assert!(found.contains("where every user may replace it"), "{found}");
        // With the sticky bit (like /tmp), only the owner may replace it.
        chmod(dir.path(), 0o1777);
        assert_eq!(problem(&trusted(&file)), None);
        chmod(dir.path(), 0o700);
    }

    #[test]
    fn links_are_followed_to_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let real = dir.path().join("real.json");
        fs::write(&real, "{}").unwrap();
        chmod(&real, 0o646);
        let link = dir.path().join("policy.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(problem(&trusted(&link)).is_some());
        chmod(&real, 0o644);
        assert_eq!(problem(&trusted(&link)), None);
        let missing = problem(&trusted(&dir.path().join("absent"))).unwrap();
        assert!(missing.contains("No such file"), "{missing}");
    }
}
