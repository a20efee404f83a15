//! Resource limits and dumpability

use super::*;

/// A resource limit; `None` means unlimited (`RLIM_INFINITY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimit {
    /// The limit the kernel enforces.
    pub soft: Option<u64>,
    /// The ceiling the soft limit may be raised to without privilege.
    pub hard: Option<u64>,
}

pub(super) fn limit_value(raw: libc::rlim_t) -> Option<u64> {
    (raw != RLIM_INFINITY).then_some(raw)
}

pub(super) fn resource_limit(
    resource: Resource,
    call: &'static str,
) -> Result<ResourceLimit, SysinfoError> {
    let (soft, hard) = getrlimit(resource).map_err(|source| SysinfoError::Call { call, source })?;
    Ok(ResourceLimit {
        soft: limit_value(soft),
        hard: limit_value(hard),
    })
}

/// `RLIMIT_MEMLOCK`: how many bytes the process may lock.
pub fn memlock_limit() -> Result<ResourceLimit, SysinfoError> {
    resource_limit(Resource::RLIMIT_MEMLOCK, "getrlimit(RLIMIT_MEMLOCK)")
}

/// `RLIMIT_CORE`: the largest core file the kernel will write.
pub fn core_limit() -> Result<ResourceLimit, SysinfoError> {
    resource_limit(Resource::RLIMIT_CORE, "getrlimit(RLIMIT_CORE)")
}

/// `PR_GET_DUMPABLE`: whether the process may dump core (and be ptraced by
/// its own user).
pub fn dumpable() -> Result<bool, SysinfoError> {
    nix::sys::prctl::get_dumpable().map_err(|source| SysinfoError::Call {
        call: "prctl(PR_GET_DUMPABLE)",
        source,
    })
}
