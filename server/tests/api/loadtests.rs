//! `loadtests/run` measures its own server only: it refuses a port another process
//! holds, before building or installing anything, and recognises its server by the
//! process that owns the listening socket, not by whoever answers on the port.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A stranger on a port: it answers every request `200 {"status":"ready"}`, the
/// way another agentid server would.
fn foreign_server() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let serving = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for stream in serving.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"{"status":"ready","database":"sqlite"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    listener
}

#[test]
fn loadtests_run_refuses_a_port_another_process_holds() {
    let stranger = foreign_server();
    let port = stranger.local_addr().unwrap().port();
    let mut child = Command::new("bash")
        .arg(workspace().join("loadtests/run"))
        .arg("--smoke")
        .env("LOADTEST_PORT", port.to_string())
        .env("AGENTID_SERVER_BIN", env!("CARGO_BIN_EXE_agentid-server"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "loadtests/run went on with port {port} taken: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
    assert!(stderr.contains("LOADTEST_PORT"), "{stderr}");
    // Refused before anything was installed, built or started.
    assert!(!stderr.contains("==>"), "{stderr}");
    // The stranger is named: this test process holds the socket.
    assert!(
        stderr.contains(&format!("by {}", std::process::id())),
        "{stderr}"
    );
}

/// The checks `loadtests/run` makes, on sockets whose owner is known: this test
/// process listens, a bash process does not.
#[test]
fn the_port_checks_tell_the_owner_of_a_listening_socket() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let free = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let script = format!(
        r#". "{ports}"
port_in_use {port} && echo busy
port_in_use {free} || echo free
port_owned_by {me} {port} && echo mine
port_owned_by $$ {port} || echo "not bash's"
port_owned_by {me} {free} || echo "nothing on the free port"
echo "holders: $(port_holders {port})""#,
        ports = workspace().join("loadtests/ports.sh").display(),
        me = std::process::id(),
    );
    let output = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let holder = format!("holders: {} (", std::process::id());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "busy",
            "free",
            "mine",
            "not bash's",
            "nothing on the free port"
        ],
        "{stdout}"
    );
    assert!(lines[5].starts_with(&holder), "{stdout}");
    drop(held);
}
