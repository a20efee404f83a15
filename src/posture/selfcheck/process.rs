//! process.*, host.*, cgroup.*, rootfs.*

use super::*;

pub(super) fn process_user(
    place: Environment,
    scratch: &Path,
    euid: u32,
    context: Context,
    allow_root: bool,
) -> Check {
    const ID: &str = "process.user";
    let fix = hints::process_user(place, scratch);
    if euid != 0 {
        return Check::pass(ID, format!("running as uid {euid}"));
    }
    match (context, allow_root) {
        (Context::Dev, _) => Check::warn(
            ID,
            format!("running as root: acceptable for tmpvault dev, never in production; {fix}"),
        ),
        (Context::Serve | Context::Selfcheck, true) => Check::warn(
            ID,
            format!("running as root, allowed by --allow-root: {fix}"),
        ),
        (Context::Serve | Context::Selfcheck, false) => {
            Check::fail(ID, format!("running as root: {fix}; or pass --allow-root"))
        }
    }
}

/// The failures among hardening steps, for a detail; empty when none.
pub(super) fn step_failures(steps: &[(&str, &StepOutcome)]) -> String {
    steps
        .iter()
        .filter_map(|(name, outcome)| match outcome {
            StepOutcome::Applied => None,
            StepOutcome::Failed(reason) => Some(reason.clone()),
            StepOutcome::NotRun => Some(format!("{name} was not run")),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn process_core_dumps(hardening: &HardeningReport) -> Check {
    const ID: &str = "process.core_dumps";
    let dumpable = sys::dumpable();
    let core_limit = sys::core_limit();
    let pattern = match sys::core_pattern() {
        Ok(pattern) if sys::core_pattern_is_pipe(&pattern) => {
            "core_pattern pipes to a helper, which the limit of 1 also stops"
        }
        Ok(_) => "core_pattern writes files",
        Err(_) => "core_pattern unreadable",
    };
    let dumpable_text = match &dumpable {
        Ok(true) => "dumpable 1".to_owned(),
        Ok(false) => "dumpable 0".to_owned(),
        Err(error) => error.to_string(),
    };
    let limit_text = match &core_limit {
        Ok(limit) => match limit.soft {
            Some(bytes) => format!("RLIMIT_CORE {bytes}"),
            None => "RLIMIT_CORE unlimited".to_owned(),
        },
        Err(error) => error.to_string(),
    };
    let off = matches!(dumpable, Ok(false))
        && matches!(&core_limit, Ok(limit) if limit.soft.is_some_and(|bytes| bytes <= 1));
    if off {
        Check::pass(
            ID,
            format!("core dumps off: {dumpable_text}, {limit_text} ({pattern})"),
        )
    } else {
        let failures = step_failures(&[
            ("setrlimit(RLIMIT_CORE)", &hardening.core_limit),
            ("prctl(PR_SET_DUMPABLE)", &hardening.dumpable_off),
        ]);
        let why = if failures.is_empty() {
            String::new()
        } else {
            format!(" ({failures})")
        };
        Check::fail(
            ID,
            format!(
                "core dumps possible: {dumpable_text}, {limit_text}; the process's own hardening \
                 did not hold{why}: allow prctl and prlimit64 in the seccomp profile"
            ),
        )
    }
}

pub(super) fn process_memory_lock(place: Environment, lock: &MemoryLock) -> Check {
    const ID: &str = "process.memory_lock";
    let fix = hints::memory_lock(place);
    match lock {
        MemoryLock::Locked(why) => Check::pass(
            ID,
            format!("memory locked against swap with mlockall ({why})"),
        ),
        MemoryLock::Skipped(reason) | MemoryLock::Failed(reason) => {
            Check::warn(ID, format!("memory not locked: {reason}: {fix}"))
        }
        MemoryLock::NotRun => Check::warn(
            ID,
            "memory not locked: the process did not run its hardening step",
        ),
    }
}

pub(super) fn host_swap(
    place: Environment,
    swap: Result<u64, sys::SysinfoError>,
    memory_locked: bool,
) -> Check {
    const ID: &str = "host.swap";
    match swap {
        Err(error) => Check::warn(ID, format!("cannot tell whether swap is on: {error}")),
        Ok(0) => Check::pass(ID, "swap is off"),
        Ok(bytes) if memory_locked => Check::pass(
            ID,
            format!(
                "swap is on ({}), but memory is locked so secrets stay in RAM",
                human_bytes(bytes)
            ),
        ),
        Ok(bytes) => Check::warn(
            ID,
            format!(
                "swap is on ({}) and memory is not locked, so secrets may be written to swap: \
                 turn swap off (`swapoff -a`) or allow locking: {}",
                human_bytes(bytes),
                hints::memory_lock(place)
            ),
        ),
    }
}

pub(super) fn process_no_new_privs(
    place: Environment,
    status: &Result<sys::ProcStatus, sys::SysinfoError>,
    step: &StepOutcome,
) -> Check {
    const ID: &str = "process.no_new_privs";
    match status.as_ref().map(|status| status.no_new_privs) {
        Ok(Some(true)) => Check::pass(ID, "no_new_privs is set"),
        Ok(Some(false)) => {
            let why = step_failures(&[("prctl(PR_SET_NO_NEW_PRIVS)", step)]);
            Check::warn(
                ID,
                format!(
                    "no_new_privs is not set ({why}): {}",
                    hints::process_no_new_privs(place)
                ),
            )
        }
        Ok(None) => Check::warn(ID, "no readable NoNewPrivs line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read NoNewPrivs: {error}")),
    }
}

pub(super) fn process_capabilities(
    place: Environment,
    status: &Result<sys::ProcStatus, sys::SysinfoError>,
) -> Check {
    const ID: &str = "process.capabilities";
    match status.as_ref().map(|status| status.cap_eff) {
        Ok(Some(0)) => Check::pass(ID, "effective capability set is empty"),
        Ok(Some(caps)) => Check::warn(
            ID,
            format!(
                "effective capabilities {caps:#018x} ({}): {}",
                sys::capability_names(caps).join(", "),
                hints::process_capabilities(place)
            ),
        ),
        Ok(None) => Check::warn(ID, "no readable CapEff line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read CapEff: {error}")),
    }
}

pub(super) fn process_seccomp(
    place: Environment,
    status: &Result<sys::ProcStatus, sys::SysinfoError>,
) -> Check {
    const ID: &str = "process.seccomp";
    let fix = hints::process_seccomp(place);
    match status.as_ref().map(|status| status.seccomp) {
        Ok(Some(SeccompMode::Filter)) => Check::pass(ID, "a seccomp filter is active"),
        Ok(Some(SeccompMode::Disabled)) => Check::warn(ID, format!("no seccomp filter: {fix}")),
        Ok(Some(SeccompMode::Strict)) => Check::warn(
            ID,
            format!("seccomp is in strict mode, not a filter: {fix}"),
        ),
        Ok(Some(SeccompMode::Other(mode))) => {
            Check::warn(ID, format!("unknown seccomp mode {mode}: {fix}"))
        }
        Ok(None) => Check::warn(ID, "no readable Seccomp line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read the seccomp mode: {error}")),
    }
}

