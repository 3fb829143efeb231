//! docs/openapi.json against the real server, so that the document cannot
//! drift from it: every documented operation answers with a status the
//! document lists and a body its schema accepts; every status it lists is
//! seen (but for the few named in [`NOT_PROVOKED`]); the requests the server
//! refuses are the ones the documented schemas refuse, and the boundary
//! values it accepts the schemas accept; the served document is the file;
//! every `/api/v1` path the server routes is documented and every documented
//! one is routed.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOCUMENT: &str = include_str!("../docs/openapi.json");
const API_SOURCE: &str = include_str!("../src/http/api.rs");

/// Documented answers this test cannot provoke against a healthy memory
/// node: (method, path, status).
const NOT_PROVOKED: &[(&str, &str, u16)] = &[
    // The broker down: the memory broker never is.
    ("post", "/api/v1/publish", 503),
    ("post", "/api/v1/disconnect", 503),
    ("get", "/api/v1/rooms/{room}/history", 503),
    ("get", "/api/v1/rooms/{room}/presence", 503),
    // Draining, or a JWKS never loaded: the 200 answer has the same schema.
    ("get", "/ready", 503),
];

/// Methods the probe of every documented path tries.
const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH];

/// A durable room of the test node, and one that is not.
const DURABLE: &str = "orders:1";
const PLAIN: &str = "chat:1";

/// The test node: memory broker, `orders:` rooms keep history, `org:`
/// rooms have presence.
async fn node() -> Node {
    Node::start(
        NodeOptions::memory()
            .node_id("oa-n1")
            .env("WSGATE_HISTORY_NAMESPACES", "orders")
            .env("WSGATE_PRESENCE_NAMESPACES", "org"),
    )
    .await
}

/// The document, and which of its answers the server gave.
struct Doc {
    root: Value,
    /// (method, path template, status) answered so far.
    seen: BTreeSet<(String, String, u16)>,
}

/// An answer as it came: status, media type (no parameters) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    media_type: String,
    body: String,
}

