//! A SOCKS5 tunnel (RFC 1928), with username/password authentication (RFC 1929) when
//! the proxy URL carries user info. The target's name goes to the proxy to resolve (for
//! both `socks5://` and `socks5h://`, as Go's proxy package does), so no local lookup
//! leaks it. The conversation itself ([`Conversation`]) does no I/O; the blocking dial
//! drives it here with every read and write bounded by the dial's deadline, the async
//! dial over a tokio socket.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, TcpStream};
use std::time::Instant;

use crate::conn::stream::{time_left, timeout_kind};
use crate::conn::Stream;
use crate::error::Error;
use crate::upgrade::write_all_by;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 0x01;
const IPV4: u8 = 0x01;
const DOMAIN: u8 = 0x03;
const IPV6: u8 = 0x04;

/// Ask the SOCKS5 proxy on `stream` for a connection to `host:port`: the
/// [`Conversation`] driven over a blocking socket.
pub(crate) fn connect(
    stream: &mut TcpStream,
    host: &str,
    port: u16,
    credentials: Option<(&str, &str)>,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let mut conversation = Conversation::new(host, port, credentials);
    let mut exchange = conversation.start();
    let mut answer = [0u8; 255 + 2];
    loop {
        write_all_by(stream, &exchange.send, deadline)?;
        if exchange.read == 0 {
            return Ok(());
        }
        read_exact_by(stream, &mut answer[..exchange.read], deadline)?;
        exchange = conversation.resume(&answer[..exchange.read])?;
    }
}

/// One turn of the conversation: send these bytes (maybe none), then read exactly
/// `read` bytes of answer and give them to [`Conversation::resume`]; `read == 0`: the
/// tunnel is open.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) send: Vec<u8>,
    pub(crate) read: usize,
}

/// The SOCKS5 conversation with no I/O, so every I/O model drives the same one. An
/// answer is never longer than 257 bytes (a domain name and a port).
pub(crate) struct Conversation<'a> {
    host: &'a str,
    port: u16,
    credentials: Option<(&'a str, &'a str)>,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The method chosen: 2 bytes.
    Choice,
    /// The username/password verdict: 2 bytes.
    AuthStatus,
    /// The reply's head: 4 bytes.
    Reply,
    /// The length of the bound domain name: 1 byte.
    BoundNameLength,
    /// The bound address and port, read so the tunnel starts clean, then unused.
    Bound,
    Open,
}

