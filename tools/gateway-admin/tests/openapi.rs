//! The API description is written from the routes' declarations, the
//! committed `openapi.yaml` is that output, and it keeps every constraint
//! the hand-written description it replaced had (kept as a fixture):
//! required fields, bounds, lengths, patterns, enums, closed objects,
//! parameters, responses, which routes need no token.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("YAML")
}

fn hand_written() -> Value {
    yaml(
        &std::fs::read_to_string(format!("{ROOT}/tests/fixtures/openapi-hand-written.yaml"))
            .unwrap(),
    )
}

fn generated() -> Value {
    yaml(&gateway_admin::openapi_yaml().unwrap())
}

/// Follows a `$ref` within `doc`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => v,
    }
}

/// The schema inside a nullable wrapper (`oneOf: [{type: null}, X]`,
/// `allOf: [X]`).
fn unwrap<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let v = resolve(doc, v);
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = v.get(key).and_then(Value::as_array) {
            let real: Vec<&Value> = list
                .iter()
                .filter(|s| s.get("type") != Some(&Value::String("null".into())))
                .collect();
            if real.len() == 1 {
                return unwrap(doc, real[0]);
            }
        }
    }
    v
}

fn types(v: &Value) -> Vec<String> {
    match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

struct Checker<'a> {
    old: &'a Value,
    new: &'a Value,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn schema(&mut self, at: &str, old: &Value, new: &Value) {
        let old = unwrap(self.old, old);
        let new = unwrap(self.new, new);
        for t in types(old) {
            let object_kept = t == "object" && new.get("properties").is_some();
            if !(types(new).contains(&t) || object_kept) {
                self.problems
                    .push(format!("{at}: type {t} became {:?}", types(new)));
            }
        }
        for key in [
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
        ] {
            if let Some(bound) = number(old.get(key)) {
                if number(new.get(key)) != Some(bound) {
                    self.problems
                        .push(format!("{at}: {key} {bound} became {:?}", new.get(key)));
                }
            }
        }
        for key in ["pattern", "format", "default"] {
            if let Some(value) = old.get(key) {
                let same = match (value, new.get(key)) {
                    (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
                    (a, b) => Some(a) == b,
                };
                // `format: byte` is the one format the old description used.
                let encoded = key == "format" && new.get("contentEncoding").is_some();
                if !(same || encoded) {
                    self.problems
                        .push(format!("{at}: {key} {value} became {:?}", new.get(key)));
                }
            }
        }
        if let Some(values) = old.get("enum").and_then(Value::as_array) {
            let mut a: Vec<String> = values.iter().map(ToString::to_string).collect();
            let mut b: Vec<String> = new
                .get("enum")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter(|x| !x.is_null())
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default();
            a.sort();
            b.sort();
            if a != b {
                self.problems.push(format!("{at}: enum {a:?} became {b:?}"));
            }
        }
        if old.get("additionalProperties") == Some(&Value::Bool(false))
            && new.get("additionalProperties") != Some(&Value::Bool(false))
        {
            self.problems.push(format!(
                "{at}: no longer closed (additionalProperties: false)"
            ));
        }
        self.required(at, old, new);
        self.properties(at, old, new);
        if let (Some(a), Some(b)) = (old.get("items"), new.get("items")) {
            self.schema(&format!("{at}[]"), a, b);
        } else if old.get("items").is_some() {
            self.problems.push(format!("{at}: items lost"));
        }
        if let Some(alternatives) = old.get("oneOf").and_then(Value::as_array) {
            let theirs = new
                .get("oneOf")
                .or(new.get("anyOf"))
                .and_then(Value::as_array);
            match theirs {
                Some(theirs) if theirs.len() == alternatives.len() => {
                    for (i, (a, b)) in alternatives.iter().zip(theirs).enumerate() {
                        self.schema(&format!("{at}|{i}"), a, b);
                    }
                }
                _ => self.problems.push(format!("{at}: oneOf lost")),
            }
        }
    }

    fn required(&mut self, at: &str, old: &Value, new: &Value) {
        let Some(fields) = old.get("required").and_then(Value::as_array) else {
            return;
        };
        let theirs = new
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for field in fields {
            if !theirs.contains(field) {
                self.problems
                    .push(format!("{at}: {field} no longer required"));
            }
        }
    }

    fn properties(&mut self, at: &str, old: &Value, new: &Value) {
        let Some(props) = old.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, schema) in props {
            match new.pointer(&format!("/properties/{name}")) {
                Some(theirs) => self.schema(&format!("{at}.{name}"), schema, theirs),
                None => self.problems.push(format!("{at}: property {name} lost")),
            }
        }
    }

    fn operation(&mut self, at: &str, old: &Value, new: &Value) {
        if let Some(body) = old.get("requestBody") {
            let body = resolve(self.old, body);
            let theirs = new.get("requestBody").map(|b| resolve(self.new, b));
            match theirs {
                None => self.problems.push(format!("{at}: request body lost")),
                Some(theirs) => {
                    if body.get("required") == Some(&Value::Bool(true))
                        && theirs.get("required") != Some(&Value::Bool(true))
                    {
                        self.problems
                            .push(format!("{at}: request body no longer required"));
                    }
                    self.content(&format!("{at} body"), body, theirs);
                }
            }
        }
        self.parameters(at, old, new);
        self.responses(at, old, new);
        if old.get("security") == Some(&Value::Array(Vec::new())) {
            let open = new
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|list| {
                    list.iter()
                        .all(|s| s.as_object().is_some_and(|m| m.is_empty()))
                });
            if !open {
                self.problems.push(format!("{at}: now needs a token"));
            }
        }
    }

    fn content(&mut self, at: &str, old: &Value, new: &Value) {
        let Some(kinds) = old.get("content").and_then(Value::as_object) else {
            return;
        };
        for (kind, media) in kinds {
            match new.pointer(&format!("/content/{}", kind.replace('/', "~1"))) {
                Some(theirs) => {
                    if let (Some(a), Some(b)) = (media.get("schema"), theirs.get("schema")) {
                        self.schema(&format!("{at} {kind}"), a, b);
                    }
                }
                None => self.problems.push(format!("{at}: {kind} lost")),
            }
        }
    }

    fn parameters(&mut self, at: &str, old: &Value, new: &Value) {
        let theirs: Vec<&Value> = new
            .get("parameters")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().map(|p| resolve(self.new, p)).collect())
            .unwrap_or_default();
        for param in old
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let param = resolve(self.old, param);
            let (name, place) = (param.get("name"), param.get("in"));
            let found = theirs
                .iter()
                .find(|p| p.get("name") == name && p.get("in") == place);
            match found {
                None => self.problems.push(format!("{at}: parameter {name:?} lost")),
                Some(p) => {
                    if param.get("required") == Some(&Value::Bool(true))
                        && p.get("required") != Some(&Value::Bool(true))
                    {
                        self.problems
                            .push(format!("{at}: parameter {name:?} no longer required"));
                    }
                    if let (Some(a), Some(b)) = (param.get("schema"), p.get("schema")) {
                        self.schema(&format!("{at} ?{}", name.unwrap_or(&Value::Null)), a, b);
                    }
                }
            }
        }
    }

    fn responses(&mut self, at: &str, old: &Value, new: &Value) {
        let Some(statuses) = old.get("responses").and_then(Value::as_object) else {
            return;
        };
        for (status, response) in statuses {
            let response = resolve(self.old, response);
            match new
                .pointer(&format!("/responses/{status}"))
                .map(|r| resolve(self.new, r))
            {
                Some(theirs) => self.content(&format!("{at} {status}"), response, theirs),
                None => self.problems.push(format!("{at}: response {status} lost")),
            }
        }
    }
}

