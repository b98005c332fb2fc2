//! `pinproxy suggest`: a pinset, for a person to review, from the chains
//! learn mode recorded (`GET /learned` or a learn file).
//!
//! Per host it pins the keys that survive a leaf rotation: the
//! intermediate and anchor keys of the validated path — the keys common
//! to every path seen, or, where the paths share none, each path's
//! issuing intermediate. Every pin carries a comment with its subject and
//! notAfter; a host seen with one path only gets a warning. With
//! `--merge`, the given pinset is kept byte-for-byte and only hosts it
//! does not cover are added. The output is checked with the proxy's own
//! loader before it is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{small_runtime, Error};
use crate::control::learn::{self, Doc, LearnedHost, LearnedPath};
use crate::policy::comment;
use crate::policy::host::Host;
use crate::policy::pattern::Pattern;
use crate::policy::pin::Pin;
use crate::policy::{self, Decision, Policy};

#[derive(Args, Debug)]
pub struct SuggestArgs {
    /// Admin address of a pinproxy in learn mode (its /learned is read).
    #[arg(long, default_value = "http://127.0.0.1:9901", conflicts_with = "from")]
    pub admin: String,
    /// Read a learn file (--learn-file) or a saved /learned answer instead.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Print this pinset unchanged, with entries added for learned hosts
    /// it does not cover yet.
    #[arg(long)]
    pub merge: Option<PathBuf>,
    /// Group sibling hosts (a.x.com, b.x.com) with the same suggested pins
    /// into one "*.x.com" entry. It then also covers siblings never seen.
    #[arg(long)]
    pub group_wildcards: bool,
}

/// One suggested entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// The key to write: a host, or `*.parent` when grouped.
    key: String,
    /// Learned hosts it stands for.
    hosts: Vec<String>,
    pins: Vec<String>,
    ports: Vec<u16>,
    trust: String,
    /// Comment lines (without `#`).
    notes: Vec<String>,
}

pub fn suggest(args: &SuggestArgs) -> Result<(), Error> {
    let (doc, source) = match &args.from {
        Some(path) => match learn::read(path).map_err(Error::failed)? {
            Some(doc) => (doc, path.display().to_string()),
            None => return Err(Error::failed(format!("{}: no such file", path.display()))),
        },
        None => (fetch(&args.admin)?, format!("{}/learned", args.admin)),
    };
    if doc.hosts.is_empty() {
        let why = if doc.learning {
            "let the workload run in learn mode a while"
        } else {
            "the pinset in force does not learn: set `defaults.unlisted: learn`"
        };
        let message = format!("nothing learned yet in {source}: {why}");
        // A pinset of no hosts would deny everything: print none, unless
        // the given one is to be kept as it is.
        if args.merge.is_none() {
            return Err(Error::failed(message));
        }
        eprintln!("pinproxy suggest: {message}");
    }
    let mut entries = entries(&doc);
    let (text, base) = match &args.merge {
        Some(path) => {
            let original = std::fs::read_to_string(path)
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
            let existing = policy::load(path).map_err(Error::failed)?;
            if existing.defaults.unlisted == policy::Unlisted::Learn {
                eprintln!(
                    "pinproxy suggest: warning: {} keeps `defaults.unlisted: learn`, which lets \
                     every unlisted host through: set it to deny (or allow) in the merged file \
                     before you roll it out to enforce",
                    path.display()
                );
            }
            entries.retain(|e| !covered(&existing, &e.key));
            if args.group_wildcards {
                entries = group(entries);
            }
            let defaults = (
                existing.defaults.trust.describe(),
                existing.defaults.ports.clone(),
            );
            let merged = merge(&original, &entries, &defaults)?;
            (
                merged,
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            )
        }
        None => {
            if args.group_wildcards {
                entries = group(entries);
            }
            (fresh(&doc, &source, &entries)?, PathBuf::from("."))
        }
    };
    // `check` must accept what we print: validate with the same loader.
    if let Err(problems) = policy::parse(text.as_bytes(), &base, time::OffsetDateTime::now_utc()) {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(Error::failed(format!(
            "the suggested pinset does not load ({}); this is a bug",
            list.join("; ")
        )));
    }
    out!("{text}");
    Ok(())
}