impl<'a> Conversation<'a> {
    pub(crate) fn new(
        host: &'a str,
        port: u16,
        credentials: Option<(&'a str, &'a str)>,
    ) -> Conversation<'a> {
        Conversation {
            host,
            port,
            credentials,
            phase: Phase::Choice,
        }
    }

    /// The greeting: RFC 1928 section 3, the methods this client can do.
    pub(crate) fn start(&mut self) -> Exchange {
        let send = match self.credentials {
            Some(_) => vec![VERSION, 2, NO_AUTH, USER_PASSWORD],
            None => vec![VERSION, 1, NO_AUTH],
        };
        self.phase = Phase::Choice;
        Exchange { send, read: 2 }
    }

    /// Take the answer the last exchange asked for; the next exchange, or why the proxy
    /// will not open the tunnel.
    pub(crate) fn resume(&mut self, answer: &[u8]) -> Result<Exchange, Error> {
        match self.phase {
            Phase::Choice => self.choice(answer),
            Phase::AuthStatus => {
                if answer.get(1) != Some(&0) {
                    return Err(failure(
                        ErrorKind::PermissionDenied,
                        format!(
                            "the proxy refused user {:?} (status {})",
                            self.credentials.map_or("", |c| c.0),
                            answer.get(1).copied().unwrap_or(0xff)
                        ),
                    ));
                }
                self.request()
            }
            Phase::Reply => self.reply(answer),
            Phase::BoundNameLength => {
                self.phase = Phase::Bound;
                let len = usize::from(answer.first().copied().unwrap_or(0));
                Ok(Exchange {
                    send: Vec::new(),
                    read: len + 2,
                })
            }
            Phase::Bound | Phase::Open => {
                self.phase = Phase::Open;
                Ok(Exchange {
                    send: Vec::new(),
                    read: 0,
                })
            }
        }
    }

    fn choice(&mut self, choice: &[u8]) -> Result<Exchange, Error> {
        let (version, method) = (choice[0], choice[1]);
        if version != VERSION {
            return Err(failure(
                ErrorKind::InvalidData,
                format!("the proxy answered version {version} (not SOCKS5)"),
            ));
        }
        match (method, self.credentials) {
            (NO_AUTH, _) => self.request(),
            (USER_PASSWORD, Some((user, password))) => {
                self.phase = Phase::AuthStatus;
                Ok(Exchange {
                    send: authentication(user, password)?,
                    read: 2,
                })
            }
            (NO_ACCEPTABLE, None) => Err(failure(
                ErrorKind::PermissionDenied,
                "the proxy requires authentication: give user info in the proxy url".into(),
            )),
            (NO_ACCEPTABLE, Some(_)) => Err(failure(
                ErrorKind::PermissionDenied,
                "the proxy accepts neither no authentication nor username/password".into(),
            )),
            (other, _) => Err(failure(
                ErrorKind::InvalidData,
                format!("the proxy chose method {other:#04x}, which was not offered"),
            )),
        }
    }

    /// RFC 1928 section 4: CONNECT to an address or a name.
    fn request(&mut self) -> Result<Exchange, Error> {
        let mut request = vec![VERSION, CONNECT, 0];
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                request.push(IPV4);
                request.extend_from_slice(&ip.octets());
            }
            Ok(IpAddr::V6(ip)) => {
                request.push(IPV6);
                request.extend_from_slice(&ip.octets());
            }
            Err(_) => {
                let name = u8::try_from(self.host.len()).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "host name of {} bytes exceeds 255",
                        self.host.len()
                    ))
                })?;
                request.push(DOMAIN);
                request.push(name);
                request.extend_from_slice(self.host.as_bytes());
            }
        }
        request.extend_from_slice(&self.port.to_be_bytes());
        self.phase = Phase::Reply;
        Ok(Exchange {
            send: request,
            read: 4,
        })
    }

    /// RFC 1928 section 6: VER REP RSV ATYP, then BND.ADDR BND.PORT.
    fn reply(&mut self, reply: &[u8]) -> Result<Exchange, Error> {
        if reply[0] != VERSION {
            return Err(failure(
                ErrorKind::InvalidData,
                format!("the proxy's reply has version {}", reply[0]),
            ));
        }
        if reply[1] != 0 {
            let (kind, what) = reply_error(reply[1]);
            return Err(failure(
                kind,
                format!(
                    "{what} (reply {}) for {}:{}",
                    reply[1], self.host, self.port
                ),
            ));
        }
        let (phase, read) = match reply[3] {
            IPV4 => (Phase::Bound, 4 + 2),
            IPV6 => (Phase::Bound, 16 + 2),
            DOMAIN => (Phase::BoundNameLength, 1),
            other => {
                return Err(failure(
                    ErrorKind::InvalidData,
                    format!("the proxy's reply has address type {other}"),
                ))
            }
        };
        self.phase = phase;
        Ok(Exchange {
            send: Vec::new(),
            read,
        })
    }
}

/// RFC 1929: username and password, each at most 255 bytes.
fn authentication(user: &str, password: &str) -> Result<Vec<u8>, Error> {
    let too_long = |what: &str, len: usize| {
        Error::InvalidArgument(format!("socks5 {what} of {len} bytes exceeds 255"))
    };
    let user_len = u8::try_from(user.len()).map_err(|_| too_long("username", user.len()))?;
    let password_len =
        u8::try_from(password.len()).map_err(|_| too_long("password", password.len()))?;
    let mut request = Vec::with_capacity(3 + user.len() + password.len());
    request.extend_from_slice(&[1, user_len]);
    request.extend_from_slice(user.as_bytes());
    request.push(password_len);
    request.extend_from_slice(password.as_bytes());
    Ok(request)
}

