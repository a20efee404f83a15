use super::*;

const H: Environment = Environment::Host;

#[test]
fn statuses_order_worst_last() {
    assert!(Status::Pass < Status::Warn && Status::Warn < Status::Fail);
    let report = Report::new(vec![
        Check::pass("a", "x"),
        Check::fail("b", "y"),
        Check::warn("c", "z"),
    ]);
    assert_eq!(report.status, Status::Fail);
    assert_eq!(Report::new(Vec::new()).status, Status::Pass);
}

#[test]
fn passes_honours_strict() {
    let warn = Report::new(vec![Check::pass("a", ""), Check::warn("b", "")]);
    assert!(warn.passes(false));
    assert!(!warn.passes(true));
    let pass = Report::new(vec![Check::pass("a", "")]);
    assert!(pass.passes(true));
    let fail = Report::new(vec![Check::fail("a", "")]);
    assert!(!fail.passes(false));
}

#[test]
fn json_has_the_contract_shape() {
    let report = Report::new(vec![
        Check::pass("scratch.tmpfs", "on tmpfs"),
        Check::warn("policy.present", "no \"policy\""),
    ]);
    let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap_or_default();
    assert_eq!(
        value,
        serde_json::json!({
            "status": "warn",
            "checks": [
                {"id": "scratch.tmpfs", "status": "pass", "detail": "on tmpfs"},
                {"id": "policy.present", "status": "warn", "detail": "no \"policy\""},
            ]
        })
    );
}

#[test]
fn table_is_aligned() {
    let report = Report::new(vec![
        Check::pass("a", "first"),
        Check::fail("longer.id", "second"),
    ]);
    let table = report.render_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "tmpvault self-check: FAIL (1 pass, 0 warn, 1 fail)"
    );
    assert_eq!(lines[1], "STATUS  CHECK      DETAIL");
    assert_eq!(lines[2], "PASS    a          first");
    assert_eq!(lines[3], "FAIL    longer.id  second");
    assert_eq!(lines.len(), 4);
}

#[test]
fn details_stay_on_one_line() {
    let check = Check::fail("x", "dir /a\nb\u{1b}[31m");
    assert_eq!(check.detail, "dir /a\\nb\\u{1b}[31m");
}

#[test]
fn scratch_modes() {
    for mode in [0o700, 0o750, 0o740, 0o1770, 0o1750, 0o2750, 0o500] {
        assert_eq!(scratch_mode_problem(mode), None, "{mode:o}");
    }
    for mode in [0o777, 0o1777, 0o755, 0o770, 0o701, 0o704, 0o2770, 0o720] {
        assert!(scratch_mode_problem(mode).is_some(), "{mode:o}");
    }
}

#[test]
fn root_is_judged_by_context() {
    assert_eq!(
        process_user(H, Path::new("/scratch"), 1000, Context::Serve, false).status,
        Status::Pass
    );
    assert_eq!(
        process_user(H, Path::new("/scratch"), 0, Context::Serve, false).status,
        Status::Fail
    );
    assert_eq!(
        process_user(H, Path::new("/scratch"), 0, Context::Selfcheck, false).status,
        Status::Fail
    );
    assert_eq!(
        process_user(H, Path::new("/scratch"), 0, Context::Serve, true).status,
        Status::Warn
    );
    assert_eq!(
        process_user(H, Path::new("/scratch"), 0, Context::Dev, false).status,
        Status::Warn
    );
    assert!(
        process_user(H, Path::new("/scratch"), 0, Context::Serve, false)
            .detail
            .contains("--allow-root")
    );
}

fn arena(mode: ArenaMode, capacity: u64, sized_by: &str, refused: &[&str]) -> ArenaReport {
    ArenaReport {
        setting: SecretArena::Auto,
        mode,
        capacity,
        sized_by: sized_by.to_owned(),
        refused: refused.iter().map(|why| (*why).to_owned()).collect(),
    }
}