/// `GET {admin}/learned` on the admin listener (plain HTTP).
fn fetch(admin: &str) -> Result<Doc, Error> {
    let authority = admin
        .strip_prefix("http://")
        .unwrap_or(admin)
        .trim_end_matches('/');
    if authority.contains('/') || admin.starts_with("https://") {
        return Err(Error::Usage(format!(
            "--admin {admin:?}: give the admin listener as http://HOST:PORT"
        )));
    }
    let rt = small_runtime()?;
    let body = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), get_learned(authority)).await
        })
        .map_err(|_| Error::failed(format!("{admin}: no answer within 10 s")))??;
    serde_json::from_slice(&body).map_err(|e| {
        Error::failed(format!(
            "{admin}/learned: not a learned-chains document: {e}"
        ))
    })
}

async fn get_learned(authority: &str) -> Result<bytes::Bytes, Error> {
    use http_body_util::BodyExt;
    let failed = |e: &dyn std::fmt::Display| Error::failed(format!("{authority}: {e}"));
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| failed(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| failed(&e))?;
    tokio::spawn(conn);
    let request = http::Request::get("/learned")
        .header(http::header::HOST, authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if !response.status().is_success() {
        return Err(failed(&format!("/learned answered {}", response.status())));
    }
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(&e))?
        .to_bytes())
}

/// Whether `key` is already an entry (or passthrough) of `existing`.
fn covered(existing: &Policy, key: &str) -> bool {
    Host::parse(key).is_ok_and(|h| {
        matches!(existing.lookup(&h), Decision::Listed(_))
            || existing.passthrough.by_host(&h).is_some()
    })
}

// === from learned paths to entries ===

/// One entry per learned host (its ports together), sorted by host. A
/// document is input like any other (a file can be edited): a host that is
/// not a host name or IP as pinproxy writes it, or a path with a pin that
/// does not parse, is left out with a warning.
fn entries(doc: &Doc) -> Vec<Entry> {
    let mut by_host: BTreeMap<&str, Vec<&LearnedHost>> = BTreeMap::new();
    for h in &doc.hosts {
        if Host::parse(&h.host).map_or(true, |p| p.to_string() != h.host) {
            eprintln!(
                "pinproxy suggest: skipping {:?}: not a host name",
                comment::escape(&h.host)
            );
            continue;
        }
        by_host.entry(&h.host).or_default().push(h);
    }
    by_host
        .into_iter()
        .filter_map(|(host, records)| entry(host, &records))
        .collect()
}