pub(super) fn cgroup_memory_limit(
    place: Environment,
    cgroup: Result<sys::CgroupMemory, sys::SysinfoError>,
    max_memory: u64,
) -> Check {
    const ID: &str = "cgroup.memory_limit";
    let fix = hints::memory_limit(place);
    let budget = human_bytes(max_memory);
    match cgroup {
        Err(error) => Check::warn(
            ID,
            format!("cannot read the cgroup memory limit ({error}): {fix}"),
        ),
        Ok(cgroup) => match cgroup.limit {
            None => Check::warn(
                ID,
                format!(
                    "no cgroup memory limit ({} is unlimited): {fix}",
                    cgroup.file.display()
                ),
            ),
            Some(limit) if max_memory <= limit => Check::pass(
                ID,
                format!(
                    "--max-memory {budget} fits in the cgroup memory limit {} ({})",
                    human_bytes(limit),
                    cgroup.file.display()
                ),
            ),
            Some(limit) => Check::fail(
                ID,
                format!(
                    "--max-memory {budget} exceeds the cgroup memory limit {} ({}): the OOM \
                     killer would strike before the budget does; `--max-memory {}` or less (or \
                     leave it out: the default is half the limit), or raise the limit",
                    human_bytes(limit),
                    cgroup.file.display(),
                    suggested_budget(limit)
                ),
            ),
        },
    }
}

