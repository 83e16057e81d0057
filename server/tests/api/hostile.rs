//! Hostile input found by outside testing: NUL and control characters in every
//! input, malformed optional bodies, arrays in place of objects, requests the HTTP
//! layer refuses, and names that could impersonate others. Each is refused at the
//! boundary with a 4xx in the envelope (never a 500), on both backends alike, and
//! nothing already stored changes.

use agentid_protocol::{Envelope, PayloadType};
use reqwest::Method;

use crate::agents::{active_agent, catalogue, decide, get_json, grant, owner_token, TestAgent};
use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, Backend, TestApp};

/// An organization whose owner has an active agent granted `email:send`.
async fn setup(app: &TestApp) -> (String, TestAgent) {
    let owner = owner_token(app, "Acme").await;
    catalogue(app, &owner, "email:send", 0).await;
    let agent = active_agent(app, &owner, "mailer").await;
    grant(app, &owner, &agent.id, "email:send", None).await;
    (owner, agent)
}

/// Asserts a 400 envelope with `code` and returns its message.
async fn refused(response: reqwest::Response, code: &str, what: &str) -> String {
    let status = response.status().as_u16();
    assert_eq!(status, 400, "{what}: {status}");
    let body = assert_error(response, 400).await;
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn send_json(
    app: &TestApp,
    method: Method,
    path: &str,
    credential: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    request.send().await.unwrap()
}

/// Issue 15, point 15: an array is never read as an object, whatever the route.
async fn arrays_are_never_objects(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;

    // The hot path: the envelope in serde's sequence form was decided `allowed`.
    let payload = agent.action("email:send", Some("bob@example.com"));
    let envelope = Envelope::sign(PayloadType::Action, &payload.to_bytes(), &[&agent.key]);
    let sig = &envelope.signatures[0];
    let sequence = serde_json::json!([
        envelope.payload_type,
        envelope.payload,
        [[sig.keyid, sig.sig]]
    ]);
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/actions/verify",
        None,
        sequence.to_string(),
    )
    .await;
    let message = refused(response, "invalid_envelope", "envelope as an array").await;
    assert!(message.starts_with("malformed_envelope:"), "{message}");
    // A signature object as an array.
    let mut object: serde_json::Value = serde_json::from_str(&envelope.to_json()).unwrap();
    object["signatures"] = serde_json::json!([[sig.keyid, sig.sig]]);
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/actions/verify",
        None,
        object.to_string(),
    )
    .await;
    refused(response, "invalid_envelope", "signature as an array").await;
    // A signed payload written as the array of its values.
    let fresh = agent.action("email:send", Some("bob@example.com"));
    let array_payload = serde_json::to_vec(&serde_json::json!([
        fresh.agent_id,
        fresh.action,
        fresh.resource,
        null,
        fresh.iat,
        fresh.nonce,
        fresh.aud
    ]))
    .unwrap();
    let signed = Envelope::sign(PayloadType::Action, &array_payload, &[&agent.key]).to_json();
    let response = send_json(&app, Method::POST, "/api/v1/actions/verify", None, signed).await;
    let message = refused(response, "invalid_envelope", "payload as an array").await;
    assert!(message.starts_with("invalid_payload:"), "{message}");
    // The same statement as an object is allowed: only the spelling was refused.
    let decision = decide(&app, agent.sign(&fresh)).await;
    assert_eq!(decision["allowed"], true, "{decision}");

    // Login with the array of email and password.
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        r#"["owner@acme.example","correct horse battery staple"]"#,
    )
    .await;
    refused(response, "invalid_request", "login as an array").await;
    // A lifecycle change whose body is an array changes nothing.
    let path = format!("/api/v1/agents/{}/revoke", agent.id);
    let response = send_json(
        &app,
        Method::POST,
        &path,
        Some(&owner),
        r#"["compromised"]"#,
    )
    .await;
    refused(response, "invalid_request", "revoke with an array").await;
    let read = get_json(&app, &format!("/api/v1/agents/{}", agent.id), &owner).await;
    assert_eq!(read["status"], "active", "{read}");

    // Every operation that takes a JSON body, from the served OpenAPI document: an
    // empty array is refused as an array (before, serde read it as a struct with no
    // members: allowed for all-optional bodies, "invalid length 0" otherwise).
    let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            let path = template
                .replace("{agent_id}", &agent.id)
                .replace("{alert_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{name}", "email:send");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = send_json(&app, method.clone(), &path, Some(&owner), "[]").await;
            let what = format!("{method} {template}");
            let status = response.status().as_u16();
            assert_eq!(status, 400, "{what}");
            let body = assert_error(response, 400).await;
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("invalid type: sequence"), "{what}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 22, "only {checked} operations take a body");
    let read = get_json(&app, &format!("/api/v1/agents/{}", agent.id), &owner).await;
    assert_eq!(read["status"], "active", "{read}");
}
both_backends!(arrays_are_never_objects);

