//! Who is asking: the client's address and the original scheme, behind proxies.
//!
//! The client address is the direct peer's, unless the peer is a configured trusted
//! proxy (`AGENTID_TRUSTED_PROXIES`). Then `X-Forwarded-For` is walked from right to
//! left, skipping trusted entries, and the first untrusted entry is the client (if
//! every entry is trusted, the leftmost one). `Forwarded` (RFC 7239) `for=` is used
//! the same way, only when there is no `X-Forwarded-For`. A malformed or unknown
//! entry met on the walk means the chain cannot be trusted: the peer's address is
//! used. The scheme (`X-Forwarded-Proto`, else `Forwarded: proto=`) is likewise only
//! honoured from a trusted peer, and only its last value (what the nearest proxy
//! saw) counts.
//!
//! This module must never trust a header from an untrusted peer.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The client of the request being served, computed once by the envelope
/// middleware and kept in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address (the peer's when no trusted proxy says otherwise).
    pub ip: IpAddr,
    /// Whether the client reached us over https: our own TLS, or a trusted proxy
    /// that says so.
    pub https: bool,
}

impl ClientAddr {
    /// The client of `req`: from the extensions, else the peer (for requests that did
    /// not pass the envelope middleware), else the unspecified address.
    pub fn of(req: &actix_web::HttpRequest) -> ClientAddr {
        use actix_web::HttpMessage;
        if let Some(client) = req.extensions().get::<ClientAddr>() {
            return *client;
        }
        ClientAddr {
            ip: req
                .peer_addr()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
            https: false,
        }
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses `AGENTID_TRUSTED_PROXIES`: comma-separated addresses or CIDR networks.
    pub fn parse(value: Option<&str>) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let network = match item.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "`{item}` is not an address or network such as 10.0.0.5 or 10.0.0.0/8"
                        ))
                    }
                },
            };
            networks.push(network);
        }
        Ok(TrustedProxies { networks })
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// For `config check`.
    pub fn describe(&self) -> String {
        self.networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client of a request from `peer` with these `headers`; `tls` says whether
    /// this server itself terminated TLS.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap, tls: bool) -> ClientAddr {
        let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
        if self.networks.is_empty() || !self.contains(peer_ip) {
            return ClientAddr {
                ip: peer_ip,
                https: tls,
            };
        }
        let ip = self.forwarded_client(headers).unwrap_or(peer_ip);
        let https = tls || forwarded_proto(headers).is_some_and(|p| p == "https");
        ClientAddr { ip, https }
    }

    /// Walks the forwarding chain; `None` when it is absent or cannot be trusted.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut entries: Vec<&str> = Vec::new();
        let xff: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<_>>>()?;
        if !xff.is_empty() {
            for value in xff {
                entries.extend(value.split(',').map(str::trim));
            }
        } else {
            for value in headers.get_all("forwarded") {
                for element in value.to_str().ok()?.split(',') {
                    let for_value = element
                        .split(';')
                        .filter_map(|pair| pair.trim().split_once('='))
                        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                        .map(|(_, v)| v.trim())?;
                    entries.push(for_value);
                }
            }
        }
        if entries.is_empty() {
            return None;
        }
        let mut leftmost = None;
        for entry in entries.iter().rev() {
            let ip = parse_node(entry)?;
            if !self.contains(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }
}

/// An address from a forwarding header: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]:8080`, optionally quoted (`Forwarded`). `unknown`, obfuscated
/// identifiers and anything else are `None`.
fn parse_node(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, _port) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

/// The last scheme a forwarding header reports, lowercased.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    let xfp: Vec<&str> = headers
        .get_all("x-forwarded-proto")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(last) = xfp.last() {
        return last
            .rsplit(',')
            .next()
            .map(|p| p.trim().to_ascii_lowercase());
    }
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let element = forwarded.last()?.rsplit(',').next()?;
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proto"))
        .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let trusted = TrustedProxies::parse(Some("10.0.0.0/8")).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            trusted.client(peer("198.51.100.1"), &h, false),
            ClientAddr {
                ip: ip("198.51.100.1"),
                https: false
            }
        );
        // No trusted proxies configured: headers never count.
        let none = TrustedProxies::default();
        assert_eq!(none.client(peer("10.0.0.1"), &h, false).ip, ip("10.0.0.1"));
    }

    #[test]
    fn the_first_untrusted_entry_from_the_right_is_the_client() {
        let trusted = TrustedProxies::parse(Some("10.0.0.0/8, 192.0.2.10")).unwrap();
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
            ("x-forwarded-for", "192.0.2.10"),
            ("x-forwarded-proto", "http, https"),
        ]);
        assert_eq!(
            trusted.client(peer("10.1.2.3"), &h, false),
            ClientAddr {
                ip: ip("203.0.113.9"),
                https: true
            }
        );
        // Every entry trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(
            trusted.client(peer("10.1.2.3"), &h, false).ip,
            ip("10.9.9.9")
        );
        // Ports and brackets are understood.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:443, 203.0.113.5:1234")]);
        assert_eq!(
            trusted.client(peer("10.1.2.3"), &h, false).ip,
            ip("203.0.113.5")
        );
    }

    #[test]
    fn forwarded_is_used_when_there_is_no_x_forwarded_for() {
        let trusted = TrustedProxies::parse(Some("10.0.0.1")).unwrap();
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=http, for=10.0.0.1;proto=https"#,
        )]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h, false),
            ClientAddr {
                ip: ip("2001:db8:cafe::17"),
                https: true
            }
        );
    }

    #[test]
    fn garbage_from_a_trusted_proxy_falls_back_to_the_peer() {
        let trusted = TrustedProxies::parse(Some("10.0.0.1")).unwrap();
        for value in ["not-an-ip", "203.0.113.9, bogus", "unknown", ""] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(
                trusted.client(peer("10.0.0.1"), &h, false).ip,
                ip("10.0.0.1"),
                "{value:?}"
            );
        }
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h, false).ip,
            ip("10.0.0.1")
        );
        // A malformed entry to the left of the first untrusted one does not matter.
        let h = headers(&[("x-forwarded-for", "bogus, 203.0.113.9")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h, false).ip,
            ip("203.0.113.9")
        );
    }

    #[test]
    fn bad_proxy_lists_are_refused() {
        assert!(TrustedProxies::parse(Some("10.0.0.0/33")).is_err());
        assert!(TrustedProxies::parse(Some("proxy.internal")).is_err());
        assert!(TrustedProxies::parse(Some(" ")).unwrap().is_empty());
        let t = TrustedProxies::parse(Some("10.1.2.3/8, ::1")).unwrap();
        assert_eq!(t.describe(), "10.0.0.0/8,::1/128");
        assert!(t.contains(ip("::ffff:10.200.0.1")));
    }
}
