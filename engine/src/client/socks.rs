//! A SOCKS5 tunnel (RFC 1928), with username/password authentication (RFC 1929) when
//! the proxy URL carries user info. The target's name goes to the proxy to resolve (for
//! both `socks5://` and `socks5h://`, as Go's proxy package does), so no local lookup
//! leaks it. Every read and write is bounded by the dial's deadline.

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

/// Ask the SOCKS5 proxy on `stream` for a connection to `host:port`.
pub(crate) fn connect(
    stream: &mut TcpStream,
    host: &str,
    port: u16,
    credentials: Option<(&str, &str)>,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    // RFC 1928 section 3: the methods this client can do.
    let greeting: &[u8] = match credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
        None => &[VERSION, 1, NO_AUTH],
    };
    write_all_by(stream, greeting, deadline)?;
    let mut choice = [0u8; 2];
    read_exact_by(stream, &mut choice, deadline)?;
    if choice[0] != VERSION {
        return Err(failure(
            ErrorKind::InvalidData,
            format!("the proxy answered version {} (not SOCKS5)", choice[0]),
        ));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some((user, password))) => authenticate(stream, user, password, deadline)?,
        (NO_ACCEPTABLE, None) => {
            return Err(failure(
                ErrorKind::PermissionDenied,
                "the proxy requires authentication: give user info in the proxy url".into(),
            ))
        }
        (NO_ACCEPTABLE, Some(_)) => {
            return Err(failure(
                ErrorKind::PermissionDenied,
                "the proxy accepts neither no authentication nor username/password".into(),
            ))
        }
        (other, _) => {
            return Err(failure(
                ErrorKind::InvalidData,
                format!("the proxy chose method {other:#04x}, which was not offered"),
            ))
        }
    }
    // RFC 1928 section 4: CONNECT to an address or a name.
    let mut request = vec![VERSION, CONNECT, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            request.push(IPV4);
            request.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            request.push(IPV6);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let name = u8::try_from(host.len()).map_err(|_| {
                Error::InvalidArgument(format!("host name of {} bytes exceeds 255", host.len()))
            })?;
            request.push(DOMAIN);
            request.push(name);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    write_all_by(stream, &request, deadline)?;
    // RFC 1928 section 6: VER REP RSV ATYP BND.ADDR BND.PORT
    let mut reply = [0u8; 4];
    read_exact_by(stream, &mut reply, deadline)?;
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
            format!("{what} (reply {}) for {host}:{port}", reply[1]),
        ));
    }
    let address_len = match reply[3] {
        IPV4 => 4,
        IPV6 => 16,
        DOMAIN => {
            let mut len = [0u8; 1];
            read_exact_by(stream, &mut len, deadline)?;
            usize::from(len[0])
        }
        other => {
            return Err(failure(
                ErrorKind::InvalidData,
                format!("the proxy's reply has address type {other}"),
            ))
        }
    };
    // The bound address and port: read so that the tunnel starts clean, then unused.
    let mut bound = [0u8; 255 + 2];
    read_exact_by(stream, &mut bound[..address_len + 2], deadline)?;
    Ok(())
}

/// RFC 1929: username and password, each at most 255 bytes.
fn authenticate(
    stream: &mut TcpStream,
    user: &str,
    password: &str,
    deadline: Option<Instant>,
) -> Result<(), Error> {
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
    write_all_by(stream, &request, deadline)?;
    let mut status = [0u8; 2];
    read_exact_by(stream, &mut status, deadline)?;
    if status[1] != 0 {
        return Err(failure(
            ErrorKind::PermissionDenied,
            format!("the proxy refused user {user:?} (status {})", status[1]),
        ));
    }
    Ok(())
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
