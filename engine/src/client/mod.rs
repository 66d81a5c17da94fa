//! The blocking [`Dialer`], the client side (gorilla/websocket's `Dialer`). Connect
//! (directly, through a custom connect function, or through an HTTP `CONNECT` or SOCKS5
//! proxy), TLS for `wss://`, the opening handshake with cookies, subprotocols and
//! compression, all within one deadline.

mod cookies;
pub(crate) mod proxy;
mod resolve;
pub(crate) mod socks;
pub(crate) mod tls;

use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::conn::stream::time_left;
use crate::conn::{Conn, ConnConfig, Stream};
use crate::error::Error;
use crate::pool::BufferPool;
use crate::proto::handshake::{self, ClientRequest, HandshakeError, Limits, Response};
use crate::proto::Role;
use crate::upgrade::{read_head, write_all_by, HeadError};

pub use cookies::{CookieJar, MemoryJar};
pub use proxy::from_environment as proxy_from_environment;
pub use tls::{default_client_config, ClientReader, ClientStream, ClientWriter};
pub use url::Url;

/// Opens the TCP connection to `(host, port)` before `deadline` (gorilla/websocket's
/// `Dialer.NetDial` and `NetDialContext`): to pick a source address, use a Unix-socket
/// relay, or count.
pub type ConnectFn = Arc<dyn Fn(&str, u16, Option<Instant>) -> io::Result<TcpStream> + Send + Sync>;

/// Chooses the proxy for a target URL: `Ok(None)` connects directly, an error aborts.
pub type ProxyFn = Arc<dyn Fn(&Url) -> Result<Option<Url>, Error> + Send + Sync>;

/// Header fields to send, as (name, value) pairs.
type Headers = Vec<(String, String)>;

/// A parsed `ws://` or `wss://` URL.
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let url = Url::parse(url)
            .map_err(|e| Error::InvalidArgument(format!("malformed ws or wss url {url:?}: {e}")))?;
        let tls = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "malformed ws or wss url: scheme {other:?}"
                )))
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| Error::InvalidArgument("malformed ws or wss url: no host".into()))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url,
            tls,
            host,
            port,
        })
    }
}

/// The request's header fields, checked.
pub(crate) struct Prepared {
    extra: Headers,
    offered: Vec<String>,
    /// A `Host` the caller gave, which replaces the URL's.
    host: Option<String>,
}

/// Which proxy a dial goes through (gorilla/websocket's `Dialer.Proxy` function).
#[derive(Clone, Default)]
pub enum Proxy {
    /// Connect directly.
    None,
    /// `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY`, as Go's `ProxyFromEnvironment`
    /// (loopback and localhost are never proxied). The default.
    #[default]
    FromEnvironment,
    /// Always this proxy (`http://user:password@host:port`).
    Fixed(Url),
    /// Decide per target URL; `Ok(None)` connects directly, an error aborts the dial.
    Custom(ProxyFn),
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proxy::None => f.write_str("None"),
            Proxy::FromEnvironment => f.write_str("FromEnvironment"),
            Proxy::Fixed(url) => write!(f, "Fixed({})", url.host_str().unwrap_or("")),
            Proxy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Cancels a dial in progress from another thread (what cancelling the context of
/// gorilla/websocket's `DialContext` does).
/// Cancelling shuts the socket down, so a blocked connect step, TLS handshake or
/// handshake read returns at once with an error.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Mutex<CancelState>>,
}

#[derive(Default)]
struct CancelState {
    cancelled: bool,
    socket: Option<TcpStream>,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancel the dial (now, or as soon as it starts).
    pub fn cancel(&self) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.cancelled = true;
        if let Some(socket) = state.socket.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.lock().map(|s| s.cancelled).unwrap_or(true)
    }

    /// Watch `socket` so that a cancel shuts it down; fails if already cancelled.
    fn watch(&self, socket: &TcpStream) -> Result<(), Error> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if state.cancelled {
            return Err(cancelled());
        }
        state.socket = socket.try_clone().ok();
        Ok(())
    }

    fn unwatch(&self) {
        if let Ok(mut state) = self.inner.lock() {
            state.socket = None;
        }
    }
}

