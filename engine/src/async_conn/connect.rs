//! The client's side over tokio: [`Dialer::dial_async`] (name lookup, connect, an HTTP
//! or SOCKS5 proxy, TLS through tokio-rustls, the opening handshake with cookies, all
//! within the handshake timeout) and [`Dialer::client_handshake_async`] over a stream
//! you already have. The request, the proxy conversations and the checks of the
//! answers are the blocking dial's own, made without I/O.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::accept::read_head;
use super::AsyncConn;
use crate::client::proxy::{check_connect_answer, Tunnel};
use crate::client::socks::Conversation;
use crate::client::{
    body_wanted, default_client_config, refused, tls::server_name, Dialer, Opening, Prepared,
    Target,
};
use crate::error::Error;
use crate::proto::handshake::{self, Response};
use crate::proto::Role;
use crate::upgrade::HeadError;

/// The stream a dialed [`AsyncConn`] runs over: `ws://` is plain TCP, `wss://` is TLS
/// (tokio-rustls).
#[derive(Debug)]
pub enum AsyncClientStream {
    /// A plain TCP stream.
    Plain(TcpStream),
    /// A TLS stream over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncClientStream {
    /// The TCP stream under the TLS layer, if any (its addresses, its options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            AsyncClientStream::Plain(tcp) => tcp,
            AsyncClientStream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for AsyncClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncClientStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            AsyncClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AsyncClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AsyncClientStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            AsyncClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncClientStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            AsyncClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncClientStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            AsyncClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Dial `url` with the default [`Dialer`] (45 s handshake timeout, the proxy from the
/// environment): tokio-tungstenite's `connect_async`.
pub async fn connect(url: &str) -> Result<(AsyncConn<AsyncClientStream>, Response), Error> {
    Dialer::default().dial_async(url, &[]).await
}

impl Dialer {
    /// Connect to `url` (`ws://` or `wss://`) and do the opening handshake, with
    /// `headers` added to the request: [`dial`](Self::dial) over tokio. The name
    /// lookup, the connection, a proxy's tunnel, TLS (tokio-rustls, with
    /// [`tls_client_config`](Self::tls_client_config)) and the handshake all end within
    /// [`handshake_timeout`](Self::handshake_timeout), or fail with `TimedOut`. A
    /// custom [`connect`](Self::connect) function runs on tokio's blocking pool.
    /// Feature `tokio`.
    pub async fn dial_async(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<(AsyncConn<AsyncClientStream>, Response), Error> {
        let target = Target::parse(url)?;
        let deadline = self.deadline(None);
        let prepared = self.prepare(&target, headers)?;
        let proxy = self.proxy_for(&target)?;
        within(deadline, async {
            let mut tcp = match &proxy {
                Some(proxy) => {
                    let host = proxy.host_str().unwrap_or("").to_owned();
                    let port = crate::client::proxy::default_port(proxy);
                    self.open_async(&host, port, deadline).await?
                }
                None => self.open_async(&target.host, target.port, deadline).await?,
            };
            if let Some(proxy) = &proxy {
                tunnel(
                    &mut tcp,
                    Tunnel::to(proxy, &target.host, target.port)?,
                    target.port,
                    self,
                )
                .await?;
            }
            let stream = if target.tls {
                let config = self
                    .tls_client_config
                    .clone()
                    .unwrap_or_else(default_client_config);
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(server_name(&target.host)?, tcp)
                    .await?;
                AsyncClientStream::Tls(Box::new(tls))
            } else {
                AsyncClientStream::Plain(tcp)
            };
            self.handshake_async(stream, &target, &prepared).await
        })
        .await
    }

    /// The opening handshake over a stream you already have (gorilla/websocket's
    /// `NewClient`), async: [`client_handshake`](Self::client_handshake) over tokio. `url`
    /// gives the target and `Host`; the dialer's proxy, TLS and connect settings do not
    /// apply; its handshake timeout bounds the exchange.
    pub async fn client_handshake_async<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<(AsyncConn<S>, Response), Error> {
        let target = Target::parse(url)?;
        let deadline = self.deadline(None);
        let prepared = self.prepare(&target, headers)?;
        within(deadline, self.handshake_async(stream, &target, &prepared)).await
    }

    /// The HTTP exchange of the opening handshake on a ready stream.
    async fn handshake_async<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        target: &Target,
        prepared: &Prepared,
    ) -> Result<(AsyncConn<S>, Response), Error> {
        let opening = Opening::new(target, prepared);
        let request = opening.request(self, prepared);
        let mut head = Vec::with_capacity(512);
        handshake::write_request(&request, &mut head);
        stream.write_all(&head).await?;
        stream.flush().await?;
        let (mut response, leftover) =
            match read_head(&mut stream, &self.limits, handshake::parse_response).await {
                Ok(parsed) => parsed,
                Err(HeadError::Io(err)) => return Err(Error::Io(err)),
                Err(HeadError::Handshake(err)) => return Err(Error::Handshake(err)),
            };
        self.keep_cookies(&target.url, &response);
        if response.status != 101 {
            let want = body_wanted(&response, leftover.len());
            let mut body = leftover;
            body.truncate(want);
            let mut chunk = [0u8; 512];
            while body.len() < want {
                match stream
                    .read(&mut chunk[..(want - body.len()).min(512)])
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            response.body = body;
            return Err(refused(response));
        }
        let config = self.conn_config(&response, &request)?;
        // Frames the server sent right after its 101 are already in `leftover`.
        Ok((
            AsyncConn::new(stream, Role::Client, config, &leftover),
            response,
        ))
    }

    /// Open a TCP connection to `(host, port)`: each address the name has, in turn.
    async fn open_async(
        &self,
        host: &str,
        port: u16,
        deadline: Option<Instant>,
    ) -> Result<TcpStream, Error> {
        if let Some(connect) = &self.connect {
            let (connect, host) = (Arc::clone(connect), host.to_owned());
            let tcp = tokio::task::spawn_blocking(move || connect(&host, port, deadline))
                .await
                .map_err(|e| Error::Io(io::Error::other(format!("connect function: {e}"))))??;
            tcp.set_nonblocking(true)?;
            return Ok(TcpStream::from_std(tcp)?);
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"));
        for addr in tokio::net::lookup_host((bare, port)).await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Err(err) => last = err,
            }
        }
        Err(Error::Io(last))
    }
}

/// Open the tunnel through the proxy on `tcp`: the blocking dial's conversations.
async fn tunnel(
    tcp: &mut TcpStream,
    tunnel: Tunnel,
    port: u16,
    dialer: &Dialer,
) -> Result<(), Error> {
    match tunnel {
        Tunnel::Http(request) => {
            tcp.write_all(&request).await?;
            let (response, leftover) =
                match read_head(tcp, &dialer.limits, handshake::parse_response).await {
                    Ok(parsed) => parsed,
                    Err(HeadError::Io(err)) => return Err(Error::Io(err)),
                    Err(HeadError::Handshake(err)) => return Err(Error::Handshake(err)),
                };
            check_connect_answer(response, &leftover)
        }
        Tunnel::Socks5 { host, credentials } => {
            let credentials = credentials
                .as_ref()
                .map(|(user, password)| (user.as_str(), password.as_str()));
            let mut conversation = Conversation::new(&host, port, credentials);
            let mut exchange = conversation.start();
            let mut answer = [0u8; 255 + 2];
            loop {
                tcp.write_all(&exchange.send).await?;
                if exchange.read == 0 {
                    return Ok(());
                }
                tcp.read_exact(&mut answer[..exchange.read])
                    .await
                    .map_err(socks_io)?;
                exchange = conversation.resume(&answer[..exchange.read])?;
            }
        }
    }
}

/// A SOCKS5 proxy that closes mid-answer, said as the blocking dial says it.
fn socks_io(err: io::Error) -> Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        return Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "socks5 proxy: the proxy closed the connection",
        ));
    }
    Error::Io(err)
}

/// Run `dial` by `deadline`, if there is one; past it, `TimedOut`.
async fn within<T>(
    deadline: Option<Instant>,
    dial: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        None => dial.await,
        Some(deadline) => tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), dial)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "dial: deadline passed",
                )))
            }),
    }
}
