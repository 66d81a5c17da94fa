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
