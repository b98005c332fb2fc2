//! Where `--max-memory auto` finds the container's memory limit: in the
//! process's own cgroup, not at the cgroup mount root (the tenth review's
//! F3). The root is the container's own cgroup only when the runtime gives
//! it a cgroup namespace or bind-mounts its cgroup there; with
//! `cgroupns=host`, systemd units, nested cgroups or VMs the root is the
//! host's, "unlimited", and the guard would be off in a limited cgroup.
//!
//! `/proc/self/cgroup` names the process's cgroup (v2: `0::/path`; v1: the
//! line whose controllers include `memory`), `/proc/self/mountinfo` where
//! that hierarchy is mounted and which of its cgroups the mount shows at
//! its root (inside a cgroup namespace both are relative to the
//! namespace). The limit in force is the smallest from that cgroup up to
//! the mount: a pod's limit is often on a parent, with the container's own
//! file unlimited. v1 also states the smallest of all ancestors, those
//! above the mount included, as `hierarchical_memory_limit` in
//! `memory.stat`. When none of that can be read, the mount root is read,
//! as before.
//!
//! Every path is under a root directory parameter (`/` in production), so
//! tests build fake `/proc` and `/sys` trees.

use std::path::{Component, Path, PathBuf};

/// Where the cgroup file system is mounted, under the root.
const MOUNT: &str = "sys/fs/cgroup";

/// A cgroup v1 limit at or above this is "no limit": v1 has no `max`, it
/// says 2^63 rounded down to a page (9223372036854771712).
const V1_UNLIMITED: u64 = 1 << 62;

/// What the cgroup file system says of the memory limit.
#[derive(Debug, PartialEq, Eq)]
pub enum Cgroup {
    /// The smallest limit found, and the file that stated it.
    Limit { bytes: u64, path: PathBuf },
    /// Every file read says unlimited; the first one read.
    Unlimited { path: PathBuf },
    /// No file is there or readable (not Linux, no cgroup mounted).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V1,
}

// === impl Version ===

impl Version {
    fn file(self) -> &'static str {
        match self {
            Self::V2 => "memory.max",
            Self::V1 => "memory.limit_in_bytes",
        }
    }

    /// A limit file's text: `Some(None)` is unlimited, `None` unreadable.
    fn parse(self, text: &str) -> Option<Option<u64>> {
        match (self, text.trim()) {
            (Self::V2, "max") => Some(None),
            (_, n) => {
                let bytes: u64 = n.parse().ok()?;
                Some((self == Self::V2 || bytes < V1_UNLIMITED).then_some(bytes))
            }
        }
    }
}

/// The memory limit of the process's cgroup, as seen under `root`.
pub fn limit(root: &Path) -> Cgroup {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    if let (Some(cgroups), Some(mounts)) = (read("proc/self/cgroup"), read("proc/self/mountinfo")) {
        for version in [Version::V2, Version::V1] {
            let Some((mount, leaf)) = own(version, &cgroups, &mounts) else {
                continue;
            };
            let mount = root.join(mount);
            let found = walk(version, &mount, &mount.join(leaf));
            if found != Cgroup::Unknown {
                return found;
            }
        }
    }
    mount_root(&root.join(MOUNT))
}

/// The process's own cgroup v2 `memory.stat`, whose `sock` line is what
/// the kernel charges that cgroup for socket buffers; `None` without a v2
/// cgroup (v1 states it per cgroup only with kmem accounting on).
pub fn memory_stat(root: &Path) -> Option<PathBuf> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let (mount, leaf) = own(
        Version::V2,
        &read("proc/self/cgroup")?,
        &read("proc/self/mountinfo")?,
    )?;
    let stat = root.join(mount).join(leaf).join("memory.stat");
    stat.is_file().then_some(stat)
}

/// `sock` in a cgroup v2 `memory.stat`, bytes.
pub fn sock(stat: &Path) -> Option<u64> {
    std::fs::read_to_string(stat)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("sock ")?.trim().parse().ok())
}