fn cancelled() -> Error {
    // Not `Interrupted`: std's read and write loops retry on that, and callers read it as
    // "try again".
    Error::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "dial cancelled",
    ))
}

/// Settings for connecting to WebSocket servers (gorilla/websocket's `Dialer`).
/// `Dialer::default()` has the settings of gorilla/websocket's `DefaultDialer`: a 45 s
/// handshake timeout and the proxy from the environment.
///
/// ```no_run
/// use ringcast::{Dialer, MessageType};
///
/// # fn main() -> Result<(), ringcast::Error> {
/// let dialer = Dialer { enable_compression: true, ..Dialer::default() };
/// let (mut conn, _response) = dialer.dial("ws://127.0.0.1:9001/echo", &[])?;
/// conn.write_message(MessageType::Text, b"hello")?;
/// let (_, reply) = conn.read_message()?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Dialer {
    /// Opens TCP connections; `None`: resolve the host and connect to each address in
    /// turn within the deadline.
    pub connect: Option<ConnectFn>,
    /// The proxy to go through.
    pub proxy: Proxy,
    /// TLS settings for `wss://`; `None`: webpki roots, ALPN http/1.1
    /// ([`default_client_config`]).
    pub tls_client_config: Option<Arc<rustls::ClientConfig>>,
    /// The longest the whole dial (connect, proxy, TLS, handshake) may take; `None`: no
    /// bound but the deadline given to [`dial_with_deadline`](Self::dial_with_deadline).
    pub handshake_timeout: Option<Duration>,
    /// Read buffer size (0: 4096). It bounds no message size.
    pub read_buffer_size: usize,
    /// Write buffer size (0: 4096). It bounds no message size.
    pub write_buffer_size: usize,
    /// When set, the connection holds a write buffer only while writing a message.
    pub write_buffer_pool: Option<Arc<dyn BufferPool>>,
    /// Subprotocols to ask for, in order of preference.
    pub subprotocols: Vec<String>,
    /// Offer permessage-deflate: no context takeover either way (gorilla/websocket's
    /// offer), plus `client_max_window_bits`.
    pub enable_compression: bool,
    /// Cookies to send and keep; `None`: cookies are neither sent nor kept.
    pub jar: Option<Arc<dyn CookieJar>>,
    /// The read limit the connection starts with (`None`: 64 MiB).
    pub read_limit: Option<u64>,
    /// Bounds on the server's response head (a larger one fails the dial).
    pub limits: Limits,
}

impl Default for Dialer {
    fn default() -> Self {
        Dialer {
            connect: None,
            proxy: Proxy::FromEnvironment,
            tls_client_config: None,
            handshake_timeout: Some(Duration::from_secs(45)),
            read_buffer_size: 0,
            write_buffer_size: 0,
            write_buffer_pool: None,
            subprotocols: Vec::new(),
            enable_compression: false,
            jar: None,
            read_limit: None,
            limits: Limits::default(),
        }
    }
}

/// A dialer with the default settings, `Dialer::default()` (gorilla/websocket's
/// `DefaultDialer`).
pub fn default_dialer() -> Dialer {
    Dialer::default()
}

/// Header names the handshake writes itself; a caller may not set them.
/// (`Host` may be given: it replaces the URL's host in the header.)
const OWNED_HEADERS: [&str; 5] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// The most body bytes kept from a refused handshake.
const MAX_BODY: usize = 1024;