fn entry(host: &str, records: &[&LearnedHost]) -> Option<Entry> {
    let mut paths: Vec<&LearnedPath> = Vec::new();
    for p in records.iter().flat_map(|r| &r.paths) {
        let pins_parse = p.pins.iter().all(|pin| pin.parse::<Pin>().is_ok());
        if pins_parse && p.pins.len() >= 2 && !paths.iter().any(|q| q.pins == p.pins) {
            paths.push(p);
        }
    }
    let first = paths.first()?;
    // Keys above the leaf that every path carries, in path order, once
    // each (a path may carry one key twice: a root re-issued as an
    // intermediate).
    let mut common: Vec<String> = Vec::new();
    for pin in &first.pins[1..] {
        if paths.iter().all(|p| p.pins[1..].contains(pin)) && !common.contains(pin) {
            common.push(pin.clone());
        }
    }
    let pins = if common.is_empty() {
        // No key in common: each path's issuing intermediate (or anchor).
        let mut each: Vec<String> = Vec::new();
        for p in &paths {
            if !each.contains(&p.pins[1]) {
                each.push(p.pins[1].clone());
            }
        }
        each
    } else {
        common
    };
    let mut ports: Vec<u16> = records.iter().map(|r| r.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let seen: u64 = records.iter().map(|r| r.seen).sum();
    let mut notes = vec![format!(
        "learned: {seen} handshake(s), {} distinct validated path(s)",
        paths.len()
    )];
    if paths.len() == 1 {
        notes.push(
            "warning: only one validated path was ever seen; these pins survive a leaf \
             rotation, not a move to another CA: add a backup pin"
                .into(),
        );
    }
    notes.extend(transparency(&paths));
    for pin in &pins {
        notes.push(describe(pin, &paths));
    }
    Some(Entry {
        key: host.to_string(),
        hosts: vec![host.to_string()],
        pins,
        ports,
        trust: records[0].trust.clone(),
        notes,
    })
}

/// A warning for each CT verdict other than `ok` learned on the paths'
/// leaves: a publicly-trusted leaf without valid SCTs was not (properly)
/// logged, which a mis-issued certificate often is not.
fn transparency(paths: &[&LearnedPath]) -> Vec<String> {
    let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
    // Only the labels this build writes: a learned document is input.
    let known = |v: &str| {
        crate::tls::ct::Verdict::ALL
            .iter()
            .map(|k| k.as_str())
            .find(|k| *k == v)
    };
    for v in paths.iter().filter_map(|p| p.ct.as_deref().and_then(known)) {
        if v != "ok" && v != "stale-list" {
            *by_verdict.entry(v).or_default() += 1;
        }
    }
    by_verdict
        .into_iter()
        .map(|(v, n)| {
            let what = if v == "none" {
                "has no SCTs at all"
            } else {
                "has no SCTs that satisfy the CT policy"
            };
            format!(
                "warning: CT {v}: the leaf of {n} of {} path(s) {what}: a publicly-trusted \
                 certificate that was not properly logged; find out why before pinning \
                 (ct: enforce would refuse it)",
                paths.len()
            )
        })
        .collect()
}

/// `sha256/…: intermediate CN=…, notAfter …`.
fn describe(pin: &str, paths: &[&LearnedPath]) -> String {
    let cert = paths.iter().flat_map(|p| &p.certs).find(|c| c.pin == pin);
    match cert {
        Some(c) => format!(
            "{pin}: {} {}, notAfter {}",
            c.position,
            c.subject.as_deref().unwrap_or("(subject unknown)"),
            c.not_after.as_deref().unwrap_or("unknown")
        ),
        None => pin.to_string(),
    }
}

/// Merges sibling entries (one label under the same parent) with the same
/// pins, ports and trust into one `*.parent` entry — where the loader
/// would accept that wildcard (never over a public suffix).
fn group(entries: Vec<Entry>) -> Vec<Entry> {
    type Key = (String, Vec<String>, Vec<u16>, String);
    let mut groups: BTreeMap<Key, Vec<Entry>> = BTreeMap::new();
    let mut out = Vec::new();
    for e in entries {
        let parent = e
            .key
            .split_once('.')
            .map(|(_, p)| p.to_string())
            .filter(|p| {
                Pattern::parse(&format!("*.{p}")).is_ok()
                    && Host::parse(&e.key).is_ok_and(|h| matches!(h, Host::Name(_)))
            });
        match parent {
            Some(p) => groups
                .entry((p, e.pins.clone(), e.ports.clone(), e.trust.clone()))
                .or_default()
                .push(e),
            None => out.push(e),
        }
    }
    for ((parent, pins, ports, trust), members) in groups {
        if members.len() < 2 {
            out.extend(members);
            continue;
        }
        let hosts: Vec<String> = members.iter().flat_map(|m| m.hosts.clone()).collect();
        let mut notes = vec![format!("grouped: {}", hosts.join(", "))];
        let mut seen = BTreeSet::new();
        for n in members.iter().flat_map(|m| &m.notes) {
            if n.starts_with("sha256/") && seen.insert(n.clone()) {
                notes.push(n.clone());
            }
        }
        out.push(Entry {
            key: format!("*.{parent}"),
            hosts,
            pins,
            ports,
            trust,
            notes,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

// === YAML ===

/// An entry's fields, as the YAML serializer writes them.
#[derive(serde::Serialize)]
struct Fields<'a> {
    pins: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<&'a [u16]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trust: Option<&'a str>,
}

/// One entry as YAML under `hosts:`, its key indented by `indent`.
/// `defaults` are the target file's trust and ports: fields equal to them
/// are left out.
///
/// Key and fields come from the YAML serializer, which quotes whatever
/// needs it; what is only for people (subjects, dates: text a server chose)
/// goes into comments through `comment::escape` (line breaks, controls and
/// what a YAML reader refuses become escapes), so nothing learned can end a
/// comment and write YAML of its own, or make the file unreadable.
fn render(e: &Entry, indent: &str, defaults: &(String, Vec<u16>)) -> Result<String, Error> {
    let fields = Fields {
        pins: &e.pins,
        ports: (e.ports != defaults.1).then_some(&e.ports[..]),
        trust: (e.trust != defaults.0).then_some(e.trust.as_str()),
    };
    let one = BTreeMap::from([(e.key.as_str(), fields)]);
    let yaml = serde_yaml::to_string(&one)
        .map_err(|err| Error::failed(format!("cannot write the entry for {:?}: {err}", e.key)))?;
    let mut lines = yaml.lines();
    let mut s = String::new();
    if let Some(key) = lines.next() {
        s.push_str(&format!("{indent}{key}\n"));
    }
    for n in &e.notes {
        s.push_str(&format!("{indent}  # {}\n", comment::escape(n)));
    }
    for line in lines {
        s.push_str(&format!("{indent}{line}\n"));
    }
    Ok(s)
}

fn fresh(doc: &Doc, source: &str, entries: &[Entry]) -> Result<String, Error> {
    let mut s = format!(
        "# Suggested by pinproxy suggest from {} learned host(s) ({}).\n\
         # The pins are the intermediate and root keys of the validated paths seen:\n\
         # they survive a leaf rotation. Review them and add backup pins.\n\
         version: 1\ndefaults:\n  unlisted: deny\n",
        doc.hosts.len(),
        comment::escape(source)
    );
    if entries.is_empty() {
        s.push_str("hosts: {}\n");
        return Ok(s);
    }
    s.push_str("hosts:\n");
    let defaults = ("webpki".to_string(), vec![443]);
    for e in entries {
        s.push_str(&render(e, "  ", &defaults)?);
    }
    Ok(s)
}

/// `original` with `entries` inserted at the end of its `hosts:` block;
/// every byte of `original` is kept, in order (an empty `hosts: {}` /
/// `hosts:` line is the one line rewritten, to `hosts:`).
fn merge(
    original: &str,
    entries: &[Entry],
    defaults: &(String, Vec<u16>),
) -> Result<String, Error> {
    if entries.is_empty() {
        return Ok(original.to_string());
    }
    let lines: Vec<&str> = original.split_inclusive('\n').collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("hosts:")) else {
        return Err(Error::failed(
            "--merge: the pinset has no top-level hosts: key",
        ));
    };
    let value = lines[at]["hosts:".len()..]
        .split(" #")
        .next()
        .unwrap_or_default()
        .trim();
    let head = match value {
        "" => lines[at].to_string(),
        "{}" | "null" | "~" => "hosts:\n".to_string(),
        _ => return Err(Error::failed(
            "--merge: hosts: is written in flow style ({…}); write it as a block to merge into it",
        )),
    };
    // The block ends after its last indented line.
    let mut end = at + 1;
    let mut indent = None;
    for (i, l) in lines.iter().enumerate().skip(at + 1) {
        let starts_indented = l.starts_with(' ') || l.starts_with('\t');
        if !l.trim().is_empty() && !starts_indented && !l.starts_with('#') {
            break;
        }
        if starts_indented && !l.trim().is_empty() {
            end = i + 1;
            if indent.is_none() && !l.trim_start().starts_with('#') {
                indent = Some(l.len() - l.trim_start().len());
            }
        }
    }
    let indent = " ".repeat(indent.unwrap_or(2));
    let mut out: String = lines[..at].concat();
    out.push_str(&head);
    out.push_str(&lines[at + 1..end].concat());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    for e in entries {
        out.push_str(&render(e, &indent, defaults)?);
    }
    out.push_str(&lines[end..].concat());
    Ok(out)
}

#[cfg(test)]
mod tests;
