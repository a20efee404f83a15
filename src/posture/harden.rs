//! What the process does to itself at startup, before it reads any secret.
//!
//! [`harden_process`] turns core dumps off (`PR_SET_DUMPABLE` 0 and
//! `RLIMIT_CORE` 1), sets `PR_SET_NO_NEW_PRIVS`, and locks memory against
//! swap when that cannot later make allocations fail. It never aborts: each
//! step's outcome goes into a [`HardeningReport`], and the self-check turns
//! that report into pass, warn or fail with the reason and the fix. All of
//! it goes through nix's safe wrappers; there is no `unsafe` here.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};

use crate::sys::{self, ResourceLimit};

/// The outcome of one hardening step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step was applied.
    Applied,
    /// The step was attempted and failed; the text says which call and why.
    Failed(String),
    /// [`harden_process`] was not run (see [`HardeningReport::not_run`]).
    NotRun,
}

/// Whether secret memory is locked against swap, and why (not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryLock {
    /// `mlockall` succeeded; the text says what allowed it.
    Locked(String),
    /// Locking was not attempted because it could make allocations fail;
    /// the text gives the limit found and the fix.
    Skipped(String),
    /// `mlockall` was attempted and failed.
    Failed(String),
    /// [`harden_process`] was not run.
    NotRun,
}

/// What [`harden_process`] did, step by step, for the self-check to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardeningReport {
    /// `setrlimit(RLIMIT_CORE, 1, 1)`.
    pub core_limit: StepOutcome,
    /// `prctl(PR_SET_DUMPABLE, 0)`.
    pub dumpable_off: StepOutcome,
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    pub no_new_privs: StepOutcome,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, when safe.
    pub memory_lock: MemoryLock,
}

impl HardeningReport {
    /// A report for a process that has not hardened itself, for callers
    /// (and tests) that run the self-check without [`harden_process`].
    pub fn not_run() -> Self {
        Self {
            core_limit: StepOutcome::NotRun,
            dumpable_off: StepOutcome::NotRun,
            no_new_privs: StepOutcome::NotRun,
            memory_lock: MemoryLock::NotRun,
        }
    }

    /// Whether memory is locked against swap.
    pub fn memory_locked(&self) -> bool {
        matches!(self.memory_lock, MemoryLock::Locked(_))
    }
}

/// Harden the running process. Call it first thing in `main`, before any
/// secret is read and before the runtime spawns its threads (so every
/// thread inherits the settings).
pub fn harden_process() -> HardeningReport {
    HardeningReport {
        core_limit: limit_core_dumps(),
        dumpable_off: outcome(prctl::set_dumpable(false), "prctl(PR_SET_DUMPABLE, 0)"),
        no_new_privs: outcome(prctl::set_no_new_privs(), "prctl(PR_SET_NO_NEW_PRIVS, 1)"),
        memory_lock: lock_memory(),
    }
}

fn outcome(result: nix::Result<()>, call: &str) -> StepOutcome {
    match result {
        Ok(()) => StepOutcome::Applied,
        Err(errno) => StepOutcome::Failed(format!("{call}: {errno}")),
    }
}

/// Set `RLIMIT_CORE` to 1 byte, soft and hard.
///
/// Why 1 and not 0: when `core_pattern` pipes dumps to a helper
/// (`|/usr/lib/systemd/systemd-coredump`, as on most distributions) the
/// kernel ignores `RLIMIT_CORE` and hands the whole memory image to the
/// helper, except for the special value 1, which it treats as "no dumps at
/// all" for pipes (see `core(5)`). For file dumps, 1 byte is smaller than
/// the ELF header, so no file is written either. 0 would leave the pipe
/// open. Lowering the hard limit too means nothing later in the process
/// (a library, an exploit without privilege) can raise it again.
fn limit_core_dumps() -> StepOutcome {
    outcome(
        setrlimit(Resource::RLIMIT_CORE, 1, 1),
        "setrlimit(RLIMIT_CORE, 1, 1)",
    )
}