impl Answer {
    async fn of(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = response.text().await.expect("a body");
        Answer {
            status,
            media_type,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request to a documented operation and the status the server must give.
struct Case {
    method: Method,
    /// The documented path, e.g. `/api/v1/rooms/{room}/history`.
    template: &'static str,
    /// Path parameters, in the template's order.
    path_params: Vec<(&'static str, String)>,
    query: Vec<(&'static str, String)>,
    /// The raw body; JSON unless a case says otherwise.
    body: Option<String>,
    expect: u16,
    /// The documented schemas accept the request though the server refuses
    /// it for a rule only the prose states (e.g. `since` ahead of the room).
    beyond_schema: bool,
}

impl Case {
    fn new(method: Method, template: &'static str, expect: u16) -> Case {
        Case {
            method,
            template,
            path_params: Vec::new(),
            query: Vec::new(),
            body: None,
            expect,
            beyond_schema: false,
        }
    }

    fn get(template: &'static str, expect: u16) -> Case {
        Self::new(Method::GET, template, expect)
    }

    fn post(template: &'static str, body: Value, expect: u16) -> Case {
        Self::new(Method::POST, template, expect).raw_body(body.to_string())
    }

    fn raw_body(mut self, body: String) -> Case {
        self.body = Some(body);
        self
    }

    fn path(mut self, name: &'static str, value: &str) -> Case {
        self.path_params.push((name, value.to_string()));
        self
    }

    fn query(mut self, name: &'static str, value: impl ToString) -> Case {
        self.query.push((name, value.to_string()));
        self
    }

    fn beyond_schema(mut self) -> Case {
        self.beyond_schema = true;
        self
    }

    fn url_path(&self) -> String {
        let mut path = self.template.to_string();
        for (name, value) in &self.path_params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{}: a path parameter is missing", self.template);
        path
    }
}

impl Doc {
    fn load() -> Doc {
        Doc {
            root: serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON"),
            seen: BTreeSet::new(),
        }
    }

    /// A local `$ref` (to a response or parameter component) followed.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local $ref");
                self.root
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} does not resolve"))
            }
            None => value,
        }
    }

    fn operation(&self, method: &Method, template: &str) -> &Value {
        self.root["paths"]
            .get(template)
            .and_then(|path| path.get(method.as_str().to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {template} is not documented"))
    }

    /// Every (method, path template) the document has.
    fn operations(&self) -> Vec<(Method, String)> {
        let mut all = Vec::new();
        for (template, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method.as_str().to_lowercase()).is_some() {
                    all.push((method, template.clone()));
                }
            }
        }
        all
    }

    /// A validator for a schema of the document: the schema beside the
    /// document's components, so that its `$ref`s resolve.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.root["components"],
            "allOf": [schema],
        });
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
    }

    /// Why `instance` does not match `schema`; empty when it does.
    fn violations(&self, schema: &Value, instance: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(instance)
            .map(|e| clip(&format!("{}: {e}", e.instance_path())))
            .collect()
    }

    /// Check an answer of `method template` against the document, and note it.
    fn check(&mut self, method: &Method, template: &str, answer: &Answer) {
        let operation = self.operation(method, template);
        let Some(response) = operation["responses"].get(answer.status.to_string()) else {
            panic!(
                "{method} {template} answered {}, which the document does not list: {}",
                answer.status, answer.body
            );
        };
        let response = self.resolve(response);
        let Some(content) = response["content"].get(&answer.media_type) else {
            panic!(
                "{method} {template} answered {} as {:?}, which the document does not list",
                answer.status, answer.media_type
            );
        };
        let schema = &content["schema"];
        let instance = if answer.media_type == "application/json" {
            answer.json()
        } else {
            Value::String(answer.body.clone())
        };
        let violations = self.violations(schema, &instance);
        assert!(
            violations.is_empty(),
            "{method} {template} {}: the body does not match the document: {violations:#?}\n{}",
            answer.status,
            answer.body
        );
        self.seen
            .insert((method.as_str().to_lowercase(), template.to_string(), answer.status));
    }

    /// Why the document refuses a case's request; empty when it accepts it.
    fn request_violations(&self, case: &Case) -> Vec<String> {
        let operation = self.operation(&case.method, case.template);
        let parameters: Vec<&Value> = operation["parameters"]
            .as_array()
            .map(|p| p.iter().map(|p| self.resolve(p)).collect())
            .unwrap_or_default();
        let mut violations = Vec::new();
        let given = |place: &str, name: &str| -> Option<String> {
            let list = if place == "path" {
                &case.path_params
            } else {
                &case.query
            };
            list.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        };
        for parameter in &parameters {
            let (name, place) = (
                parameter["name"].as_str().unwrap_or(""),
                parameter["in"].as_str().unwrap_or(""),
            );
            if place == "header" {
                continue;
            }
            match given(place, name) {
                None if parameter["required"] == true => violations.push(format!("{place} {name} is required")),
                None => {}
                Some(raw) => {
                    let schema = &parameter["schema"];
                    // Query values are text: an integer parameter's must parse as one.
                    let value = if schema["type"] == "integer" {
                        raw.parse::<i64>().map(Value::from).unwrap_or(Value::String(raw))
                    } else {
                        Value::String(raw)
                    };
                    violations.extend(
                        self.violations(schema, &value)
                            .into_iter()
                            .map(|v| format!("{name}: {v}")),
                    );
                }
            }
        }
        for (name, _) in &case.query {
            if !parameters.iter().any(|p| p["name"] == *name && p["in"] == "query") {
                violations.push(format!("query {name} is not documented"));
            }
        }
        match (operation.get("requestBody").map(|b| self.resolve(b)), &case.body) {
            (Some(body), Some(raw)) => match serde_json::from_str::<Value>(raw) {
                Ok(value) => violations.extend(self.violations(&body["content"]["application/json"]["schema"], &value)),
                Err(e) => violations.push(format!("the body is not JSON: {e}")),
            },
            (Some(body), None) if body["required"] == true => violations.push("the body is required".into()),
            (None, Some(_)) => violations.push("the operation takes no body".into()),
            _ => {}
        }
        violations
    }

    /// Send a case with the API key; check the status, the answer against
    /// the document, and that the document's request schemas agree with the
    /// server on the request.
    async fn send(&mut self, node: &Node, case: Case) -> Answer {
        let mut url = case.url_path();
        if !case.query.is_empty() {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(&case.query);
            url = format!("{url}?{}", query.finish());
        }
        let mut request = node.api(case.method.clone(), &url);
        if let Some(body) = &case.body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let answer = Answer::of(request).await;
        let what = format!(
            "{} {} {:?} {:?}",
            case.method,
            case.url_path(),
            case.query,
            case.body.as_deref().map(clip)
        );
        assert_eq!(answer.status, case.expect, "{what}: {}", answer.body);
        self.check(&case.method, case.template, &answer);
        let violations = self.request_violations(&case);
        if case.expect == 400 && !case.beyond_schema {
            assert!(
                !violations.is_empty(),
                "{what}: the server refuses it, the document accepts it"
            );
        } else {
            assert!(
                violations.is_empty(),
                "{what}: the document refuses it: {violations:#?}"
            );
        }
        answer
    }
}

