//! Applying: run `iptables-save`, render, feed `iptables-restore
//! --noflush`, for IPv4 and (where the namespace has it) IPv6.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use super::render::{render, render_remove};
use super::{Backend, Config, Error, Family, Installed, Outcome, IF_INET6};

// === applying ===

/// Installs `cfg` in the current network namespace, IPv4 then IPv6.
pub fn install(cfg: &Config, backend: Backend) -> Result<Vec<Outcome>, Error> {
    each_family(backend, |family, installed| {
        Some(render(cfg, family, installed))
    })
}

/// Removes every rule and chain pinproxy installed in the current network
/// namespace.
pub fn remove(backend: Backend) -> Result<Vec<Outcome>, Error> {
    each_family(backend, |_, installed| render_remove(installed))
}

fn each_family(
    backend: Backend,
    mut script_for: impl FnMut(Family, &Installed) -> Option<String>,
) -> Result<Vec<Outcome>, Error> {
    let mut outcomes = Vec::new();
    for family in Family::ALL {
        if family == Family::V6 {
            if let Some(reason) = ipv6_missing(std::fs::read_to_string(IF_INET6))? {
                outcomes.push(Outcome::Skipped { family, reason });
                continue;
            }
        }
        let saved = run(family, backend.save(family), None)?;
        let installed = Installed::parse(&saved);
        let Some(script) = script_for(family, &installed) else {
            outcomes.push(Outcome::NothingToRemove { family });
            continue;
        };
        let program = backend.restore(family);
        run(family, program, Some(&script))?;
        outcomes.push(Outcome::Applied {
            family,
            program,
            script,
        });
    }
    Ok(outcomes)
}

/// Why this namespace cannot make IPv6 connections, given the result of
/// reading `/proc/net/if_inet6`; `None` when it can.
fn ipv6_missing(if_inet6: io::Result<String>) -> Result<Option<&'static str>, Error> {
    match if_inet6 {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(Some("the kernel has no IPv6 (no /proc/net/if_inet6)"))
        }
        Err(e) => Err(Error::Ipv6Probe(e)),
        Ok(text) if text.trim().is_empty() => Ok(Some(
            "this network namespace has no IPv6 address, not even ::1 (IPv6 disabled)",
        )),
        Ok(_) => Ok(None),
    }
}

/// Runs `program --noflush` with `stdin` (restore) or plain (save) and
/// returns its stdout.
fn run(family: Family, program: &'static str, stdin: Option<&str>) -> Result<String, Error> {
    let mut cmd = Command::new(program);
    if stdin.is_some() {
        cmd.arg("--noflush").stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::MissingTool { program },
            _ => Error::Spawn {
                family,
                program,
                source,
            },
        })?;
    // A restore that rejects its input may exit before reading all of it:
    // its exit status and stderr say more than the broken pipe.
    let written = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let output = child.wait_with_output().map_err(|source| Error::Spawn {
        family,
        program,
        source,
    })?;
    if !output.status.success() {
        return Err(Error::Failed {
            family,
            program,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    written.map_err(|source| Error::Spawn {
        family,
        program,
        source,
    })?;
    String::from_utf8(output.stdout).map_err(|_| Error::NotUtf8 { family, program })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_presence_is_read_from_if_inet6() {
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(ipv6_missing(Err(missing)).unwrap().is_some());
        assert!(ipv6_missing(Ok(String::new())).unwrap().is_some());
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(ipv6_missing(Ok(lo.to_string())).unwrap(), None);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            ipv6_missing(Err(denied)),
            Err(Error::Ipv6Probe(_))
        ));
    }
}
