//! /proc/self/status

use super::*;

/// The seccomp mode of a process (`Seccomp:` in `/proc/self/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeccompMode {
    /// 0: no seccomp.
    Disabled,
    /// 1: strict mode (read, write, exit only).
    Strict,
    /// 2: a BPF filter is installed.
    Filter,
    /// A value this code does not know.
    Other(u32),
}

impl SeccompMode {
    pub(super) fn from_number(value: u32) -> Self {
        match value {
            0 => Self::Disabled,
            1 => Self::Strict,
            2 => Self::Filter,
            other => Self::Other(other),
        }
    }
}

/// The fields of `/proc/self/status` the self-check reads; `None` for a
/// field that is absent or malformed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `NoNewPrivs`: whether `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: Option<bool>,
    /// `CapEff`: the effective capability set, as a bit mask.
    pub cap_eff: Option<u64>,
    /// `Seccomp`: the seccomp mode.
    pub seccomp: Option<SeccompMode>,
}

impl ProcStatus {
    /// Whether the effective set holds `CAP_IPC_LOCK` (false when unknown).
    pub fn has_cap_ipc_lock(&self) -> bool {
        self.cap_eff
            .is_some_and(|caps| caps & (1u64 << CAP_IPC_LOCK) != 0)
    }
}

/// Parse the text of `/proc/self/status`.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut status = ProcStatus::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name {
            "NoNewPrivs" => {
                status.no_new_privs = match value {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            "CapEff" => status.cap_eff = u64::from_str_radix(value, 16).ok(),
            "Seccomp" => status.seccomp = value.parse().ok().map(SeccompMode::from_number),
            _ => {}
        }
    }
    status
}

/// Read `/proc/self/status`.
pub fn proc_status() -> Result<ProcStatus, SysinfoError> {
    Ok(parse_status(&read_text(Path::new(STATUS))?))
}

/// The names of the capabilities in a mask, as Docker and Kubernetes spell
/// them (`NET_BIND_SERVICE`); bits this code does not know as `CAP_<bit>`.
pub fn capability_names(mask: u64) -> Vec<String> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    (0..64u32)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(
            |bit| match usize::try_from(bit).ok().and_then(|i| NAMES.get(i)) {
                Some(name) => (*name).to_owned(),
                None => format!("CAP_{bit}"),
            },
        )
        .collect()
}