#[test]
fn secret_arena_passes_only_for_memfd_secret() {
    let full = arena(ArenaMode::MemfdSecret, 64 << 20, "--max-memory 64 MiB", &[]);
    let check = memory_secret_arena(H, &full, 64 << 20);
    assert_eq!(check.status, Status::Pass);
    assert_eq!(
        check.detail,
        "values live in a memfd_secret arena of 64 MiB (--max-memory 64 MiB), which even root \
         cannot read through /proc/PID/mem, never swapped or dumped"
    );

    // Smaller than the budget: still a pass, with the 507 and the limit that fits.
    let capped = arena(ArenaMode::MemfdSecret, 8 << 20, "RLIMIT_MEMLOCK 8 MiB", &[]);
    let check = memory_secret_arena(Environment::Docker, &capped, 32 << 20);
    assert_eq!(check.status, Status::Pass);
    assert!(
        check.detail.contains("writes past 8 MiB of values get 507")
            && check.detail.contains("`--ulimit memlock=33554432`"),
        "{}",
        check.detail
    );

    let refused = "memfd_secret: Function not implemented (os error 38)";
    let mlock = arena(
        ArenaMode::Mlock,
        8 << 20,
        "RLIMIT_MEMLOCK 8 MiB",
        &[refused],
    );
    let check = memory_secret_arena(Environment::Kubernetes, &mlock, 32 << 20);
    assert_eq!(check.status, Status::Warn);
    assert!(
        check
            .detail
            .starts_with("values live in an mlocked mapping of 8 MiB")
            && check.detail.contains(refused)
            && check.detail.contains("`Localhost` seccompProfile"),
        "{}",
        check.detail
    );

    // The heap for want of lockable memory names the memlock fix; chosen
    // by flag, it names the flag.
    let why = "RLIMIT_MEMLOCK 0 bytes is less than one 64 KiB block";
    let heap = arena(ArenaMode::Heap, 0, why, &[why]);
    let check = memory_secret_arena(H, &heap, 256 << 20);
    assert_eq!(check.status, Status::Warn);
    assert!(
        check.detail.contains("`ulimit -l 262144`"),
        "{}",
        check.detail
    );
    let chosen = ArenaReport {
        setting: SecretArena::Heap,
        ..arena(ArenaMode::Heap, 0, "--secret-arena heap", &[])
    };
    let check = memory_secret_arena(H, &chosen, 256 << 20);
    assert_eq!(check.status, Status::Warn);
    assert!(
        check.detail.contains("as --secret-arena heap asks"),
        "{}",
        check.detail
    );
}

#[test]
fn memory_lock_and_swap() {
    let locked = MemoryLock::Locked("RLIMIT_MEMLOCK is unlimited".to_owned());
    assert_eq!(process_memory_lock(H, &locked).status, Status::Pass);
    let skipped = MemoryLock::Skipped("limit 8 MiB".to_owned());
    let check = process_memory_lock(H, &skipped);
    assert_eq!(check.status, Status::Warn);
    assert!(
        check.detail.contains("`ulimit -l unlimited`"),
        "{}",
        check.detail
    );
    let check = process_memory_lock(Environment::Docker, &skipped);
    assert!(
        check.detail.contains("`--ulimit memlock=-1`"),
        "{}",
        check.detail
    );
    assert_eq!(
        process_memory_lock(H, &MemoryLock::NotRun).status,
        Status::Warn
    );

    assert_eq!(host_swap(H, Ok(0), false).status, Status::Pass);
    let check = host_swap(H, Ok(1 << 30), true);
    assert_eq!(check.status, Status::Pass);
    assert!(check.detail.contains("locked"));
    assert_eq!(host_swap(H, Ok(1 << 30), false).status, Status::Warn);
}

fn status_with(
    cap_eff: Option<u64>,
    seccomp: Option<SeccompMode>,
    no_new_privs: Option<bool>,
) -> Result<sys::ProcStatus, sys::SysinfoError> {
    Ok(sys::ProcStatus {
        no_new_privs,
        cap_eff,
        seccomp,
    })
}

