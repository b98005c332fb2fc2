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

/// For an optimised build linked by lld (rustc's default linker on
/// x86_64 Linux since 1.90), lays out the functions pinproxy runs together,
/// in the order `link/symbol-order.txt` lists them (bench/link-order.sh
/// writes it), and packs relative relocations (RELR, glibc 2.36+): a fresh
/// instance then maps ~5 MiB of the binary instead of ~9.5
/// (docs/benchmarks.md, "Memory"). Any other linker, target or toolchain
/// links as before: the options are lld's, and a symbol the file names
/// that the binary lacks is skipped, so a stale file costs memory, never a
/// build. `PINPROXY_LINK_ORDER=0` turns it off.
fn link_order() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=PINPROXY_LINK_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let lld_by_default = env("TARGET") == "x86_64-unknown-linux-gnu"
        && rustc_minor().is_some_and(|minor| minor >= 90)
        // A linker of the user's choosing (target.<triple>.linker, or
        // -C linker / -C linker-features in RUSTFLAGS) may not be lld.
        && env("RUSTC_LINKER").is_empty()
        && !env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if env("PROFILE") != "release" || env("PINPROXY_LINK_ORDER") == "0" || !lld_by_default {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The minor version of the compiler building this (`rustc 1.95.0 …`).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
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
