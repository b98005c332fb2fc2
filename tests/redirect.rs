//! `pinproxy redirect` against real kernel rules, in throwaway network
//! namespaces (see `support::netns`): clients running as the app's UID
//! connect to addresses outside the pod, and what answers shows whether the
//! rules redirected them — a listener reading `SO_ORIGINAL_DST` through
//! `pinproxy::proxy::original_dst::original_dst` ("original …"), the real
//! destination ("direct …"), or a local server ("local …").

mod support;

#[path = "redirect/lock.rs"]
mod lock;
#[path = "redirect/multicast.rs"]
mod multicast;
#[path = "redirect/unnamed.rs"]
mod unnamed;

use std::net::SocketAddr;
use std::process::Output;

use support::netns::{self, connect, serve, Netns, OriginalDstListener, Pod};

const PROXY_UID: u32 = 65532;
const APP_UID: u32 = 1000;
const OTHER_UID: u32 = 1001;
const PORT: u16 = 15001;
const PROXY_UID_ARG: &str = "65532";
const PORT_ARG: &str = "15001";

/// `pinproxy redirect ARGS` run as root inside `ns`.
fn pinproxy(ns: &Netns, args: &[&str]) -> Output {
    ns.command(env!("CARGO_BIN_EXE_pinproxy"))
        .arg("redirect")
        .args(args)
        .output()
        .expect("run pinproxy")
}

/// Same, which must succeed; returns stdout.
fn redirect(ns: &Netns, args: &[&str]) -> String {
    let out = pinproxy(ns, args);
    assert!(
        out.status.success(),
        "pinproxy redirect {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The rules of `ns` as `program` (iptables-save…) lists them, without the
/// timestamped comment lines and with chain packet counters zeroed: what is
/// compared is the rules, not the traffic.
fn saved(ns: &Netns, program: &str) -> String {
    let out = netns::check(&mut ns.command(program));
    String::from_utf8(out.stdout)
        .expect("utf-8 save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn loopback_listeners(pod: &Pod) -> OriginalDstListener {
    let addrs: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 1], PORT)),
        format!("[::1]:{PORT}").parse().unwrap(),
    ];
    OriginalDstListener::start(&pod.app, &addrs)
}

#[test]
fn app_connections_land_on_the_listener_with_their_original_destination() {
    if netns::skip("app_connections_land_on_the_listener_with_their_original_destination") {
        return;
    }
    let pod = Pod::new("land");
    let _world = serve(&pod.world, "direct", &[443, 8443]);
    let _local = serve(&pod.app, "local", &[8080]);
    let listener = loopback_listeners(&pod);

    let out = redirect(
        &pod.app,
        &["--proxy-uid", PROXY_UID_ARG, "--port", PORT_ARG],
    );
    assert!(
        out.contains("# IPv4: applied with `iptables-restore --noflush`"),
        "{out}"
    );
    assert!(
        out.contains("# IPv6: applied with `ip6tables-restore --noflush`"),
        "{out}"
    );

    // Before anything else: the world is reachable directly at all.
    assert_eq!(
        connect(&pod.app, PROXY_UID, "192.0.2.2", 443),
        "direct 192.0.2.2:443"
    );

    // Every port of the app's TCP egress is redirected (no --ports), IPv4 and IPv6.
    let app = |host, port| connect(&pod.app, APP_UID, host, port);
    assert_eq!(app("192.0.2.2", 443), "original 192.0.2.2:443");
    assert_eq!(app("192.0.2.3", 8443), "original 192.0.2.3:8443");
    assert_eq!(app("2001:db8::2", 443), "original [2001:db8::2]:443");
    assert_eq!(app("2001:db8::3", 8443), "original [2001:db8::3]:8443");
    // Root is an app UID like any other.
    assert_eq!(
        connect(&pod.app, 0, "192.0.2.2", 443),
        "original 192.0.2.2:443"
    );

    // Loopback and the pod's own addresses are not redirected.
    assert_eq!(app("127.0.0.1", 8080), "local 127.0.0.1:8080");
    assert_eq!(app("::1", 8080), "local [::1]:8080");
    assert_eq!(app("192.0.2.1", 8080), "local 192.0.2.1:8080");
    assert_eq!(app("2001:db8::1", 8080), "local [2001:db8::1]:8080");

    // The proxy's own connections go out as they are: no loop.
    assert_eq!(
        connect(&pod.app, PROXY_UID, "192.0.2.3", 8443),
        "direct 192.0.2.3:8443"
    );
    assert_eq!(
        connect(&pod.app, PROXY_UID, "2001:db8::2", 443),
        "direct [2001:db8::2]:443"
    );
    assert_eq!(listener.accepted(), 5);

    // Dialled directly, the listener's "original destination" is itself:
    // what the transparent listener's loop guard must refuse.
    assert_eq!(app("127.0.0.1", PORT), format!("original 127.0.0.1:{PORT}"));
    assert_eq!(app("::1", PORT), format!("original [::1]:{PORT}"));
}

