//! tls.*, snapshot.*, policy.*

use super::*;

pub(super) fn tls_key_file(place: Environment, key_file: Option<&Path>) -> Check {
    const ID: &str = "tls.key_file";
    let Some(path) = key_file else {
        return Check::pass(ID, "no key file configured");
    };
    let shown = path.display();
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, format!("TLS key file {shown}: {error}")),
    };
    if !metadata.is_file() {
        return Check::fail(ID, format!("TLS key file {shown} is not a regular file"));
    }
    // Opening proves the process can read it; the content is not read here.
    if let Err(error) = File::open(path) {
        return Check::fail(ID, format!("TLS key file {shown} cannot be read: {error}"));
    }
    let mode = mode_of(&metadata);
    if mode & 0o006 != 0 {
        Check::warn(
            ID,
            format!(
                "TLS key file {shown} has mode {mode:04o}, open to others: {}",
                hints::key_file_mode(place, path)
            ),
        )
    } else {
        Check::pass(ID, format!("TLS key file {shown} has mode {mode:04o}"))
    }
}

/// How a snapshot key file's content encodes the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyEncoding {
    Raw,
    Base64,
}

/// Recognise a 32-byte key by the loader's own rule
/// ([`crate::persist::snapshot::SnapshotKey::parse`]: exactly 32 raw bytes, or base64
/// text, standard or URL-safe, padded or not, one trailing newline allowed,
/// that decodes to 32 bytes), so that what the self-check accepts loads.
/// The decoded key is wiped as it is dropped.
pub(super) fn key_encoding(content: &[u8]) -> Option<KeyEncoding> {
    crate::persist::snapshot::SnapshotKey::parse(content)?;
    Some(if content.len() == SNAPSHOT_KEY_LEN {
        KeyEncoding::Raw
    } else {
        KeyEncoding::Base64
    })
}

pub(super) fn snapshot_key(
    input: &Input<'_>,
    scratch_magic: &Result<u64, sys::SysinfoError>,
) -> Check {
    const ID: &str = "snapshot.key";
    match input.snapshot {
        SnapshotSetting::Off => Check::pass(ID, "snapshots off"),
        SnapshotSetting::Plain => match scratch_magic {
            Ok(magic) if *magic == TMPFS_MAGIC => {
                Check::pass(ID, "plaintext snapshots, kept on the tmpfs scratch dir")
            }
            _ => Check::fail(
                ID,
                format!(
                    "plaintext snapshots are refused outside tmpfs, and scratch dir {} is not on \
                     tmpfs: use --snapshot encrypted or a tmpfs scratch dir",
                    input.scratch_dir.display()
                ),
            ),
        },
        SnapshotSetting::Encrypted => match input.snapshot_key_file {
            None => Check::fail(
                ID,
                "--snapshot encrypted needs --snapshot-key-file (make one with tmpvault keygen \
                 --out FILE)",
            ),
            Some(path) => encrypted_snapshot_key(path),
        },
    }
}

pub(super) fn encrypted_snapshot_key(path: &Path) -> Check {
    const ID: &str = "snapshot.key";
    let shown = path.display();
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, format!("snapshot key file {shown}: {error}")),
    };
    if !metadata.is_file() {
        return Check::fail(
            ID,
            format!("snapshot key file {shown} is not a regular file"),
        );
    }
    let mode = mode_of(&metadata);
    let mut problems = Vec::new();
    if mode & 0o077 != 0 {
        problems.push(format!(
            "mode {mode:04o} gives group/others access (chmod 0400)"
        ));
    }
    // The key is held only long enough to measure it, and wiped on drop.
    let mut content = Zeroizing::new(Vec::new());
    let encoding = match File::open(path)
        .and_then(|file| file.take(KEY_FILE_READ_LIMIT + 1).read_to_end(&mut content))
    {
        Err(error) => {
            problems.push(format!("cannot be read: {error}"));
            None
        }
        Ok(_) => {
            let encoding = key_encoding(&content);
            if encoding.is_none() {
                let size = if content.len() as u64 > KEY_FILE_READ_LIMIT {
                    format!("more than {KEY_FILE_READ_LIMIT} bytes")
                } else {
                    format!("{} bytes", content.len())
                };
                problems.push(format!(
                    "holds {size}, neither a raw 32-byte key nor base64 of one (make one with \
                     tmpvault keygen)"
                ));
            }
            encoding
        }
    };
    match encoding {
        Some(encoding) if problems.is_empty() => {
            let encoding = match encoding {
                KeyEncoding::Raw => "raw",
                KeyEncoding::Base64 => "base64",
            };
            Check::pass(
                ID,
                format!(
                    "snapshot key file {shown} holds a 32-byte key ({encoding}), mode {mode:04o}"
                ),
            )
        }
        _ => Check::fail(
            ID,
            format!("snapshot key file {shown}: {}", problems.join("; ")),
        ),
    }
}

pub(super) fn config_files(files: &[crate::tls::trusted::TrustedFile]) -> Check {
    const ID: &str = "config.files";
    let problems = crate::tls::trusted::problems(files);
    if problems.is_empty() {
        let names: Vec<_> = files.iter().map(|file| file.what).collect();
        Check::pass(
            ID,
            format!(
                "{} writable only by their owners (and this process's groups)",
                names.join(", ")
            ),
        )
    } else {
        Check::fail(ID, problems.join("; "))
    }
}

pub(super) fn policy_present(present: bool) -> Check {
    const ID: &str = "policy.present";
    if present {
        Check::pass(ID, "access policy loaded")
    } else {
        Check::warn(
            ID,
            "no --policy: every client the CA trusts may read, write, delete and list every key",
        )
    }
}

pub(super) fn config_reload(error: Option<&str>) -> Check {
    const ID: &str = "config.reload";
    match error {
        None => Check::pass(
            ID,
            "the running certificates, client CA and policy are the latest good ones",
        ),
        Some(error) => Check::warn(
            ID,
            format!(
                "the last reload failed, so the previous configuration is still in use: {error}"
            ),
        ),
    }
}
