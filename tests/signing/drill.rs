//! The README's "Emergency: unpin one host now", run as written with the
//! built binary against a proxy under load.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sidecar;
use crate::support::*;
use crate::{admin, fetch, files, in_force, World, HOST};

/// One request under load: sent, answered, status, `x-pinproxy-error`.
type Sent = (Instant, Instant, u16, Option<String>);

/// Runs the built binary in `dir` with `command` (a README line, split on
/// spaces); returns stdout.
fn readme_command(dir: &Path, readme: &str, command: &str) -> String {
    assert!(
        readme.contains(command),
        "the README no longer says `{command}`"
    );
    let mut words = command.split(' ');
    assert_eq!(words.next(), Some("pinproxy"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(words)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{command}` failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_drill_follows_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Emergency: unpin one host now")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has the section");
    let w = World::new().await;
    let work = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ca = w.pki.root.pem();

    // Before the outage: a key (Signed pinsets), serial 41 in force. The
    // host's server then moved to a key the pins do not carry: requests
    // fail with pin-mismatch.
    readme_command(work.path(), &readme, "pinproxy keygen --out pinset");
    let pins = work.path().join("pins.yaml");
    // The repository holds what the Secret holds (the CA bundle it names).
    std::fs::write(work.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(&pins, w.pinset(41, &w.wrong, "enforce")).unwrap();
    readme_command(
        work.path(),
        &readme,
        "pinproxy sign --key pinset.key pins.yaml",
    );
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap();
    let (v41, s41) = (read("pins.yaml"), read("pins.yaml.sig"));
    let mut vol = SecretVolume::new(secret.path(), &files(&v41, Some(&s41), &ca));
    let key = work.path().join("pinset.pub").display().to_string();
    let st = state.path().display().to_string();
    let mut run = sidecar(&vol, &["--pinset-key", &key, "--state-dir", &st]).await;
    run.until("signed pinset in force").await;
    assert_eq!(fetch(&run).await.error(), Some("pin-mismatch"));

    // Load: four clients, one request after another each.
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (log, stop, listen) = (log.clone(), stop.clone(), run.listen);
        clients.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                let r = get(listen, &format!("http://{HOST}/")).await;
                let e = r.error().map(str::to_string);
                log.lock()
                    .unwrap()
                    .push((sent, Instant::now(), r.status.as_u16(), e));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Step 1: the host to mode: report, serial one higher.
    std::fs::write(&pins, w.pinset(42, &w.wrong, "report")).unwrap();
    assert!(section.contains("mode: report") && section.contains("serial:"));
    // Step 2: sign and check, as written.
    let signed = readme_command(
        work.path(),
        section,
        "pinproxy sign --key pinset.key pins.yaml",
    );
    assert!(signed.contains("serial 42"), "{signed}");
    let checked = readme_command(
        work.path(),
        section,
        "pinproxy check --key pinset.pub pins.yaml",
    );
    assert!(checked.contains("signature ok (serial 42"), "{checked}");
    // Step 3: both entries in one update (the kubelet's ..data swap).
    assert!(section.contains("--from-file=pins.yaml --from-file=pins.yaml.sig"));
    let (v42, s42) = (read("pins.yaml"), read("pins.yaml.sig"));
    let landed = Instant::now();
    vol.update(&files(&v42, Some(&s42), &ca));

    // The first request answered 200 after the swap: the old pinset never
    // lets this host through, so it was served under serial 42.
    let first = loop {
        let hit = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, _, status, _)| *sent >= landed && *status == 200)
            .map(|(_, done, _, _)| *done)
            .min();
        if let Some(t) = hit {
            break t;
        }
        assert!(
            landed.elapsed() < Duration::from_secs(10),
            "never served under serial 42"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    // Before the swap only the old pinset's refusal; once the new pinset
    // served one request, every request sent after it was served.
    let before: Vec<_> = log
        .iter()
        .filter(|(_, done, _, _)| *done < landed)
        .collect();
    assert!(!before.is_empty());
    for (_, _, status, e) in &before {
        assert_eq!((*status, e.as_deref()), (502, Some("pin-mismatch")));
    }
    let after: Vec<_> = log.iter().filter(|(sent, _, _, _)| *sent > first).collect();
    assert!(!after.is_empty());
    let failed: Vec<_> = after
        .iter()
        .filter(|(_, _, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "requests the new pinset allows failed: {failed:?}"
    );
    assert_eq!(in_force(&run).await.0, 42);
    assert_eq!(admin(&run, "/readyz").await.status, 200);
    run.until("pinset reloaded (signature verified)").await;
    eprintln!(
        "emergency drill: signed pins.yaml + pins.yaml.sig landed -> first request served under serial 42 in {:.1} ms \
         ({} requests before under load, {} after, 0 failed)",
        (first - landed).as_secs_f64() * 1000.0,
        before.len(),
        after.len()
    );
}
