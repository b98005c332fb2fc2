use super::*;

#[test]
fn options_are_validated() {
    let mut o = InjectOptions::default();
    assert!(o.validate().is_ok());
    o.pins_secret = "Bad_Name".into();
    assert!(o.validate().is_err());
    let o = InjectOptions {
        admin_port: 3128,
        ..Default::default()
    };
    assert!(o.validate().is_err());
    let o = InjectOptions {
        ca_dir: "rel".into(),
        ..Default::default()
    };
    assert!(o.validate().is_err());
}

#[test]
fn markers() {
    let v: Value = serde_yaml::from_str(
        "metadata: {annotations: {pinproxy.io/inject: 'false'}, labels: {pinproxy.io/inject: 'true'}}",
    )
    .unwrap();
    assert!(has_inject_marker(&v, false));
    assert!(has_inject_marker(&v, true));
}