/// A long body shortened for a failure message.
fn clip(text: &str) -> String {
    if text.len() > 200 {
        format!("{}… ({} bytes)", &text[..200], text.len())
    } else {
        text.to_string()
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_schema_in_it_is_valid() {
    let doc = Doc::load();
    assert_eq!(doc.root["openapi"], "3.1.0");
    assert_eq!(doc.root["info"]["title"], "wsgate server API");
    assert_eq!(
        doc.root["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "info.version is the crate's"
    );
    let scheme = &doc.root["components"]["securitySchemes"]["apiKey"];
    assert_eq!((&scheme["type"], &scheme["scheme"]), (&json!("http"), &json!("bearer")));
    assert_eq!(doc.root["security"], json!([{"apiKey": []}]));
    let mut operation_ids = BTreeSet::new();
    for (method, template) in doc.operations() {
        let operation = doc.operation(&method, &template);
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(operation_ids.insert(id.to_string()), "operationId {id} twice");
        let tag = operation["tags"][0].as_str().unwrap_or_default();
        if template.starts_with("/api/v1/") {
            assert_eq!(tag, "api", "{template}");
            assert!(operation.get("security").is_none(), "{template} needs the API key");
            assert!(operation["responses"].get("401").is_some(), "{template} lists 401");
        } else {
            assert_eq!(tag, "operations", "{template}");
            assert_eq!(operation["security"], json!([]), "{template} needs no key");
        }
        // Every response has a schema for each media type; every parameter one.
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let content = doc.resolve(response)["content"].as_object().expect("content");
            assert!(!content.is_empty(), "{method} {template} {status}");
            for (media_type, body) in content {
                let schema = &body["schema"];
                assert!(schema.is_object(), "{method} {template} {status} {media_type}");
                jsonschema::draft202012::meta::validate(schema)
                    .unwrap_or_else(|e| panic!("{method} {template} {status}: {e}"));
                doc.validator(schema);
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            doc.validator(&doc.resolve(parameter)["schema"]);
        }
        if let Some(body) = operation.get("requestBody") {
            doc.validator(&doc.resolve(body)["content"]["application/json"]["schema"]);
        }
    }
    for (name, schema) in doc.root["components"]["schemas"].as_object().expect("schemas") {
        jsonschema::draft202012::meta::validate(schema).unwrap_or_else(|e| panic!("schema {name}: {e}"));
        doc.validator(schema);
    }
    // The schemas can refuse: an error body is not a publish answer.
    let error = json!({"error": {"code": "unauthorized", "message": "invalid API key"}});
    assert!(
        doc.violations(&json!({"$ref": "#/components/schemas/Error"}), &error)
            .is_empty()
    );
    assert!(
        !doc.violations(&json!({"$ref": "#/components/schemas/PublishAccepted"}), &error)
            .is_empty()
    );
}

#[test]
fn every_api_path_the_server_routes_is_documented() {
    let doc = Doc::load();
    let documented: Vec<&String> = doc.root["paths"].as_object().expect("paths").keys().collect();
    // The path literals of src/http/api.rs: a whole path, or (ending in `/`)
    // the prefix of a templated one.
    let routed: BTreeSet<&str> = API_SOURCE
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| literal.starts_with("/api/v1/"))
        .collect();
    assert!(routed.contains("/api/v1/openapi.json"), "found the routes: {routed:?}");
    for path in &routed {
        let covered = if path.ends_with('/') {
            documented
                .iter()
                .any(|d| d.starts_with(path) && d[path.len()..].starts_with('{'))
        } else {
            documented.iter().any(|d| d == path)
        };
        assert!(
            covered,
            "the server routes {path}; docs/openapi.json does not document it"
        );
    }
    let expected = [
        "/api/v1/publish",
        "/api/v1/disconnect",
        "/api/v1/rooms",
        "/api/v1/connections",
        "/api/v1/rooms/{room}/history",
        "/api/v1/rooms/{room}/presence",
        "/api/v1/openapi.json",
    ];
    let api: BTreeSet<&str> = documented
        .iter()
        .map(|d| d.as_str())
        .filter(|d| d.starts_with("/api/v1"))
        .collect();
    assert_eq!(api, expected.into_iter().collect(), "the documented /api/v1 paths");
}

#[tokio::test]
async fn the_served_document_is_docs_openapi_json_behind_the_api_key() {
    let node = node().await;
    let response = node.api(Method::GET, "/api/v1/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let served = response.bytes().await.unwrap();
    assert!(
        served == DOCUMENT.as_bytes(),
        "GET /api/v1/openapi.json differs from docs/openapi.json"
    );
    let anonymous = reqwest::get(node.http_url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_server_answers_as_the_document_says() {
    let node = node().await;
    let mut doc = Doc::load();
    // 408 takes the server's 10 s body timeout: let it run meanwhile.
    let slow = [
        tokio::spawn(unfinished_body(node.addr, "/api/v1/publish")),
        tokio::spawn(unfinished_body(node.addr, "/api/v1/disconnect")),
    ];
    // Members, so that the listings have items for their schemas to check;
    // 43 is disconnected on the way.
    let _member = Client::user(&node, "42", Some("acme"), &[]).await;
    let mut leaving = Client::user(&node, "43", Some("acme"), &[]).await;

    publish_cases(&mut doc, &node).await;
    history_cases(&mut doc, &node).await;
    presence_cases(&mut doc, &node).await;
    listing_cases(&mut doc, &node).await;
    disconnect_cases(&mut doc, &node).await;
    assert_eq!(leaving.closed().await.0, 4001, "disconnect closed the user's socket");
    anonymous_cases(&mut doc, &node).await;
    operations_cases(&mut doc, &node).await;
    method_probe(&mut doc, &node).await;

    for (task, path) in slow.into_iter().zip(["/api/v1/publish", "/api/v1/disconnect"]) {
        let answer = task.await.expect("the slow request");
        assert_eq!(answer.status, 408, "{path}: {}", answer.body);
        doc.check(&Method::POST, path, &answer);
    }

    // Every answer the document lists was given, but for those named.
    for (method, template) in doc.operations() {
        let operation = doc.operation(&method, &template);
        for status in operation["responses"].as_object().expect("responses").keys() {
            let key = (
                method.as_str().to_lowercase(),
                template.clone(),
                status.parse::<u16>().expect("a numeric status"),
            );
            let excused = NOT_PROVOKED
                .iter()
                .any(|(m, p, s)| (*m, *p, *s) == (key.0.as_str(), key.1.as_str(), key.2));
            assert!(
                doc.seen.contains(&key) || excused,
                "the document lists {} {} {}, which the server never answered here",
                key.0,
                key.1,
                key.2
            );
        }
    }
    for (m, p, s) in NOT_PROVOKED {
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        assert!(
            doc.operation(&method, p)["responses"].get(s.to_string()).is_some(),
            "NOT_PROVOKED names {m} {p} {s}, which the document does not list"
        );
    }
}

async fn publish_cases(doc: &mut Doc, node: &Node) {
    const PUBLISH: &str = "/api/v1/publish";
    let answer = doc
        .send(
            node,
            Case::post(
                PUBLISH,
                json!({"rooms": [DURABLE, "user:42"], "event": "order:updated", "data": {"id": 7}, "id": "9-0"}),
                202,
            ),
        )
        .await;
    let value = answer.json();
    assert_eq!(value["data"]["rooms"], 2);
    assert!(
        value["data"]["positions"][DURABLE]["offset"].is_u64(),
        "a durable room's position: {value}"
    );
    assert_eq!(value["meta"]["node"], "oa-n1");
    // The bounds, at the edge: accepted by both.
    let rooms: Vec<String> = (0..1000).map(|i| format!("user:{i}")).collect();
    let longest = json!({"rooms": rooms, "event": "e".repeat(128), "id": "i".repeat(128)});
    doc.send(node, Case::post(PUBLISH, longest, 202)).await;
    doc.send(node, Case::post(PUBLISH, json!({"rooms": [PLAIN], "event": "e"}), 202))
        .await;
    // And one past: refused by both.
    let rooms: Vec<String> = (0..1001).map(|i| format!("user:{i}")).collect();
    let refused = [
        json!({"rooms": rooms, "event": "e"}),
        json!({"event": "x"}),
        json!({"rooms": [], "event": "x"}),
        json!({"rooms": ["Bad Room"], "event": "x"}),
        json!({"rooms": ["user:1"]}),
        json!({"rooms": ["user:1"], "event": ""}),
        json!({"rooms": ["user:1"], "event": "e".repeat(129)}),
        json!({"rooms": ["user:1"], "event": "bell\u{7}"}),
        json!({"rooms": ["user:1"], "event": "x", "id": "i".repeat(129)}),
        json!({"rooms": ["user:1"], "event": "x", "id": 7}),
        json!({"rooms": ["user:1"], "event": "x", "extra": 1}),
        json!(["user:1"]),
    ];
    for body in refused {
        doc.send(node, Case::post(PUBLISH, body, 400)).await;
    }
    doc.send(node, Case::new(Method::POST, PUBLISH, 400).raw_body("not json".into()))
        .await;
    // Nesting past 32 levels: the prose says so, not the schema.
    let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
    let body = format!(r#"{{"rooms":["user:1"],"event":"x","data":{deep}}}"#);
    doc.send(
        node,
        Case::new(Method::POST, PUBLISH, 400).raw_body(body).beyond_schema(),
    )
    .await;
    // 413: the event over limits.max_event_bytes (60 KiB), the body over 1 MiB.
    let big = json!({"rooms": ["user:1"], "event": "x", "data": "d".repeat(61 * 1024)});
    let answer = doc.send(node, Case::post(PUBLISH, big, 413)).await;
    assert_eq!(answer.json()["error"]["code"], "limit_exceeded");
    let huge = json!({"rooms": ["user:1"], "event": "x", "data": "d".repeat(1024 * 1024)});
    let answer = doc.send(node, Case::post(PUBLISH, huge, 413)).await;
    assert_eq!(answer.json()["error"]["code"], "bad_request");
}

async fn history_cases(doc: &mut Doc, node: &Node) {
    const HISTORY: &str = "/api/v1/rooms/{room}/history";
    let history = || Case::get(HISTORY, 200).path("room", DURABLE);
    let answer = doc.send(node, history().query("since", 0).query("limit", 10)).await;
    let value = answer.json();
    assert!(
        !value["data"].as_array().expect("events").is_empty(),
        "the published event is kept: {value}"
    );
    doc.send(node, history()).await;
    doc.send(node, history().query("limit", 1000)).await;
    let offset = value["meta"]["offset"].as_u64().expect("offset");
    doc.send(node, history().query("since", offset)).await;
    let refused = |name: &'static str, v: &str| {
        let mut case = history().query(name, v);
        case.expect = 400;
        case
    };
    for (name, value) in [("limit", "0"), ("limit", "1001"), ("since", "-1"), ("since", "x")] {
        doc.send(node, refused(name, value)).await;
    }
    doc.send(node, refused("since", &(offset + 1).to_string()).beyond_schema())
        .await;
    doc.send(node, Case::get(HISTORY, 400).path("room", "Bad")).await;
    let answer = doc.send(node, Case::get(HISTORY, 404).path("room", PLAIN)).await;
    assert_eq!(answer.json()["error"]["code"], "not_found");
}

async fn presence_cases(doc: &mut Doc, node: &Node) {
    const PRESENCE: &str = "/api/v1/rooms/{room}/presence";
    let answer = doc.send(node, Case::get(PRESENCE, 200).path("room", "org:acme")).await;
    let value = answer.json();
    assert!(
        !value["data"].as_array().expect("users").is_empty(),
        "the members are listed: {value}"
    );
    doc.send(node, Case::get(PRESENCE, 200).path("room", "org:nobody"))
        .await;
    doc.send(node, Case::get(PRESENCE, 400).path("room", "Bad")).await;
    let answer = doc.send(node, Case::get(PRESENCE, 404).path("room", PLAIN)).await;
    assert_eq!(answer.json()["error"]["code"], "not_found");
}

async fn listing_cases(doc: &mut Doc, node: &Node) {
    const ROOMS: &str = "/api/v1/rooms";
    const CONNECTIONS: &str = "/api/v1/connections";
    let answer = doc.send(node, Case::get(ROOMS, 200)).await;
    assert!(!answer.json()["data"].as_array().expect("rooms").is_empty());
    let answer = doc
        .send(
            node,
            Case::get(ROOMS, 200)
                .query("prefix", "user:")
                .query("page", 1)
                .query("limit", 1000),
        )
        .await;
    assert_eq!(answer.json()["meta"]["scope"], "node");
    doc.send(node, Case::get(ROOMS, 200).query("page", 1_000_000)).await;
    for (name, value) in [
        ("limit", "0"),
        ("limit", "1001"),
        ("page", "0"),
        ("page", "1000001"),
        ("page", "x"),
    ] {
        doc.send(node, Case::get(ROOMS, 400).query(name, value)).await;
    }
    let answer = doc.send(node, Case::get(CONNECTIONS, 200).query("user", "42")).await;
    let value = answer.json();
    assert_eq!(value["data"][0]["user_id"], "42", "{value}");
    doc.send(
        node,
        Case::get(CONNECTIONS, 200).query("user", "nobody").query("limit", 1),
    )
    .await;
    doc.send(node, Case::get(CONNECTIONS, 400)).await;
    doc.send(node, Case::get(CONNECTIONS, 400).query("user", "42").query("limit", 0))
        .await;
}

async fn disconnect_cases(doc: &mut Doc, node: &Node) {
    const DISCONNECT: &str = "/api/v1/disconnect";
    let reason = "r".repeat(100);
    let answer = doc
        .send(
            node,
            Case::post(
                DISCONNECT,
                json!({"user": "43", "reason": reason, "revoke": false}),
                202,
            ),
        )
        .await;
    assert_eq!(answer.json()["data"], json!({"user": "43", "revoked": false}));
    let answer = doc
        .send(
            node,
            Case::post(DISCONNECT, json!({"user": "nobody", "revoke": true}), 202),
        )
        .await;
    assert_eq!(answer.json()["data"]["revoked"], true);
    for body in [
        json!({}),
        json!({"user": "a b"}),
        json!({"user": "42", "reason": "r".repeat(101)}),
        json!({"user": "42", "revoke": "yes"}),
        json!({"user": "42", "extra": 1}),
    ] {
        doc.send(node, Case::post(DISCONNECT, body, 400)).await;
    }
    // A valid body, padded past 1 MiB.
    let huge = format!(r#"{{"user": "42"{}}}"#, " ".repeat(1024 * 1024));
    doc.send(node, Case::new(Method::POST, DISCONNECT, 413).raw_body(huge))
        .await;
}

/// Every `/api/v1` operation refuses a request without the key, or with a wrong one.
async fn anonymous_cases(doc: &mut Doc, node: &Node) {
    let http = reqwest::Client::new();
    for (method, template) in doc.operations() {
        if !template.starts_with("/api/v1/") {
            continue;
        }
        let url = node.http_url(&template.replace("{room}", DURABLE));
        for key in [None, Some("Bearer not-the-key-0123456789")] {
            let mut request = http.request(method.clone(), &url);
            if let Some(key) = key {
                request = request.header("authorization", key);
            }
            let answer = Answer::of(request).await;
            assert_eq!(answer.status, 401, "{method} {template} with {key:?}");
            doc.check(&method, &template, &answer);
        }
    }
}

async fn operations_cases(doc: &mut Doc, node: &Node) {
    let http = reqwest::Client::new();
    for path in ["/health", "/ready", "/metrics", "/api/v1/openapi.json"] {
        let answer = Answer::of(node.api(Method::GET, path)).await;
        assert_eq!(answer.status, 200, "{path}");
        doc.check(&Method::GET, path, &answer);
        if !path.starts_with("/api/") {
            let anonymous = Answer::of(http.get(node.http_url(path))).await;
            assert_eq!(anonymous.status, 200, "{path} needs no key");
        }
    }
}

/// Every documented path with every method: a documented method is routed
/// (never 404 "no such API endpoint"), another is 405 as documented.
async fn method_probe(doc: &mut Doc, node: &Node) {
    let paths: Vec<String> = doc.root["paths"].as_object().expect("paths").keys().cloned().collect();
    for template in paths {
        for method in METHODS {
            let request = node.api(method.clone(), &template.replace("{room}", DURABLE));
            let answer = Answer::of(request).await;
            assert!(
                !(answer.status == 404 && answer.body.contains("no such")),
                "{method} {template} is documented but not routed: {}",
                answer.body
            );
            let documented = doc.root["paths"][&template]
                .get(method.as_str().to_lowercase())
                .is_some();
            if documented {
                doc.check(&method, &template, &answer);
            } else {
                assert_eq!(answer.status, 405, "{method} {template}: {}", answer.body);
                // The 405 is listed by the path's operations.
                for (other, _) in doc.operations().into_iter().filter(|(_, t)| *t == template) {
                    doc.check(&other, &template, &answer);
                }
            }
        }
    }
    // The probe can tell: a path the server does not route.
    let answer = Answer::of(node.api(Method::GET, "/api/v1/nothing")).await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("no such API endpoint"), "{}", answer.body);
}

/// A request whose body never finishes: the server's answer after its 10 s
/// body timeout.
async fn unfinished_body(addr: SocketAddr, path: &'static str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    return (head.to_string(), body.to_string());
                }
            } else if n == 0 {
                panic!("the connection closed without an answer: {text}");
            }
        }
    };
    let (head, body) = tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let media_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        status,
        media_type: media_type.split(';').next().unwrap_or("").trim().to_string(),
        body,
    }
}
