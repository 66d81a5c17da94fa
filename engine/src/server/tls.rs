//! TLS in the engine itself: each connection of a server with
//! [`ServerConfig::tls`](super::ServerConfig::tls) runs a rustls `ServerConnection`, and
//! each `wss://` dial ([`DialRequest::tls`](super::DialRequest::tls)) a `ClientConnection`,
//! between the socket and the WebSocket layers. Received ciphertext is opened into the
//! worker's scratch buffer and handed on as if it had come off the wire; every frame queued
//! for the connection is sealed as it is queued, so the outbox holds ciphertext and the
//! send path does not change. Shared broadcast frames are sealed per connection: TLS
//! records cannot be shared, since each connection has its own keys.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Error;

/// A rustls server configuration from PEM files: the certificate chain (leaf first) and
/// its private key (PKCS#8, PKCS#1 or SEC1), with the `ring` provider and ALPN
/// `http/1.1` (browsers ask for it on `wss://`).
pub fn tls_config_from_pem(
    cert_chain: impl AsRef<Path>,
    private_key: impl AsRef<Path>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &Path, err: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("{what} {}: {err}", path.display()))
    };
    let cert_path = cert_chain.as_ref();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| bad("certificate file", cert_path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate file", cert_path, &e))?;
    if chain.is_empty() {
        return Err(bad("certificate file", cert_path, &"no certificate in it"));
    }
    let key_path = private_key.as_ref();
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| bad("key file", key_path, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::InvalidArgument(format!("tls certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One connection's TLS state, either side.
pub(crate) struct Tls {
    session: rustls::Connection,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.is_handshaking())
            .finish()
    }
}

impl Tls {
    /// The server side of an accepted connection.
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Result<Box<Tls>, rustls::Error> {
        let mut session = rustls::ServerConnection::new(config)?;
        session.set_buffer_limit(None); // see `client`
        Ok(Box::new(Tls {
            session: session.into(),
        }))
    }

    /// The client side of a `wss://` dial to `host` (its name is checked against the
    /// server's certificate and sent as SNI; an IP address is checked, not sent). Its
    /// first flight (the ClientHello) is waiting in [`take_output`](Self::take_output).
    pub(crate) fn client(config: Arc<rustls::ClientConfig>, host: &str) -> Result<Box<Tls>, Error> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| Error::InvalidArgument(format!("tls server name {host:?}: {e}")))?;
        let mut session = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::InvalidArgument(format!("tls: {e}")))?;
        // rustls's own 64 KiB limit on what waits to be sent would cut a larger frame
        // short (a write past it takes nothing). The engine bounds each queue itself,
        // before sealing, and `seal` drains rustls's buffer every time.
        session.set_buffer_limit(None);
        Ok(Box::new(Tls {
            session: session.into(),
        }))
    }

    /// Opens received ciphertext, appending the plaintext to `plain`. An error (a bad
    /// record, a failed handshake) ends the connection; an alert for the peer may be
    /// waiting in [`take_output`](Self::take_output).
    pub(crate) fn open(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), Error> {
        let tls_error =
            |e: rustls::Error| Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        while !cipher.is_empty() {
            self.session.read_tls(&mut cipher)?;
            let state = self.session.process_new_packets().map_err(tls_error)?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plain.len();
                plain.resize(start + ready, 0);
                self.session.reader().read_exact(&mut plain[start..])?;
            }
        }
        Ok(())
    }

    /// Seals `plain` into TLS records, and returns them with whatever else is waiting.
    ///
    /// A server queues nothing before its handshake is done (the HTTP request comes after
    /// it). A client queues its HTTP request right after connecting: rustls keeps that
    /// plaintext (up to its 64 KiB buffer limit, far above a request head) and seals it
    /// once the handshake is done, so it leaves with the client's Finished message, from
    /// [`take_output`](Self::take_output) after [`open`](Self::open).
    pub(crate) fn seal(&mut self, plain: &[u8]) -> Bytes {
        // Writing to rustls's own buffer cannot fail within that limit.
        let _ = self.session.writer().write_all(plain);
        self.take_output().unwrap_or_default()
    }

    /// Records waiting to go out: handshake messages, alerts, sealed data.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        if !self.session.wants_write() {
            return None;
        }
        let mut out = Vec::with_capacity(4096);
        while self.session.wants_write() {
            if self.session.write_tls(&mut out).is_err() {
                break;
            }
        }
        Some(Bytes::from(out))
    }
}
