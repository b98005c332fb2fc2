//! The Grafana dashboard (deploy/grafana/pinproxy-dashboard.json, shipped
//! in the chart as charts/pinproxy/files/pinproxy-dashboard.json): its JSON
//! structure, its PromQL (promtool parses every query), and — against a
//! real proxy that served traffic — that every metric a panel or variable
//! names is in the proxy's /metrics.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use pinproxy::policy::pin::Pin;
use serde_json::Value;
use support::proxy::TestProxy;
use support::*;

const DEPLOY: &str = "deploy/grafana/pinproxy-dashboard.json";
const CHART: &str = "charts/pinproxy/files/pinproxy-dashboard.json";
const TEMPLATE: &str = "charts/pinproxy/templates/dashboard-configmap.yaml";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DEPLOY)).unwrap_or_else(|e| panic!("{DEPLOY}: {e}"))
}

/// Every panel, those inside rows included (a collapsed row holds its own).
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, refId, expr) of every query.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["refId"].as_str().unwrap_or_default().to_string(),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// The query of every `query` variable (`label_values(…)`).
fn variable_queries(d: &Value) -> Vec<String> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list is an array")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["query"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Every `pinproxy_…` metric name in a query.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("pinproxy_") {
        if expr[..i].chars().next_back().is_some_and(ident) {
            continue;
        }
        out.insert(expr[i..].chars().take_while(|c| ident(*c)).collect());
    }
    out
}

/// A scrape: family name → type, and the names of the samples present.
struct Scrape {
    types: HashMap<String, String>,
    samples: HashSet<String>,
}

fn parse_scrape(text: &str) -> Scrape {
    let mut types = HashMap::new();
    let mut samples = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| *c != '{' && *c != ' ')
                .collect();
            samples.insert(name);
        }
    }
    Scrape { types, samples }
}

/// Whether a query may name `name`, given what the proxy exposes: a
/// counter or gauge by its own name; a histogram only through its
/// `_bucket`, `_sum` and `_count` series (a summary: `_sum`, `_count`,
/// and its quantiles under its own name). The sample must be present.
fn resolve(name: &str, scrape: &Scrape) -> Result<(), String> {
    if let Some(kind) = scrape.types.get(name) {
        if kind == "histogram" {
            return Err(format!(
                "{name} is a histogram: query {name}_bucket, _sum or _count"
            ));
        }
    } else {
        let family = [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ]
        .iter()
        .find_map(|(suffix, kinds)| {
            let base = name.strip_suffix(suffix)?;
            let kind = scrape.types.get(base)?;
            kinds.contains(&kind.as_str()).then_some(base)
        });
        if family.is_none() {
            return Err(format!("{name}: no such metric family"));
        }
    }
    if scrape.samples.contains(name) {
        Ok(())
    } else {
        Err(format!("{name}: no sample in the scrape"))
    }
}

#[test]
fn the_chart_ships_the_same_dashboard_in_a_grafana_dashboard_configmap() {
    assert!(
        read(DEPLOY) == read(CHART),
        "{CHART} differs from {DEPLOY}: copy it (cp {DEPLOY} {CHART})"
    );
    let template = read(TEMPLATE);
    assert!(template.contains("{{- if .Values.dashboard.enabled }}"));
    assert!(template.contains("grafana_dashboard: \"1\""));
    assert!(template.contains(".Files.Get \"files/pinproxy-dashboard.json\""));
    let values = read("charts/pinproxy/values.yaml");
    assert!(values.contains("dashboard:\n  enabled: false\n"));
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some());

    // A data source variable every query goes through, so the dashboard
    // works with whatever the Prometheus data source is called.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"],
            ds_ref.as_str(),
            "variable {}",
            v["name"]
        );
    }

    let panels = panels(&d);
    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "{title}: id reused"
        );
        assert!(titles.insert(title), "{title}: title reused");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.to_string(), [x, y, w, h]));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "bargauge", "stat", "table"].contains(&p["type"].as_str().unwrap()),
            "{title}: panel type {}",
            p["type"]
        );
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = HashSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}");
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                !metric_names(expr).is_empty(),
                "{title}: a query that names no pinproxy metric: {expr}"
            );
        }
    }

    // The panels the issue asks for, by the metrics they show.
    let shown: BTreeSet<String> = queries(&d)
        .iter()
        .flat_map(|(_, _, e)| metric_names(e))
        .collect();
    for name in [
        "pinproxy_requests_total",
        "pinproxy_denied_total",
        "pinproxy_pin_mismatch_total",
        "pinproxy_next_pins_mismatch_total",
        "pinproxy_upstream_cert_expiry_timestamp_seconds",
        "pinproxy_pinset_expiry_timestamp_seconds",
        "pinproxy_upstream_chain_changes_total",
        "pinproxy_config_reloads_total",
        "pinproxy_config_generation",
        "pinproxy_upstream_handshake_seconds_bucket",
    ] {
        assert!(shown.contains(name), "no panel shows {name}");
    }
    // Expiry as time to expiry, not as a date.
    for (title, _, expr) in queries(&d) {
        if expr.contains("expiry_timestamp_seconds") {
            assert!(expr.ends_with("- time()"), "{title}: {expr}");
        }
    }
}

