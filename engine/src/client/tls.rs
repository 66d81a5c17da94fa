//! [`ClientStream`]: a plain or a TLS (rustls) stream under a client [`Conn`](crate::Conn),
//! its split ends, and the TLS handshake of a dial, bounded by the dial's deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::conn::stream::shutdown_tcp;
use crate::conn::tls::{self as conn_tls, TlsReader, TlsWriter};
use crate::conn::{Closer, ReadEnd, SplitStream, Stream, WriteEnd};

/// The stream a dialed connection runs over: `ws://` is plain TCP, `wss://` is TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// A plain TCP stream.
    Plain(TcpStream),
    /// A TLS stream (rustls) over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// The TCP stream under the TLS layer, if any.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => Write::flush(s),
            ClientStream::Tls(s) => Write::flush(s),
        }
    }
}

impl Stream for ClientStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.read(buf),
            ClientStream::Tls(tls) => {
                let tls = &mut **tls;
                conn_tls::read(&mut tls.conn, &mut tls.sock, buf, deadline)
            }
        }
    }
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.write(buf),
            ClientStream::Tls(tls) => {
                let tls = &mut **tls;
                conn_tls::write(&mut tls.conn, &mut tls.sock, buf, deadline)
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
    fn shutdown(&self) -> io::Result<()> {
        shutdown_tcp(self.tcp())
    }
}

/// The read end of a split [`ClientStream`].
#[derive(Debug)]
pub enum ClientReader {
    /// A clone of the TCP stream.
    Plain(TcpStream),
    /// The TLS session's read end.
    Tls(TlsReader<ClientConnection>),
}

/// The write end of a split [`ClientStream`].
#[derive(Debug)]
pub enum ClientWriter {
    /// The TCP stream.
    Plain(TcpStream),
    /// The TLS session's write end.
    Tls(TlsWriter<ClientConnection>),
}

impl ReadEnd for ClientReader {
    fn read_by(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        match self {
            ClientReader::Plain(tcp) => ReadEnd::read_by(tcp, buf, deadline),
            ClientReader::Tls(tls) => tls.read_by(buf, deadline),
        }
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ClientReader::Plain(tcp) => tcp.set_read_timeout(timeout),
            ClientReader::Tls(tls) => tls.set_read_timeout(timeout),
        }
    }
}

impl WriteEnd for ClientWriter {
    fn write_by(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        match self {
            ClientWriter::Plain(tcp) => WriteEnd::write_by(tcp, buf, deadline),
            ClientWriter::Tls(tls) => tls.write_by(buf, deadline),
        }
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            ClientWriter::Plain(tcp) => tcp.set_write_timeout(timeout),
            ClientWriter::Tls(tls) => tls.set_write_timeout(timeout),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientWriter::Plain(tcp) => Write::flush(tcp),
            ClientWriter::Tls(tls) => WriteEnd::flush(tls),
        }
    }
    fn shutdown(&self) -> io::Result<()> {
        match self {
            ClientWriter::Plain(tcp) => shutdown_tcp(tcp),
            ClientWriter::Tls(tls) => WriteEnd::shutdown(tls),
        }
    }
}

/// `ws://` splits into clones of its socket, `wss://` into the two ends of its session.
impl SplitStream for ClientStream {
    type Reader = ClientReader;
    type Writer = ClientWriter;
    fn split_stream(self) -> io::Result<(ClientReader, ClientWriter, Closer)> {
        match self {
            ClientStream::Plain(tcp) => {
                let (reader, writer, closer) = tcp.split_stream()?;
                Ok((
                    ClientReader::Plain(reader),
                    ClientWriter::Plain(writer),
                    closer,
                ))
            }
            ClientStream::Tls(tls) => {
                let StreamOwned { conn, sock } = *tls;
                let (reader, writer, closer) = conn_tls::split(conn, sock)?;
                Ok((ClientReader::Tls(reader), ClientWriter::Tls(writer), closer))
            }
        }
    }
}

/// The default client configuration: webpki's root certificates, HTTP/1.1 by ALPN.
/// Built once per process.
pub fn default_client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Start TLS on `tcp` for `host` (SNI), completing the handshake by `deadline` before
/// returning, so its errors are reported here.
pub(crate) fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Option<Instant>,
) -> io::Result<ClientStream> {
    let mut conn = ClientConnection::new(config, server_name(host)?).map_err(io::Error::other)?;
    conn_tls::handshake(&mut conn, &mut tcp, deadline)?;
    Ok(ClientStream::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

/// The name TLS checks the server's certificate against (SNI): `host` without the
/// brackets of an IPv6 literal.
pub(crate) fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tls server name {host:?}: {e}"),
        )
    })
}