/// Why `mlockall` may be called safely, if it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockGrant {
    /// `RLIMIT_MEMLOCK` is unlimited.
    UnlimitedRlimit,
    /// The process holds `CAP_IPC_LOCK`, which lifts the limit.
    CapIpcLock,
}

/// Decide whether locking all memory is safe. With `MCL_FUTURE` every later
/// mapping must be locked too; once the locked total would pass
/// `RLIMIT_MEMLOCK`, `mmap` fails, the allocator cannot grow, and the
/// process aborts. So lock only when there is no limit to reach.
fn lock_grant(memlock_soft: Option<u64>, cap_ipc_lock: bool) -> Option<LockGrant> {
    if memlock_soft.is_none() {
        Some(LockGrant::UnlimitedRlimit)
    } else if cap_ipc_lock {
        Some(LockGrant::CapIpcLock)
    } else {
        None
    }
}

fn lock_memory() -> MemoryLock {
    let limit = match sys::memlock_limit() {
        Ok(limit) => raise_memlock_soft_limit(limit),
        Err(error) => return MemoryLock::Failed(error.to_string()),
    };
    // Without /proc the capability is unknown; assume it is absent rather
    // than risk an abort later.
    let cap_ipc_lock = sys::proc_status().is_ok_and(|status| status.has_cap_ipc_lock());
    let Some(grant) = lock_grant(limit.soft, cap_ipc_lock) else {
        let soft = limit
            .soft
            .map_or_else(|| "unlimited".to_owned(), |bytes| format!("{bytes} bytes"));
        return MemoryLock::Skipped(format!(
            "RLIMIT_MEMLOCK is {soft} and CAP_IPC_LOCK is not held, so locking all memory \
             would make allocations fail at the limit; raise the limit"
        ));
    };
    // MCL_ONFAULT: lock pages as they are first touched instead of
    // prefaulting every mapping, so reserved but unused thread stacks and
    // allocator arenas do not become resident. nix 0.30 has no constant for
    // it; libc's value is the kernel ABI.
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    match mlockall(flags) {
        Ok(()) => MemoryLock::Locked(match grant {
            LockGrant::UnlimitedRlimit => "RLIMIT_MEMLOCK is unlimited".to_owned(),
            LockGrant::CapIpcLock => "the process holds CAP_IPC_LOCK".to_owned(),
        }),
        Err(errno) => MemoryLock::Failed(format!(
            "mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT): {errno}"
        )),
    }
}

/// The soft limit may be raised up to the hard one without privilege; do so
/// when the hard limit is unlimited, so `--ulimit memlock=<n>:-1` setups
/// still lock. Returns the limit now in force.
fn raise_memlock_soft_limit(limit: ResourceLimit) -> ResourceLimit {
    if limit.soft.is_some()
        && limit.hard.is_none()
        && setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok()
    {
        return ResourceLimit {
            soft: None,
            hard: None,
        };
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_only_when_no_limit_can_be_reached() {
        assert_eq!(lock_grant(None, false), Some(LockGrant::UnlimitedRlimit));
        assert_eq!(lock_grant(None, true), Some(LockGrant::UnlimitedRlimit));
        assert_eq!(lock_grant(Some(8 << 20), true), Some(LockGrant::CapIpcLock));
        assert_eq!(lock_grant(Some(8 << 20), false), None);
        assert_eq!(lock_grant(Some(0), false), None);
    }

    #[test]
    fn a_report_that_was_not_run_is_not_locked() {
        let report = HardeningReport::not_run();
        assert!(!report.memory_locked());
        assert_eq!(report.core_limit, StepOutcome::NotRun);
        let mut locked = report.clone();
        locked.memory_lock = MemoryLock::Locked("test".to_owned());
        assert!(locked.memory_locked());
    }
}