/// The process's cgroup of `version`: its hierarchy's mount point, and
/// the cgroup's directory below it (both relative, to join under a root).
fn own(version: Version, cgroups: &str, mounts: &str) -> Option<(PathBuf, PathBuf)> {
    let path = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = match version {
            Version::V2 => id == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        ours.then_some(path)
    })?;
    mounts.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let mut post = post.split(' ');
        let (fstype, _source, options) = (post.next()?, post.next()?, post.next().unwrap_or(""));
        let ours = match version {
            Version::V2 => fstype == "cgroup2",
            Version::V1 => fstype == "cgroup" && options.split(',').any(|o| o == "memory"),
        };
        if !ours || pre.len() < 5 {
            return None;
        }
        // The cgroup the mount shows at its root, and where it is mounted.
        let (shown, at) = (unescape(pre[3]), unescape(pre[4]));
        let below = Path::new(path).strip_prefix(&shown).ok()?;
        if !below
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let at = PathBuf::from(at.trim_start_matches('/'));
        if !at.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        Some((at, below.to_path_buf()))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The smallest limit from `leaf` up to `mount`.
fn walk(version: Version, mount: &Path, leaf: &Path) -> Cgroup {
    let mut smallest: Option<(u64, PathBuf)> = None;
    let mut unlimited: Option<PathBuf> = None;
    let mut consider = |bytes: Option<u64>, path: PathBuf| match bytes {
        Some(b) if smallest.as_ref().is_none_or(|(s, _)| b < *s) => smallest = Some((b, path)),
        Some(_) => {}
        None => {
            unlimited.get_or_insert(path);
        }
    };
    let mut dir = leaf;
    loop {
        let file = dir.join(version.file());
        if let Some(bytes) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| version.parse(&t))
        {
            consider(bytes, file);
        }
        if dir == mount {
            break;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    // v1: ancestors above the mount too; a file of our own that states
    // the same figure names it better.
    if version == Version::V1 {
        let stat = leaf.join("memory.stat");
        if let Some(bytes) = std::fs::read_to_string(&stat).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
                .and_then(|n| version.parse(n))
        }) {
            consider(bytes, stat);
        }
    }
    match (smallest, unlimited) {
        (Some((bytes, path)), _) => Cgroup::Limit { bytes, path },
        (None, Some(path)) => Cgroup::Unlimited { path },
        (None, None) => Cgroup::Unknown,
    }
}

