//! Tunnelling through a proxy: HTTP `CONNECT` (`http://`) or SOCKS5 (`socks5://`,
//! `socks5h://`, see [`socks`](super::socks)); and the proxy choice from the environment
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`, as Go's `ProxyFromEnvironment`). Any other
//! scheme is refused before anything is sent.

use std::net::TcpStream;
use std::time::Instant;

use base64::Engine as _;
use url::Url;

use crate::error::Error;
use crate::proto::handshake::{self, HandshakeError, Limits, Response};
use crate::upgrade::{read_head, write_all_by, HeadError};

/// The proxy schemes a dial can go through.
const SCHEMES: [&str; 3] = ["http", "socks5", "socks5h"];

/// Refuse a proxy URL whose scheme ringcast cannot speak (`https://`, a TLS connection to
/// the proxy itself, is one), naming the ones it can.
pub(crate) fn check_scheme(proxy: &Url) -> Result<(), Error> {
    if SCHEMES.contains(&proxy.scheme()) && proxy.has_host() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "proxy {}://{}: unsupported proxy scheme (supported: http, socks5, socks5h)",
        proxy.scheme(),
        proxy.host_str().unwrap_or("")
    )))
}

/// The proxy's port: the URL's, or its scheme's (80 for http, 1080 for SOCKS).
pub(crate) fn default_port(proxy: &Url) -> u16 {
    proxy
        .port_or_known_default()
        .unwrap_or(if proxy.scheme() == "http" { 80 } else { 1080 })
}

/// How to ask a proxy for a tunnel, decided with no I/O so every I/O model asks the same.
pub(crate) enum Tunnel {
    /// Send this `CONNECT` request, then read the head of the answer and check it with
    /// [`check_connect_answer`].
    Http(Vec<u8>),
    /// Hold this SOCKS5 [`Conversation`](super::socks::Conversation).
    Socks5 {
        /// The target's host, bare (no brackets around an IPv6 address).
        host: String,
        /// The user name and password from the proxy URL, if it has them.
        credentials: Option<(String, String)>,
    },
}

impl Tunnel {
    /// The tunnel to `host:port` through `proxy`.
    pub(crate) fn to(proxy: &Url, host: &str, port: u16) -> Result<Tunnel, Error> {
        check_scheme(proxy)?;
        let user = percent_decode(proxy.username());
        let password = percent_decode(proxy.password().unwrap_or(""));
        let credentials = (!user.is_empty()).then_some((user, password));
        if proxy.scheme() == "http" {
            let authority = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok(Tunnel::Http(connect_request(&authority, credentials)))
        } else {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok(Tunnel::Socks5 {
                host: host.to_owned(),
                credentials,
            })
        }
    }
}

/// Open a tunnel through the proxy on `stream` to `host:port`, by `deadline`.
pub(crate) fn tunnel(
    stream: &mut TcpStream,
    proxy: &Url,
    host: &str,
    port: u16,
    limits: &Limits,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    match Tunnel::to(proxy, host, port)? {
        Tunnel::Http(request) => connect(stream, &request, limits, deadline),
        Tunnel::Socks5 { host, credentials } => {
            let credentials = credentials
                .as_ref()
                .map(|(user, password)| (user.as_str(), password.as_str()));
            super::socks::connect(stream, &host, port, credentials, deadline)
        }
    }
}

/// The proxy for `target` (a ws:// or wss:// URL) from the environment: `HTTPS_PROXY` for
/// wss, `HTTP_PROXY` for ws (upper or lower case), unless `NO_PROXY` matches the host.
/// As in Go, requests to localhost and loopback addresses are never proxied.
pub fn from_environment(target: &Url) -> Option<Url> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| std::env::var(name.to_lowercase()).ok())
            .filter(|v| !v.is_empty())
    };
    let host = target
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    if let Some(no_proxy) = var("NO_PROXY") {
        if no_proxy_matches(&no_proxy, &host, target.port_or_known_default()) {
            return None;
        }
    }
    let raw = if target.scheme() == "wss" {
        var("HTTPS_PROXY")
    } else {
        var("HTTP_PROXY")
    }?;
    // Go accepts "host:port" without a scheme and means http.
    Url::parse(&raw)
        .ok()
        .filter(|u| u.has_host())
        .or_else(|| Url::parse(&format!("http://{raw}")).ok())
}