async fn status_of(app: &TestApp, owner: &str, agent: &TestAgent) -> serde_json::Value {
    get_json(app, &format!("/api/v1/agents/{}", agent.id), owner).await["status"].clone()
}

/// Issue 15, point 14: an optional body that is present must be valid; a bad one
/// changes nothing. No body (or an empty one) means no body.
async fn a_present_optional_body_must_be_valid(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let bad: [(&str, &[u8], u16, &str); 6] = [
        (
            "application/json",
            br#"{"reasn": "compromised key"}"#,
            400,
            "invalid_request",
        ),
        (
            "application/json",
            b"{\"reason\": \"\xff\xfe\"}",
            400,
            "invalid_json",
        ),
        (
            "text/plain",
            br#"{"reason": "compromised key"}"#,
            415,
            "unsupported_media_type",
        ),
        ("application/json", b"1e400", 400, "invalid_json"),
        ("application/json", b"{\"reason\": ", 400, "invalid_json"),
        (
            "application/json",
            br#"{"reason": "a\u0000b"}"#,
            400,
            "invalid_request",
        ),
    ];
    for (transition, before) in [("suspend", "active"), ("revoke", "active")] {
        for (content_type, body, status, code) in bad {
            let response = app
                .with(
                    Method::POST,
                    &format!("/api/v1/agents/{}/{transition}", agent.id),
                    &owner,
                )
                .header("content-type", content_type)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let what = format!("{transition} with {}", String::from_utf8_lossy(body));
            assert_eq!(response.status().as_u16(), status, "{what}");
            let error = assert_error(response, status).await;
            assert_eq!(error["error"]["code"], code, "{what}: {error}");
            assert_eq!(
                status_of(&app, &owner, &agent).await,
                before,
                "{what} changed the agent"
            );
        }
    }
    // A valid reason suspends; reactivation refuses the same bad bodies.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/suspend", agent.id),
            &owner,
        )
        .json(&serde_json::json!({ "reason": "investigating" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (content_type, body, status, _) in bad {
        let response = app
            .with(
                Method::POST,
                &format!("/api/v1/agents/{}/reactivate", agent.id),
                &owner,
            )
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(status_of(&app, &owner, &agent).await, "suspended");
    }
    // Whitespace is no body, whatever the content type says.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/reactivate", agent.id),
            &owner,
        )
        .header("content-type", "text/plain")
        .body(" \r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&app, &owner, &agent).await, "active");
    // No body at all, then `{}`.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/suspend", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/reactivate", agent.id),
            &owner,
        )
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&app, &owner, &agent).await, "active");
}
both_backends!(a_present_optional_body_must_be_valid);

