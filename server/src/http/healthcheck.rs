//! `agentid-server healthcheck`: one readiness request to the local server, with
//! the standard library (and rustls when the server serves TLS), for container
//! images without curl.
//!
//! Over TLS the check trusts exactly the configured certificate
//! (`crate::http::tls::pinned_client_config`), so it works with any name on the
//! certificate and never with another server's.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Asks the server listening on `listen` for `GET /health/ready`; `Ok` only for a 200.
/// An unspecified listen address (`0.0.0.0`, `::`) is reached on loopback. With
/// `tls_cert` the request goes over TLS, trusting exactly that certificate.
pub fn ready(listen: SocketAddr, timeout: Duration, tls_cert: Option<&Path>) -> Result<(), String> {
    let target = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    match tls_cert {
        None => exchange(&mut stream, target),
        Some(cert) => {
            let config = crate::http::tls::pinned_client_config(cert).map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
            let connection = rustls::ClientConnection::new(config, name)
                .map_err(|e| format!("cannot start TLS: {e}"))?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            exchange(&mut tls, target)
        }
    }
}

/// Sends the request and reads the status line.
fn exchange(stream: &mut (impl Read + Write), target: SocketAddr) -> Result<(), String> {
    stream
        .write_all(
            format!("GET /health/ready HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nUser-Agent: agentid-healthcheck\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that matters; read at most a small head.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("no answer: {e}")),
        }
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "readiness answered {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}
