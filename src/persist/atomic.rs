//! Atomic files

use super::*;

/// A file written under a temp name and renamed into place by
/// [`AtomicFile::commit`]; removed if dropped before that.
pub struct AtomicFile {
    pub(super) file: File,
    pub(super) temp: PathBuf,
    pub(super) target: PathBuf,
    pub(super) committed: bool,
}

impl AtomicFile {
    /// Creates `dir/name.tmp.<random>` with `O_EXCL` and mode 0600.
    pub fn create(dir: &Path, name: &str) -> Result<AtomicFile, PersistenceError> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| {
            io_error("creating a temp file in", dir)(io::Error::other(error.to_string()))
        })?;
        let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
        let temp = dir.join(format!("{name}{TEMP_INFIX}{suffix}"));
        // O_EXCL refuses any existing name, a planted link included.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOCTTY)
            .open(&temp)
            .map_err(io_error("creating", &temp))?;
        Ok(AtomicFile {
            file,
            temp,
            target: dir.join(name),
            committed: false,
        })
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// fsync the file, rename it into place, fsync the directory.
    pub fn commit(mut self) -> Result<(), PersistenceError> {
        self.file
            .sync_all()
            .map_err(io_error("syncing", &self.temp))?;
        fs::rename(&self.temp, &self.target).map_err(io_error("renaming", &self.temp))?;
        self.committed = true;
        sync_dir(&self.target)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// fsync the directory holding `path`, so a rename or removal in it lasts.
pub(super) fn sync_dir(path: &Path) -> Result<(), PersistenceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the directory", dir))
}
