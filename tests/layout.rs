//! The walls between rooms (src/lib.rs, "Rooms"), checked on what cargo
//! and the compiler see, never on text:
//!
//! - each room is a crate, and a crate can only name the crates its
//!   Cargo.toml lists: `cargo metadata` says which workspace crate depends
//!   on which ([`ROOMS`]) and on which external crates ([`FORBIDDEN`]);
//! - inside a crate, no two modules use each other, directly or round a
//!   loop (parsed with syn: `use` trees and paths anywhere in a file,
//!   macros' tokens included, re-exports followed to where an item is
//!   defined; only `#[cfg(test)] mod` items are left out, and a module
//!   and its own submodules are one room);
//! - the proxy names only the parts of the control plane it reads
//!   ([`PROXY_MAY_NAME_OF_CONTROL`]).

#[path = "layout/modules.rs"]
mod modules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use modules::ModPath;

/// The room map: each workspace crate, and the workspace crates it may
/// depend on (normal, build and dev dependencies alike). A workspace
/// crate missing from this table fails the check: a new crate takes its
/// place in the map first.
const ROOMS: &[(&str, &[&str])] = &[
    // The contract's names: status, x-pinproxy-error, metric labels.
    ("pinproxy-reason", &[]),
    ("pinproxy-policy", &["pinproxy-reason"]),
    // pinproxy-ct: Certificate Transparency checks, for the verifier.
    (
        "pinproxy-tls",
        &["pinproxy-policy", "pinproxy-reason", "pinproxy-ct"],
    ),
    (
        "pinproxy-upstream",
        &["pinproxy-policy", "pinproxy-reason", "pinproxy-tls"],
    ),
    // pinproxy-sign: the reloader applies a signed pinset only through it.
    (
        "pinproxy-control",
        &[
            "pinproxy-policy",
            "pinproxy-reason",
            "pinproxy-sign",
            "pinproxy-tls",
            "pinproxy-upstream",
        ],
    ),
    (
        "pinproxy-proxy",
        &[
            "pinproxy-control",
            "pinproxy-policy",
            "pinproxy-reason",
            "pinproxy-tls",
            "pinproxy-upstream",
        ],
    ),
    // Never on the request path: no room depends on it. pinproxy-sign:
    // the webhook's `POST /validate` (the serial reader comes from the
    // binary, so the webhook never names the policy room).
    ("pinproxy-k8s", &["pinproxy-sign"]),
    ("pinproxy-ct", &[]),
    ("pinproxy-sign", &[]),
    // The binary: app, cli, main (pinproxy-ct: tests/ct.rs's test log).
    (
        "pinproxy",
        &[
            "pinproxy-control",
            "pinproxy-ct",
            "pinproxy-k8s",
            "pinproxy-policy",
            "pinproxy-proxy",
            "pinproxy-reason",
            "pinproxy-sign",
            "pinproxy-tls",
            "pinproxy-upstream",
        ],
    ),
];

/// External crates a room must not depend on (normal and build
/// dependencies; its tests may use what they like).
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "pinproxy-reason",
        &[
            "tokio",
            "hyper",
            "hyper-util",
            "rustls",
            "tokio-rustls",
            "notify",
            "socket2",
            "prometheus",
        ],
    ),
    // Pure: no sockets, no async runtime, no HTTP, no metrics.
    (
        "pinproxy-policy",
        &[
            "tokio",
            "tokio-util",
            "tokio-rustls",
            "hyper",
            "hyper-util",
            "http",
            "http-body-util",
            "tower-service",
            "notify",
            "socket2",
            "prometheus",
        ],
    ),
    // The verifier knows nothing of HTTP.
    (
        "pinproxy-tls",
        &[
            "hyper",
            "hyper-util",
            "http",
            "http-body-util",
            "tower-service",
            "notify",
            "socket2",
        ],
    ),
    // Reports through its own traits; never watches files.
    ("pinproxy-upstream", &["notify", "prometheus"]),
    // Reads the live snapshot; never reloads, never parses YAML.
    ("pinproxy-proxy", &["notify", "serde_yaml"]),
];

