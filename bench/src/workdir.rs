//! The run's private directory under `/dev/shm` and the certificates in it.
//!
//! `/dev/shm` is a tmpfs, as `tmpvault serve` requires of its scratch
//! directory, and private keys written there never reach a disk. The
//! directory (mode 0700) is removed when [`Workdir`] is dropped, or by
//! [`remove_all`] from the panic hook (release builds abort on panic, so
//! no `Drop` runs then).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use tmpvault::tls::pki::{ClientName, DevPki};
use tmpvault::tls::{ClientTlsFiles, ServerTlsFiles};

use crate::failure::{Failure, Step};

/// The directories of live workdirs, for [`remove_all`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes every live workdir: for the panic hook.
pub fn remove_all() {
    // `try_lock`: the panic may have happened while the lock was held.
    if let Ok(live) = LIVE.try_lock() {
        for path in live.iter() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// A private directory holding the CA, server and client certificates that
/// every server in the run (tmpvault, the baseline, Redis) and every client
/// use.
pub struct Workdir {
    path: PathBuf,
    pki: DevPki,
    next_subdir: AtomicU32,
}

impl Workdir {
    /// Creates `/dev/shm/tmpvault-bench-<pid>-<random>` and generates the
    /// certificates in it.
    pub fn create() -> Result<Workdir, Failure> {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random)
            .map_err(|error| error.to_string())
            .step(|| "reading randomness for the directory name".into())?;
        let name = format!(
            "tmpvault-bench-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(random)
        );
        let path = Path::new("/dev/shm").join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .step(|| format!("creating the private directory {}", path.display()))?;
        // From here on the directory exists, so a failure must remove it.
        let cleanup = Removal(path);
        let pki = DevPki::generate(&cleanup.0, &ClientName::CommonName("tmpvault-bench".into()))
            .step(|| format!("generating certificates in {}", cleanup.0.display()))?;
        let path = cleanup.disarm();
        live().push(path.clone());
        Ok(Workdir {
            path,
            pki,
            next_subdir: AtomicU32::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server's certificate, key and client CA.
    pub fn server_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.pki.server_cert.clone(),
            key: self.pki.server_key.clone(),
            client_ca: self.pki.ca_cert.clone(),
        }
    }

    /// The client's certificate, key and the CA that signed the server.
    pub fn client_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.pki.ca_cert.clone(),
            cert: self.pki.client_cert.clone(),
            key: self.pki.client_key.clone(),
        }
    }

    /// A new private (0700) directory inside this one, for one tmpvault
    /// process's `--scratch-dir` or Redis's working directory.
    pub fn subdir(&self, prefix: &str) -> Result<PathBuf, Failure> {
        let index = self.next_subdir.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{prefix}-{index}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .step(|| format!("creating {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        live().retain(|path| *path != self.path);
    }
}

/// Removes a directory on drop unless disarmed.
struct Removal(PathBuf);

impl Removal {
    /// Keeps the directory and hands back its path.
    fn disarm(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
