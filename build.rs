//! Records which versions of the trust data built into the binary it was
//! built with — webpki-roots (Mozilla's roots) and rustls — for `pinproxy
//! version`, read from Cargo.lock (none of them says so itself); and lays
//! out a release binary's code in the order `link/symbol-order.txt` gives
//! ([`link_order`]).

use std::path::Path;

fn main() {
    link_order();
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, var) in [
        ("webpki-roots", "PINPROXY_WEBPKI_ROOTS_VERSION"),
        ("rustls", "PINPROXY_RUSTLS_VERSION"),
    ] {
        let version = version_of(&lock, name).unwrap_or("unknown");
        println!("cargo:rustc-env={var}={version}");
    }
}

/// The version of package `name` in a Cargo.lock (the first, if several).
fn version_of<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            return next
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'));
        }
    }
    None
}

/// For an optimised x86_64-unknown-linux-gnu build whose linker is lld
/// (rustup's toolchains since 1.90 link with it by default), lays out the
/// functions pinproxy runs together, in the order `link/symbol-order.txt`
/// lists them (bench/link-order.sh writes it), and packs relative
/// relocations (RELR) when this machine's glibc has them (2.36+): a fresh
/// instance then maps ~4 MiB less of the binary (docs/benchmarks.md, "Code
/// layout"). Whether the linker takes the options is not guessed from the
/// toolchain's version: an empty program is linked with them first, with
/// the same rustc, flags and linker, and the options are used only if that
/// link succeeds — any other linker, target or toolchain links as before.
/// A symbol the file names that the binary lacks is skipped, so a stale
/// file costs memory, never a build. `PINPROXY_LINK_ORDER=0` turns both
/// off, `PINPROXY_RELR=0` only the packing (a binary built with it needs
/// glibc 2.36+ where it runs).
fn link_order() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=PINPROXY_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=PINPROXY_RELR");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // PROFILE is "release" for every profile that inherits from release.
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || env("PINPROXY_LINK_ORDER") == "0"
    {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    // One argument each (-Xlinker), so no character of the path is special.
    let mut args: Vec<String> = Vec::new();
    match order.to_str() {
        Some(path) if order.is_file() => args.extend([
            "-Xlinker".into(),
            format!("--symbol-ordering-file={path}"),
            "-Xlinker".into(),
            "--no-warn-symbol-ordering".into(),
        ]),
        _ => {}
    }
    let relr: Vec<String> = if env("PINPROXY_RELR") != "0" && glibc_at_least(2, 36) {
        vec!["-Wl,-z,pack-relative-relocs".into()]
    } else {
        Vec::new()
    };
    let chosen = [[args.clone(), relr].concat(), args]
        .into_iter()
        .find(|set| !set.is_empty() && links_with(set));
    for arg in chosen.unwrap_or_default() {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

/// Whether an empty program links with `args` added, built the way this
/// crate's binary is (the same rustc, target, RUSTFLAGS and linker).
fn links_with(args: &[String]) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else {
        return false;
    };
    let src = out.join("link_probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut cmd = std::process::Command::new(rustc);
    cmd.arg("--crate-name=link_probe")
        .arg("--edition=2021")
        .arg("-Copt-level=0")
        .arg(format!(
            "--target={}",
            std::env::var("TARGET").unwrap_or_default()
        ))
        .arg("-o")
        .arg(out.join("link_probe"))
        .arg(&src);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    for arg in args {
        cmd.arg(format!("-Clink-arg={arg}"));
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// Whether this machine's glibc (which the binary links against) is at
/// least `major.minor`: RELR needs the loader's support (2.36).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