/// Issue 15, point 14, for operations that take no body at all: a body sent to one
/// is refused before anything happens, instead of being ignored.
async fn operations_without_a_body_refuse_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let (key_id, _) = app.add_key(&owner, &["agents:read"]).await;
    let grants = get_json(&app, &format!("/api/v1/agents/{}/grants", agent.id), &owner).await;
    let grant_id = grants[0]["id"].as_str().unwrap().to_owned();
    let sessions = get_json(&app, "/api/v1/auth/sessions", &owner).await;
    let session_id = sessions[0]["id"].as_str().unwrap().to_owned();

    let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "get" || operation.get("requestBody").is_some() {
                continue;
            }
            let path = template
                .replace("{agent_id}", &agent.id)
                .replace("{grant_id}", &grant_id)
                .replace(
                    "{id}",
                    if template.contains("sessions") {
                        &session_id
                    } else {
                        &key_id
                    },
                );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let what = format!("{method} {template}");
            let response = send_json(&app, method, &path, Some(&owner), "{}").await;
            let message = refused(response, "invalid_request", &what).await;
            assert!(message.contains("no request body"), "{what}: {message}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "operations without a body");
    // Nothing happened: the session, the key and the grant are all still there.
    let me = app
        .with(Method::GET, "/api/v1/me", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let keys = get_json(&app, "/api/v1/api-keys", &owner).await;
    assert!(keys.to_string().contains(&key_id), "{keys}");
    let grants = get_json(&app, &format!("/api/v1/agents/{}/grants", agent.id), &owner).await;
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    // Without a body (or with only whitespace) they work.
    let response = app
        .http
        .post(app.url(&format!("/api/v1/agents/{}/challenge", agent.id)))
        .body("\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let path = format!("/api/v1/api-keys/{key_id}");
    let response = app
        .with(Method::DELETE, &path, &owner)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}
both_backends!(operations_without_a_body_refuse_one);

/// Issue 15, point 13: NUL (and other control characters) anywhere is a 400 in the
/// envelope at the boundary, never a 500, with or without a credential.
async fn nul_is_refused_at_the_boundary(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;

    // Without a credential.
    let response = app
        .http
        .post(app.url("/api/v1/agents/%00/challenge"))
        .send()
        .await
        .unwrap();
    let message = refused(response, "invalid_request", "challenge of %00").await;
    assert!(message.contains("%00"), "{message}");
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        r#"{"email":"owner\u0000@acme.example","password":"correct horse battery staple"}"#,
    )
    .await;
    let message = refused(response, "invalid_request", "login with NUL").await;
    assert!(message.contains("U+0000"), "{message}");
    let mut payload = agent.action("email:send", None);
    payload.agent_id.push('\0');
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/actions/verify",
        None,
        agent.sign(&payload),
    )
    .await;
    let message = refused(response, "invalid_envelope", "agent_id with NUL").await;
    assert!(
        message.starts_with("invalid_payload:") && message.contains("U+0000"),
        "{message}"
    );
    let mut envelope: serde_json::Value =
        serde_json::from_str(&agent.sign(&agent.action("email:send", None))).unwrap();
    envelope["signatures"][0]["keyid"] =
        format!("{}\0", envelope["signatures"][0]["keyid"].as_str().unwrap()).into();
    let response = send_json(
        &app,
        Method::POST,
        "/api/v1/actions/verify",
        None,
        envelope.to_string(),
    )
    .await;
    refused(response, "invalid_envelope", "keyid with NUL").await;

    // With a credential: bodies.
    let alert = uuid::Uuid::new_v4();
    let bodies = [
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            serde_json::json!({"name": "n", "description": "a\u{0}b", "public_key": "x"}),
        ),
        (
            Method::POST,
            "/api/v1/agents".to_owned(),
            serde_json::json!({"name": "a\u{0}", "public_key": "x"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{}", agent.id),
            serde_json::json!({"description": "\u{0}"}),
        ),
        (
            Method::POST,
            format!("/api/v1/agents/{}/suspend", agent.id),
            serde_json::json!({"reason": "\u{0}"}),
        ),
        (
            Method::POST,
            format!("/api/v1/alerts/{alert}/resolve"),
            serde_json::json!({"note": "done\u{0}"}),
        ),
        (
            Method::POST,
            "/api/v1/api-keys".to_owned(),
            serde_json::json!({"name": "k\u{0}", "permissions": ["agents:read"]}),
        ),
        (
            Method::POST,
            "/api/v1/users".to_owned(),
            serde_json::json!({"email": "\u{0}@acme.example", "password": "x", "role": "viewer"}),
        ),
        (
            Method::POST,
            "/api/v1/capabilities".to_owned(),
            serde_json::json!({"name": "a:b", "description": "\u{0}", "risk_level": "low"}),
        ),
    ];
    for (method, path, body) in bodies {
        let what = format!("{method} {path} {body}");
        let response = send_json(&app, method, &path, Some(&owner), body.to_string()).await;
        refused(response, "invalid_request", &what).await;
    }
    // Paths and query strings.
    let addresses = [
        (Method::GET, "/api/v1/agents?name=%00"),
        (Method::GET, "/api/v1/agents?after=%00"),
        (Method::GET, "/api/v1/agents?name=a%1Fb"),
        (Method::GET, "/api/v1/agents/%00"),
        (Method::GET, "/api/v1/agents/%00/keys"),
        (Method::GET, "/api/v1/users/%00"),
        (Method::PATCH, "/api/v1/users/%00"),
        (Method::DELETE, "/api/v1/api-keys/%00"),
        (Method::GET, "/api/v1/alerts?agent_id=%00"),
        (Method::GET, "/api/v1/audit?action=%00"),
        (Method::GET, "/api/v1/agents/x/trust/history?after=%00"),
        (Method::GET, "/api/v1/capabilities/a%00"),
        (Method::POST, "/api/v1/agents/%7F/suspend"),
        (Method::GET, "/api/v1/nowhere/%C2%85"),
    ];
    for (method, path) in addresses {
        let response = app.with(method.clone(), path, &owner).send().await.unwrap();
        refused(response, "invalid_request", &format!("{method} {path}")).await;
    }
    // Nothing changed, and the organization still works.
    let read = get_json(&app, &format!("/api/v1/agents/{}", agent.id), &owner).await;
    assert_eq!(read["status"], "active", "{read}");
    let page = get_json(&app, "/api/v1/agents?name=mailer", &owner).await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 1, "{page}");
    let decision = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(decision["allowed"], true, "{decision}");
}
both_backends!(nul_is_refused_at_the_boundary);

