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

/// For an optimised x86_64 Linux build, lays out the functions pinproxy
/// runs together, in the order a file in `link/` lists them
/// (bench/link-order.sh writes it): `symbol-order.txt` for
/// x86_64-unknown-linux-gnu, `symbol-order-musl.txt` for the image's static
/// x86_64-unknown-linux-musl binary (their mangled names differ). It also
/// packs relative relocations (RELR): where glibc has them (2.36+) for the
/// gnu build; always for the static musl one, whose own start-up code
/// applies them. A fresh instance then maps ~2–4 MiB less of the binary
/// (docs/benchmarks.md, "Code layout"). The layout needs lld: rustup's
/// toolchains link the gnu target with it by default since 1.90; the musl
/// target links with the system's `cc`, so lld is asked for (rustc's own
/// `rust-lld` through its `gcc-ld` directory, else an installed `ld.lld`).
/// Whether the linker takes the options is not guessed from the toolchain's
/// version: a small program is linked with them first, with the same rustc,
/// target, flags and linker — and for the static musl binary with RELR, run
/// — and the options are used only if that works: any other linker, target
/// or toolchain links as before. A symbol the file names that the binary
/// lacks is skipped, so a stale file costs memory, never a build.
/// `PINPROXY_LINK_ORDER=0` turns all of it off, `PINPROXY_RELR=0` only the
/// packing (a gnu binary built with it needs glibc 2.36+ where it runs).
fn link_order() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-changed=link/symbol-order-musl.txt");
    println!("cargo:rerun-if-env-changed=PINPROXY_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=PINPROXY_RELR");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // PROFILE is "release" for every profile that inherits from release.
    if env("PROFILE") != "release" || env("PINPROXY_LINK_ORDER") == "0" {
        return;
    }
    let musl = match env("TARGET").as_str() {
        "x86_64-unknown-linux-gnu" => false,
        "x86_64-unknown-linux-musl" => true,
        _ => return,
    };
    let file = if musl {
        "link/symbol-order-musl.txt"
    } else {
        "link/symbol-order.txt"
    };
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(file);
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
    let relr: Vec<String> = if env("PINPROXY_RELR") != "0" && (musl || glibc_at_least(2, 36)) {
        vec!["-Wl,-z,pack-relative-relocs".into()]
    } else {
        Vec::new()
    };
    // The gnu target already links with lld (or with a linker the probe
    // finds lacking); the musl target is asked to.
    let linkers: Vec<Vec<String>> = if musl {
        let mut l = Vec::new();
        if let Some(dir) = rustc_gcc_ld_dir() {
            l.push(vec!["-fuse-ld=lld".into(), format!("-B{dir}")]);
        }
        l.push(vec!["-fuse-ld=lld".into()]);
        l
    } else {
        vec![Vec::new()]
    };
    let extras = [
        // The musl binary carries its own start-up code: a probe with RELR
        // must also run, or a libc without it would crash at start.
        ([args.clone(), relr].concat(), musl),
        (args, false),
    ];
    for lld in &linkers {
        for (extra, run) in &extras {
            let set = [lld.clone(), extra.clone()].concat();
            if extra.is_empty() {
                continue;
            }
            if probe(&set, *run) {
                for arg in set {
                    println!("cargo:rustc-link-arg-bins={arg}");
                }
                return;
            }
            if *run && probe(&set, false) {
                // Safe (the next set has no RELR), but worth a word: a
                // cross build, or a libc whose start-up code lacks RELR.
                println!(
                    "cargo:warning=the static binary links with RELR but the probe built so did not run here: built without it"
                );
            }
        }
    }
}

/// rustc's own directory of linker wrappers (`gcc-ld/ld.lld`, which runs
/// its `rust-lld`), for the C compiler's `-B`: how rustc itself links the
/// gnu target with lld.
fn rustc_gcc_ld_dir() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("--print=sysroot")
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let host = std::env::var("HOST").ok()?;
    let dir = Path::new(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/gcc-ld"));
    if dir.join("ld.lld").is_file() {
        dir.to_str().map(str::to_owned)
    } else {
        None
    }
}

const PROBE: &str = r#"fn main() {
    let v: Vec<Box<dyn std::fmt::Debug>> = vec![Box::new(1u8), Box::new("x")];
    std::process::exit(if format!("{v:?}") == "[1, \"x\"]" { 0 } else { 1 });
}
"#;

/// Whether a small program links with `args` added, built the way this
/// crate's binary is (the same rustc, target, RUSTFLAGS and linker), and
/// with `run`, whether it then runs (it exits 0 only if the pointers in its
/// vtables were relocated).
fn probe(args: &[String], run: bool) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else {
        return false;
    };
    let src = out.join("link_probe.rs");
    if std::fs::write(&src, PROBE).is_err() {
        return false;
    }
    let exe = out.join("link_probe");
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
        .arg(&exe)
        .arg(&src);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    for arg in args {
        cmd.arg(format!("-Clink-arg={arg}"));
    }
    let quiet = |c: &mut std::process::Command| {
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    quiet(&mut cmd) && (!run || quiet(&mut std::process::Command::new(&exe)))
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