impl Dialer {
    /// Connect to `url` (`ws://` or `wss://`) and do the opening handshake, with
    /// `headers` added to the request (Origin, Authorization, Cookie...). Returns the
    /// connection and the server's 101 response. Any other answer is
    /// [`Error::Handshake`] carrying the response (status, headers, start of the body).
    pub fn dial(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<(Conn<ClientStream>, Response), Error> {
        self.dial_inner(url, headers, None, None)
    }

    /// [`dial`](Self::dial), done by `deadline` (and by the handshake timeout).
    pub fn dial_with_deadline(
        &self,
        url: &str,
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<(Conn<ClientStream>, Response), Error> {
        self.dial_inner(url, headers, Some(deadline), None)
    }

    /// [`dial`](Self::dial), abandoned as soon as `cancel` is cancelled from another thread.
    pub fn dial_cancellable(
        &self,
        url: &str,
        headers: &[(String, String)],
        cancel: &CancelToken,
    ) -> Result<(Conn<ClientStream>, Response), Error> {
        let result = self.dial_inner(url, headers, None, Some(cancel));
        cancel.unwatch();
        match result {
            Err(_) if cancel.is_cancelled() => Err(cancelled()),
            other => other,
        }
    }

    /// The opening handshake over a stream you already have (gorilla/websocket's
    /// `NewClient`): connected, tunnelled and encrypted as you need it; a Unix socket, a
    /// stream from your own connection pool, TLS of your choice. `url` gives the request
    /// target (path and query) and the `Host` header; its scheme (`ws` or `wss`) only sets
    /// the default port. The dialer's proxy, TLS and connect settings do not apply; its
    /// handshake timeout bounds the exchange (as far as the stream honours timeouts).
    ///
    /// ```no_run
    /// use std::os::unix::net::UnixStream;
    /// use ringcast::{Dialer, MessageType};
    ///
    /// # fn main() -> Result<(), ringcast::Error> {
    /// let stream = UnixStream::connect("/run/chat.sock")?;
    /// let (mut conn, _response) = Dialer::default().client_handshake(stream, "ws://chat/ws", &[])?;
    /// conn.write_message(MessageType::Text, b"over a unix socket")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_handshake<S: Stream>(
        &self,
        stream: S,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<(Conn<S>, Response), Error> {
        let target = Target::parse(url)?;
        let deadline = self.deadline(None);
        let prepared = self.prepare(&target, headers)?;
        self.handshake(stream, &target, &prepared, deadline)
    }

    /// The dial's deadline: the earlier of `deadline` and the handshake timeout.
    pub(crate) fn deadline(&self, deadline: Option<Instant>) -> Option<Instant> {
        let timeout = self.handshake_timeout.map(|t| Instant::now() + t);
        match (deadline, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dial_inner(
        &self,
        url: &str,
        headers: &[(String, String)],
        deadline: Option<Instant>,
        cancel: Option<&CancelToken>,
    ) -> Result<(Conn<ClientStream>, Response), Error> {
        let target = Target::parse(url)?;
        let deadline = self.deadline(deadline);
        let prepared = self.prepare(&target, headers)?;
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(cancelled());
        }
        let proxy = self.proxy_for(&target)?;
        let mut tcp = match &proxy {
            Some(proxy) => {
                let proxy_host = proxy.host_str().unwrap_or("").to_owned();
                self.open(&proxy_host, proxy::default_port(proxy), deadline)?
            }
            None => self.open(&target.host, target.port, deadline)?,
        };
        if let Some(cancel) = cancel {
            cancel.watch(&tcp)?;
        }
        if let Some(proxy) = &proxy {
            proxy::tunnel(
                &mut tcp,
                proxy,
                &target.host,
                target.port,
                &self.limits,
                deadline,
            )?;
        }
        let stream = if target.tls {
            let config = self
                .tls_client_config
                .clone()
                .unwrap_or_else(default_client_config);
            tls::connect(config, &target.host, tcp, deadline)?
        } else {
            ClientStream::Plain(tcp)
        };
        self.handshake(stream, &target, &prepared, deadline)
    }

    /// The proxy a dial to `target` goes through, its scheme checked.
    pub(crate) fn proxy_for(&self, target: &Target) -> Result<Option<Url>, Error> {
        let proxy = match &self.proxy {
            Proxy::None => None,
            Proxy::FromEnvironment => proxy::from_environment(&target.url),
            Proxy::Fixed(proxy) => Some(proxy.clone()),
            Proxy::Custom(choose) => choose(&target.url)?,
        };
        if let Some(proxy) = &proxy {
            proxy::check_scheme(proxy)?;
        }
        Ok(proxy)
    }

    /// The HTTP exchange of the opening handshake on a ready stream, by `deadline`.
    fn handshake<S: Stream>(
        &self,
        mut stream: S,
        target: &Target,
        prepared: &Prepared,
        deadline: Option<Instant>,
    ) -> Result<(Conn<S>, Response), Error> {
        let opening = Opening::new(target, prepared);
        let request = opening.request(self, prepared);
        let mut head = Vec::with_capacity(512);
        handshake::write_request(&request, &mut head);
        write_all_by(&mut stream, &head, deadline)?;
        let (mut response, leftover) = match read_head(
            &mut stream,
            &self.limits,
            deadline,
            handshake::parse_response,
        ) {
            Ok(parsed) => parsed,
            Err(HeadError::Io(err)) => return Err(Error::Io(err)),
            Err(HeadError::Handshake(err)) => return Err(Error::Handshake(err)),
        };
        self.keep_cookies(&target.url, &response);
        if response.status != 101 {
            read_body_start(&mut stream, &mut response, leftover, deadline);
            return Err(refused(response));
        }
        let config = self.conn_config(&response, &request)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        // Frames the server sent right after its 101 are already in `leftover`.
        let conn = Conn::new(stream, Role::Client, config, &leftover);
        Ok((conn, response))
    }

    /// Check a 101 against the request, and the settings of the connection it opens.
    pub(crate) fn conn_config(
        &self,
        response: &Response,
        request: &ClientRequest<'_>,
    ) -> Result<ConnConfig, Error> {
        let agreed = handshake::validate_response(response, request)?;
        Ok(ConnConfig {
            read_buffer_size: self.read_buffer_size,
            write_buffer_size: self.write_buffer_size,
            write_buffer_pool: self.write_buffer_pool.clone(),
            subprotocol: agreed.subprotocol,
            compression: agreed.compression,
            read_limit: self.read_limit,
        })
    }

    /// The request's header fields: the caller's (checked), plus what the dialer adds.
    pub(crate) fn prepare(
        &self,
        target: &Target,
        headers: &[(String, String)],
    ) -> Result<Prepared, Error> {
        let (extra, offered) = self.request_headers(&target.url, headers)?;
        let host = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value.clone());
        Ok(Prepared {
            extra,
            offered,
            host,
        })
    }

    /// Check the caller's headers and add the ones the dialer owns: Authorization from
    /// the URL's user info, cookies from the jar. Returns them and the subprotocols offered.
    fn request_headers(
        &self,
        url: &Url,
        headers: &[(String, String)],
    ) -> Result<(Headers, Vec<String>), Error> {
        let mut extra = Vec::with_capacity(headers.len() + 2);
        let mut offered = self.subprotocols.clone();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if OWNED_HEADERS.contains(&lower.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "duplicate header not allowed: {name}"
                )));
            }
            if lower == "host" {
                // Written as the Host header by the request itself.
                continue;
            }
            if lower == "sec-websocket-protocol" {
                // Subprotocols may come this way too, added to the dialer's list
                // (gorilla/websocket takes this header only when its Dialer lists none).
                offered.extend(
                    value
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty()),
                );
                continue;
            }
            if name
                .bytes()
                .chain(value.bytes())
                .any(|b| b == b'\r' || b == b'\n')
            {
                return Err(Error::InvalidArgument(format!(
                    "header {name:?} holds a line break"
                )));
            }
            extra.push((name.clone(), value.clone()));
        }
        if !url.username().is_empty()
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            let credentials = format!("{}:{}", url.username(), url.password().unwrap_or(""));
            let token = base64::engine::general_purpose::STANDARD.encode(credentials);
            extra.push(("Authorization".into(), format!("Basic {token}")));
        }
        if let Some(jar) = &self.jar {
            if let Some(cookies) = jar.cookies(&http_url(url)) {
                extra.push(("Cookie".into(), cookies));
            }
        }
        Ok((extra, offered))
    }

    pub(crate) fn keep_cookies(&self, url: &Url, response: &Response) {
        let Some(jar) = &self.jar else {
            return;
        };
        let values: Vec<&str> = response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .collect();
        if !values.is_empty() {
            jar.set_cookies(&http_url(url), &values);
        }
    }

    /// Open a TCP connection to `(host, port)` within `deadline`: the name resolved and
    /// each address tried in turn, all by the deadline.
    fn open(&self, host: &str, port: u16, deadline: Option<Instant>) -> Result<TcpStream, Error> {
        if let Some(connect) = &self.connect {
            return Ok(connect(host, port, deadline)?);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"));
        for addr in resolve::resolve(bare, port, deadline)? {
            let attempt = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => TcpStream::connect_timeout(&addr, left),
                    _ => return Err(timed_out("connect")),
                },
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(err) => last = err,
            }
        }
        Err(Error::Io(last))
    }
}

