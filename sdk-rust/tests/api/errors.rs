//! Errors carry the server's code, message and request id; transient failures
//! are retried with backoff, answers are not; timeouts are honoured.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentid::{Error, ErrorCode, RetryPolicy};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_carry_code_message_and_request_id() {
    let app = spawn_app().await;
    let err = app.admin.get_agent("no-such-agent").await.unwrap_err();
    match &err {
        Error::Api {
            status,
            code,
            message,
            request_id,
            ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(*code, ErrorCode::NotFound);
            assert!(!message.is_empty());
            assert!(!request_id.is_empty());
        }
        other => panic!("expected an API error, got {other}"),
    }
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert!(!err.is_transient());

    let stranger = agentid::AdminClient::new(&app.address, "aid_not_a_key").unwrap();
    let err = stranger.me().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    assert!(!format!("{err} {err:?}").contains("aid_not_a_key"));

    // An agent registered with a key lacking agents:write is refused, typed.
    let weak = app
        .admin
        .create_api_key("reader", &["agents:read"], None)
        .await
        .unwrap();
    assert!(!format!("{weak:?}").contains(&weak.key));
    let err = agentid::AgentBuilder::new("nope")
        .url(&app.address)
        .api_key(&weak.key)
        .key_dir(app.key_dir("nope"))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_report_retry_after() {
    let app = spawn_app().await;
    let client = app.client();
    let mut limited = None;
    for _ in 0..30 {
        match agentid::AdminClient::login(
            client.clone(),
            crate::helpers::OWNER_EMAIL,
            "wrong password!!",
        )
        .await
        {
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => {
                limited = Some(e);
                break;
            }
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials), "{e}"),
            Ok(_) => panic!("a wrong password signed in"),
        }
    }
    let err = limited.expect("repeated wrong passwords are rate limited");
    assert_eq!(err.status(), Some(429));
    assert!(err.is_transient());
    match err {
        Error::Api { retry_after, .. } => assert!(retry_after.is_some()),
        other => panic!("{other}"),
    }
}

/// A stand-in for a failing gateway in front of the server (the real server does
/// not answer 502 or 503 on demand): answers every request with `status` and
/// counts the requests.
fn gateway(
    status: u16,
    body: &'static str,
    retry_after: Option<u32>,
) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            seen.fetch_add(1, Ordering::SeqCst);
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (address, count)
}

const NOT_READY: &str =
    r#"{"error":{"code":"not_ready","message":"not ready","request_id":"req-1"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_and_answers_are_not() {
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    };
    // 503 with the error envelope: retried, then reported with its fields.
    let (url, count) = gateway(503, NOT_READY, None);
    let client = agentid::Client::builder(&url)
        .retry(policy)
        .build()
        .unwrap();
    let err = client.ready().await.unwrap_err();
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
    assert_eq!(err.code(), Some(ErrorCode::NotReady));
    assert_eq!(err.request_id(), Some("req-1"));

    // Retry-After is honoured (1 s, under the cap).
    let (url, count) = gateway(503, NOT_READY, Some(1));
    let client = agentid::Client::builder(&url)
        .retry(RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(5),
        })
        .build()
        .unwrap();
    let started = Instant::now();
    assert!(client.ready().await.is_err());
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );

    // A 502 page that is not agentid's format: retried, then UnexpectedResponse.
    let (url, count) = gateway(502, "<html>bad gateway</html>", None);
    let client = agentid::Client::builder(&url)
        .retry(policy)
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert!(
        matches!(err, Error::UnexpectedResponse { status: 502 }),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 4);

    // A 4xx is an answer: never retried.
    let body = r#"{"error":{"code":"forbidden","message":"no","request_id":"r"}}"#;
    let (url, count) = gateway(403, body, None);
    let client = agentid::Client::builder(&url)
        .retry(policy)
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // A write that may have taken effect is not retried after a 503.
    let (url, count) = gateway(503, NOT_READY, None);
    let admin = agentid::AdminClient::with_client(
        agentid::Client::builder(&url)
            .retry(policy)
            .build()
            .unwrap(),
        "k",
    );
    assert!(admin
        .create_api_key("x", &["agents:read"], None)
        .await
        .is_err());
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // No server at all: a transport error after the retries.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let client = agentid::Client::builder(&closed)
        .retry(policy)
        .build()
        .unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_configurable() {
    // A server that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(conns);
    });
    let client = agentid::Client::builder(&url)
        .timeout(Duration::from_millis(300))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.health().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &err {
        Error::Transport(e) => assert!(e.is_timeout(), "{e}"),
        other => panic!("{other}"),
    }
    hold.join().unwrap();
}
