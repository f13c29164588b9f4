//! docs/ cannot drift from the code: the API reference is held against the request parser, the
//! events the call core publishes and the status codes; the troubleshooting guide against the
//! table of hangup causes. No switch needed: these read the docs and call the code directly.

use std::collections::BTreeSet;

use e2e::docs::{self, ApiDoc};
use e2e::repo_root;
use serde_json::{json, Map, Value};

fn source(path: &str) -> String {
    let p = repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The code before its `#[cfg(test)]` module.
fn code(path: &str) -> String {
    let s = source(path);
    match s.find("#[cfg(test)]") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Every string literal of `text` (no escapes needed for what is looked for here).
fn literals(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn parse(name: &str, data: &Value) -> Result<api::request::Request, (u16, String)> {
    let body = json!({"event_name": name, "event_data": data});
    api::request::parse_request(&serde_json::to_vec(&body).unwrap())
        .map_err(|(_, e)| (e.code.code(), e.status))
}

/// The requests the parser knows: every `request_*` literal of request.rs it does not answer
/// with 139 (unknown request).
fn code_requests() -> BTreeSet<String> {
    literals(&code("crates/api/src/request.rs"))
        .into_iter()
        .filter(|l| l.starts_with("request_") && l.len() > "request_".len())
        .filter(|l| !matches!(parse(l, &json!({})), Err((139, _))))
        .collect()
}

#[test]
fn the_documented_requests_are_the_ones_the_switch_knows() {
    let doc = docs::api_doc();
    let documented: BTreeSet<String> = doc.requests.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        documented.len(),
        doc.requests.len(),
        "a request documented twice"
    );
    let known = code_requests();
    let missing: Vec<_> = known.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "requests the switch knows that docs/api.md does not document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "requests docs/api.md documents that the switch does not know: {extra:?}"
    );
    for r in &doc.requests {
        assert_eq!(
            r.example["event_name"],
            r.name.as_str(),
            "{}: example",
            r.name
        );
        let parsed = parse(&r.name, &r.example["event_data"])
            .unwrap_or_else(|e| panic!("{}: the documented example is refused: {e:?}", r.name));
        assert_eq!(parsed.name(), r.name, "Request::name() of the example");
    }
}

/// A value no field of any type accepts.
fn wrong() -> Value {
    json!([[]])
}

fn with(example: &Value, field: &str, value: Option<Value>) -> Value {
    let mut d: Map<String, Value> = example["event_data"].as_object().cloned().unwrap();
    match value {
        Some(v) => d.insert(field.to_string(), v),
        None => d.remove(field),
    };
    Value::Object(d)
}

#[test]
fn the_documented_fields_are_the_fields_the_parser_reads() {
    let doc = docs::api_doc();
    // Every name request.rs could read a field by.
    let candidates: BTreeSet<String> = literals(&code("crates/api/src/request.rs"))
        .into_iter()
        .filter(|l| {
            !l.starts_with("request_")
                && !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let mut problems = Vec::new();
    for r in &doc.requests {
        for f in &r.fields {
            if f.required {
                // Left out: 130, naming it.
                match parse(&r.name, &with(&r.example, &f.name, None)) {
                    Err((130, s)) if s.contains(&f.name) => {}
                    other => problems.push(format!(
                        "{}.{} is documented as required, but without it: {other:?}",
                        r.name, f.name
                    )),
                }
            } else {
                // Given a value no type accepts: 135, naming it. Proves the parser reads it.
                match parse(&r.name, &with(&r.example, &f.name, Some(wrong()))) {
                    Err((135, s)) if s.contains(&f.name) => {}
                    other => problems.push(format!(
                        "{}.{} is documented, but the parser ignores it: {other:?}",
                        r.name, f.name
                    )),
                }
                // And optional it is.
                if let Err(e) = parse(&r.name, &with(&r.example, &f.name, None)) {
                    problems.push(format!(
                        "{}.{} is documented as optional, but without it: {e:?}",
                        r.name, f.name
                    ));
                }
            }
        }
        // Any other field the parser reads is missing from the docs.
        for c in &candidates {
            if r.fields.iter().any(|f| &f.name == c) {
                continue;
            }
            if let Err(e) = parse(&r.name, &with(&r.example, c, Some(wrong()))) {
                problems.push(format!(
                    "{} reads a field '{c}' that docs/api.md does not list: {e:?}",
                    r.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "docs/api.md:\n{}", problems.join("\n"));
}

/// The names the call core publishes events under: the first string literal inside each
/// `publish(…)` / `publish_to(…)` call of crates/api/src/board (a call whose name is a variable
/// has none there: those are the CPA events, checked through `cpa_run::output_fields`).
fn board_event_names() -> BTreeSet<String> {
    let dir = repo_root().join("crates/api/src/board");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if !file.ends_with(".rs") || file == "tests.rs" {
            continue;
        }
        let text = code(&format!("crates/api/src/board/{file}"));
        for call in ["publish(", "publish_to("] {
            let mut from = 0;
            while let Some(i) = text[from..].find(call) {
                let at = from + i;
                from = at + call.len();
                let before = &text[..at];
                if before.ends_with("fn ") || before.ends_with('_') {
                    continue; // the definition, or another name ending in publish
                }
                // The argument list, up to the matching parenthesis.
                let mut depth = 1;
                let mut end = from;
                for (j, ch) in text[from..].char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = from + j;
                        break;
                    }
                }
                if let Some(name) = literals(&text[from..end]).into_iter().next() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

fn keys(m: &Map<String, Value>) -> BTreeSet<String> {
    m.keys().cloned().collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

#[test]
fn the_documented_events_are_the_events_the_switch_publishes() {
    let doc: ApiDoc = docs::api_doc();
    let documented: BTreeSet<String> = doc.events.iter().map(|e| e.name.clone()).collect();
    let mut published = board_event_names();
    assert!(
        published.contains("hangup") && published.contains("answered"),
        "the scan of crates/api/src/board found {published:?}"
    );

    // CPA events, from the function that builds them.
    let detection = |tone: bool| {
        cpa::Output::Detection(cpa::Detection {
            result: if tone { "BEEP" } else { "LV" }.into(),
            detection_ms: 1200,
            onset_ms: tone.then_some(900),
            frequency_hz: tone.then_some(1000.0),
            top_frequencies: vec![],
        })
    };
    let (name, plain) = api::cpa_run::output_fields(detection(false));
    let (_, tone) = api::cpa_run::output_fields(detection(true));
    published.insert(name.to_string());
    let d = doc.event(name).expect("cpa_detection is documented");
    assert_eq!(keys(&plain), set(&d.always), "{name}: fields");
    let all: BTreeSet<String> = set(&d.always).union(&set(&d.sometimes)).cloned().collect();
    assert_eq!(keys(&tone), all, "{name} of a tone: fields");
    let (name, done) = api::cpa_run::output_fields(cpa::Output::Done {
        result: "LV".into(),
        reason: cpa::DoneReason::BreakEvent,
    });
    published.insert(name.to_string());
    let d = doc.event(name).expect("cpa_done is documented");
    assert_eq!(keys(&done), set(&d.always), "{name}: fields");

    let missing: Vec<_> = published.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&published).collect();
    assert!(
        missing.is_empty(),
        "events the switch publishes that docs/api.md does not document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "events docs/api.md documents that the switch never publishes: {extra:?}"
    );
}

#[test]
fn the_documented_status_codes_are_the_switchs() {
    let doc = docs::api_doc();
    let text = code("crates/api/src/error.rs");
    let body = &text[text.find("pub enum StatusCode").expect("StatusCode")..];
    let body = &body[..body.find('}').unwrap()];
    let codes: BTreeSet<u16> = body
        .lines()
        .filter_map(|l| l.split('=').nth(1))
        .filter_map(|n| n.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(codes.contains(&144), "{codes:?}");
    assert_eq!(
        doc.status_codes.iter().copied().collect::<BTreeSet<_>>(),
        codes,
        "docs/api.md Status codes against crates/api/src/error.rs"
    );
}

#[test]
fn every_hangup_cause_has_its_troubleshooting_entry() {
    let guide = docs::read("troubleshooting.md");
    let causes = source("crates/api/data/causes.csv");
    let named: BTreeSet<String> = guide
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let missing: Vec<&str> = causes
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .filter(|name| !named.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "hangup causes docs/troubleshooting.md does not mention: {missing:?}"
    );
}