fn timed_out(what: &str) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: dial deadline passed"),
    ))
}

/// The opening request's own values: a fresh key, the target, the `Host` header.
pub(crate) struct Opening {
    key: String,
    path: String,
    host: String,
}

impl Opening {
    pub(crate) fn new(target: &Target, prepared: &Prepared) -> Opening {
        let path = match target.url.query() {
            Some(query) => format!("{}?{query}", target.url.path()),
            None => target.url.path().to_owned(),
        };
        let host = match &prepared.host {
            Some(host) => host.clone(),
            None => authority(&target.host, target.port, target.tls),
        };
        Opening {
            key: handshake::generate_key(),
            path,
            host,
        }
    }

    /// The request to write (and to check the answer against).
    pub(crate) fn request<'a>(
        &'a self,
        dialer: &'a Dialer,
        prepared: &'a Prepared,
    ) -> ClientRequest<'a> {
        ClientRequest {
            host: &self.host,
            target: &self.path,
            key: &self.key,
            subprotocols: &prepared.offered,
            enable_compression: dialer.enable_compression,
            extra_headers: &prepared.extra,
        }
    }
}

/// The error for an answer other than 101, carrying the response.
pub(crate) fn refused(response: Response) -> Error {
    let message = format!("server answered {} {}", response.status, response.reason);
    Error::Handshake(HandshakeError::with_response(message, response))
}