/// Every constraint of `old` that `new` lost.
fn lost(old: &Value, new: &Value) -> Vec<String> {
    let mut checker = Checker {
        old,
        new,
        problems: Vec::new(),
    };
    for (path, item) in old["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            match new.pointer(&format!("/paths/{}/{method}", path.replace('/', "~1"))) {
                Some(theirs) => checker.operation(&at, operation, theirs),
                None => checker.problems.push(format!("{at}: operation lost")),
            }
        }
    }
    checker.problems
}

#[test]
fn the_committed_description_is_the_one_the_routes_declare() {
    let committed = std::fs::read_to_string(format!("{ROOT}/openapi.yaml")).unwrap();
    assert!(
        committed == gateway_admin::openapi_yaml().unwrap(),
        "openapi.yaml differs from the routes' declarations: run `make openapi`"
    );
}

#[test]
fn the_generated_description_keeps_every_constraint_of_the_hand_written_one() {
    let problems = lost(&hand_written(), &generated());
    assert!(
        problems.is_empty(),
        "constraints lost:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_constraint_that_disappears_is_caught() {
    let old = hand_written();
    let mut new = generated();
    // Plant losses: a bound, a required field, a closed body, a route.
    let allocate =
        "/paths/~1api~1credits~1allocate/post/requestBody/content/application~1json/schema";
    let schema_ref = new
        .pointer(&format!("{allocate}/$ref"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = schema_ref.unwrap().rsplit('/').next().unwrap().to_owned();
    let schema = new
        .pointer_mut(&format!("/components/schemas/{name}"))
        .unwrap();
    schema["properties"]["credits"] = serde_json::json!({"type": "integer"});
    schema["required"] = serde_json::json!(["userId"]);
    schema
        .as_object_mut()
        .unwrap()
        .remove("additionalProperties");
    new["paths"]
        .as_object_mut()
        .unwrap()
        .remove("/api/usage/export");
    let problems = lost(&old, &new).join("\n");
    for expected in [
        "minimum 1",
        "credits\" no longer required",
        "no longer closed",
        "GET /api/usage/export: operation lost",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not caught in:\n{problems}"
        );
    }
}