/// What of the control plane the proxy may name: the live snapshot it
/// reads, the metrics and logs it writes. Never the reloader, the
/// publisher, the watcher or admin.
const PROXY_MAY_NAME_OF_CONTROL: &[&str] = &["Live", "live", "metrics", "logs"];

// === the crate graph ===

#[derive(Debug)]
struct Package {
    name: String,
    /// (dependency package name, kind: "normal", "build" or "dev").
    deps: Vec<(String, String)>,
    /// The library target's root file, if it has one.
    lib: Option<PathBuf>,
}

fn workspace() -> Vec<Package> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    meta["packages"]
        .as_array()
        .expect("metadata lists packages")
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().expect("a package has a name").into(),
            deps: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let name = d["name"].as_str().expect("a dependency has a name");
                    let kind = d["kind"].as_str().unwrap_or("normal");
                    (name.to_string(), kind.to_string())
                })
                .collect(),
            lib: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "lib"))
                })
                .and_then(|t| t["src_path"].as_str())
                .map(PathBuf::from),
        })
        .collect()
}

/// What breaks the room map in `packages`, one line each.
fn graph_breaks(packages: &[Package]) -> Vec<String> {
    let rooms: BTreeMap<&str, &[&str]> = ROOMS.iter().copied().collect();
    let forbidden: BTreeMap<&str, &[&str]> = FORBIDDEN.iter().copied().collect();
    let members: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut broken = Vec::new();
    for p in packages {
        let Some(allowed) = rooms.get(p.name.as_str()) else {
            broken.push(format!(
                "{} is not in the room map (tests/layout.rs, ROOMS)",
                p.name
            ));
            continue;
        };
        for (dep, kind) in &p.deps {
            if members.contains(dep.as_str()) && !allowed.contains(&dep.as_str()) {
                broken.push(format!(
                    "{} depends on {dep} ({kind}): not an edge of the room map",
                    p.name
                ));
            }
            let banned = forbidden.get(p.name.as_str()).copied().unwrap_or_default();
            if kind != "dev" && banned.contains(&dep.as_str()) {
                broken.push(format!(
                    "{} depends on {dep} ({kind}), which its room must not use",
                    p.name
                ));
            }
        }
    }
    broken.sort();
    broken
}

#[test]
fn crates_depend_only_along_the_room_map() {
    let packages = workspace();
    let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    for (room, _) in ROOMS {
        assert!(
            names.contains(room),
            "{room} is in ROOMS but not in the workspace"
        );
    }
    let broken = graph_breaks(&packages);
    assert!(broken.is_empty(), "walls crossed:\n{}", broken.join("\n"));
}

#[test]
fn the_graph_check_names_an_unexpected_edge_and_a_forbidden_crate() {
    let mut packages = workspace();
    let policy = packages
        .iter_mut()
        .find(|p| p.name == "pinproxy-policy")
        .expect("pinproxy-policy is in the workspace");
    policy.deps.push(("tokio".into(), "normal".into()));
    policy.deps.push(("pinproxy-tls".into(), "normal".into()));
    let control = packages
        .iter_mut()
        .find(|p| p.name == "pinproxy-control")
        .expect("pinproxy-control is in the workspace");
    control.deps.push(("pinproxy-k8s".into(), "dev".into()));
    let broken = graph_breaks(&packages);
    assert_eq!(
        broken,
        [
            "pinproxy-control depends on pinproxy-k8s (dev): not an edge of the room map",
            "pinproxy-policy depends on pinproxy-tls (normal): not an edge of the room map",
            "pinproxy-policy depends on tokio (normal), which its room must not use",
        ]
    );
}

// === inside a crate ===

/// For two modules that are not one inside the other, the children of
/// their closest common ancestor they are in: the rooms of that level a
/// use crosses between.
fn siblings(from: &ModPath, to: &ModPath) -> Option<(ModPath, ModPath)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