#[test]
fn promtool_parses_every_query() {
    let d = dashboard();
    // Grafana's variables become what Prometheus would see.
    let concrete = |expr: &str| {
        let mut e = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "6h");
        for v in ["namespace", "pod", "host"] {
            e = e.replace(&format!("${v}"), ".*");
        }
        assert!(!e.contains('$'), "an unknown variable in {expr}");
        e
    };
    let rules: Vec<Value> = queries(&d)
        .iter()
        .enumerate()
        .map(|(i, (_, _, expr))| {
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": concrete(expr)})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML.
    let file = write(
        dir.path(),
        "rules.yaml",
        &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    );
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is installed (scripts/test.sh installs it)");
    let index: Vec<String> = queries(&d)
        .iter()
        .enumerate()
        .map(|(i, (title, ref_id, _))| format!("query_{i}: panel {title:?} query {ref_id}"))
        .collect();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        index.join("\n")
    );
}

#[test]
fn histogram_series_resolve_only_through_their_suffixes() {
    let scrape = parse_scrape(
        "# TYPE pinproxy_h histogram\n\
         pinproxy_h_bucket{le=\"1\"} 1\npinproxy_h_sum 0.5\npinproxy_h_count 1\n\
         # TYPE pinproxy_c_total counter\npinproxy_c_total 3\n\
         # TYPE pinproxy_g gauge\npinproxy_g 1\n\
         # TYPE pinproxy_unseen counter\n",
    );
    for ok in [
        "pinproxy_h_bucket",
        "pinproxy_h_sum",
        "pinproxy_h_count",
        "pinproxy_c_total",
        "pinproxy_g",
    ] {
        assert_eq!(resolve(ok, &scrape), Ok(()), "{ok}");
    }
    for bad in [
        "pinproxy_h",             // a histogram has no bare series
        "pinproxy_c",             // not a family
        "pinproxy_c_total_count", // a counter has no _count
        "pinproxy_g_bucket",      // nor a gauge a _bucket
        "pinproxy_unseen",        // declared, no sample
        "pinproxy_missing",
    ] {
        assert!(resolve(bad, &scrape).is_err(), "{bad}");
    }
    assert_eq!(
        metric_names("sum(rate(pinproxy_h_bucket{x=\"pinproxy_no\"}[5m])) / xpinproxy_y"),
        BTreeSet::from(["pinproxy_h_bucket".to_string(), "pinproxy_no".to_string()])
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_names_is_in_a_live_scrape() {
    const OK: &str = "api.dash.test";
    const BAD: &str = "bad.dash.test";
    let pki = Pki::new(&[OK, BAD]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("dash")).await;
    let yaml = |comment: &str| {
        format!(
            "# {comment}\nversion: 1\nhosts:\n  {OK}:\n    pins: [{}]\n    next_pins: [{}]\n    expires: 2099-01-31\n    trust: ca.pem\n    address: {}\n  {BAD}:\n    pins: [{}]\n    trust: ca.pem\n    address: {}\n",
            pki.int.pin(),
            Pin::from_bytes([7; 32]),
            up.addr,
            Pin::from_bytes([9; 32]),
            up.addr,
        )
    };
    let p = TestProxy::builder()
        .pinset(&yaml("first"))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    // Traffic: a pass, a pin mismatch, a denial, and a reload.
    assert_eq!(get(p.addr, &format!("http://{OK}/")).await.status, 200);
    assert_eq!(
        get(p.addr, &format!("http://{BAD}/")).await.error(),
        Some("pin-mismatch")
    );
    assert_eq!(
        get(p.addr, "http://elsewhere.test/").await.error(),
        Some("host-not-allowed")
    );
    std::fs::write(&p.pins_path, yaml("second")).unwrap();
    p.reloader.reload().await.unwrap();
    assert_eq!(get(p.addr, &format!("http://{OK}/")).await.status, 200);

    let r = p.admin_get("/metrics").await;
    assert_eq!(r.status, 200);
    let scrape = parse_scrape(&r.body);
    let d = dashboard();
    let mut named: Vec<(String, String)> = Vec::new();
    for (title, ref_id, expr) in queries(&d) {
        for name in metric_names(&expr) {
            named.push((format!("panel {title:?} query {ref_id}"), name));
        }
    }
    for q in variable_queries(&d) {
        for name in metric_names(&q) {
            named.push((format!("variable query {q:?}"), name));
        }
    }
    let missing: Vec<String> = named
        .iter()
        .filter_map(|(at, name)| resolve(name, &scrape).err().map(|e| format!("{at}: {e}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{}\n--- scrape ---\n{}",
        missing.join("\n"),
        r.body
    );
    let distinct: BTreeSet<&String> = named.iter().map(|(_, n)| n).collect();
    eprintln!(
        "{} metric names, all in the scrape: {distinct:?}",
        distinct.len()
    );
}