#[test]
fn status_checks() {
    let applied = StepOutcome::Applied;
    assert_eq!(
        process_no_new_privs(H, &status_with(None, None, Some(true)), &applied).status,
        Status::Pass
    );
    assert_eq!(
        process_no_new_privs(H, &status_with(None, None, Some(false)), &applied).status,
        Status::Warn
    );
    assert_eq!(
        process_no_new_privs(H, &status_with(None, None, None), &applied).status,
        Status::Warn
    );
    assert_eq!(
        process_capabilities(H, &status_with(Some(0), None, None)).status,
        Status::Pass
    );
    let check = process_capabilities(H, &status_with(Some(1 << 10), None, None));
    assert_eq!(check.status, Status::Warn);
    assert!(check
        .detail
        .contains("0x0000000000000400 (NET_BIND_SERVICE)"));
    assert_eq!(
        process_seccomp(H, &status_with(None, Some(SeccompMode::Filter), None)).status,
        Status::Pass
    );
    assert_eq!(
        process_seccomp(H, &status_with(None, Some(SeccompMode::Disabled), None)).status,
        Status::Warn
    );
    let unreadable = Err(sys::SysinfoError::NoMount { path: "/x".into() });
    assert_eq!(process_seccomp(H, &unreadable).status, Status::Warn);
}

#[test]
fn cgroup_limit_against_budget() {
    let cgroup = |limit| {
        Ok(sys::CgroupMemory {
            version: sys::CgroupVersion::V2,
            limit,
            file: "/sys/fs/cgroup/memory.max".into(),
        })
    };
    let check = cgroup_memory_limit(H, cgroup(Some(512 << 20)), 256 << 20);
    assert_eq!(check.status, Status::Pass);
    assert!(check.detail.contains("256 MiB"));
    assert!(check.detail.contains("512 MiB"));
    assert_eq!(
        cgroup_memory_limit(H, cgroup(Some(256 << 20)), 256 << 20).status,
        Status::Pass
    );
    let check = cgroup_memory_limit(H, cgroup(Some(128 << 20)), 256 << 20);
    assert_eq!(check.status, Status::Fail);
    assert!(check.detail.contains("OOM"));
    assert!(
        check.detail.contains("`--max-memory 64MiB`"),
        "{}",
        check.detail
    );
    assert_eq!(
        cgroup_memory_limit(H, cgroup(None), 256 << 20).status,
        Status::Warn
    );
}

#[test]
fn human_bytes_reads_well() {
    assert_eq!(human_bytes(0), "0 bytes");
    assert_eq!(human_bytes(1023), "1023 bytes");
    assert_eq!(human_bytes(1024), "1 KiB");
    assert_eq!(human_bytes(256 << 20), "256 MiB");
    assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
}

#[test]
fn recognises_key_encodings() {
    assert_eq!(key_encoding(&[0u8; 32]), Some(KeyEncoding::Raw));
    assert_eq!(key_encoding(&[b'\n'; 32]), Some(KeyEncoding::Raw));
    let padded = b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    assert_eq!(key_encoding(padded), Some(KeyEncoding::Base64));
    assert_eq!(
        key_encoding(&[&padded[..], b"\n"].concat()),
        Some(KeyEncoding::Base64)
    );
    assert_eq!(
        key_encoding(&[&padded[..], b"\r\n"].concat()),
        Some(KeyEncoding::Base64)
    );
    assert_eq!(key_encoding(&padded[..43]), Some(KeyEncoding::Base64));
    let url_safe = b"-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8=";
    assert_eq!(key_encoding(url_safe), Some(KeyEncoding::Base64));
    // Wrong lengths, bad symbols, non-canonical trailing bits, padding
    // in the wrong place.
    assert_eq!(key_encoding(&[0u8; 31]), None);
    assert_eq!(key_encoding(&[0u8; 33]), None);
    assert_eq!(key_encoding(b""), None);
    assert_eq!(
        key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
        Some(KeyEncoding::Base64)
    );
    assert_eq!(
        key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="),
        None
    );
    assert_eq!(
        key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*="),
        None
    );
    assert_eq!(
        key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n"),
        None
    );
    assert_eq!(
        key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"),
        None
    );
}