/// Half of a cgroup limit, spelled as `--max-memory` reads it (`32MiB`,
/// or plain bytes when it is not a whole number of MiB).
pub(super) fn suggested_budget(limit: u64) -> String {
    let half = limit / 2;
    if half >= 1 << 20 && half % (1 << 20) == 0 {
        format!("{}MiB", half >> 20)
    } else {
        half.to_string()
    }
}

pub(super) fn rootfs_read_only(
    place: Environment,
    read_only: Result<bool, sys::SysinfoError>,
) -> Check {
    const ID: &str = "rootfs.read_only";
    match read_only {
        Ok(true) => Check::pass(ID, "/ is mounted read-only"),
        Ok(false) => Check::warn(
            ID,
            format!("/ is mounted read-write: {}", hints::read_only_root(place)),
        ),
        Err(error) => Check::warn(ID, format!("cannot tell whether / is read-only: {error}")),
    }
}

pub(super) fn memory_secret_arena(
    place: Environment,
    arena: &ArenaReport,
    max_memory: u64,
) -> Check {
    const ID: &str = "memory.secret_arena";
    let size = human_bytes(arena.capacity);
    let refused = if arena.refused.is_empty() {
        String::new()
    } else {
        format!(" ({})", arena.refused.join("; "))
    };
    // A refusal for want of lockable memory names the limit that fits.
    let memlock = || hints::arena_memlock(place, max_memory);
    let short_of_memlock = arena.refused.iter().any(|why| {
        why.contains("RLIMIT_MEMLOCK") || why.contains("os error 11") || why.contains("os error 12")
    });
    match arena.mode {
        ArenaMode::MemfdSecret => {
            let mut detail = format!(
                "values live in a memfd_secret arena of {size} ({}), which even root cannot \
                 read through /proc/PID/mem, never swapped or dumped",
                arena.sized_by
            );
            if arena.capacity < max_memory {
                let _ = write!(
                    detail,
                    "; it is smaller than --max-memory {}, so writes past {size} of values get \
                     507: {}",
                    human_bytes(max_memory),
                    memlock()
                );
            }
            Check::pass(ID, detail)
        }
        ArenaMode::Mlock => Check::warn(
            ID,
            format!(
                "values live in an mlocked mapping of {size} ({}), never swapped or dumped but \
                 readable by root through /proc/PID/mem; memfd_secret was refused{refused}: {}",
                arena.sized_by,
                hints::memfd_secret(place)
            ),
        ),
        ArenaMode::Heap if arena.setting == SecretArena::Heap => Check::warn(
            ID,
            "values live on the heap (wiped on free), as --secret-arena heap asks: drop the flag \
             for a memfd_secret arena",
        ),
        ArenaMode::Heap => Check::warn(
            ID,
            format!(
                "values live on the heap (wiped on free), readable by root and swappable unless \
                 memory is locked: no \
                 arena could be mapped{refused}: {}",
                if short_of_memlock {
                    memlock()
                } else {
                    hints::memfd_secret(place)
                }
            ),
        ),
    }
}
