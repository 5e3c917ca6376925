//! The alerts in deploy/monitoring/prometheus-rule.yaml, checked by `promtool test rules`
//! against the synthetic series in deploy/monitoring/rules-tests.yaml: each alert fires and
//! stays quiet where it should. Skipped, saying so, only when promtool is not installed
//! (scripts/test.sh installs it: Debian's `prometheus` package).

use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

fn monitoring() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring"))
}

fn read(name: &str) -> Value {
    let text = std::fs::read_to_string(monitoring().join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn alert_names(rule: &Value) -> Vec<String> {
    let groups = rule["spec"]["groups"].as_sequence().unwrap();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let rule = read("prometheus-rule.yaml");
    let tests = read("rules-tests.yaml");
    let cases: Vec<&Value> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
        .collect();
    let names = alert_names(&rule);
    assert_eq!(names.len(), 5, "{names:?}");
    for name in names {
        let of: Vec<_> = cases.iter().filter(|c| c["alertname"].as_str() == Some(name.as_str())).collect();
        let fires = of.iter().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()));
        let quiet = of.iter().any(|c| c["exp_alerts"].as_sequence().is_some_and(|a| a.is_empty()));
        assert!(fires && quiet, "alert {name} needs a case where it fires and one where it does not");
    }
}

#[test]
fn promtool_passes_the_rule_tests() {
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus; scripts/test.sh does it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rule = read("prometheus-rule.yaml");
    let groups = serde_yaml::to_string(&serde_yaml::Mapping::from_iter([("groups".into(), rule["spec"]["groups"].clone())]))
        .unwrap();
    std::fs::write(dir.path().join("stowage-rules.yaml"), groups).unwrap();
    std::fs::copy(monitoring().join("rules-tests.yaml"), dir.path().join("rules-tests.yaml")).unwrap();
    let check = Command::new("promtool").args(["check", "rules", "stowage-rules.yaml"]).current_dir(dir.path()).output().unwrap();
    assert!(check.status.success(), "promtool check rules:\n{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let test = Command::new("promtool").args(["test", "rules", "rules-tests.yaml"]).current_dir(dir.path()).output().unwrap();
    assert!(test.status.success(), "promtool test rules:\n{}{}", String::from_utf8_lossy(&test.stdout), String::from_utf8_lossy(&test.stderr));
}