#[test]
fn listed_ports_excluded_cidrs_and_excluded_uids_go_direct() {
    if netns::skip("listed_ports_excluded_cidrs_and_excluded_uids_go_direct") {
        return;
    }
    let pod = Pod::new("excl");
    let _world = serve(&pod.world, "direct", &[443, 8443]);
    // One dual-stack socket: IPv4 connections arrive as ::ffff:127.0.0.1,
    // and original_dst must still ask IPv4 conntrack.
    let listener = OriginalDstListener::start(&pod.app, &[format!("[::]:{PORT}").parse().unwrap()]);

    redirect(
        &pod.app,
        &[
            "--proxy-uid",
            PROXY_UID_ARG,
            "--port",
            PORT_ARG,
            "--ports",
            "80,443",
            "--exclude-cidr",
            "192.0.2.3/32",
            "--exclude-cidr",
            "2001:db8::3/128",
            "--exclude-uid",
            "1001",
        ],
    );
    let app = |host, port| connect(&pod.app, APP_UID, host, port);
    assert_eq!(app("192.0.2.2", 443), "original 192.0.2.2:443");
    assert_eq!(app("2001:db8::2", 443), "original [2001:db8::2]:443");
    // A port not listed.
    assert_eq!(app("192.0.2.2", 8443), "direct 192.0.2.2:8443");
    assert_eq!(app("2001:db8::2", 8443), "direct [2001:db8::2]:8443");
    // An excluded destination.
    assert_eq!(app("192.0.2.3", 443), "direct 192.0.2.3:443");
    assert_eq!(app("2001:db8::3", 443), "direct [2001:db8::3]:443");
    // An excluded UID.
    assert_eq!(
        connect(&pod.app, OTHER_UID, "192.0.2.2", 443),
        "direct 192.0.2.2:443"
    );
    assert_eq!(
        connect(&pod.app, OTHER_UID, "2001:db8::2", 443),
        "direct [2001:db8::2]:443"
    );
    assert_eq!(listener.accepted(), 2);
}

