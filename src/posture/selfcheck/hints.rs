//! What to do about a check that does not pass, in the terms of the place
//! the process runs in: a plain host, a Docker (or Podman) container, or a
//! Kubernetes pod.
//!
//! Each fix names the exact flag, field or command, in backquotes, and is
//! chosen so that following it does not trade one failure for another: the
//! scratch tmpfs is offered with the owner the process runs as (Docker's
//! `--mount type=tmpfs` cannot set one, so it is never suggested), a root
//! process is told to change its user and the scratch dir's owner together
//! (the scratch fixes alone keep the owner it runs as now), and
//! Kubernetes, whose `emptyDir` is always mode 1777, is told to use a private
//! subdirectory. The tests in `tests/selfcheck.rs` and
//! `scripts/container-test` follow these hints and check that the check then
//! passes.

use std::path::{Path, PathBuf};

use crate::sys;

/// Where the process runs, as far as it can tell; it decides how a fix is
/// spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// Neither a container nor a pod that the process can recognise.
    Host,
    /// A Docker or Podman container.
    Docker,
    /// A Kubernetes pod.
    Kubernetes,
}

/// The user a root process is told to become, with the scratch dir given to
/// it: the image's `USER` (distroless's "nonroot").
pub const UNPRIVILEGED_ID: u32 = 65532;

/// Names the environment outright, for where the guess below is wrong:
/// `host`, `docker` or `kubernetes`.
pub const ENVIRONMENT_VARIABLE: &str = "TMPVAULT_SELFCHECK_ENVIRONMENT";

impl Environment {
    /// Looks at the process's surroundings: the kubelet puts
    /// `KUBERNETES_SERVICE_HOST` in every container's environment; Docker
    /// leaves `/.dockerenv` (Podman `/run/.containerenv`) and bind-mounts
    /// `/etc/hostname`. The marker file alone is not enough: some sandboxes
    /// that are not containers keep one. [`ENVIRONMENT_VARIABLE`] overrides
    /// the guess.
    pub fn detect() -> Self {
        match std::env::var(ENVIRONMENT_VARIABLE).as_deref() {
            Ok("host") => return Self::Host,
            Ok("docker") => return Self::Docker,
            Ok("kubernetes") => return Self::Kubernetes,
            _ => {}
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return Self::Kubernetes;
        }
        let marker = ["/.dockerenv", "/run/.containerenv"]
            .iter()
            .any(|file| Path::new(file).exists());
        if marker && is_mount_point(Path::new("/etc/hostname")) {
            Self::Docker
        } else {
            Self::Host
        }
    }

    /// How a fix starts: `in Docker`, `in Kubernetes`, `on this host`.
    fn place(self) -> &'static str {
        match self {
            Self::Host => "on this host",
            Self::Docker => "in Docker",
            Self::Kubernetes => "in Kubernetes",
        }
    }
}

/// Whether `path` is itself the mount point of a mount (the root of a tmpfs
/// rather than a directory inside one).
pub fn is_mount_point(path: &Path) -> bool {
    sys::mount_containing(path).is_ok_and(|mount| {
        std::fs::canonicalize(path).is_ok_and(|canonical| canonical == mount.mount_point)
    })
}

/// The user and group a fix gives the scratch dir to: the ones the process
/// runs as, which scratch.owner compares with. (For root, the process.user
/// fix moves both to [`UNPRIVILEGED_ID`].) The effective ids, not the real
/// ones: they are the same in a container, and seccomp.json allows
/// geteuid/getegid, which the checks already use, but not getuid/getgid
/// (denied, they return -1).
fn owner() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// Docker's form of the scratch tmpfs, owned by the process's user.
fn docker_tmpfs(dir: &Path) -> String {
    let (uid, gid) = owner();
    format!(
        "docker run `--tmpfs {}:size=16m,mode=1770,uid={uid},gid={gid}` (compose: `tmpfs: \
         [\"{}:size=16m,mode=1770,uid={uid},gid={gid}\"]`; not --mount type=tmpfs, which cannot \
         set the owner)",
        dir.display(),
        dir.display()
    )
}

/// Kubernetes' form: an `emptyDir` in memory, mounted at the parent of the
/// scratch dir, and the scratch dir a private subdirectory of it (the
/// `emptyDir` itself is 1777, which scratch.mode refuses).
fn kubernetes_tmpfs(dir: &Path) -> String {
    let (mount, private) = kubernetes_layout(dir);
    let (uid, _) = owner();
    format!(
        "mount an `emptyDir: {{medium: Memory, sizeLimit: 16Mi}}` at {} and make {} in it with an \
         init container that runs `mkdir -p -m 0700 {}` as `runAsUser: {uid}`, then \
         `--scratch-dir {}` (the emptyDir itself is mode 1777; see k8s/deployment.yaml)",
        mount.display(),
        private.display(),
        private.display(),
        private.display()
    )
}

