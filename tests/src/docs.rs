//! docs/api.md read back as data, so tests can hold it against the code (tests/tests/docs.rs)
//! and against the events a real call produces (tests/tests/client.rs).
//!
//! Conventions the reader relies on (docs/api.md follows them):
//! * each request is a `### request_*` heading under `## Requests`, with a table whose rows are
//!   `| `field` | type | yes-or-empty | default | rule |` and one ```json example;
//! * `## Events` has one table `| `name` | when | fields | fields when they apply |`, with an
//!   `every event` row for the fields all events carry. Field names are the backticked words
//!   outside parentheses (inside them are values: `(`outbound`, `inbound`)`);
//! * `## Status codes` has a table `| code | meaning |`.

use serde_json::Value;

use crate::repo_root;

#[derive(Debug, Clone)]
pub struct FieldDoc {
    pub name: String,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct RequestDoc {
    pub name: String,
    pub fields: Vec<FieldDoc>,
    pub example: Value,
}

#[derive(Debug, Clone, Default)]
pub struct EventDoc {
    pub name: String,
    /// Fields every such event carries.
    pub always: Vec<String>,
    /// Fields it carries in some cases only.
    pub sometimes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ApiDoc {
    pub requests: Vec<RequestDoc>,
    pub events: Vec<EventDoc>,
    /// The `every event` row.
    pub common: EventDoc,
    pub status_codes: Vec<u16>,
}

/// The text of a file under docs/.
pub fn read(name: &str) -> String {
    let path = repo_root().join("docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `## title` section of `text`, up to the next `## ` heading.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("docs/api.md has no '## {title}' section"));
    let body = &text[start + 1..];
    let body = &body[body.find('\n').map(|i| i + 1).unwrap_or(body.len())..];
    match body.find("\n## ") {
        Some(end) => &body[..end],
        None => body,
    }
}

/// The cells of a table row, trimmed; `None` for a line that is not a row.
fn cells(line: &str) -> Option<Vec<String>> {
    let l = line.trim();
    if !l.starts_with('|') || l.starts_with("|---") || l.starts_with("| ---") {
        return None;
    }
    Some(
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect(),
    )
}

/// Backticked words outside parentheses that look like field names.
pub fn names_in(cell: &str) -> Vec<String> {
    let mut outside = String::new();
    let mut depth = 0usize;
    let mut in_tick = false;
    for c in cell.chars() {
        match c {
            '`' => {
                in_tick = !in_tick;
                if depth == 0 {
                    outside.push(c);
                }
            }
            '(' if !in_tick => depth += 1,
            ')' if !in_tick => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| is_ident(w))
        .map(str::to_string)
        .collect()
}

fn is_ident(w: &str) -> bool {
    !w.is_empty()
        && w.starts_with(|c: char| c.is_ascii_lowercase())
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub fn api_doc() -> ApiDoc {
    let text = read("api.md");

    let mut requests = Vec::new();
    let reqs = section(&text, "Requests");
    for part in reqs.split("\n### ").skip(1) {
        let name = part.lines().next().unwrap_or("").trim().to_string();
        assert!(
            name.starts_with("request_"),
            "docs/api.md: '### {name}' under Requests"
        );
        let mut fields = Vec::new();
        for line in part.lines() {
            let Some(c) = cells(line) else { continue };
            if c[0] == "field" {
                continue;
            }
            assert_eq!(
                c.len(),
                5,
                "docs/api.md {name}: a field row has 5 cells: {line}"
            );
            let f = names_in(&c[0]);
            assert_eq!(
                f.len(),
                1,
                "docs/api.md {name}: one `field` per row: {line}"
            );
            assert!(
                c[2].is_empty() || c[2] == "yes",
                "docs/api.md {name}: required is 'yes' or empty: {line}"
            );
            fields.push(FieldDoc {
                name: f[0].clone(),
                required: c[2] == "yes",
            });
        }
        let example = part
            .split("```json\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap_or_else(|| panic!("docs/api.md {name}: no ```json example"));
        let example: Value = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("docs/api.md {name}: the example is not JSON: {e}"));
        requests.push(RequestDoc {
            name,
            fields,
            example,
        });
    }

    let mut events = Vec::new();
    let mut common = EventDoc::default();
    for line in section(&text, "Events").lines() {
        let Some(c) = cells(line) else { continue };
        if c[0] == "event" {
            continue;
        }
        assert_eq!(c.len(), 4, "docs/api.md Events: a row has 4 cells: {line}");
        let doc = EventDoc {
            name: names_in(&c[0]).first().cloned().unwrap_or_default(),
            always: names_in(&c[2]),
            sometimes: names_in(&c[3]),
        };
        if c[0] == "every event" {
            common = doc;
        } else {
            assert!(
                !doc.name.is_empty(),
                "docs/api.md Events: no `name`: {line}"
            );
            events.push(doc);
        }
    }
    assert!(
        !common.always.is_empty(),
        "docs/api.md Events: no 'every event' row"
    );

    let status_codes = section(&text, "Status codes")
        .lines()
        .filter_map(cells)
        .filter_map(|c| c[0].parse().ok())
        .collect();
    ApiDoc {
        requests,
        events,
        common,
        status_codes,
    }
}

impl ApiDoc {
    pub fn event(&self, name: &str) -> Option<&EventDoc> {
        self.events.iter().find(|e| e.name == name)
    }

    /// Checks one real event (`{"event_name": "botstream::x", "event_data": {...}}`) against
    /// its row: every documented field present, no field that is not documented.
    pub fn check_event(&self, ev: &Value) -> Result<(), String> {
        let full = ev["event_name"].as_str().unwrap_or_default();
        let name = full.trim_start_matches("botstream::");
        let doc = self
            .event(name)
            .ok_or_else(|| format!("event {name} is not in docs/api.md: {ev}"))?;
        let data = ev["event_data"]
            .as_object()
            .ok_or_else(|| format!("{name}: event_data is not an object"))?;
        for f in self.common.always.iter().chain(&doc.always) {
            if !data.contains_key(f) {
                return Err(format!(
                    "docs/api.md says {name} carries {f}, this one does not: {ev}"
                ));
            }
        }
        for k in data.keys() {
            let known = [
                &self.common.always,
                &self.common.sometimes,
                &doc.always,
                &doc.sometimes,
            ]
            .iter()
            .any(|l| l.contains(k));
            if !known {
                return Err(format!(
                    "{name} carries {k}, which docs/api.md does not list for it: {ev}"
                ));
            }
        }
        Ok(())
    }
}
