use super::*;

const MOUNTINFO_SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 25 0:27 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k,mode=1770
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 master:2 - ext4 /dev/vda rw
50 27 0:40 / /mnt/with\\040space rw,nosuid - tmpfs tmpfs rw,size=1m
51 27 0:41 / /devices rw - tmpfs tmpfs rw
";

fn mounts() -> Vec<MountInfo> {
    parse_mountinfo(MOUNTINFO_SAMPLE)
}

#[test]
fn parses_every_field_of_a_mountinfo_line() {
    let mounts = mounts();
    assert_eq!(mounts.len(), 10);
    let shm = &mounts[4];
    assert_eq!(shm.mount_point, Path::new("/dev/shm"));
    assert_eq!(shm.root, Path::new("/"));
    assert_eq!(shm.fs_type, "tmpfs");
    assert_eq!(shm.source, "shm");
    assert!(shm.has_mount_option("nosuid"));
    assert!(shm.has_mount_option("noexec"));
    assert!(!shm.has_mount_option("ro"));
    assert_eq!(shm.super_option("size"), Some("65536k"));
    assert_eq!(shm.super_option("mode"), Some("1770"));
    assert_eq!(shm.super_option("siz"), None);
}

#[test]
fn optional_fields_before_the_separator_are_skipped() {
    let docker = &mounts()[7];
    assert_eq!(docker.root, Path::new("/var/lib/docker"));
    assert_eq!(docker.fs_type, "ext4");
    assert_eq!(docker.source, "/dev/vda");
}

#[test]
fn octal_escapes_in_mount_points_are_undone() {
    let spaced = &mounts()[8];
    assert_eq!(spaced.mount_point, Path::new("/mnt/with space"));
    assert_eq!(unescape_octal(br"a\011b\012c\134d"), b"a\tb\nc\\d");
    // Not an escape: kept as is.
    assert_eq!(unescape_octal(br"a\09x\"), br"a\09x\");
    assert_eq!(unescape_octal(br"\777"), br"\777");
}

#[test]
fn non_utf8_mount_points_stay_exact() {
    let line = b"60 27 0:50 / /mnt/\xff\xfe rw - tmpfs tmpfs rw\n";
    let mounts = parse_mountinfo_bytes(line);
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        mounts[0].mount_point,
        PathBuf::from(OsString::from_vec(b"/mnt/\xff\xfe".to_vec()))
    );
}

#[test]
fn the_longest_mount_point_contains_the_path() {
    let mounts = mounts();
    let found = find_containing_mount(&mounts, Path::new("/dev/shm/tmpvault"));
    // Two mounts are stacked on /dev/shm: the later one is on top.
    assert_eq!(found.map(|mount| mount.source.as_str()), Some("shm"));
    let found = find_containing_mount(&mounts, Path::new("/dev/shm"));
    assert_eq!(found.map(|mount| mount.source.as_str()), Some("shm"));
    let found = find_containing_mount(&mounts, Path::new("/dev/null"));
    assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("devtmpfs"));
    let found = find_containing_mount(&mounts, Path::new("/work/x"));
    assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("ext4"));
    let found = find_containing_mount(&mounts, Path::new("/mnt/with space/x"));
    assert_eq!(
        found.map(|mount| mount.super_option("size")),
        Some(Some("1m"))
    );
}

#[test]
fn prefixes_respect_component_boundaries() {
    let mounts = mounts();
    // "/dev" is a string prefix of "/devices" but not a path prefix.
    let found = find_containing_mount(&mounts, Path::new("/devices/x"));
    assert_eq!(
        found.map(|mount| mount.mount_point.as_path()),
        Some(Path::new("/devices"))
    );
    let found = find_containing_mount(&mounts, Path::new("/dev/shmem"));
    assert_eq!(found.map(|mount| mount.fs_type.as_str()), Some("devtmpfs"));
}

#[test]
fn malformed_mountinfo_lines_are_skipped() {
    let text = "\
garbage
1 2 3
1 2 0:1 / /x rw shared:1
1 2 0:1 / relative rw - tmpfs tmpfs rw
1 2 0:1 / /ok rw - tmpfs
\u{0}\u{0}\u{0}
";
    let mounts = parse_mountinfo(text);
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_point, Path::new("/ok"));
    assert_eq!(mounts[0].source, "");
    assert!(mounts[0].super_options.is_empty());
    assert!(parse_mountinfo("").is_empty());
    assert!(find_containing_mount(&[], Path::new("/")).is_none());
}

#[test]
fn parses_status_fields() {
    let text = "Name:\ttmpvault\nCapEff:\t000001fffeffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n";
    let status = parse_status(text);
    assert_eq!(status.no_new_privs, Some(true));
    assert_eq!(status.cap_eff, Some(0x0000_01ff_feff_ffff));
    assert_eq!(status.seccomp, Some(SeccompMode::Filter));
    assert!(status.has_cap_ipc_lock());

    let status = parse_status("CapEff:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n");
    assert_eq!(status.no_new_privs, Some(false));
    assert_eq!(status.cap_eff, Some(0));
    assert_eq!(status.seccomp, Some(SeccompMode::Disabled));
    assert!(!status.has_cap_ipc_lock());
}