/// Before the process's own cgroup was looked up: the mount root's v2
/// `memory.max`, else v1 `memory/memory.limit_in_bytes`.
fn mount_root(mount: &Path) -> Cgroup {
    let v2 = walk(Version::V2, mount, mount);
    if v2 != Cgroup::Unknown || mount.join(Version::V2.file()).exists() {
        return v2;
    }
    let v1 = mount.join("memory");
    let file = v1.join(Version::V1.file());
    match std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| Version::V1.parse(&t))
    {
        Some(Some(bytes)) => Cgroup::Limit { bytes, path: file },
        Some(None) => Cgroup::Unlimited { path: file },
        None => Cgroup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_MOUNT: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
    const V1_MOUNT: &str =
        "40 30 0:35 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("a file in a directory"))
                .expect("create the directory");
            std::fs::write(path, text).expect("write the file");
        }
        dir
    }

    fn limit_of(t: &tempfile::TempDir) -> Option<(u64, String)> {
        match limit(t.path()) {
            Cgroup::Limit { bytes, path } => Some((
                bytes,
                path.strip_prefix(t.path())
                    .expect("under the root")
                    .display()
                    .to_string(),
            )),
            _ => None,
        }
    }

    #[test]
    fn v2_reads_the_process_cgroup_not_the_mount_root() {
        let t = tree(&[
            ("proc/self/cgroup", "0::/system.slice/app.service\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/memory.max", "max\n"),
            ("sys/fs/cgroup/system.slice/memory.max", "max\n"),
            (
                "sys/fs/cgroup/system.slice/app.service/memory.max",
                "134217728\n",
            ),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((
                134217728,
                "sys/fs/cgroup/system.slice/app.service/memory.max".into()
            ))
        );
    }

    #[test]
    fn the_smallest_limit_up_to_the_mount_wins() {
        // The pod's limit on a parent, the container's own file unlimited.
        let t = tree(&[
            ("proc/self/cgroup", "0::/kubepods/pod1/ctr\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/memory.max", "max\n"),
            ("sys/fs/cgroup/kubepods/memory.max", "8589934592\n"),
            ("sys/fs/cgroup/kubepods/pod1/memory.max", "268435456\n"),
            ("sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n"),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((268435456, "sys/fs/cgroup/kubepods/pod1/memory.max".into()))
        );
    }

    #[test]
    fn v1_reads_the_memory_controller_line_and_its_ancestors() {
        let t = tree(&[
            (
                "proc/self/cgroup",
                "5:cpu,cpuacct:/x\n4:memory:/review10-f3\n0::/user.slice\n",
            ),
            ("proc/self/mountinfo", V1_MOUNT),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "sys/fs/cgroup/memory/review10-f3/memory.limit_in_bytes",
                "134217728\n",
            ),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((
                134217728,
                "sys/fs/cgroup/memory/review10-f3/memory.limit_in_bytes".into()
            ))
        );
        // A limit above the mount, visible only as hierarchical_memory_limit.
        let t = tree(&[
            ("proc/self/cgroup", "4:memory:/ctr\n"),
            ("proc/self/mountinfo", V1_MOUNT),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "sys/fs/cgroup/memory/ctr/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "sys/fs/cgroup/memory/ctr/memory.stat",
                "cache 0\nhierarchical_memory_limit 67108864\nrss 1\n",
            ),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((67108864, "sys/fs/cgroup/memory/ctr/memory.stat".into()))
        );
    }

    #[test]
    fn a_bind_mounted_cgroup_and_a_cgroup_namespace() {
        // Docker without a cgroup namespace: the mount shows the container's
        // cgroup at its root, /proc/self/cgroup its full path.
        let t = tree(&[
            ("proc/self/cgroup", "4:memory:/docker/abc\n"),
            (
                "proc/self/mountinfo",
                "40 30 0:35 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            ),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "104857600\n"),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((
                104857600,
                "sys/fs/cgroup/memory/memory.limit_in_bytes".into()
            ))
        );
        // Inside a cgroup namespace the process is at "/".
        let t = tree(&[
            ("proc/self/cgroup", "0::/\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/memory.max", "52428800\n"),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((52428800, "sys/fs/cgroup/memory.max".into()))
        );
    }

    #[test]
    fn unlimited_everywhere_garbage_and_nothing() {
        let t = tree(&[
            ("proc/self/cgroup", "0::/a/b\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/memory.max", "max\n"),
            ("sys/fs/cgroup/a/memory.max", "max\n"),
            ("sys/fs/cgroup/a/b/memory.max", "max\n"),
        ]);
        assert_eq!(
            limit(t.path()),
            Cgroup::Unlimited {
                path: t.path().join("sys/fs/cgroup/a/b/memory.max")
            }
        );
        // Garbage levels are skipped; a readable one still counts.
        let t = tree(&[
            ("proc/self/cgroup", "garbage\n0::/a/b\n"),
            (
                "proc/self/mountinfo",
                "nonsense\n30 23 0:26 / /sys/fs/cgroup\n"
                    .to_string()
                    .as_str(),
            ),
            ("sys/fs/cgroup/a/memory.max", "lots\n"),
            ("sys/fs/cgroup/a/b/memory.max", "-1\n"),
        ]);
        assert_eq!(limit(t.path()), Cgroup::Unknown);
        // Garbage /proc files: the mount root, as before.
        let t = tree(&[
            ("proc/self/cgroup", "\u{0}\u{1}"),
            ("proc/self/mountinfo", "- - -"),
            ("sys/fs/cgroup/memory.max", "1048576\n"),
        ]);
        assert_eq!(
            limit_of(&t),
            Some((1048576, "sys/fs/cgroup/memory.max".into()))
        );
        assert_eq!(limit(tree(&[]).path()), Cgroup::Unknown);
        // A path that climbs out of the mount is not followed.
        let t = tree(&[
            ("proc/self/cgroup", "0::/../../etc\n"),
            ("proc/self/mountinfo", V2_MOUNT),
        ]);
        assert_eq!(limit(t.path()), Cgroup::Unknown);
    }

    #[test]
    fn the_v2_cgroup_memory_stat_and_its_sock_figure() {
        let t = tree(&[
            ("proc/self/cgroup", "0::/kubepods/ctr\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            (
                "sys/fs/cgroup/kubepods/ctr/memory.stat",
                "anon 1\nfile 2\nkernel 3\nsock 4194304\nshmem 0\n",
            ),
        ]);
        let stat = memory_stat(t.path()).expect("the v2 cgroup's memory.stat");
        assert_eq!(
            stat,
            t.path().join("sys/fs/cgroup/kubepods/ctr/memory.stat")
        );
        assert_eq!(sock(&stat), Some(4194304));
        // v1 only: none.
        let t = tree(&[
            ("proc/self/cgroup", "4:memory:/ctr\n"),
            ("proc/self/mountinfo", V1_MOUNT),
            ("sys/fs/cgroup/memory/ctr/memory.stat", "sock 1\n"),
        ]);
        assert_eq!(memory_stat(t.path()), None);
    }

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/a\x"), r"/a\x");
    }
}