#[test]
fn lock_resets_what_is_not_redirected_and_goes_away_when_rerun_without_it() {
    if netns::skip("lock_resets_what_is_not_redirected_and_goes_away_when_rerun_without_it") {
        return;
    }
    let pod = Pod::new("lock");
    let _world = serve(&pod.world, "direct", &[443, 8443]);
    let _local = serve(&pod.app, "local", &[8080]);
    let listener = loopback_listeners(&pod);
    let base = [
        "--proxy-uid",
        PROXY_UID_ARG,
        "--port",
        PORT_ARG,
        "--ports",
        "443",
        "--exclude-uid",
        "1001",
    ];
    let with_lock: Vec<&str> = base.iter().copied().chain(["--lock"]).collect();
    let app = |host, port| connect(&pod.app, APP_UID, host, port);

    // Without the lock, a port that is not redirected is a silent bypass.
    redirect(&pod.app, &base);
    assert_eq!(app("192.0.2.2", 8443), "direct 192.0.2.2:8443");

    redirect(&pod.app, &with_lock);
    assert_eq!(app("192.0.2.2", 8443), "error ECONNREFUSED");
    assert_eq!(app("2001:db8::2", 8443), "error ECONNREFUSED");
    // Redirected traffic, loopback, the proxy and excluded UIDs pass.
    assert_eq!(app("192.0.2.2", 443), "original 192.0.2.2:443");
    assert_eq!(app("2001:db8::2", 443), "original [2001:db8::2]:443");
    assert_eq!(app("127.0.0.1", 8080), "local 127.0.0.1:8080");
    assert_eq!(app("192.0.2.1", 8080), "local 192.0.2.1:8080");
    assert_eq!(
        connect(&pod.app, PROXY_UID, "192.0.2.2", 8443),
        "direct 192.0.2.2:8443"
    );
    assert_eq!(
        connect(&pod.app, PROXY_UID, "2001:db8::2", 8443),
        "direct [2001:db8::2]:8443"
    );
    assert_eq!(
        connect(&pod.app, OTHER_UID, "192.0.2.2", 8443),
        "direct 192.0.2.2:8443"
    );

    // Rerun without --lock: the lock is gone, the redirect stays.
    redirect(&pod.app, &base);
    assert_eq!(app("192.0.2.2", 8443), "direct 192.0.2.2:8443");
    assert_eq!(app("192.0.2.2", 443), "original 192.0.2.2:443");
    for program in ["iptables-save", "ip6tables-save"] {
        let rules = saved(&pod.app, program);
        assert!(!rules.contains("PINPROXY_LOCK"), "{program}:\n{rules}");
        assert!(
            rules.contains("-A OUTPUT -p tcp -j PINPROXY_OUTPUT"),
            "{program}:\n{rules}"
        );
    }
    assert_eq!(listener.accepted(), 3);
}

const FULL: [&str; 11] = [
    "--proxy-uid",
    PROXY_UID_ARG,
    "--port",
    PORT_ARG,
    "--ports",
    "80,443",
    "--exclude-cidr",
    "192.0.2.3/32",
    "--exclude-uid",
    "1001",
    "--lock",
];

