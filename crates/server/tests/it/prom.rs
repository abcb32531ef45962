//! `/metrics` read by a real Prometheus text parser: the Python `prometheus_client` of the
//! repository's `.venv` (installed by `scripts/setup-reference.sh`). Shared by the server's
//! and the streaming server's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The families the parser found: family name → (type, samples).
pub type Families = BTreeMap<String, (String, Vec<Sample>)>;

fn python() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [fam.type, [[s.name, s.labels, s.value] for s in fam.samples]]
print(json.dumps(out))
"#;

/// Parses `text` with prometheus_client; `None` when it is not installed (unless
/// `RNATS_REQUIRE_REFERENCE=1`, as in CI, where that fails the test). A text the parser
/// rejects fails the test.
pub fn parse(text: &str) -> Option<Families> {
    let required = std::env::var("RNATS_REQUIRE_REFERENCE").as_deref() == Ok("1");
    let Some(py) = python() else {
        assert!(!required, "no .venv: run scripts/setup-reference.sh");
        eprintln!("no .venv with prometheus_client: /metrics not parsed");
        return None;
    };
    let mut child = Command::new(py)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        assert!(
            !required,
            "prometheus_client missing: run scripts/setup-reference.sh"
        );
        eprintln!("prometheus_client not installed: /metrics not parsed");
        return None;
    }
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {stderr}\n{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser output");
    let mut families = Families::new();
    for (name, fam) in v.as_object().expect("object") {
        let kind = fam[0].as_str().unwrap().to_string();
        let samples = fam[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s[0].as_str().unwrap().to_string(),
                labels: s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: s[2].as_f64().unwrap(),
            })
            .collect();
        families.insert(name.clone(), (kind, samples));
    }
    Some(families)
}

/// Whether a parsed sample is `name`: prometheus_client reports a counter's samples with a
/// `_total` suffix even when the text had none (the exporter's counters have none).
fn is(s: &Sample, name: &str) -> bool {
    s.name == name || s.name.strip_suffix("_total") == Some(name)
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(f: &Families, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    f.values()
        .flat_map(|(_, s)| s)
        .find(|s| {
            is(s, name)
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Every sample named `name`.
pub fn samples<'a>(f: &'a Families, name: &str) -> Vec<&'a Sample> {
    f.values()
        .flat_map(|(_, s)| s)
        .filter(|s| is(s, name))
        .collect()
}
