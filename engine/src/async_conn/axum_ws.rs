//! [`WebSocketUpgrade`]: the axum extractor (feature `axum`, axum 0.8) that upgrades a
//! route's request to an [`AsyncConn`], with an [`Upgrader`]'s checks and settings.

use std::future::Future;

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;

use super::hyper_upgrade::UpgradedConn;
use crate::proto::handshake::Request;
use crate::upgrade::Upgrader;

/// The request of a route that may upgrade, as an extractor: look at it (its path,
/// query, headers, cookies) to decide, then [`on_upgrade`](Self::on_upgrade) with the
/// [`Upgrader`] whose checks and settings apply. Extracting never fails; a request that
/// is no valid upgrade is answered by `on_upgrade` with the upgrader's error response
/// (400, 403, 426...).
///
/// ```no_run
/// use axum::{response::Response, routing::get, Router};
/// use ringcast::async_conn::WebSocketUpgrade;
/// use ringcast::Upgrader;
///
/// async fn ws(upgrade: WebSocketUpgrade) -> Response {
///     let upgrader = Upgrader { enable_compression: true, ..Upgrader::default() };
///     upgrade.on_upgrade(&upgrader, &[], |mut conn| async move {
///         while let Ok((kind, payload)) = conn.read_message().await {
///             if conn.write_message(kind, &payload).await.is_err() {
///                 break;
///             }
///         }
///     })
/// }
///
/// let app: Router = Router::new().route("/ws", get(ws));
/// # let _ = app;
/// ```
pub struct WebSocketUpgrade {
    request: Request,
    on_upgrade: Option<OnUpgrade>,
    /// The socket kept at accept ([`AdoptableSocket`](super::AdoptableSocket)), for
    /// [`hand_to_engine`](Self::hand_to_engine).
    #[cfg(feature = "engine")]
    socket: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl<St: Send + Sync> FromRequestParts<St> for WebSocketUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &St,
    ) -> Result<Self, Self::Rejection> {
        Ok(WebSocketUpgrade {
            request: Request::from(&*parts),
            on_upgrade: parts.extensions.remove::<OnUpgrade>(),
            #[cfg(feature = "engine")]
            socket: parts
                .extensions
                .get::<axum::extract::ConnectInfo<super::AdoptableSocket>>()
                .and_then(|info| info.0.socket()),
        })
    }
}

impl WebSocketUpgrade {
    /// The request head, as the handshake checks read it.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Check the request with `upgrader` and answer: the 101 (with `response_headers`,
    /// such as `Set-Cookie`), after which `callback` runs with the connection in a task
    /// of its own; or the upgrader's error response, and `callback` never runs.
    pub fn on_upgrade<F, Fut>(
        self,
        upgrader: &Upgrader,
        response_headers: &[(String, String)],
        callback: F,
    ) -> Response
    where
        F: FnOnce(UpgradedConn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match upgrader.respond(&self.request, self.on_upgrade, response_headers) {
            Ok((response, upgrade)) => {
                tokio::spawn(async move {
                    // A client that left before hyper handed the connection over: no
                    // connection, nothing to run.
                    if let Ok(conn) = upgrade.await {
                        callback(conn).await;
                    }
                });
                response.map(Body::new)
            }
            Err(refused) => refused.into_response().map(Body::new),
        }
    }
}

#[cfg(feature = "engine")]
impl WebSocketUpgrade {
    /// Check the request with `upgrader` and answer: the 101 (with `response_headers`),
    /// after which the connection is handed to the engine behind `engine`
    /// ([`ServerHandle::adopt`](crate::server::ServerHandle::adopt)): its handler's
    /// `on_open` gets this request and `tag` ([`Socket::tag`](crate::server::Socket::tag));
    /// its messages, topics and fan-out are the engine's from then on. Or the upgrader's
    /// error response. The app must be served with
    /// `into_make_service_with_connect_info::<AdoptableSocket>()`
    /// ([`AdoptableSocket`](super::AdoptableSocket)): without it the answer is a 500 that
    /// says so, before any 101.
    ///
    /// ```no_run
    /// use axum::{extract::State, response::Response, routing::get, Router};
    /// use ringcast::async_conn::{AdoptableSocket, WebSocketUpgrade};
    /// use ringcast::server::ServerHandle;
    /// use ringcast::Upgrader;
    ///
    /// async fn ws(State(engine): State<ServerHandle>, upgrade: WebSocketUpgrade) -> Response {
    ///     // An auth check that awaits (a session store, say) goes here.
    ///     upgrade.hand_to_engine(&Upgrader::default(), &[], &engine, 0)
    /// }
    ///
    /// # async fn run(engine: ServerHandle) -> std::io::Result<()> {
    /// let app = Router::new().route("/ws", get(ws)).with_state(engine);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<AdoptableSocket>()).await
    /// # }
    /// # let _ = run;
    /// ```
    pub fn hand_to_engine(
        self,
        upgrader: &Upgrader,
        response_headers: &[(String, String)],
        engine: &crate::server::ServerHandle,
        tag: u64,
    ) -> Response {
        if self.socket.is_none() {
            let error = crate::proto::handshake::HandshakeError::new(
                500,
                "the connection cannot be handed to the engine: serve the app with \
                 into_make_service_with_connect_info::<AdoptableSocket>()",
            );
            tracing::warn!(%error, "hand_to_engine");
            return upgrader
                .refusal(&self.request, error)
                .into_response()
                .map(Body::new);
        }
        match upgrader.respond(&self.request, self.on_upgrade, response_headers) {
            Ok((response, upgrade)) => {
                let engine = engine.clone();
                let socket = self.socket;
                tokio::spawn(async move {
                    if let Err(err) = upgrade.adopt_with(&engine, tag, socket).await {
                        tracing::debug!(%err, "handing an upgraded connection to the engine failed");
                    }
                });
                response.map(Body::new)
            }
            Err(refused) => refused.into_response().map(Body::new),
        }
    }
}

impl IntoResponse for super::hyper_upgrade::Refused {
    fn into_response(self) -> Response {
        super::hyper_upgrade::Refused::into_response(self).map(Body::new)
    }
}

impl std::fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("target", &self.request.target)
            .finish_non_exhaustive()
    }
}