/// Drops the `# …` header lines pinproxy prints around each script.
fn scripts_only(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn second_run_changes_nothing_and_dry_run_printed_exactly_what_the_first_applied() {
    if netns::skip("second_run_changes_nothing_and_dry_run_printed_exactly_what_the_first_applied")
    {
        return;
    }
    let pod = Pod::new("idem");
    let dry: Vec<&str> = FULL.iter().copied().chain(["--dry-run"]).collect();
    let planned = redirect(&pod.app, &dry);

    let first = redirect(&pod.app, &FULL);
    assert_eq!(scripts_only(&first), scripts_only(&planned));
    let v4 = saved(&pod.app, "iptables-save");
    let v6 = saved(&pod.app, "ip6tables-save");
    for (rules, program) in [(&v4, "iptables-save"), (&v6, "ip6tables-save")] {
        for jump in [
            "-A OUTPUT -p tcp -j PINPROXY_OUTPUT",
            "-A OUTPUT -j PINPROXY_LOCK",
        ] {
            assert_eq!(rules.matches(jump).count(), 1, "{program}:\n{rules}");
        }
    }

    redirect(&pod.app, &FULL);
    assert_eq!(saved(&pod.app, "iptables-save"), v4);
    assert_eq!(saved(&pod.app, "ip6tables-save"), v6);
}

/// Someone else's rules in both tables pinproxy uses, both families.
fn foreign_rules(ns: &Netns, v4: &str, v6: &str) {
    for (program, dst) in [(v4, "203.0.113.9"), (v6, "2001:db8:ffff::9")] {
        for table in ["nat", "filter"] {
            netns::check(ns.command(program).args([
                "-t", table, "-A", "OUTPUT", "-d", dst, "-p", "tcp", "--dport", "9", "-j", "RETURN",
            ]));
        }
    }
}

#[test]
fn remove_leaves_the_rules_exactly_as_they_were() {
    if netns::skip("remove_leaves_the_rules_exactly_as_they_were") {
        return;
    }
    let pod = Pod::new("remove");
    foreign_rules(&pod.app, "iptables", "ip6tables");
    let v4 = saved(&pod.app, "iptables-save");
    let v6 = saved(&pod.app, "ip6tables-save");
    assert!(v4.contains("-A OUTPUT -d 203.0.113.9/32"), "{v4}");

    redirect(&pod.app, &FULL);
    // Installed, and nothing of the others' touched.
    for (before, program) in [(&v4, "iptables-save"), (&v6, "ip6tables-save")] {
        let during = saved(&pod.app, program);
        assert!(during.contains("PINPROXY_REDIRECT"), "{program}:\n{during}");
        let theirs: Vec<&str> = during.lines().filter(|l| !l.contains("PINPROXY")).collect();
        assert_eq!(theirs.join("\n"), **before, "{program}");
    }

    let out = redirect(&pod.app, &["--remove"]);
    assert!(out.contains("-X PINPROXY_OUTPUT"), "{out}");
    assert_eq!(saved(&pod.app, "iptables-save"), v4);
    assert_eq!(saved(&pod.app, "ip6tables-save"), v6);

    // Removing again finds nothing and changes nothing.
    let out = redirect(&pod.app, &["--remove"]);
    assert!(out.contains("# IPv4: no pinproxy rules to remove"), "{out}");
    assert!(out.contains("# IPv6: no pinproxy rules to remove"), "{out}");
    assert_eq!(saved(&pod.app, "iptables-save"), v4);
    assert_eq!(saved(&pod.app, "ip6tables-save"), v6);
}

#[test]
fn remove_in_a_fresh_namespace_leaves_no_rule_and_no_chain() {
    if netns::skip("remove_in_a_fresh_namespace_leaves_no_rule_and_no_chain") {
        return;
    }
    let ns = Netns::new("fresh");
    assert_eq!(saved(&ns, "iptables-save"), "");
    assert_eq!(saved(&ns, "ip6tables-save"), "");
    redirect(&ns, &FULL);
    redirect(&ns, &["--remove"]);
    // iptables cannot drop a table, so with the nft backend the tables it
    // created stay, empty: built-in chains with ACCEPT policies and nothing
    // else — no rule, no pinproxy chain.
    for program in ["iptables-save", "ip6tables-save"] {
        let rules = saved(&ns, program);
        for line in rules.lines() {
            let builtin = [
                ":PREROUTING ACCEPT [0:0]",
                ":INPUT ACCEPT [0:0]",
                ":FORWARD ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]",
                ":POSTROUTING ACCEPT [0:0]",
            ];
            let ok = ["*nat", "*filter", "COMMIT"].contains(&line) || builtin.contains(&line);
            assert!(ok, "{program} left {line:?}:\n{rules}");
        }
    }
}

#[test]
fn dry_run_touches_nothing() {
    if netns::skip("dry_run_touches_nothing") {
        return;
    }
    let ns = Netns::new("dry");
    let dry: Vec<&str> = FULL.iter().copied().chain(["--dry-run"]).collect();
    let out = redirect(&ns, &dry);
    assert!(out.contains("(dry run: nothing applied)"), "{out}");
    assert!(
        out.contains("-A PINPROXY_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{out}"
    );
    let out = redirect(&ns, &["--remove", "--dry-run"]);
    assert!(out.contains("-X PINPROXY_LOCK"), "{out}");
    assert_eq!(saved(&ns, "iptables-save"), "");
    assert_eq!(saved(&ns, "ip6tables-save"), "");
}

#[test]
fn without_ipv6_it_warns_and_installs_ipv4() {
    if netns::skip("without_ipv6_it_warns_and_installs_ipv4") {
        return;
    }
    let pod = Pod::without_ipv6("nov6");
    let _world = serve(&pod.world, "direct", &[443]);
    let listener =
        OriginalDstListener::start(&pod.app, &[SocketAddr::from(([127, 0, 0, 1], PORT))]);

    let out = pinproxy(
        &pod.app,
        &["--proxy-uid", PROXY_UID_ARG, "--port", PORT_ARG],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: IPv6 skipped: this network namespace has no IPv6 address"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("# IPv4: applied with"), "{stdout}");
    assert!(stdout.contains("# IPv6: skipped"), "{stdout}");
    assert!(!saved(&pod.app, "ip6tables-save").contains("PINPROXY"));
    assert_eq!(
        connect(&pod.app, APP_UID, "192.0.2.2", 443),
        "original 192.0.2.2:443"
    );
    assert_eq!(listener.accepted(), 1);

    let out = pinproxy(&pod.app, &["--remove"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!saved(&pod.app, "iptables-save").contains("PINPROXY"));
}

#[test]
fn legacy_backend_redirects_and_removes() {
    if netns::skip("legacy_backend_redirects_and_removes") {
        return;
    }
    let pod = Pod::new("legacy");
    let _world = serve(&pod.world, "direct", &[443, 8443]);
    let listener = loopback_listeners(&pod);
    foreign_rules(&pod.app, "iptables-legacy", "ip6tables-legacy");
    let v4 = saved(&pod.app, "iptables-legacy-save");
    let v6 = saved(&pod.app, "ip6tables-legacy-save");
    assert!(v4.contains("-A OUTPUT -d 203.0.113.9/32"), "{v4}");

    let args = [
        "--proxy-uid",
        PROXY_UID_ARG,
        "--port",
        PORT_ARG,
        "--ports",
        "443",
        "--lock",
        "--iptables-mode",
        "legacy",
    ];
    let out = redirect(&pod.app, &args);
    assert!(
        out.contains("applied with `iptables-legacy-restore --noflush`"),
        "{out}"
    );
    assert!(saved(&pod.app, "iptables-legacy-save").contains("PINPROXY_REDIRECT"));
    // The nft side of the same namespace holds none of it.
    assert!(!saved(&pod.app, "iptables-nft-save").contains("PINPROXY"));

    let app = |host, port| connect(&pod.app, APP_UID, host, port);
    assert_eq!(app("192.0.2.2", 443), "original 192.0.2.2:443");
    assert_eq!(app("2001:db8::2", 443), "original [2001:db8::2]:443");
    assert_eq!(app("192.0.2.2", 8443), "error ECONNREFUSED");
    assert_eq!(
        connect(&pod.app, PROXY_UID, "192.0.2.2", 443),
        "direct 192.0.2.2:443"
    );
    assert_eq!(listener.accepted(), 2);
    // The legacy lock is default-deny too: UDP-Lite does not leave.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("udplite.log");
    let _udplite = lock::udplite_echo(&pod, &log);
    for host in ["192.0.2.2", "2001:db8::2"] {
        assert_eq!(
            lock::send_other(&pod, "udplite", host, 443),
            lock::DROPPED_ERRNO,
            "{host}"
        );
    }
    assert_eq!(lock::heard(&log), 0);

    let again = saved(&pod.app, "iptables-legacy-save");
    redirect(&pod.app, &args);
    assert_eq!(saved(&pod.app, "iptables-legacy-save"), again);

    redirect(&pod.app, &["--remove", "--iptables-mode", "legacy"]);
    let after4 = saved(&pod.app, "iptables-legacy-save");
    let after6 = saved(&pod.app, "ip6tables-legacy-save");
    assert_eq!(after4, v4);
    assert_eq!(after6, v6);
}
