//! stowage's `--json` documents as the tests read them: parsed, and held to their schema in
//! `docs/json/`, so a renamed or retyped key fails the test that saw it, on a real engine.

use std::process::Output;

use serde_json::Value;

/// The document `out` printed, checked against the schema of its command.
pub(crate) fn report(out: &Output) -> Value {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    conforms(&doc);
    doc
}

/// Panics unless `doc` is valid against the schema of the command that wrote it.
pub(crate) fn conforms(doc: &Value) {
    let command = command_of(doc);
    let path = format!(
        "{}/docs/json/{command}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "`{command} --json` does not match {path}:\n{}\n{doc:#}",
        errors.join("\n")
    );
}

/// Which command wrote `doc`, by the keys only it has.
fn command_of(doc: &Value) -> &'static str {
    if doc.get("valid").is_some() {
        "check"
    } else if doc.get("lock_file").is_some() {
        "pin"
    } else if doc.get("dry_run").is_some() {
        "prune"
    } else if doc["summary"].get("pull").is_some() {
        "plan"
    } else if doc["summary"].get("pulled").is_some() {
        "pull"
    } else {
        "status"
    }
}

#[test]
fn a_document_with_a_renamed_key_does_not_conform() {
    let doc = serde_json::json!({
        "version": 1, "config": "/etc/stowage/config.toml", "images": [],
        "summary": {"pull": 0, "tag": 0, "keep": 0, "fail": 0},
    });
    conforms(&doc);
    let mut renamed = doc.clone();
    renamed["summary"]["failing"] = renamed["summary"]["fail"].take();
    renamed["summary"].as_object_mut().unwrap().remove("fail");
    assert!(std::panic::catch_unwind(|| conforms(&renamed)).is_err());
}