/// Sends `request` on a new connection and returns what came back before the server
/// closed it (a reset after the answer is expected when the server stops reading).
fn raw_exchange(address: &str, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The server may stop reading (and reset) before a large request is all written.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Issue 15, point 16: requests the HTTP/1 parser refuses before any of our code runs
/// are answered by actix-http with a bare status and no body (which it does not let us
/// change: docs/errors.md), and are logged as the client's fault, never at ERROR.
#[test]
fn requests_the_http_layer_refuses_are_not_server_errors() {
    let db = crate::helpers::TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    let server = crate::helpers::ServerProcess::start(&db.dir, &vars);
    let head = |extra: &[u8]| [b"GET /health HTTP/1.1\r\nHost: a\r\n", extra, b"\r\n"].concat();
    let many_headers: Vec<u8> = (0..97)
        .flat_map(|i| format!("X-H{i}: v\r\n").into_bytes())
        .collect();
    let big_header = [b"X-Big: ".as_slice(), &vec![b'a'; 1024 * 1024], b"\r\n"].concat();
    let login = |headers: &str| {
        format!("POST /api/v1/auth/login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n{headers}\r\n{{}}")
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a 64 KiB query string",
            format!(
                "GET /health?x={} HTTP/1.1\r\nHost: a\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .into_bytes(),
            400,
        ),
        ("97 headers", head(&many_headers), 431),
        ("a 1 MiB header", head(&big_header), 431),
        ("NUL in a header", head(b"X-A: a\0b\r\n"), 400),
        ("a bare CR in a header", head(b"X-A: a\rb\r\n"), 400),
        (
            "conflicting Content-Length",
            login("Content-Length: 2\r\nContent-Length: 3\r\n"),
            400,
        ),
        (
            "a negative Content-Length",
            login("Content-Length: -1\r\n"),
            400,
        ),
        (
            "TLS bytes on the plain port",
            [
                &[
                    0x16, 0x03, 0x01, 0x01, 0x2c, 0x01, 0x00, 0x01, 0x28, 0x03, 0x03,
                ][..],
                &[0u8; 40],
            ]
            .concat(),
            400,
        ),
    ];
    for (what, request, status) in &cases {
        let answer = raw_exchange(&server.address, request);
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{what}: {text:?}"));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("content-length: 0"),
            "{what}: {head}"
        );
        assert!(body.is_empty(), "{what}: {body:?}");
    }
    // The server is unharmed.
    let answer = raw_exchange(
        &server.address,
        b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "));

    // One INFO line per refusal, under our target; no ERROR line at all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refusals = loop {
        let refusals: Vec<serde_json::Value> = server
            .log()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "agentid_server::http::connection")
            .collect();
        if refusals.len() >= cases.len() || std::time::Instant::now() > deadline {
            break refusals;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let errors: Vec<String> = server
        .log()
        .into_iter()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(refusals.len(), cases.len(), "{refusals:#?}");
    for line in &refusals {
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["error.cause"].is_string(), "{line}");
    }
}

