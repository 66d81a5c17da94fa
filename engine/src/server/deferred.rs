//! Upgrades decided off the worker: [`UpgradeAnswer`], kept by a handler's
//! [`defer_upgrade`](super::Handler::defer_upgrade) and answered later from any thread
//! or task (after awaiting a session store, say), while the worker goes on serving every
//! other connection.

use std::sync::Arc;

use super::handle::{Command, Shared};
use super::ConnId;
use crate::error::Error;
use crate::proto::handshake::HandshakeError;

/// The answer owed to one upgrade request a handler deferred. Send it with
/// [`accept`](Self::accept) or [`refuse`](Self::refuse), from any thread; dropped
/// unanswered, it refuses with 503. The connection waits in its handshake meanwhile,
/// within the upgrader's handshake timeout (past it, the socket is closed and a late
/// answer does nothing).
///
/// ```
/// use ringcast::proto::handshake::{HandshakeError, Request};
/// use ringcast::server::{Handler, UpgradeAnswer};
///
/// struct Sessions;
///
/// impl Handler for Sessions {
///     type Data = ();
///
///     fn defer_upgrade(&mut self, request: &Request, answer: UpgradeAnswer) -> Option<UpgradeAnswer> {
///         let cookie = request.header("cookie").map(<[u8]>::to_vec);
///         // Off the worker: a thread here; a `tokio::spawn` awaiting a store in a tokio app.
///         std::thread::spawn(move || {
///             let _ = match cookie {
///                 Some(_) => answer.accept(Vec::new()),
///                 None => answer.refuse(HandshakeError::new(401, "log in first")),
///             };
///         });
///         None
///     }
/// }
/// # let _ = Sessions;
/// ```
pub struct UpgradeAnswer {
    shared: Arc<Shared>,
    id: ConnId,
    answered: bool,
}

impl UpgradeAnswer {
    pub(crate) fn new(shared: Arc<Shared>, id: ConnId) -> UpgradeAnswer {
        UpgradeAnswer {
            shared,
            id,
            answered: false,
        }
    }

    /// The connection's id (the one its [`Socket`](super::Socket) will have once open).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Accept: the 101 goes out with `response_headers` added (checked as
    /// [`Handler::on_upgrade`](super::Handler::on_upgrade)'s are), then `on_open`. An
    /// error only when the server has stopped.
    pub fn accept(mut self, response_headers: Vec<(String, String)>) -> Result<(), Error> {
        self.send(Ok(response_headers))
    }

    /// Refuse with `error`: its status and message are the HTTP answer. An error only
    /// when the server has stopped.
    pub fn refuse(mut self, error: HandshakeError) -> Result<(), Error> {
        self.send(Err(error))
    }

    /// Leaves the answer to the worker (the handler decided at once).
    pub(crate) fn withdraw(mut self) {
        self.answered = true;
    }

    fn send(&mut self, answer: Result<Vec<(String, String)>, HandshakeError>) -> Result<(), Error> {
        self.answered = true;
        let command = Command::Decide {
            id: self.id,
            answer: Box::new(answer),
        };
        // Not charged to the hand-off budget: one answer per deferred request at most, and
        // those are bounded by the worker's connections; refusing it would leave the
        // connection waiting for its timeout.
        self.shared.put(self.id.worker(), command, 0)
    }
}

impl Drop for UpgradeAnswer {
    fn drop(&mut self) {
        if !self.answered {
            let error = HandshakeError::new(503, "the upgrade was not decided");
            let _ = self.send(Err(error));
        }
    }
}

impl std::fmt::Debug for UpgradeAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeAnswer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
