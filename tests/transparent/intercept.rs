//! Pinned hosts intercepted and checked, unlisted ones spliced or refused,
//! and pinproxy's own connections left alone.

use super::*;

#[test]
fn pinned_hosts_are_intercepted_and_checked_without_proxy_settings() {
    if netns::skip("pinned_hosts_are_intercepted_and_checked_without_proxy_settings") {
        return;
    }
    let s = setup("tp-pin", |pki| pinset(&[pki.int.pin().to_string()]));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let ca = proxy.ca.to_str().unwrap();
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);

    // curl with no proxy variable at all: the kernel sends it to pinproxy,
    // which intercepts (the client sees the pod CA) and pins upstream.
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("https://{PINNED}/x"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=pinned"), "{out}");
    assert!(out.contains("path=/x"), "{out}");

    // The same through a client that ignores proxy settings by construction.
    let py = check(app.command_as(APP_UID, netns::python()).args([
        "-I",
        "-c",
        RAW_TLS_CLIENT,
        PINNED,
        WORLD_V4[0],
        ca,
    ]));
    let text = String::from_utf8_lossy(&py.stdout);
    assert!(
        text.contains("200 OK") && text.contains("upstream=pinned"),
        "{text}"
    );

    // Plain HTTP to port 80 follows the forward rules: upgraded to TLS and
    // pinned.
    let resolve80 = format!("{PINNED}:80:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &["--resolve", &resolve80, &format!("http://{PINNED}/plain")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("upstream=pinned") && out.contains("path=/plain"),
        "{out}"
    );

    assert!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"intercepted\",protocol=\"tls\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"loop\""
        ),
        0.0,
        "no loop"
    );
    drop(proxy);
}

#[test]
fn a_pin_mismatch_is_a_502_inside_tls() {
    if netns::skip("a_pin_mismatch_is_a_502_inside_tls") {
        return;
    }
    let wrong = pinproxy::policy::pin::Pin::from_bytes([9; 32]).to_string();
    let s = setup("tp-mis", |_| pinset(std::slice::from_ref(&wrong)));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());
    let resolve = format!("{PINNED}:443:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            proxy.ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-D",
            "-",
            &format!("https://{PINNED}/"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 502"), "{out}");
    assert!(out.contains("x-pinproxy-error: pin-mismatch"), "{out}");
    assert!(
        metric(
            app,
            &format!("pinproxy_pin_mismatch_total{{host=\"{PINNED}\",mode=\"enforce\"}}")
        ) >= 1.0
    );
    let _ = &s.pinned;
}

#[test]
fn unlisted_is_spliced_denied_is_refused_and_the_lock_holds() {
    if netns::skip("unlisted_is_spliced_denied_is_refused_and_the_lock_holds") {
        return;
    }
    let s = setup("tp-open", |pki| pinset(&[pki.int.pin().to_string()]));
    let app = &s.pod.app;
    let proxy = start_proxy(app, s.dir.path());

    // Unlisted and allowed: spliced to the address the app dialed, so the
    // app sees the real server's certificate (and trusts its own root).
    let (code, out) = curl_open(&s);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upstream=open"), "{out}");
    assert_eq!(
        metric(
            app,
            "pinproxy_requests_total{host=\"unlisted\",outcome=\"tunnel\"}"
        ),
        1.0
    );

    // A listed host on a port its entry doesn't allow: a TLS alert, counted.
    let before = metric(app, "pinproxy_denied_total{reason=\"port-not-allowed\"}");
    let resolve = format!("denied.pinned.test:443:{}", WORLD_V4[0]);
    let (code, out) = curl(
        app,
        &[
            "--cacert",
            proxy.ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "https://denied.pinned.test/",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("alert") || out.contains("handshake"),
        "a TLS error: {out}"
    );
    assert_eq!(
        metric(app, "pinproxy_denied_total{reason=\"port-not-allowed\"}"),
        before + 1.0
    );

    // An unlisted name the app dials at a private address: refused as on
    // the forward and CONNECT paths, and counted the same way — in
    // `denied_total` and under `unlisted` — over TLS (an alert) and over
    // plain HTTP to that address (the forward path's 403).
    app.ip(&["route", "add", "10.9.9.9/32", "dev", "eth0"]);
    let denied = || metric(app, "pinproxy_denied_total{reason=\"private-address\"}");
    let refused = || {
        metric(
            app,
            "pinproxy_requests_total{host=\"unlisted\",outcome=\"private-address\"}",
        )
    };
    assert_eq!((denied(), refused()), (0.0, 0.0));
    let resolve = "inside.test:443:10.9.9.9";
    let (code, out) = curl(app, &["--resolve", resolve, "https://inside.test/"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("alert") || out.contains("handshake"),
        "a TLS error: {out}"
    );
    assert_eq!((denied(), refused()), (1.0, 1.0));
    let (_, out) = curl(app, &["-i", "http://10.9.9.9/"]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("x-pinproxy-error: private-address"), "{out}");
    assert_eq!((denied(), refused()), (2.0, 2.0));

    // A client that sends nothing (it waits for a banner) to an unlisted
    // destination: closed after the first-byte timeout, and counted.
    let silent = netns::connect(app, APP_UID, WORLD_V4[1], 443);
    assert_eq!(silent, "closed");
    assert_eq!(
        metric(
            app,
            "pinproxy_transparent_connections_total{outcome=\"silent\",protocol=\"other\"}"
        ),
        1.0
    );

    // --lock: a port that isn't redirected is refused outright, not
    // silently reachable around pinproxy.
    let direct = netns::connect(app, APP_UID, WORLD_V4[1], 8443);
    assert!(direct.starts_with("error"), "{direct}");
    let _ = &s.open;
    drop(proxy);
}

#[test]
fn pinproxys_own_connections_are_not_redirected() {
    if netns::skip("pinproxys_own_connections_are_not_redirected") {
        return;
    }
    // A server in the world that reports the address a connection came
    // from, reached by pinproxy's UID directly and by the app's through
    // the redirect.
    let pod = Pod::new("tp-loop");
    let _server = netns::serve(&pod.world, "world", &[443]);
    check(pod.app.command(BIN).args([
        "redirect",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--port",
        "15001",
    ]));
    let from_proxy = netns::connect(&pod.app, PROXY_UID, WORLD_V4[0], 443);
    assert_eq!(
        from_proxy,
        format!("world {}:443", WORLD_V4[0]),
        "pinproxy's UID goes direct"
    );
    let from_app = netns::connect(&pod.app, APP_UID, WORLD_V4[0], 443);
    assert!(
        !from_app.starts_with("world"),
        "the app is redirected: {from_app}"
    );
}
