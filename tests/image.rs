//! What can be checked of the `Dockerfile` without a container engine: the
//! init image's command line is one this binary accepts, it names the UID
//! and port `inject` gives the transparent sidecar (not the proxy image's
//! USER, which is distroless' "nonroot", that of many app images), its
//! build checks every program `pinproxy redirect` can run, and a plain
//! `docker build .` still produces the proxy image.

use clap::Parser;
use pinproxy::cli::{Cli, Command};
use pinproxy::k8s::inject::InjectOptions;
use pinproxy::k8s::redirect::Backend;

/// One `FROM` stage: its name (`AS …`) and its instructions, continuation
/// lines joined and comments dropped, as (KEYWORD, rest).
struct Stage {
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            out.push(Stage {
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = out.last_mut() {
            stage.instructions.push((keyword, rest));
        }
    }
    out
}

impl Stage {
    fn last(&self, keyword: &str) -> &str {
        self.instructions
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("stage {:?} has no {keyword}", self.name))
    }

    fn exec_form(&self, keyword: &str) -> Vec<String> {
        let value = self.last(keyword);
        serde_json::from_str(value)
            .unwrap_or_else(|e| panic!("{keyword} {value} is not exec form: {e}"))
    }

    fn runs(&self) -> String {
        self.instructions
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn dockerfile() -> Vec<Stage> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    stages(&std::fs::read_to_string(path).expect("read Dockerfile"))
}

/// The stage named `name` (`FROM … AS name`).
fn named<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("a stage named {name}"))
}

#[test]
fn init_image_command_is_a_redirect_this_binary_accepts_for_the_injected_sidecars_uid() {
    let stages = dockerfile();
    let init = named(&stages, "init");
    let runtime = stages.last().expect("stages");

    let entrypoint = init.exec_form("ENTRYPOINT");
    assert_eq!(entrypoint, ["pinproxy"]);
    let cmd = init.exec_form("CMD");
    let argv = entrypoint.iter().chain(&cmd).cloned();
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("init CMD rejected: {e}"));
    let Command::Redirect(args) = cli.command else {
        panic!("the init image does not run `pinproxy redirect`");
    };
    assert!(!args.dry_run && !args.remove, "{args:?}");

    // The UID whose traffic is let through unredirected is the one
    // injection runs the transparent sidecar as, and the port its listener.
    let injected = InjectOptions::default().redirect;
    assert_eq!(args.proxy_uid, Some(injected.uid));
    assert_eq!(args.port, Some(injected.port));
    // Review 8: it was the proxy image's USER, 65532 — distroless
    // "nonroot", the USER of many app images, whose every process the
    // init image's defaults then let through unpinned.
    let user = runtime.last("USER");
    let image_uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("runtime USER {user:?} is not numeric"));
    assert_ne!(args.proxy_uid, Some(image_uid));
    assert_eq!(init.last("USER"), "0:0", "iptables needs root");
}

#[test]
fn init_image_build_checks_every_program_redirect_can_run() {
    let stages = dockerfile();
    let init = named(&stages, "init");
    let runs = init.runs();
    // The words of `for p in A B C; do "$p" --version …`.
    let words: Vec<&str> = runs.split_whitespace().collect();
    let start = words
        .windows(3)
        .position(|w| w == ["for", "p", "in"])
        .expect("a `for p in …; do` loop")
        + 3;
    let mut listed = Vec::new();
    for word in &words[start..] {
        listed.push(word.trim_end_matches(';'));
        if word.ends_with(';') {
            break;
        }
    }
    for backend in [Backend::Plain, Backend::Nft, Backend::Legacy] {
        for program in backend.programs() {
            assert!(
                listed.contains(&program),
                "the init image's build does not check {program} ({backend:?}); it checks {listed:?}"
            );
        }
    }
    assert!(runs.contains("\"$p\" --version"), "{runs}");
    assert!(runs.contains("pinproxy redirect --dry-run"), "{runs}");
}

#[test]
fn a_plain_build_still_produces_the_distroless_proxy_image() {
    let stages = dockerfile();
    let runtime = stages.last().expect("stages");
    assert_eq!(runtime.name, None, "the last stage is the default target");
    assert_eq!(runtime.exec_form("ENTRYPOINT"), ["pinproxy"]);
    assert_eq!(runtime.exec_form("CMD")[0], "run");
    assert!(!runtime.runs().contains("iptables"));
    assert!(
        !runtime
            .instructions
            .iter()
            .any(|(k, v)| k == "COPY" && v.contains("iptables")),
        "the proxy image carries no iptables"
    );
}

/// The image's binary is built as scripts/e2e.sh builds the one CI runs in
/// its cluster — rustup's toolchain, `--target <arch>-unknown-linux-musl`
/// — by the rustc that wrote link/symbol-order-musl.txt, and the Dockerfile
/// installs what that build writes. cargo hashes `rustc -vV` and whether
/// `--target` was given into every mangled name, so only that build's names
/// match the file and get laid out (build.rs): a native build on rust:alpine
/// or another rustc would silently not be.
#[test]
fn the_image_binary_is_built_as_ci_builds_it_so_its_layout_applies() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("read Dockerfile");
    assert!(
        text.lines()
            .any(|l| l.trim() == "FROM rust:${RUST_VERSION}-${DEBIAN_VERSION} AS build"),
        "the build stage is rustup's toolchain on Debian"
    );
    let rust_version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION=");

    let stages = dockerfile();
    let build = named(&stages, "build");
    let runs = build.runs();
    for wanted in [
        "rustup target add \"$(uname -m)-unknown-linux-musl\"",
        "T=\"$(uname -m)-unknown-linux-musl\"",
        "cargo build --release --locked --target \"$T\" --bin pinproxy",
        "\"target/$T/release/pinproxy\" /out/pinproxy",
    ] {
        assert!(runs.contains(wanted), "{wanted} not in {runs}");
    }

    let e2e = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/e2e.sh"))
        .expect("read scripts/e2e.sh");
    assert!(
        e2e.contains("MUSL=x86_64-unknown-linux-musl\n"),
        "scripts/e2e.sh"
    );
    assert!(
        e2e.contains("cargo build --release --locked --target \"$MUSL\" --bin pinproxy"),
        "scripts/e2e.sh"
    );

    let order = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/link/symbol-order-musl.txt"
    ))
    .expect("read link/symbol-order-musl.txt");
    let mut header = order.lines().take_while(|l| l.starts_with('#'));
    assert!(header
        .next()
        .is_some_and(|l| l.contains("x86_64-unknown-linux-musl")));
    assert!(
        header.any(|l| l.contains(&format!("with rustc {rust_version} ("))),
        "link/symbol-order-musl.txt was not written by rustc {rust_version}, the Dockerfile's"
    );
    assert!(order.lines().filter(|l| !l.starts_with('#')).count() > 1000);
}