/// Module-to-module uses between siblings in the crate rooted at `root`,
/// each with where it is first seen.
fn module_uses(root: &Path) -> BTreeMap<(ModPath, ModPath), String> {
    let modules = modules::crate_modules(root);
    let mut edges = BTreeMap::new();
    for (from, module) in &modules {
        for named in &module.named {
            let Some(to) = modules::target(&modules, from, &named.segments) else {
                continue;
            };
            if let Some(edge) = siblings(from, &to) {
                edges.entry(edge).or_insert_with(|| {
                    format!(
                        "{}:{} names {}",
                        named.file.display(),
                        named.line,
                        named.segments.join("::")
                    )
                });
            }
        }
    }
    edges
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Modules of one crate that use each other, directly or round a loop.
fn cycles(edges: &BTreeMap<(ModPath, ModPath), String>) -> Vec<String> {
    let mut next: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for ((from, to), why) in edges {
        // A path back from `to` to `from` closes a loop.
        let mut stack = vec![vec![to]];
        let mut visited = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().expect("paths are not empty");
            if last == from {
                let mut members: Vec<String> = path.iter().map(|m| show(m)).collect();
                members.sort();
                if seen.insert(members) {
                    let mut lines = vec![format!("{} -> {}: {why}", show(from), show(to))];
                    for w in path.windows(2) {
                        let key = (w[0].clone(), w[1].clone());
                        lines.push(format!("{} -> {}: {}", show(w[0]), show(w[1]), edges[&key]));
                    }
                    found.push(lines.join("\n  "));
                }
                break;
            }
            if !visited.insert(last) {
                continue;
            }
            for n in next.get(last).into_iter().flatten() {
                let mut p = path.clone();
                p.push(n);
                stack.push(p);
            }
        }
    }
    found
}

#[test]
fn no_two_modules_of_a_crate_use_each_other() {
    let mut broken = Vec::new();
    for p in workspace() {
        let Some(lib) = &p.lib else { continue };
        for cycle in cycles(&module_uses(lib)) {
            broken.push(format!("{}: {cycle}", p.name));
        }
    }
    assert!(
        broken.is_empty(),
        "modules that use each other:\n{}",
        broken.join("\n")
    );
}

/// The paths into pinproxy_control named by `modules`, as
/// `file:line: path`, whose first item is not in `allowed`.
fn names_of_control_outside(
    modules: &BTreeMap<ModPath, modules::Module>,
    allowed: &[&str],
) -> Vec<String> {
    let mut broken = Vec::new();
    for module in modules.values() {
        // Names bound to the crate itself (`use pinproxy_control as c;`).
        let aliases: BTreeSet<&str> = module
            .uses
            .iter()
            .filter(|(_, path)| path.len() == 1 && path[0] == "pinproxy_control")
            .map(|(name, _)| name.as_str())
            .chain(["pinproxy_control"])
            .collect();
        for named in &module.named {
            let Some(first) = named.segments.first() else {
                continue;
            };
            if !aliases.contains(first.as_str()) {
                continue;
            }
            match named.segments.get(1) {
                Some(item) if allowed.contains(&item.as_str()) => {}
                // The crate alone (`use pinproxy_control as c;`).
                None => {}
                Some(_) => broken.push(format!(
                    "{}:{}: {}",
                    named.file.display(),
                    named.line,
                    named.segments.join("::")
                )),
            }
        }
    }
    broken
}

#[test]
fn the_proxy_reads_the_control_plane_and_nothing_else_of_it() {
    let packages = workspace();
    let proxy = packages
        .iter()
        .find(|p| p.name == "pinproxy-proxy")
        .and_then(|p| p.lib.clone())
        .expect("pinproxy-proxy has a library");
    let broken =
        names_of_control_outside(&modules::crate_modules(&proxy), PROXY_MAY_NAME_OF_CONTROL);
    assert!(
        broken.is_empty(),
        "the proxy names parts of the control plane it may not ({PROXY_MAY_NAME_OF_CONTROL:?}):\n{}",
        broken.join("\n")
    );
}

// === the checks see what the old text scan missed ===

/// Writes `files` (path → text) as a crate under a temporary directory and
/// returns its root file.
fn scratch_crate(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a file has a directory"))
            .expect("creating the scratch crate");
        std::fs::write(&file, text).expect("writing the scratch crate");
    }
    dir.join("lib.rs")
}