/// Where the `emptyDir` goes and which private directory tmpvault uses: the
/// scratch dir's parent and the scratch dir, unless the scratch dir is at
/// the top (`/scratch`), which then becomes the mount and gets a
/// `tmpvault` subdirectory.
fn kubernetes_layout(dir: &Path) -> (PathBuf, PathBuf) {
    match dir.parent() {
        Some(parent) if parent != Path::new("/") && parent != Path::new("") => {
            (parent.to_owned(), dir.to_owned())
        }
        _ => (dir.to_owned(), dir.join("tmpvault")),
    }
}

/// A host's form: a tmpfs of its own, private, limited and owned by the
/// process's user, with every option scratch.mount asks for.
fn host_tmpfs(dir: &Path) -> String {
    let (uid, gid) = owner();
    format!(
        "`sudo mkdir -p {dir} && sudo mount -t tmpfs -o \
         size=16m,mode=0700,uid={uid},gid={gid},nosuid,nodev,noexec tmpfs {dir}`",
        dir = dir.display()
    )
}

/// The fix for a scratch dir that is not a tmpfs, or does not exist.
pub fn scratch_tmpfs(environment: Environment, dir: &Path) -> String {
    let fix = match environment {
        Environment::Host => host_tmpfs(dir),
        Environment::Docker => docker_tmpfs(dir),
        Environment::Kubernetes => kubernetes_tmpfs(dir),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a scratch dir others may enter.
pub fn scratch_mode(environment: Environment, dir: &Path) -> String {
    let chmod = format!("`chmod 0700 {}`", dir.display());
    let fix = match environment {
        Environment::Host => chmod,
        // The root of a tmpfs gets its mode from the mount options.
        Environment::Docker if is_mount_point(dir) => docker_tmpfs(dir),
        Environment::Kubernetes if is_mount_point(dir) => kubernetes_tmpfs(dir),
        Environment::Docker | Environment::Kubernetes => chmod,
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a scratch dir that belongs to someone else.
pub fn scratch_owner(environment: Environment, dir: &Path) -> String {
    let (uid, gid) = owner();
    let chown = format!("`sudo chown {uid}:{gid} {}`", dir.display());
    let fix = match environment {
        Environment::Host => chown,
        Environment::Docker if is_mount_point(dir) => docker_tmpfs(dir),
        Environment::Kubernetes => kubernetes_tmpfs(dir),
        Environment::Docker => chown,
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a scratch mount without a size limit or without
/// `nosuid,nodev,noexec`; `missing` are the mount options to add.
pub fn scratch_mount(
    environment: Environment,
    dir: &Path,
    mount_point: &Path,
    missing: &[&str],
) -> String {
    let fix = match environment {
        // /dev/shm is shared with everything else on the machine: give
        // tmpvault a tmpfs of its own rather than change it.
        Environment::Host if mount_point == Path::new("/dev/shm") => {
            format!("a tmpfs of its own: {}", host_tmpfs(dir))
        }
        Environment::Host => format!(
            "`sudo mount -o remount,{} {}`",
            missing.join(","),
            mount_point.display()
        ),
        Environment::Docker => format!(
            "{} (--tmpfs adds nosuid,nodev,noexec itself)",
            docker_tmpfs(mount_point)
        ),
        Environment::Kubernetes => "set `sizeLimit` on the emptyDir for size=; the kubelet \
                                    offers no nosuid,nodev,noexec for an emptyDir, so this warning \
                                    stays"
            .to_owned(),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for running as root. The scratch dir goes to the new user in
/// the same step, or scratch.owner would fail next.
pub fn process_user(environment: Environment, dir: &Path) -> String {
    let id = UNPRIVILEGED_ID;
    let fix = match environment {
        Environment::Host => format!(
            "run as a user that owns {dir} and can read the key files, e.g. `sudo chown \
             {id}:{id} {dir}` and `setpriv --reuid={id} --regid={id} --clear-groups -- tmpvault \
             ...`",
            dir = dir.display()
        ),
        Environment::Docker => format!(
            "docker run `--user {id}:{id}` with the scratch tmpfs given to that user: `--tmpfs \
             {}:size=16m,mode=1770,uid={id},gid={id}`",
            dir.display()
        ),
        Environment::Kubernetes => format!(
            "`securityContext: {{runAsNonRoot: true, runAsUser: {id}, runAsGroup: {id}}}`, and \
             the init container that makes the scratch dir as the same user"
        ),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for effective capabilities.
pub fn process_capabilities(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => {
            "run as a non-root user (see process.user), whose effective set is empty".to_owned()
        }
        Environment::Docker => "docker run `--cap-drop ALL`".to_owned(),
        Environment::Kubernetes => "`securityContext: {capabilities: {drop: [ALL]}}`".to_owned(),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for no_new_privs not being set.
pub fn process_no_new_privs(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => "`setpriv --no-new-privs -- tmpvault ...`",
        Environment::Docker => "docker run `--security-opt no-new-privileges`",
        Environment::Kubernetes => "`securityContext: {allowPrivilegeEscalation: false}`",
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for no seccomp filter.
pub fn process_seccomp(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => {
            "run it in a container with the shipped profile (docker run \
                              `--security-opt seccomp=seccomp.json`), or under systemd with \
                              `SystemCallFilter=@system-service`"
        }
        Environment::Docker => {
            "docker run `--security-opt seccomp=seccomp.json` (the \
                                repository's profile; it assumes --security-opt \
                                no-new-privileges)"
        }
        Environment::Kubernetes => {
            "`securityContext: {seccompProfile: {type: Localhost, \
                                    localhostProfile: profiles/tmpvault.json}}`, with \
                                    seccomp.json installed on the node (k8s/README.md)"
        }
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a missing memory limit.
pub fn memory_limit(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => "`systemd-run --scope -p MemoryMax=64M -- tmpvault ...`",
        Environment::Docker => "docker run `--memory 64m`",
        Environment::Kubernetes => "`resources: {limits: {memory: 64Mi}}`",
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a writable root filesystem.
pub fn read_only_root(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => {
            "run it in a container with docker run `--read-only`, or under systemd with \
             `ProtectSystem=strict`"
        }
        Environment::Docker => "docker run `--read-only`",
        Environment::Kubernetes => "`securityContext: {readOnlyRootFilesystem: true}`",
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for memory that could not be locked.
pub fn memory_lock(environment: Environment) -> String {
    let fix = match environment {
        Environment::Host => {
            "raise the limit before starting it: `ulimit -l unlimited` (as \
                              root) or `LimitMEMLOCK=infinity` in its systemd unit"
        }
        Environment::Docker => {
            "docker run `--ulimit memlock=-1` (compose: `ulimits: {memlock: \
                                -1}`), where the daemon may raise the limit; rootless and \
                                sandboxed daemons refuse it, and then this warning stays"
        }
        Environment::Kubernetes => {
            "pods cannot set RLIMIT_MEMLOCK; a node whose container \
                                    runtime runs with `LimitMEMLOCK=infinity` passes, otherwise \
                                    this warning stays"
        }
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a key file others may read.
pub fn key_file_mode(environment: Environment, file: &Path) -> String {
    let fix = match environment {
        Environment::Host | Environment::Docker => format!(
            "`chmod o-rwx {}` (on the host, for a mounted file)",
            file.display()
        ),
        Environment::Kubernetes => "the Secret volume's `defaultMode: 0400`".to_owned(),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a secret arena smaller than `--max-memory` (or refused) for
/// want of lockable memory: a memlock limit of `bytes`.
pub fn arena_memlock(environment: Environment, bytes: u64) -> String {
    let fix = match environment {
        Environment::Host => format!(
            "raise the limit before starting it: `ulimit -l {}` or `LimitMEMLOCK={bytes}` in its \
             systemd unit, or lower --max-memory",
            bytes.div_ceil(1024)
        ),
        Environment::Docker => format!(
            "docker run `--ulimit memlock={bytes}` (compose: `ulimits: {{memlock: {bytes}}}`), or \
             lower --max-memory"
        ),
        Environment::Kubernetes => "pods cannot set RLIMIT_MEMLOCK: lower --max-memory to the \
                                    arena's size, or run on a node whose container runtime has \
                                    `LimitMEMLOCK=infinity`"
            .to_owned(),
    };
    format!("{}, {fix}", environment.place())
}

/// The fix for a kernel or seccomp profile that refuses `memfd_secret`.
pub fn memfd_secret(environment: Environment) -> String {
    let profile = match environment {
        Environment::Host => "the service's seccomp filter",
        Environment::Docker => "`--security-opt seccomp=seccomp.json` (it allows memfd_secret)",
        Environment::Kubernetes => {
            "a `Localhost` seccompProfile from seccomp.json (a runtime's default profile may lack \
             memfd_secret)"
        }
    };
    format!(
        "{}, Linux 5.14 or later (before 6.5 with `secretmem.enable=1` on the kernel command \
         line) and {profile}",
        environment.place()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_uses_a_private_subdirectory() {
        assert_eq!(
            kubernetes_layout(Path::new("/scratch")),
            ("/scratch".into(), "/scratch/tmpvault".into())
        );
        assert_eq!(
            kubernetes_layout(Path::new("/scratch/tmpvault")),
            ("/scratch".into(), "/scratch/tmpvault".into())
        );
    }

    #[test]
    fn docker_offers_tmpfs_with_the_owner_never_mount() {
        let fix = scratch_tmpfs(Environment::Docker, Path::new("/scratch"));
        let (uid, gid) = owner();
        assert!(
            fix.contains(&format!(
                "`--tmpfs /scratch:size=16m,mode=1770,uid={uid},gid={gid}`"
            )),
            "{fix}"
        );
        assert!(!fix.contains("tmpfs-mode"), "{fix}");
        assert!(fix.starts_with("in Docker, docker run "), "{fix}");
    }

    #[test]
    fn each_place_is_named() {
        for (environment, place) in [
            (Environment::Host, "on this host, "),
            (Environment::Docker, "in Docker, "),
            (Environment::Kubernetes, "in Kubernetes, "),
        ] {
            for fix in [
                scratch_tmpfs(environment, Path::new("/scratch")),
                process_user(environment, Path::new("/scratch")),
                process_seccomp(environment),
                memory_limit(environment),
                memory_lock(environment),
            ] {
                assert!(fix.starts_with(place), "{fix}");
            }
        }
    }
}
