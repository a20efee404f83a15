//! The files present

use super::*;

/// The persistence files found in the scratch dir.
#[derive(Debug, Default)]
pub(super) struct Files {
    pub(super) snapshot: Option<PathBuf>,
    pub(super) journals: BTreeMap<u64, PathBuf>,
    pub(super) temps: Vec<PathBuf>,
}

impl Files {
    pub(super) fn scan(dir: &Path) -> Result<Files, PersistenceError> {
        let mut files = Files::default();
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if !name.starts_with("tmpvault.") || name.ends_with(DISCARDED_SUFFIX) {
                continue;
            }
            if name.contains(TEMP_INFIX) {
                files.temps.push(path);
            } else if name == SNAPSHOT_FILE {
                files.snapshot = Some(path);
            } else if let Some(generation) = name
                .strip_prefix(JOURNAL_PREFIX)
                .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse().ok())
            {
                files.journals.insert(generation, path);
            }
        }
        Ok(files)
    }

    /// The highest generation any file here names or belongs to.
    pub(super) fn last_generation(&self, snapshot_generation: Option<u64>) -> u64 {
        let journals = self.journals.keys().next_back().copied().unwrap_or(0);
        journals.max(snapshot_generation.unwrap_or(0))
    }

    /// Moves the snapshot and journals aside (`--snapshot-on-error=discard`).
    pub(super) fn discard(&self) {
        for path in self.snapshot.iter().chain(self.journals.values()) {
            let mut aside = path.clone().into_os_string();
            aside.push(DISCARDED_SUFFIX);
            match fs::rename(path, &aside) {
                Ok(()) => tracing::error!(
                    file = %path.display(),
                    moved_to = %Path::new(&aside).display(),
                    "DISCARDED: moved aside, its secrets are not restored"
                ),
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "could not move aside");
                }
            }
        }
    }

    /// Removes the temp files an interrupted write left behind.
    pub(super) fn remove_temps(&self) {
        for temp in &self.temps {
            match fs::remove_file(temp) {
                Ok(()) => tracing::info!(
                    file = %temp.display(),
                    "removed a temp file left by an interrupted write"
                ),
                Err(error) => tracing::warn!(file = %temp.display(), %error, "could not remove"),
            }
        }
    }
}

pub(super) fn file_len(file: &File, path: &Path) -> Result<u64, PersistenceError> {
    file.metadata()
        .map(|metadata| metadata.len())
        .map_err(io_error("reading", path))
}
