//! Outgoing connections on the workers' rings: [`DialRequest`] is what a caller asks for,
//! [`Pending`] what a worker needs until the handshake is done. The handshake itself is
//! the sans-IO client side of [`proto::handshake`](crate::proto::handshake); for `wss://`
//! the client TLS session ([`Tls`]) is made here, on the caller's thread, and the worker
//! puts it under the connection once TCP is connected.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use url::Url;

use super::tls::Tls;
use crate::error::Error;
use crate::proto::handshake::{self, ClientRequest, Header, Request};

/// An outgoing connection to open with [`ServerHandle::dial`](super::ServerHandle::dial).
///
/// A `wss://` URL runs TLS (rustls) on the worker's ring like any other connection,
/// with [`tls`](Self::tls) or, without it, webpki's root certificates.
///
/// ```
/// use ringcast::server::DialRequest;
/// let request = DialRequest {
///     tag: 7,
///     enable_compression: true,
///     ..DialRequest::new("ws://127.0.0.1:8080/ws?room=lobby")
/// };
/// assert_eq!(request.tag, 7);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DialRequest {
    /// A `ws://` or `wss://` URL.
    pub url: String,
    /// A number of the caller's choosing, given back by
    /// [`Socket::tag`](super::Socket::tag) and
    /// [`Handler::on_dial_error`](super::Handler::on_dial_error).
    pub tag: u64,
    /// Subprotocols to offer, in order of preference.
    pub subprotocols: Vec<String>,
    /// Offer permessage-deflate.
    pub enable_compression: bool,
    /// More header fields for the request (Origin, Cookie...).
    pub headers: Vec<(String, String)>,
    /// The local address to connect from (port chosen by the kernel): spreading many
    /// connections over several loopback addresses gets past the ~28 000 ephemeral ports
    /// of one source address.
    pub source: Option<IpAddr>,
    /// The worker to open it on; `None`: the workers in turn.
    pub worker: Option<usize>,
    /// The TLS client settings of a `wss://` URL (trusted roots, client certificate,
    /// ALPN); `None`: [`default_client_config`](crate::client::default_client_config),
    /// webpki's roots, as the [`Dialer`](crate::Dialer) has. A `ws://` URL with settings
    /// here is refused: it would silently run without TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl DialRequest {
    /// A request for `url` with every other field at its default.
    pub fn new(url: &str) -> DialRequest {
        DialRequest {
            url: url.to_owned(),
            ..DialRequest::default()
        }
    }
}

/// A resolved dial, carried by the worker until the connection opens or fails.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) addr: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) key: String,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) enable_compression: bool,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) tag: u64,
    /// `wss://`: the client TLS session, taken by the worker once TCP is connected.
    pub(crate) tls: Option<Box<Tls>>,
}

impl Pending {
    /// Checks the URL and resolves its host (on the caller's thread: resolution blocks).
    pub(crate) fn resolve(request: DialRequest) -> Result<Pending, Error> {
        let url = Url::parse(&request.url)
            .map_err(|e| Error::InvalidArgument(format!("url {:?}: {e}", request.url)))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "url scheme {other:?}: the engine dials ws:// and wss://"
                )))
            }
        };
        if !secure && request.tls.is_some() {
            return Err(Error::InvalidArgument(format!(
                "url {:?}: TLS settings given for a ws:// URL (use wss://)",
                request.url
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Error::InvalidArgument(format!("url {:?} has no host", request.url)))?;
        let port = url
            .port_or_known_default()
            .unwrap_or(if secure { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tls = if secure {
            let config = request
                .tls
                .unwrap_or_else(crate::client::default_client_config);
            Some(Tls::client(config, bare)?)
        } else {
            None
        };
        let addr = (bare, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::InvalidArgument(format!("host {host:?} has no address")))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Pending {
            addr,
            source: request.source,
            host: authority,
            target,
            key: handshake::generate_key(),
            subprotocols: request.subprotocols,
            enable_compression: request.enable_compression,
            headers: request.headers,
            tag: request.tag,
            tls,
        })
    }

    /// The sans-IO view of the request.
    pub(crate) fn client_request(&self) -> ClientRequest<'_> {
        ClientRequest {
            host: &self.host,
            target: &self.target,
            key: &self.key,
            subprotocols: &self.subprotocols,
            enable_compression: self.enable_compression,
            extra_headers: &self.headers,
        }
    }

    /// The request as [`Handler::on_open`](super::Handler::on_open) sees it.
    pub(crate) fn as_request(&self) -> Request {
        let mut headers = vec![Header {
            name: "Host".into(),
            value: self.host.clone().into_bytes(),
        }];
        headers.extend(self.headers.iter().map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone().into_bytes(),
        }));
        Request {
            method: "GET".into(),
            target: self.target.clone(),
            version: 1,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_resolves_to_address_host_and_target() {
        let pending = Pending::resolve(DialRequest::new("ws://127.0.0.1:9001/ws?room=a")).unwrap();
        assert_eq!(pending.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(pending.host, "127.0.0.1:9001");
        assert_eq!(pending.target, "/ws?room=a");
    }

    #[test]
    fn ws_has_no_tls_and_wss_has_a_client_session_on_port_443() {
        let plain = Pending::resolve(DialRequest::new("ws://127.0.0.1/")).unwrap();
        assert!(plain.tls.is_none());
        assert_eq!(plain.addr.port(), 80);
        let secure = Pending::resolve(DialRequest::new("wss://127.0.0.1/")).unwrap();
        assert!(secure.tls.is_some());
        assert_eq!(secure.addr.port(), 443);
        assert_eq!(secure.host, "127.0.0.1");
    }

    #[test]
    fn tls_settings_on_a_ws_url_other_schemes_and_garbage_are_refused() {
        let with_tls = DialRequest {
            tls: Some(crate::client::default_client_config()),
            ..DialRequest::new("ws://127.0.0.1/")
        };
        for request in [
            with_tls,
            DialRequest::new("http://127.0.0.1/"),
            DialRequest::new("not a url"),
        ] {
            assert!(matches!(
                Pending::resolve(request),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}