/// Whether `NO_PROXY` (comma-separated: `*`, hosts, `.domain` suffixes, optional `:port`)
/// covers `host`.
pub(crate) fn no_proxy_matches(no_proxy: &str, host: &str, port: Option<u16>) -> bool {
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((name, p)) if !name.contains(':') || name.ends_with(']') => {
                    (name, p.parse::<u16>().ok())
                }
                _ => (entry, None),
            };
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            let name = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            let name = name
                .strip_prefix("*.")
                .map(|n| format!(".{n}"))
                .unwrap_or(name);
            if let Some(suffix) = name.strip_prefix('.') {
                host == suffix || host.ends_with(&format!(".{suffix}"))
            } else {
                host == name || host.ends_with(&format!(".{name}"))
            }
        })
}

/// The `CONNECT` request for a tunnel to `authority` (host:port), with Basic auth when
/// the proxy URL carries user info.
fn connect_request(authority: &str, credentials: Option<(String, String)>) -> Vec<u8> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Ask the HTTP proxy on `stream` for a tunnel with `request`, by `deadline`.
fn connect(
    stream: &mut TcpStream,
    request: &[u8],
    limits: &Limits,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    write_all_by(stream, request, deadline)?;
    let (response, leftover) = match read_head(stream, limits, deadline, handshake::parse_response)
    {
        Ok(parsed) => parsed,
        Err(HeadError::Io(err)) => return Err(Error::Io(err)),
        Err(HeadError::Handshake(err)) => return Err(Error::Handshake(err)),
    };
    check_connect_answer(response, &leftover)
}

/// The proxy's answer to `CONNECT`: anything but a 2xx is a bad handshake that carries
/// the proxy's response, and so are bytes after the head (`leftover`).
pub(crate) fn check_connect_answer(response: Response, leftover: &[u8]) -> Result<(), Error> {
    if !(200..300).contains(&response.status) {
        let message = format!("proxy answered {} {}", response.status, response.reason);
        return Err(Error::Handshake(HandshakeError::with_response(
            message, response,
        )));
    }
    if !leftover.is_empty() {
        // A proxy that talks before the tunnel's far end does is broken.
        return Err(Error::Handshake(HandshakeError::with_response(
            "proxy sent bytes after its 200",
            response,
        )));
    }
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(&hi), Some(&lo)) = (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_hosts_suffixes_ports_and_star() {
        assert!(no_proxy_matches("*", "any.example", Some(80)));
        assert!(no_proxy_matches("example.com", "example.com", Some(80)));
        assert!(no_proxy_matches("example.com", "www.example.com", Some(80)));
        assert!(no_proxy_matches(
            ".example.com",
            "www.example.com",
            Some(80)
        ));
        assert!(!no_proxy_matches(".example.com", "example.org", Some(80)));
        assert!(no_proxy_matches(
            "example.com:8080",
            "example.com",
            Some(8080)
        ));
        assert!(!no_proxy_matches(
            "example.com:8080",
            "example.com",
            Some(80)
        ));
        assert!(!no_proxy_matches(
            "other.com, foo.org",
            "example.com",
            Some(80)
        ));
    }

    #[test]
    fn proxy_schemes_other_than_http_and_socks5_are_refused_by_name() {
        for ok in ["http://p:3128", "socks5://p:1080", "socks5h://u:pw@p"] {
            assert!(check_scheme(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in ["https://p:443", "socks4://p:1080", "ftp://p"] {
            let err = check_scheme(&Url::parse(bad).unwrap()).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(text) if text.contains("unsupported proxy scheme")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn socks_proxies_default_to_port_1080() {
        assert_eq!(default_port(&Url::parse("socks5://p").unwrap()), 1080);
        assert_eq!(default_port(&Url::parse("http://p").unwrap()), 80);
        assert_eq!(default_port(&Url::parse("socks5h://p:9050").unwrap()), 9050);
    }

    #[test]
    fn user_info_is_percent_decoded() {
        assert_eq!(percent_decode("us%40er"), "us@er");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
