//! [`Decoder`]: bytes in, [`Event`]s out, every rule of RFC 6455 section 5 enforced.
//!
//! The decoder is given whatever bytes arrived (any split: one byte at a time or many
//! frames at once) and hands back at most one event per call. Payloads are borrowed:
//! a whole frame that sits in the input is unmasked in place and handed out with no
//! copy; only a frame split across reads, or a fragmented or compressed message, is
//! gathered in the decoder's own buffer. A partial header (at most 14 bytes) is kept
//! inline. Nothing is allocated up front for a declared length: memory grows only with
//! bytes actually received, and never past the read limit.

use super::close::parse_close_payload;
use super::deflate::{Inflated, Inflater};
use super::error::ProtocolError;
use super::frame::{FrameHeader, MAX_HEADER_LEN};
use super::mask::apply_mask_offset;
use super::utf8::Utf8Validator;
use super::{MessageType, OpCode, Role};

/// Default read limit: 64 MiB. gorilla/websocket has no limit by default; ringcast has one
/// so that a peer cannot make a connection buffer without bound. Set it with
/// [`Decoder::set_read_limit`] (or the Conn/engine settings).
pub const DEFAULT_READ_LIMIT: u64 = 64 << 20;

/// One thing the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message (text is already checked to be UTF-8, compressed messages
    /// are already inflated). Only in the default, assembling mode.
    Message(MessageType, &'a [u8]),
    /// A piece of a data message, in streaming mode ([`Decoder::set_streaming`]).
    /// Pieces come in order; `first` marks the first, `last` the end of the message.
    /// Text pieces may split a code point; the whole is checked incrementally.
    Part {
        /// Text or binary.
        message_type: MessageType,
        /// The bytes of this piece (may be empty).
        data: &'a [u8],
        /// This is the first piece of the message.
        first: bool,
        /// This is the last piece of the message.
        last: bool,
    },
    /// A ping with its application data (at most 125 bytes).
    Ping(&'a [u8]),
    /// A pong with its application data (at most 125 bytes).
    Pong(&'a [u8]),
    /// A close frame: `None` when it had no body, else a code valid on the wire and a
    /// UTF-8 reason.
    Close(Option<(super::CloseCode, &'a str)>),
}

/// Turns received bytes into [`Event`]s for one connection.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    read_limit: u64,
    compression: bool,
    streaming: bool,
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    frame: Option<Frame>,
    message: Option<Message>,
    utf8: Utf8Validator,
    /// Gathered bytes of a data message (split, fragmented or compressed).
    buf: Vec<u8>,
    /// Gathered bytes of a control frame split across reads.
    control: Vec<u8>,
    failed: Option<ProtocolError>,
    /// A compressed message whose payload (in `buf`) is being inflated, paused when the
    /// inflater's budget ran out.
    inflating: Option<MessageType>,
    /// `buf` / `control` were lent to the last event: clear them on the next call.
    clear_buf: bool,
    clear_control: bool,
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    seen: u64,
}

/// The data message in progress.
#[derive(Debug, Clone, Copy)]
struct Message {
    message_type: MessageType,
    compressed: bool,
    total: u64,
    emitted_first: bool,
}

/// Where an event's bytes are, named without borrowing them.
#[derive(Debug, Clone, Copy)]
enum Src {
    Input(usize, usize),
    Buf,
    Control,
    Inflated,
}

#[derive(Debug, Clone, Copy)]
enum Out {
    Message(MessageType, Src),
    Part {
        message_type: MessageType,
        src: Src,
        first: bool,
        last: bool,
    },
    Control(OpCode, Src),
}

impl Decoder {
    /// A decoder for the side `role` of a connection: a [`Role::Server`] decoder
    /// requires masked frames, a [`Role::Client`] decoder requires unmasked ones.
    /// Read limit [`DEFAULT_READ_LIMIT`], no compression, assembling mode.
    pub fn new(role: Role) -> Decoder {
        Decoder {
            role,
            read_limit: DEFAULT_READ_LIMIT,
            compression: false,
            streaming: false,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            buf: Vec::new(),
            control: Vec::new(),
            failed: None,
            inflating: None,
            clear_buf: false,
            clear_control: false,
        }
    }

    /// The largest message (after inflation) accepted; a larger one fails with
    /// [`ProtocolError::MessageTooBig`] as soon as its size is known, before its bytes
    /// are buffered. `0` means no limit.
    pub fn set_read_limit(&mut self, limit: u64) {
        self.read_limit = limit;
    }

    /// The read limit in force.
    pub fn read_limit(&self) -> u64 {
        self.read_limit
    }

    /// Whether permessage-deflate was negotiated: RSV1 is then allowed on the first
    /// frame of a data message and marks it compressed.
    pub fn set_compression(&mut self, negotiated: bool) {
        self.compression = negotiated;
    }

    /// Streaming mode: data messages come as [`Event::Part`]s as their bytes arrive,
    /// never gathered whole (the blocking `next_reader` uses this). Compressed messages
    /// are the exception: they are gathered, inflated and handed out as one last part.
    pub fn set_streaming(&mut self, streaming: bool) {
        self.streaming = streaming;
    }

    /// Decode from `input`. Returns how many bytes of `input` were used and at most one
    /// event. When no event is returned, all of `input` was used (a partial frame is
    /// kept), unless the decoder [is paused](Self::is_paused); when an event is returned,
    /// call again with the rest of the input.
    ///
    /// `input` is mutable so that masked payloads are unmasked in place. `inflater` is
    /// only touched for compressed messages; the engine shares one per worker. With a
    /// budget set on the inflater ([`Inflater::set_budget`]), a compressed message whose
    /// inflation runs out of budget pauses the decoder: no event, and the input after the
    /// message unused. Call again, with the same inflater and the input not used yet,
    /// once it has budget: inflation resumes where it stopped. Without a budget (the
    /// default) the decoder never pauses.
    ///
    /// After an error the connection must be closed with the error's close code; later
    /// calls keep returning the same error.
    ///
    /// ```
    /// use ringcast::proto::{deflate::Inflater, Decoder, Event, MessageType, Role};
    /// let mut decoder = Decoder::new(Role::Client);
    /// let mut inflater = Inflater::new();
    /// let mut input = *b"\x81\x05Hello";
    /// let (used, event) = decoder.decode(&mut input, &mut inflater)?;
    /// assert_eq!(used, 7);
    /// assert_eq!(event, Some(Event::Message(MessageType::Text, b"Hello")));
    /// # Ok::<(), ringcast::proto::ProtocolError>(())
    /// ```
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        inflater: &'a mut Inflater,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.clear_buf {
            self.buf.clear();
            self.clear_buf = false;
        }
        if self.clear_control {
            self.control.clear();
            self.clear_control = false;
        }
        let stepped = match self.inflating {
            // A paused inflation goes on before any new input is looked at.
            Some(message_type) => self.inflate(message_type, 0, inflater),
            None => self.step(input, inflater),
        };
        let (used, out) = match stepped {
            Ok(stepped) => stepped,
            Err(err) => {
                self.failed = Some(err);
                return Err(err);
            }
        };
        let Some(out) = out else {
            return Ok((used, None));
        };
        let input: &'a [u8] = input;
        let this: &'a Decoder = self;
        let inflater: &'a Inflater = inflater;
        let bytes = |src: Src| -> &'a [u8] {
            match src {
                Src::Input(start, end) => &input[start..end],
                Src::Buf => &this.buf,
                Src::Control => &this.control,
                Src::Inflated => inflater.output(),
            }
        };
        let event = match out {
            Out::Message(message_type, src) => Event::Message(message_type, bytes(src)),
            Out::Part {
                message_type,
                src,
                first,
                last,
            } => Event::Part {
                message_type,
                data: bytes(src),
                first,
                last,
            },
            Out::Control(OpCode::Ping, src) => Event::Ping(bytes(src)),
            Out::Control(OpCode::Pong, src) => Event::Pong(bytes(src)),
            // Checked in `finish_control` already; parse again to borrow the reason.
            Out::Control(_, src) => Event::Close(parse_close_payload(bytes(src))?),
        };
        Ok((used, Some(event)))
    }

    /// The decoding loop, naming its event's bytes by place so no borrow outlives it.
    fn step(
        &mut self,
        input: &mut [u8],
        inflater: &mut Inflater,
    ) -> Result<(usize, Option<Out>), ProtocolError> {
        let mut pos = 0;
        loop {
            let mut frame = match self.frame {
                Some(frame) => frame,
                None => {
                    let Some(header) = self.next_header(input, &mut pos)? else {
                        return Ok((input.len(), None));
                    };
                    self.start_frame(header)?
                }
            };
            let avail = input.len() - pos;
            if avail == 0 && frame.remaining > 0 {
                self.frame = Some(frame);
                return Ok((pos, None));
            }
            let take = frame.remaining.min(avail as u64) as usize;
            let (start, end) = (pos, pos + take);
            if let Some(key) = frame.mask {
                apply_mask_offset(&mut input[start..end], key, frame.seen as usize);
            }
            pos = end;
            frame.remaining -= take as u64;
            frame.seen += take as u64;
            let frame_done = frame.remaining == 0;
            self.frame = if frame_done { None } else { Some(frame) };

            if frame.opcode.is_control() {
                // Most control frames arrive whole: hand them out from the input.
                if frame_done && self.control.is_empty() {
                    check_control(frame.opcode, &input[start..end])?;
                    return Ok((
                        pos,
                        Some(Out::Control(frame.opcode, Src::Input(start, end))),
                    ));
                }
                self.control.extend_from_slice(&input[start..end]);
                if !frame_done {
                    return Ok((pos, None));
                }
                check_control(frame.opcode, &self.control)?;
                self.clear_control = true;
                return Ok((pos, Some(Out::Control(frame.opcode, Src::Control))));
            }

            let Some(mut message) = self.message else {
                // start_frame always opens a message for a data frame.
                return Err(ProtocolError::UnexpectedContinuation);
            };
            let last = frame_done && frame.fin;
            if message.compressed {
                self.buf.extend_from_slice(&input[start..end]);
                if !last {
                    continue;
                }
                self.message = None;
                return self.inflate(message.message_type, pos, inflater);
            }
            if message.message_type == MessageType::Text {
                self.utf8.feed(&input[start..end])?;
                if last {
                    self.utf8.finish()?;
                }
            }
            if self.streaming {
                if take == 0 && !last {
                    continue;
                }
                let first = !message.emitted_first;
                message.emitted_first = true;
                self.message = if last { None } else { Some(message) };
                let src = Src::Input(start, end);
                return Ok((
                    pos,
                    Some(Out::Part {
                        message_type: message.message_type,
                        src,
                        first,
                        last,
                    }),
                ));
            }
            if last && self.buf.is_empty() {
                // The whole message sits in the input: no copy.
                self.message = None;
                return Ok((
                    pos,
                    Some(Out::Message(message.message_type, Src::Input(start, end))),
                ));
            }
            self.buf.extend_from_slice(&input[start..end]);
            if last {
                self.message = None;
                self.clear_buf = true;
                return Ok((pos, Some(Out::Message(message.message_type, Src::Buf))));
            }
        }
    }

    /// Inflates (or goes on inflating) the compressed message gathered in `buf`, `pos`
    /// bytes of input having been used: its event once whole, or none when the inflater's
    /// budget ran out (the decoder stays paused).
    fn inflate(
        &mut self,
        message_type: MessageType,
        pos: usize,
        inflater: &mut Inflater,
    ) -> Result<(usize, Option<Out>), ProtocolError> {
        self.inflating = Some(message_type);
        if inflater.inflate_some(&self.buf, self.read_limit)? == Inflated::Paused {
            return Ok((pos, None));
        }
        self.inflating = None;
        self.clear_buf = true;
        if message_type == MessageType::Text
            && simdutf8::basic::from_utf8(inflater.output()).is_err()
        {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok((pos, Some(self.whole(message_type, Src::Inflated))))
    }

    /// Whether a compressed message's inflation is paused at the inflater's budget: call
    /// [`decode`](Self::decode) again once the inflater has budget.
    pub fn is_paused(&self) -> bool {
        self.inflating.is_some()
    }

    /// A whole message in the current mode: a `Message`, or one first-and-last `Part`.
    fn whole(&self, message_type: MessageType, src: Src) -> Out {
        if self.streaming {
            Out::Part {
                message_type,
                src,
                first: true,
                last: true,
            }
        } else {
            Out::Message(message_type, src)
        }
    }

    /// Parse the next header, from the inline stash plus input when a header was split.
    /// `None`: the input ran out (what there was is stashed).
    fn next_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtocolError> {
        let have = self.head_len as usize;
        if have == 0 {
            return match FrameHeader::decode(&input[*pos..])? {
                Some((header, used)) => {
                    *pos += used;
                    Ok(Some(header))
                }
                None => {
                    // Fewer bytes than a header takes, so they fit the stash.
                    let rest = &input[*pos..];
                    self.head[..rest.len()].copy_from_slice(rest);
                    self.head_len = rest.len() as u8;
                    *pos = input.len();
                    Ok(None)
                }
            };
        }
        let take = (MAX_HEADER_LEN - have).min(input.len() - *pos);
        self.head[have..have + take].copy_from_slice(&input[*pos..*pos + take]);
        match FrameHeader::decode(&self.head[..have + take])? {
            Some((header, used)) => {
                *pos += used - have;
                self.head_len = 0;
                Ok(Some(header))
            }
            None => {
                self.head_len = (have + take) as u8;
                *pos += take;
                Ok(None)
            }
        }
    }

    /// Check a header against the connection's rules and open its frame (and message).
    fn start_frame(&mut self, header: FrameHeader) -> Result<Frame, ProtocolError> {
        let rsv1 = header.rsv & 0b100 != 0;
        if header.rsv & 0b011 != 0 || (rsv1 && !self.compression) {
            return Err(ProtocolError::ReservedBits { bits: header.rsv });
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if header.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong {
                    len: header.payload_len,
                });
            }
            if !header.fin {
                return Err(ProtocolError::ControlFrameFragmented);
            }
            if rsv1 {
                return Err(ProtocolError::CompressedBitMisplaced);
            }
        } else {
            let mut message = match (header.opcode, self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(_)) if rsv1 => {
                    return Err(ProtocolError::CompressedBitMisplaced)
                }
                (OpCode::Continuation, Some(message)) => message,
                (_, Some(_)) => return Err(ProtocolError::DataFrameInsideFragmentedMessage),
                (opcode, None) => {
                    self.utf8.reset();
                    Message {
                        message_type: if opcode == OpCode::Text {
                            MessageType::Text
                        } else {
                            MessageType::Binary
                        },
                        compressed: rsv1,
                        total: 0,
                        emitted_first: false,
                    }
                }
            };
            message.total = message.total.saturating_add(header.payload_len);
            if self.read_limit > 0 {
                // Compressed bytes are bounded too, with room for DEFLATE's worst-case
                // growth of incompressible data; the inflated size is checked on inflation.
                let limit = if message.compressed {
                    self.read_limit.saturating_add(self.read_limit / 1024 + 64)
                } else {
                    self.read_limit
                };
                if message.total > limit {
                    return Err(ProtocolError::MessageTooBig {
                        limit: self.read_limit,
                    });
                }
            }
            self.message = Some(message);
        }
        Ok(Frame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            remaining: header.payload_len,
            seen: 0,
        })
    }

    /// Whether a frame or a message is partly received (or being inflated).
    pub fn is_idle(&self) -> bool {
        self.frame.is_none()
            && self.message.is_none()
            && self.head_len == 0
            && self.inflating.is_none()
    }

    /// Free the message buffer if nothing is in progress, so an idle connection holds no
    /// read buffer. The engine calls it after each batch of received bytes.
    pub fn release_idle_memory(&mut self) {
        if self.is_idle() {
            self.buf = Vec::new();
            self.control = Vec::new();
            self.clear_buf = false;
            self.clear_control = false;
        }
    }
}

/// A whole control payload is checked before it is handed out: a close body must parse.
fn check_control(opcode: OpCode, payload: &[u8]) -> Result<(), ProtocolError> {
    if opcode == OpCode::Close {
        parse_close_payload(payload)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