/// What a failed CONNECT reply means (RFC 1928 section 6).
fn reply_error(code: u8) -> (ErrorKind, &'static str) {
    match code {
        1 => (ErrorKind::Other, "general SOCKS server failure"),
        2 => (
            ErrorKind::PermissionDenied,
            "connection not allowed by the proxy's rules",
        ),
        3 => (ErrorKind::NetworkUnreachable, "network unreachable"),
        4 => (ErrorKind::HostUnreachable, "host unreachable"),
        5 => (
            ErrorKind::ConnectionRefused,
            "connection refused by the target",
        ),
        6 => (ErrorKind::TimedOut, "TTL expired"),
        7 => (ErrorKind::Unsupported, "command not supported by the proxy"),
        8 => (
            ErrorKind::Unsupported,
            "address type not supported by the proxy",
        ),
        _ => (ErrorKind::Other, "unknown SOCKS reply"),
    }
}

fn failure(kind: ErrorKind, text: String) -> Error {
    Error::Io(io::Error::new(kind, format!("socks5 proxy: {text}")))
}

/// Fill `buf` from `stream` by `deadline`.
fn read_exact_by<S: Stream>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.set_read_timeout(time_left(deadline, "socks5 proxy")?)?;
        match stream.read_by(&mut buf[filled..], deadline) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "socks5 proxy: the proxy closed the connection",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_kind(e, deadline)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a conversation against scripted answers; the bytes it sent, or its error.
    fn talk(
        host: &str,
        credentials: Option<(&str, &str)>,
        answers: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut conversation = Conversation::new(host, 443, credentials);
        let mut exchange = conversation.start();
        let mut sent = Vec::new();
        let mut answers = answers.iter();
        loop {
            sent.push(exchange.send.clone());
            if exchange.read == 0 {
                return Ok(sent);
            }
            let answer = answers.next().expect("an answer for each read");
            assert_eq!(answer.len(), exchange.read, "answer length asked for");
            exchange = conversation.resume(answer)?;
        }
    }

    #[test]
    fn a_name_goes_to_the_proxy_with_username_and_password() {
        let sent = talk(
            "example.com",
            Some(("u", "pw")),
            &[&[5, 2], &[1, 0], &[5, 0, 0, 3], &[4], b"host\x01\xbb"],
        )
        .unwrap();
        assert_eq!(sent[0], [5, 2, 0, 2]);
        assert_eq!(sent[1], b"\x01\x01u\x02pw");
        assert_eq!(sent[2], b"\x05\x01\x00\x03\x0bexample.com\x01\xbb");
        assert!(sent[3..].iter().all(Vec::is_empty));
    }

    #[test]
    fn an_ipv6_target_is_sent_as_an_address_and_no_auth_needs_none() {
        let sent = talk(
            "::1",
            None,
            &[&[5, 0], &[5, 0, 0, 1], &[127, 0, 0, 1, 0, 80]],
        )
        .unwrap();
        assert_eq!(sent[0], [5, 1, 0]);
        assert_eq!(&sent[1][..4], [5, 1, 0, 4]);
        assert_eq!(sent[1].len(), 4 + 16 + 2);
    }

    #[test]
    fn refusals_are_clear_errors_of_their_kind() {
        let wrong_password = talk("h", Some(("u", "x")), &[&[5, 2], &[1, 1]]).unwrap_err();
        assert!(matches!(&wrong_password, Error::Io(e) if e.kind() == ErrorKind::PermissionDenied));
        let refused = talk("h", None, &[&[5, 0], &[5, 5, 0, 1]]).unwrap_err();
        assert!(matches!(&refused, Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused));
        let needs_auth = talk("h", None, &[&[5, 0xff]]).unwrap_err();
        assert!(needs_auth.to_string().contains("requires authentication"));
        let not_socks5 = talk("h", None, &[&[4, 0]]).unwrap_err();
        assert!(matches!(&not_socks5, Error::Io(e) if e.kind() == ErrorKind::InvalidData));
    }
}