#[test]
fn malformed_status_fields_are_none() {
    let status = parse_status("CapEff:\tzz\nNoNewPrivs:\t7\nSeccomp:\t-1\nnonsense\n:\n");
    assert_eq!(status, ProcStatus::default());
    assert_eq!(parse_status(""), ProcStatus::default());
    let status = parse_status("Seccomp:\t9\n");
    assert_eq!(status.seccomp, Some(SeccompMode::Other(9)));
}

#[test]
fn names_capabilities() {
    assert!(capability_names(0).is_empty());
    assert_eq!(
        capability_names((1 << 10) | (1 << 14)),
        ["NET_BIND_SERVICE", "IPC_LOCK"]
    );
    assert_eq!(capability_names(1 << 63), ["CAP_63"]);
    assert_eq!(capability_names(u64::MAX).len(), 64);
}

#[test]
fn parses_proc_cgroup() {
    let text = "12:memory:/docker/abc\n1:name=systemd:/x:y\n0::/kubepods/pod1\nbad\nx:y:/z\n";
    let entries = parse_proc_cgroup(text);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].controllers, ["memory"]);
    assert_eq!(entries[1].path, "/x:y");
    assert_eq!(entries[2].hierarchy_id, 0);
    assert!(entries[2].controllers.is_empty());
}

#[test]
fn locates_a_v1_memory_cgroup_through_mountinfo() {
    let cgroups = parse_proc_cgroup("4:memory:/process_api/abc\n0::/\n");
    let location = locate_memory_cgroup(&cgroups, &mounts());
    assert_eq!(
        location,
        Some(CgroupLocation {
            version: CgroupVersion::V1,
            mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
            dir: PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
        })
    );
}

#[test]
fn locates_a_v2_cgroup_with_a_bind_mounted_root() {
    let mounts = parse_mountinfo(
        "30 20 0:26 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
    );
    let cgroups = parse_proc_cgroup("0::/kubepods/pod1/ctr\n");
    let location = locate_memory_cgroup(&cgroups, &mounts);
    assert_eq!(
        location.map(|found| (found.version, found.dir)),
        Some((CgroupVersion::V2, PathBuf::from("/sys/fs/cgroup/ctr")))
    );
    // A path outside the mounted subtree falls back to the mount root.
    let cgroups = parse_proc_cgroup("0::/../../elsewhere\n");
    let location = locate_memory_cgroup(&cgroups, &mounts);
    assert_eq!(
        location.map(|found| found.dir),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn falls_back_to_sys_fs_cgroup_without_mountinfo() {
    let cgroups = parse_proc_cgroup("0::/app\n");
    let location = locate_memory_cgroup(&cgroups, &[]);
    assert_eq!(
        location.map(|found| found.dir),
        Some(PathBuf::from("/sys/fs/cgroup/app"))
    );
    assert_eq!(locate_memory_cgroup(&[], &[]), None);
    let cgroups = parse_proc_cgroup("3:cpu:/app\n");
    assert_eq!(locate_memory_cgroup(&cgroups, &[]), None);
}

#[test]
fn parses_memory_limits() {
    assert_eq!(parse_memory_limit("max\n"), Ok(None));
    assert_eq!(parse_memory_limit("536870912\n"), Ok(Some(536_870_912)));
    assert_eq!(parse_memory_limit("9223372036854771712\n"), Ok(None));
    assert_eq!(parse_memory_limit("4611686018427387904"), Ok(None));
    assert!(parse_memory_limit("").is_err());
    assert!(parse_memory_limit("-1").is_err());
    assert!(parse_memory_limit("lots").is_err());
    assert!(parse_memory_limit("99999999999999999999999").is_err());
}

#[test]
fn parses_swap_total() {
    let text = "MemTotal:       1000 kB\nSwapTotal:       2048 kB\nSwapFree: 0 kB\n";
    assert_eq!(parse_swap_total(text), Some(2048 * 1024));
    assert_eq!(parse_swap_total("SwapTotal:       0 kB\n"), Some(0));
    assert_eq!(parse_swap_total("SwapTotal: x kB\n"), None);
    assert_eq!(parse_swap_total("SwapTotal: 1 MB\n"), None);
    assert_eq!(
        parse_swap_total("SwapTotal: 18446744073709551615 kB\n"),
        None
    );
    assert_eq!(parse_swap_total(""), None);
}

#[test]
fn recognizes_piped_core_patterns() {
    assert!(core_pattern_is_pipe(
        "|/usr/lib/systemd/systemd-coredump %P"
    ));
    assert!(!core_pattern_is_pipe("core"));
    assert!(!core_pattern_is_pipe(""));
}

#[test]
fn names_common_magics() {
    assert_eq!(fs_magic_name(TMPFS_MAGIC), Some("tmpfs"));
    assert_eq!(fs_magic_name(0xef53), Some("ext4"));
    assert_eq!(fs_magic_name(0x794c_7630), Some("overlay"));
    assert_eq!(fs_magic_name(0x1234), None);
}

#[test]
fn real_readings_do_not_fail_on_linux() {
    assert_eq!(fs_magic(Path::new("/proc")).ok(), Some(0x9fa0));
    assert!(proc_status().is_ok());
    assert!(core_limit().is_ok());
    assert!(memlock_limit().is_ok());
    assert!(dumpable().is_ok());
    assert!(is_read_only(Path::new("/")).is_ok());
    let mount = mount_containing(Path::new("/proc/self"));
    assert_eq!(
        mount.ok().map(|mount| mount.fs_type),
        Some("proc".to_owned())
    );
    assert!(fs_magic(Path::new("/nonexistent/tmpvault")).is_err());
}
