//! Records which versions of the trust data built into the binary it was
//! built with — webpki-roots (Mozilla's roots) and rustls — for `pinproxy
//! version`, read from Cargo.lock (none of them says so itself).

fn main() {
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
