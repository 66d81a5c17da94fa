//! Upgrading a request that a hyper 1 server parsed (feature `hyper`):
//! [`Upgrader::upgrade_hyper`] checks it as every upgrade is checked and gives the 101
//! to return from the service and a [`HyperUpgrade`] that becomes the
//! [`AsyncConn`] once hyper hands the connection over.
//!
//! The connection under an [`UpgradedConn`] is hyper's `Upgraded`, which also holds any
//! bytes hyper read past the request (frames a client sent at once), so nothing is
//! lost. For a plain TCP server, `Upgraded::downcast::<TokioIo<TcpStream>>` gives the
//! socket and those bytes back: the way to hand a connection to another owner.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use super::AsyncConn;
use crate::conn::ConnConfig;
use crate::error::Error;
use crate::proto::handshake::{self, HandshakeError, Header, Request};
use crate::proto::Role;
use crate::upgrade::Upgrader;

/// An [`AsyncConn`] over a connection hyper upgraded.
pub type UpgradedConn = AsyncConn<TokioIo<Upgraded>>;

/// The connection to come after a 101: await it (in a task of its own, once the
/// response is returned; hyper hands the connection over after it wrote the 101).
#[must_use = "the connection comes only when this is awaited"]
pub struct HyperUpgrade {
    pub(super) on_upgrade: OnUpgrade,
    pub(super) config: ConnConfig,
    /// The request, for an engine that adopts the connection (`on_open` reads it).
    pub(super) request: Request,
}

impl IntoFuture for HyperUpgrade {
    type Output = Result<UpgradedConn, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let upgraded = self
                .on_upgrade
                .await
                .map_err(|err| Error::Io(std::io::Error::other(format!("hyper upgrade: {err}"))))?;
            // hyper keeps the bytes it read past the request inside `Upgraded`.
            Ok(AsyncConn::new(
                TokioIo::new(upgraded),
                Role::Server,
                self.config,
                &[],
            ))
        })
    }
}

impl std::fmt::Debug for HyperUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperUpgrade").finish_non_exhaustive()
    }
}

/// A refused upgrade: why, and the response to return (the [`Upgrader`]'s error
/// responder's, or the default plain-text one).
#[derive(Debug)]
pub struct Refused {
    error: HandshakeError,
    response: Box<http::Response<Full<Bytes>>>,
}

impl Refused {
    /// Why the upgrade was refused (its status is the response's).
    pub fn error(&self) -> &HandshakeError {
        &self.error
    }

    /// The response to return.
    pub fn into_response(self) -> http::Response<Full<Bytes>> {
        *self.response
    }
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Error {
        Error::Handshake(refused.error)
    }
}

impl Upgrader {
    /// Upgrade a request inside a hyper 1 service (the connection served with
    /// `http1::Builder::serve_connection(..).with_upgrades()`): the checks and
    /// negotiation of every upgrade, then the 101 to return and the connection to await.
    /// A refusal carries the error response to return instead. Feature `hyper`.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use ringcast::Upgrader;
    ///
    /// async fn service(
    ///     mut request: http::Request<hyper::body::Incoming>,
    /// ) -> Result<http::Response<Full<Bytes>>, Infallible> {
    ///     let (response, upgrade) = match Upgrader::default().upgrade_hyper(&mut request, &[]) {
    ///         Ok(upgraded) => upgraded,
    ///         Err(refused) => return Ok(refused.into_response()),
    ///     };
    ///     tokio::spawn(async move {
    ///         let Ok(mut conn) = upgrade.await else { return };
    ///         while let Ok((kind, payload)) = conn.read_message().await {
    ///             if conn.write_message(kind, &payload).await.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     });
    ///     Ok(response)
    /// }
    /// # let _ = service;
    /// ```
    pub fn upgrade_hyper<B>(
        &self,
        request: &mut http::Request<B>,
        response_headers: &[(String, String)],
    ) -> Result<(http::Response<Full<Bytes>>, HyperUpgrade), Refused> {
        let head = Request::from(&*request);
        let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
        self.respond(&head, on_upgrade, response_headers)
    }

    /// Decide on `head` and build the 101 (the hyper and axum paths share this).
    pub(crate) fn respond(
        &self,
        head: &Request,
        on_upgrade: Option<OnUpgrade>,
        response_headers: &[(String, String)],
    ) -> Result<(http::Response<Full<Bytes>>, HyperUpgrade), Refused> {
        let decided = self.decide(head, |_| Ok(response_headers.to_vec()));
        let (accepted, extra) = decided.map_err(|err| self.refusal(head, err))?;
        let Some(on_upgrade) = on_upgrade else {
            let err = HandshakeError::new(
                500,
                "the connection cannot be upgraded: serve it with hyper's http1 and with_upgrades",
            );
            return Err(self.refusal(head, err));
        };
        let mut response = http::Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
        handshake::for_each_response_header(&accepted, &extra, |name, value| {
            response = std::mem::take(&mut response).header(name, value);
        });
        let response = match response.body(Full::new(Bytes::new())) {
            Ok(response) => response,
            // The headers were checked by `decide`; hyper refusing one is a 500 too.
            Err(err) => return Err(self.refusal(head, HandshakeError::new(500, err.to_string()))),
        };
        let config = self.conn_config(&accepted);
        let upgrade = HyperUpgrade {
            on_upgrade,
            config,
            request: head.clone(),
        };
        Ok((response, upgrade))
    }

    pub(crate) fn refusal(&self, head: &Request, error: HandshakeError) -> Refused {
        let answer = self.error_response(Some(head), &error);
        let mut response = http::Response::builder().status(answer.status);
        for (name, value) in answer.header_fields() {
            response = response.header(name, value);
        }
        let response = response
            .body(Full::new(Bytes::from(answer.body.clone())))
            .unwrap_or_else(|_| {
                // A status or header hyper cannot take: the plain answer for the error.
                let mut plain =
                    http::Response::new(Full::new(Bytes::from(error.message().to_owned())));
                *plain.status_mut() = http::StatusCode::from_u16(error.status())
                    .unwrap_or(http::StatusCode::BAD_REQUEST);
                plain
            });
        Refused {
            error,
            response: Box::new(response),
        }
    }
}

/// The head of a request an `http` server parsed, as the handshake checks read it.
impl From<&http::request::Parts> for Request {
    fn from(parts: &http::request::Parts) -> Request {
        head(&parts.method, &parts.uri, parts.version, &parts.headers)
    }
}

/// The head of a request an `http` server parsed, as the handshake checks read it.
impl<B> From<&http::Request<B>> for Request {
    fn from(request: &http::Request<B>) -> Request {
        head(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
        )
    }
}

fn head(
    method: &http::Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &http::HeaderMap,
) -> Request {
    Request {
        method: method.as_str().to_owned(),
        target: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        // Only HTTP/1.1 upgrades (RFC 6455 section 4.1); anything else is checked as "not
        // 1.1", HTTP/2's extended CONNECT (RFC 8441) included.
        version: u8::from(version == http::Version::HTTP_11),
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_owned(),
                value: value.as_bytes().to_vec(),
            })
            .collect(),
    }
}