/// How much of a refused handshake's body to keep, of which `leftover` came with the
/// head: up to [`MAX_BODY`] bytes, as much as `Content-Length` says is coming.
pub(crate) fn body_wanted(response: &Response, leftover: usize) -> usize {
    let length = response
        .header("Content-Length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.unwrap_or(leftover).min(MAX_BODY)
}

/// Keep the start of a refused handshake's body ([`body_wanted`]): what came with the
/// head, then what more arrives by the deadline.
fn read_body_start<S: Stream>(
    stream: &mut S,
    response: &mut Response,
    leftover: Vec<u8>,
    deadline: Option<Instant>,
) {
    let want = body_wanted(response, leftover.len());
    let mut body = leftover;
    body.truncate(want);
    let mut chunk = [0u8; 512];
    while body.len() < want {
        let Ok(left) = time_left(deadline, "handshake") else {
            break;
        };
        if stream.set_read_timeout(left).is_err() {
            break;
        }
        match stream.read_by(&mut chunk[..(want - body.len()).min(512)], deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    response.body = body;
}

/// The URL the cookie jar sees: cookies are an HTTP matter, so ws is http and wss https.
fn http_url(url: &Url) -> Url {
    let mut http = url.clone();
    let scheme = if url.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    // Only fails for cannot-be-a-base URLs, which a ws URL with a host never is.
    let _ = http.set_scheme(scheme);
    http
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The Host header: the host, with the port when it is not the scheme's default.
fn authority(host: &str, port: u16, tls: bool) -> String {
    let default = if tls { 443 } else { 80 };
    if port == default {
        bracket(host)
    } else {
        format!("{}:{port}", bracket(host))
    }
}