/// Issue 15, point 17: names people read cannot hide characters or pass for another
/// name (docs/names.md); ordinary names in any one script are fine; lookups are not
/// restricted, so nothing stored becomes unreachable.
async fn names_cannot_impersonate(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    let post = |path: &'static str, body: serde_json::Value| {
        app.with(Method::POST, path, &owner).json(&body).send()
    };
    let user = |email: &str| serde_json::json!({"email": email, "password": crate::helpers::USER_PW, "role": "viewer"});
    let agent = |name: &str| serde_json::json!({"name": name, "public_key": crate::agents::public_b64(&crate::agents::new_key())});
    let key = |name: &str| serde_json::json!({"name": name, "permissions": ["agents:read"]});

    let refusals = [
        (
            "/api/v1/users",
            user("\u{202e}admin@acme.example"),
            "U+202E",
        ),
        (
            "/api/v1/users",
            user("ad\u{200b}min@acme.example"),
            "U+200B",
        ),
        (
            "/api/v1/users",
            user("\u{2066}admin@acme.example"),
            "U+2066",
        ),
        ("/api/v1/users", user("ａｄｍｉｎ@acme.example"), "NFKC"),
        (
            "/api/v1/users",
            user("p\u{430}ypal@acme.example"),
            "Latin and Cyrillic",
        ),
        ("/api/v1/agents", agent("\u{202e}admin"), "U+202E"),
        ("/api/v1/agents", agent("ad\u{200b}min"), "U+200B"),
        ("/api/v1/agents", agent("\u{2066}mailer\u{2069}"), "U+2066"),
        ("/api/v1/agents", agent("ｍａｉｌｅｒ"), "\"mailer\""),
        (
            "/api/v1/agents",
            agent("m\u{430}iler"),
            "Latin and Cyrillic",
        ),
        ("/api/v1/agents", agent("mail  er"), "two spaces"),
        ("/api/v1/agents", agent("\u{3164}"), "U+3164"),
        ("/api/v1/api-keys", key("ci\u{202e}deploy"), "U+202E"),
        ("/api/v1/api-keys", key("ｃｉ"), "NFKC"),
    ];
    for (path, body, needle) in refusals {
        let response = post(path, body.clone()).await.unwrap();
        let message = refused(response, "invalid_request", &format!("{path} {body}")).await;
        assert!(message.contains(needle), "{path} {body}: {message}");
    }
    let users = get_json(&app, "/api/v1/users", &owner).await;
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    let agents = get_json(&app, "/api/v1/agents", &owner).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0, "{agents}");

    // Ordinary names in one script, accents composed, are accepted.
    for (path, body) in [
        ("/api/v1/users", user("zoë@acme.example")),
        ("/api/v1/users", user("иван@acme.example")),
        ("/api/v1/agents", agent("почтовый агент")),
        ("/api/v1/agents", agent("Zoë's mailer (prod) ✉")),
        ("/api/v1/agents", agent("メール担当")),
        ("/api/v1/api-keys", key("déploiement continu")),
    ] {
        let response = post(path, body.clone()).await.unwrap();
        assert_eq!(response.status(), 201, "{path} {body}");
    }
    // Lookups are not restricted: a login with such an email is simply unknown.
    let response = app
        .login_response("\u{202e}owner@acme.example", crate::helpers::OWNER_PW)
        .await;
    let body = assert_error(response, 401).await;
    assert_eq!(body["error"]["code"], "invalid_credentials");
    let page = get_json(&app, "/api/v1/agents?name=m%D0%B0iler", &owner).await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 0, "{page}");

    // The organization name given to `admin create-owner`.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .args([
            "admin",
            "create-owner",
            "--org",
            "\u{202e}Acme",
            "--email",
            "x@spoof.example",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENTID_BCRYPT_COST", "4")
        .envs(app.db.vars())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{}", crate::helpers::OWNER_PW).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("U+202E"), "{stderr}");
}
both_backends!(names_cannot_impersonate);
