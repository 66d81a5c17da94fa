//! The server's opening handshake over a tokio stream: the [`Upgrader`]'s settings and
//! decisions (the same `decide` the blocking upgrade makes), read and answered within
//! one deadline, the handshake timeout.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::AsyncConn;
use crate::error::Error;
use crate::proto::handshake::{self, HandshakeError, Limits, Request};
use crate::proto::Role;
use crate::upgrade::{head_cut_short, head_room, parse_head, HeadError, Upgrader};

/// Upgrade `stream` with the default [`Upgrader`] (same-origin check, no compression,
/// no handshake timeout): tokio-tungstenite's `accept_async`.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<AsyncConn<S>, Error> {
    Upgrader::default().upgrade_async(stream, &[]).await
}

impl Upgrader {
    /// Read the upgrade request from `stream`, check it, and answer: 101 and an
    /// [`AsyncConn`] (with `response_headers` in the 101), or an HTTP error response
    /// and [`Error::Handshake`]. The whole of it is bounded by
    /// [`handshake_timeout`](Self::handshake_timeout); a client too slow gets no answer
    /// and the error is `Io` of kind `TimedOut`. Feature `tokio`.
    pub async fn upgrade_async<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        response_headers: &[(String, String)],
    ) -> Result<AsyncConn<S>, Error> {
        self.upgrade_async_with(stream, |_| Ok(response_headers.to_vec()))
            .await
    }

    /// Like [`upgrade_async`](Self::upgrade_async), with a look at the request first:
    /// `inspect` can refuse it (its error becomes the HTTP answer) or return headers to
    /// add to the 101.
    pub async fn upgrade_async_with<S, F>(
        &self,
        mut stream: S,
        inspect: F,
    ) -> Result<AsyncConn<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(&Request) -> Result<Vec<(String, String)>, HandshakeError>,
    {
        self.within_timeout(async {
            let (request, leftover) =
                match read_head(&mut stream, &self.limits, handshake::parse_request).await {
                    Ok(parsed) => parsed,
                    Err(HeadError::Io(err)) => return Err(Error::Io(err)),
                    Err(HeadError::Handshake(err)) => {
                        return Err(self.refuse_on(&mut stream, None, err).await)
                    }
                };
            self.answer(stream, &request, &leftover, inspect).await
        })
        .await
    }

    /// Upgrade a connection whose request head another server already read and parsed:
    /// `request` is that head, `read_past_head` the bytes it read beyond it, `stream`
    /// the connection, positioned after them. Answers as
    /// [`upgrade_async`](Self::upgrade_async) does, within the handshake timeout. (Inside
    /// hyper or axum, `Upgrader::upgrade_hyper` (feature `hyper`) and the
    /// `WebSocketUpgrade` extractor (feature `axum`) do this for you.)
    pub async fn upgrade_request_async<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        request: &Request,
        read_past_head: &[u8],
        response_headers: &[(String, String)],
    ) -> Result<AsyncConn<S>, Error> {
        self.within_timeout(self.answer(stream, request, read_past_head, |_| {
            Ok(response_headers.to_vec())
        }))
        .await
    }

    /// Answer a connection you will not upgrade with the error response for `err`
    /// (through [`error`](Self::error) when set), then shut it down: the async
    /// [`refuse_with`](Self::refuse_with), for refusals of your own (a 503, a 401).
    /// Bounded by the handshake timeout; a write that fails is ignored, since the
    /// client may be gone. Returns `err` as an [`Error::Handshake`].
    pub async fn refuse_async<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        request: Option<&Request>,
        err: HandshakeError,
    ) -> Error {
        let handshake_err = err.clone();
        match self
            .within_timeout(async { Ok(self.refuse_on(stream, request, err).await) })
            .await
        {
            Ok(err) => err,
            Err(_) => Error::Handshake(handshake_err),
        }
    }

    /// Run `handshake` within the handshake timeout, if there is one.
    async fn within_timeout<T>(
        &self,
        handshake: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match self.handshake_timeout {
            None => handshake.await,
            Some(timeout) => tokio::time::timeout(timeout, handshake)
                .await
                .unwrap_or_else(|_| Err(timed_out(timeout))),
        }
    }

    /// Decide on a parsed request and write the answer.
    async fn answer<S, F>(
        &self,
        mut stream: S,
        request: &Request,
        leftover: &[u8],
        inspect: F,
    ) -> Result<AsyncConn<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: FnOnce(&Request) -> Result<Vec<(String, String)>, HandshakeError>,
    {
        let (accepted, extra) = match self.decide(request, inspect) {
            Ok(decided) => decided,
            Err(err) => return Err(self.refuse_on(&mut stream, Some(request), err).await),
        };
        let mut response = Vec::with_capacity(256);
        handshake::write_response(&accepted, &extra, &mut response);
        stream.write_all(&response).await?;
        stream.flush().await?;
        Ok(AsyncConn::new(
            stream,
            Role::Server,
            self.conn_config(&accepted),
            leftover,
        ))
    }

    /// Write the refusal for `err` (best effort) and shut the stream down.
    async fn refuse_on<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        request: Option<&Request>,
        err: HandshakeError,
    ) -> Error {
        let mut response = Vec::with_capacity(256);
        self.write_refusal(request, &err, &mut response);
        // The client may already be gone; the handshake error is what the caller needs.
        if stream.write_all(&response).await.is_ok() {
            let _ = stream.shutdown().await;
        }
        Error::Handshake(err)
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("handshake: not done within {timeout:?}"),
    ))
}

/// Read an HTTP head of either kind with `parse`, bounded by `limits` (never more than
/// the head may hold, plus one read past it): the async twin of the blocking
/// `read_head`, on the same parsing and bounds. The caller bounds it in time.
pub(crate) async fn read_head<S, T, P>(
    stream: &mut S,
    limits: &Limits,
    parse: P,
) -> Result<(T, Vec<u8>), HeadError>
where
    S: AsyncRead + Unpin,
    P: Fn(&[u8], &Limits) -> Result<Option<(T, usize)>, HandshakeError>,
{
    // Read straight into the head's buffer: a chunk array would sit in the future, and
    // so in the task of every connection for its whole life, long after the handshake.
    let mut buf = Vec::with_capacity(1024);
    let mut from = 0;
    loop {
        if let Some(parsed) = parse_head(&mut buf, from, limits, &parse)? {
            return Ok(parsed);
        }
        from = buf.len();
        let room = head_room(buf.len(), limits);
        buf.reserve(room);
        match stream.read_buf(&mut (&mut buf).limit(room)).await {
            Ok(0) => return Err(head_cut_short(buf.len())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}
