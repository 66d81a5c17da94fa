//! [`PreparedMessage`]: a payload kept once, each wire form built once, on demand, and
//! shared by every connection that sends it.
//!
//! This is what makes broadcast cheap: with permessage-deflate, the expensive
//! compression runs once per message (and level), not once per subscriber, and no
//! subscriber copies the payload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use crate::error::Error;
use crate::proto::deflate::{with_deflater, DeflateSettings, Deflater};
use crate::proto::{Encoder, MessageType, Role};

/// A message ready to be sent to many connections (gorilla/websocket's `PreparedMessage`).
///
/// ```
/// use ringcast::{MessageType, PreparedMessage};
/// use ringcast::proto::Role;
/// let message = PreparedMessage::new(MessageType::Text, "Hello")?;
/// let frame = message.frame(Role::Server, None);
/// assert_eq!(&frame[..], b"\x81\x05Hello");
/// // The same bytes are handed out again, not rebuilt.
/// assert_eq!(frame.as_ptr(), message.frame(Role::Server, None).as_ptr());
/// # Ok::<(), ringcast::Error>(())
/// ```
pub struct PreparedMessage {
    message_type: MessageType,
    payload: Bytes,
    server_plain: OnceLock<Bytes>,
    client_plain: OnceLock<Bytes>,
    /// Compressed forms by (role, settings); few entries, so a short list beats a map.
    compressed: Mutex<Vec<(Role, DeflateSettings, Bytes)>>,
    compressions: AtomicUsize,
}

impl std::fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("message_type", &self.message_type)
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl PreparedMessage {
    /// Keep `payload` for sending as `message_type`. Control messages must fit in 125
    /// bytes. Nothing is encoded until a connection asks for a form.
    pub fn new(
        message_type: MessageType,
        payload: impl Into<Bytes>,
    ) -> Result<PreparedMessage, Error> {
        let payload = payload.into();
        if message_type.is_control() && payload.len() > 125 {
            return Err(Error::InvalidArgument(format!(
                "control message payload of {} bytes exceeds 125",
                payload.len()
            )));
        }
        Ok(PreparedMessage {
            message_type,
            payload,
            server_plain: OnceLock::new(),
            client_plain: OnceLock::new(),
            compressed: Mutex::new(Vec::new()),
            compressions: AtomicUsize::new(0),
        })
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The payload as given.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The whole frame for a connection of side `role`, compressed with `compression`
    /// when it is `Some` (ignored for control messages). Built on the first call for
    /// that form, then shared: the returned `Bytes` points at the same memory. A client
    /// form is masked with one key chosen when it is built.
    pub fn frame(&self, role: Role, compression: Option<DeflateSettings>) -> Bytes {
        match compression {
            Some(settings) if !self.message_type.is_control() => {
                self.compressed_frame(role, settings)
            }
            _ => {
                let cell = match role {
                    Role::Server => &self.server_plain,
                    Role::Client => &self.client_plain,
                };
                cell.get_or_init(|| self.encode(role, None)).clone()
            }
        }
    }

    /// How many times the payload was compressed (once per side and settings used).
    pub fn compressions(&self) -> usize {
        self.compressions.load(Ordering::Relaxed)
    }

    fn compressed_frame(&self, role: Role, settings: DeflateSettings) -> Bytes {
        // A poisoned lock only means another thread panicked mid-insert; the list itself
        // is always whole, so keep using it.
        let mut forms = self.compressed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, frame)) = forms.iter().find(|(r, s, _)| *r == role && *s == settings) {
            return frame.clone();
        }
        let frame = with_deflater(settings, |deflater| self.encode(role, Some(deflater)));
        self.compressions.fetch_add(1, Ordering::Relaxed);
        forms.push((role, settings, frame.clone()));
        frame
    }

    fn encode(&self, role: Role, deflater: Option<&mut Deflater>) -> Bytes {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let opcode = self.message_type.opcode();
        Encoder::new(role).encode_message(opcode, &self.payload, deflater, &mut scratch, &mut out);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_message_over_125_bytes_is_refused() {
        assert!(PreparedMessage::new(MessageType::Ping, vec![0u8; 126]).is_err());
        assert!(PreparedMessage::new(MessageType::Ping, vec![0u8; 125]).is_ok());
    }

    #[test]
    fn thousand_compressed_sends_compress_once() {
        let message = PreparedMessage::new(MessageType::Text, "x".repeat(1000)).unwrap();
        let first = message.frame(Role::Server, Some(DeflateSettings::default()));
        for _ in 0..1000 {
            let frame = message.frame(Role::Server, Some(DeflateSettings::default()));
            assert_eq!(frame.as_ptr(), first.as_ptr());
        }
        assert_eq!(message.compressions(), 1);
        // RSV1 marks the frame compressed; it is much smaller than the payload.
        assert_eq!(first[0], 0xC1);
        assert!(first.len() < 100);
    }

    #[test]
    fn client_form_is_masked_and_server_form_is_not() {
        let message = PreparedMessage::new(MessageType::Binary, vec![7u8; 10]).unwrap();
        let server = message.frame(Role::Server, None);
        let client = message.frame(Role::Client, None);
        assert_eq!(server[1], 10);
        assert_eq!(client[1], 0x80 | 10);
        assert_eq!(client.len(), server.len() + 4);
    }
}