#[test]
fn the_module_check_sees_uses_wherever_and_however_they_are_written() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = scratch_crate(
        dir.path(),
        &[
            (
                "lib.rs",
                "mod load;\nmod validate;\nmod report;\nmod telemetry;\nmod a;\nmod b;\n\
                 pub use telemetry::Limiter;\n",
            ),
            // A use after a `#[cfg(test)]` item that is not a module, and
            // one split over lines, still count.
            (
                "load.rs",
                "#[cfg(test)]\nfn helper() {}\n\npub fn load() {\n        super::\n  validate\
                 ::check();\n}\n",
            ),
            ("validate.rs", "use crate::load;\npub fn check() { load::load(); }\n"),
            // Through a re-export at the crate root, and inside a macro.
            (
                "report.rs",
                "pub struct Report;\nfn f() { let _ = format!(\"{:?}\", crate::Limiter::new()); }\n",
            ),
            (
                "telemetry.rs",
                "pub struct Limiter;\nfn g() { let _: Option<super::report::Report> = None; }\n",
            ),
            // Inside a test module the rule does not apply.
            ("a.rs", "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::super::b;\n}\n"),
            ("b.rs", "pub fn g() { super::a::f(); }\n"),
        ],
    );
    let found = cycles(&module_uses(&root));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("load -> validate: "), "{found:#?}");
    assert!(found[0].contains("load.rs:5 names super::validate::check"));
    assert!(found[1].starts_with("report -> telemetry: "), "{found:#?}");
    assert!(found[1].contains("report.rs:2 names crate::Limiter::new"));
}

#[test]
fn the_proxy_check_sees_the_reloader_however_it_is_named() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = scratch_crate(
        dir.path(),
        &[
            ("lib.rs", "pub mod forward;\n"),
            (
                "forward.rs",
                "use pinproxy_control::Live;\nuse pinproxy_control as c;\n\
                 fn f() {\n    let r = c::reload\n        ::Reloader::new();\n    \
                 tokio::spawn(async { pinproxy_control::live::Publisher::x() });\n}\n",
            ),
        ],
    );
    let broken = names_of_control_outside(&modules::crate_modules(&root), &["Live", "metrics"]);
    let shown: Vec<String> = broken
        .iter()
        .map(|b| {
            b.rsplit_once(": ")
                .map_or(b.clone(), |(_, p)| p.to_string())
        })
        .collect();
    assert_eq!(
        shown,
        [
            "c::reload::Reloader::new",
            "pinproxy_control::live::Publisher::x"
        ]
    );
}

/// The module check reads the real crates: uses known to be there are
/// seen, one of them only through a re-export (exchange names
/// `super::ERROR_HEADER`, which the proxy's root re-exports from refusal).
#[test]
fn the_module_check_sees_the_uses_the_crates_make() {
    let packages = workspace();
    let edges = |crate_name: &str| {
        let lib = packages
            .iter()
            .find(|p| p.name == crate_name)
            .and_then(|p| p.lib.clone())
            .unwrap_or_else(|| panic!("{crate_name} has a library"));
        module_uses(&lib)
            .into_keys()
            .map(|(a, b)| format!("{} -> {}", show(&a), show(&b)))
            .collect::<BTreeSet<_>>()
    };
    let proxy = edges("pinproxy-proxy");
    for e in [
        "forward -> exchange",
        "exchange -> refusal",
        "forward -> upgrade",
    ] {
        assert!(proxy.contains(e), "{e} not seen in {proxy:#?}");
    }
    let control = edges("pinproxy-control");
    for e in ["telemetry -> reports", "reports -> logs", "reload -> live"] {
        assert!(control.contains(e), "{e} not seen in {control:#?}");
    }
    let policy = edges("pinproxy-policy");
    for e in [
        "load -> validate",
        "validate -> identity",
        "load::named -> load::shape",
    ] {
        assert!(policy.contains(e), "{e} not seen in {policy:#?}");
    }
    let k8s = edges("pinproxy-k8s");
    assert!(
        k8s.contains("inject::template -> inject::checks"),
        "{k8s:#?}"
    );
}
