//! Close codes (RFC 6455 section 7.4) and close frame payloads (section 5.5.1).

use super::error::ProtocolError;

/// A close status code. A newtype over `u16`, so application codes (4000 stays 4000)
/// pass through untouched; the RFC's codes are associated constants named after
/// gorilla/websocket's (`CloseGoingAway` is [`CloseCode::GOING_AWAY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL_CLOSURE: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, browser tab closed).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL_CLOSURE: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_FRAME_PAYLOAD_DATA: CloseCode = CloseCode(1007);
    /// 1008: a message broke the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process (over the read limit).
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_SERVER_ERR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1015: the TLS handshake failed (never sent on the wire).
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame on the wire: 1000-1003,
    /// 1007-1014 and 3000-4999 (RFC 6455 section 7.4 and the IANA registry).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parse a received close payload: empty gives `None` (gorilla/websocket reports it as
/// [`CloseCode::NO_STATUS_RECEIVED`]); otherwise a code valid on the wire and a
/// UTF-8 reason.
///
/// ```
/// use ringcast::proto::{close::parse_close_payload, CloseCode};
/// let (code, reason) = parse_close_payload(&[0x03, 0xe8, b'b', b'y', b'e']).unwrap().unwrap();
/// assert_eq!((code, reason), (CloseCode::NORMAL_CLOSURE, "bye"));
/// ```
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        // RFC 6455 section 5.5.1: a body, if present, starts with a two-byte code.
        1 => Err(ProtocolError::CloseFrameTooShort),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode { code: code.0 });
            }
            let reason = simdutf8::basic::from_utf8(&payload[2..])
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// The longest close reason a close frame can carry: 125 bytes of control payload less
/// the two of the code (RFC 6455 section 5.5).
pub const MAX_REASON_BYTES: usize = 123;

/// Append a close payload (code, then reason) to `out`, for the engine, whose close
/// reasons are documented as cut. Nothing is appended for
/// [`CloseCode::NO_STATUS_RECEIVED`], as gorilla/websocket's `FormatCloseMessage` does. The
/// reason is cut at a character boundary so the payload fits a control frame (125
/// bytes); [`format_close_message`](crate::format_close_message) never cuts.
pub fn write_close_payload(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    if code == CloseCode::NO_STATUS_RECEIVED {
        return;
    }
    out.extend_from_slice(&code.0.to_be_bytes());
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_of_one_byte_is_protocol_error() {
        let err = parse_close_payload(&[0x03]).unwrap_err();
        assert_eq!(err, ProtocolError::CloseFrameTooShort);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn empty_close_payload_has_no_status() {
        assert_eq!(parse_close_payload(&[]).unwrap(), None);
    }

    #[test]
    fn close_codes_valid_on_wire_are_exactly_the_registered_ranges() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_valid_on_wire(), expected, "code {code}");
        }
    }

    #[test]
    fn close_code_not_valid_on_wire_is_protocol_error() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let payload = code.to_be_bytes();
            let err = parse_close_payload(&payload).unwrap_err();
            assert_eq!(err, ProtocolError::InvalidCloseCode { code });
            assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn close_reason_must_be_utf8() {
        let err = parse_close_payload(&[0x03, 0xe8, 0xff]).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCloseReason);
        assert_eq!(err.close_code(), CloseCode::INVALID_FRAME_PAYLOAD_DATA);
    }

    #[test]
    fn no_status_received_formats_as_empty_payload() {
        let mut out = Vec::new();
        write_close_payload(CloseCode::NO_STATUS_RECEIVED, "ignored", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn long_close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        write_close_payload(CloseCode::GOING_AWAY, &reason, &mut out);
        assert!(out.len() <= 125);
        let (_, parsed) = parse_close_payload(&out).unwrap().unwrap();
        assert!(reason.starts_with(parsed));
    }
}
