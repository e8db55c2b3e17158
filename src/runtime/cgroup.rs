//! The container's memory limit, as the kernel's control groups state it, so that the proxy's
//! memory budgets can be sized to shed clients before the kernel kills the process (see
//! [`crate::config::Config::fit_memory_limit`]). The CPU quota needs nothing here: the worker
//! count for `workers: 0` comes from `std::thread::available_parallelism`, which already reads
//! the quota (cgroup v1 and v2).
//!
//! Both hierarchies are read: cgroup v2 (`memory.max`) and v1 (`memory.limit_in_bytes`), at the
//! process's own group (its path in `/proc/self/cgroup`) and at the root of the mount (where a
//! container sees its own group). The smallest limit found wins; "max", a v1 "unlimited" (a
//! number near 2^63) or no file at all is no limit.

use std::fs;

/// v1 writes "no limit" as the largest page-aligned `i64`; anything this large is no limit.
const UNLIMITED: u64 = 1 << 62;

/// The memory limit of this process's control group, in bytes, if one is set.
pub fn memory_limit() -> Option<u64> {
    let groups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let (v2, v1) = own_groups(&groups);
    let mut files = Vec::new();
    if let Some(path) = v2 {
        files.push(format!("/sys/fs/cgroup{path}/memory.max"));
    }
    files.push("/sys/fs/cgroup/memory.max".to_string());
    if let Some(path) = v1 {
        files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
    }
    files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string());
    files
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .filter_map(|text| parse_limit(&text))
        .min()
}

/// A limit file's value: `None` for "max", v1's "unlimited", or anything unreadable.
pub fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value > 0 && value < UNLIMITED).then_some(value)
}

/// This process's group paths from `/proc/self/cgroup`: the v2 one (the `0::` line) and the
/// v1 memory controller's (a line whose controllers include `memory`). A path of `/` is none:
/// the root is read anyway.
pub fn own_groups(text: &str) -> (Option<&str>, Option<&str>) {
    let (mut v2, mut v1) = (None, None);
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if path == "/" || !path.starts_with('/') {
            continue;
        }
        if controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_files_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("max\n"), None, "v2: no limit");
        assert_eq!(
            parse_limit("9223372036854771712\n"),
            None,
            "v1: no limit is the largest page-aligned i64"
        );
        assert_eq!(parse_limit("0"), None);
        assert_eq!(parse_limit("garbage"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn own_groups_come_from_proc_self_cgroup() {
        let v1 = "9:name=systemd:/\n4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(own_groups(v1), (None, Some("/docker/abc")));
        let v2 = "0::/system.slice/docker-abc.scope\n";
        assert_eq!(
            own_groups(v2),
            (Some("/system.slice/docker-abc.scope"), None)
        );
        let mixed = "5:cpu,memory:/kube/pod1\n0::/kube/pod1\n";
        assert_eq!(own_groups(mixed), (Some("/kube/pod1"), Some("/kube/pod1")));
        assert_eq!(own_groups("garbage\n4:memory\n"), (None, None));
    }
}
