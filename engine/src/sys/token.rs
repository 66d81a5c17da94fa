//! [`Token`]: what the worker packs into each operation and gets back in its completion,
//! and the driver's own half of the `user_data` space.

use std::fmt;

/// What an operation was, as carried in its [`Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// Multishot accept on a listener; the completion carries the new socket.
    Accept = 1,
    /// Multishot receive; `result` is a byte count, with a [`RecvBuf`](super::RecvBuf).
    Recv = 2,
    /// Vectored send; `result` is the byte count written.
    Send = 3,
    /// Outgoing connect; `result` is 0 on success.
    Connect = 4,
    /// A [`Waker`](super::Waker) fired. The driver re-arms it itself.
    Wake = 5,
}

impl OpKind {
    /// The largest kind byte: below [`DRIVER_BIT`]'s byte, so no token reaches the
    /// driver's half of the tag space.
    const LAST: u8 = OpKind::Wake as u8;

    pub(super) fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Accept,
            2 => OpKind::Recv,
            3 => OpKind::Send,
            4 => OpKind::Connect,
            5 => OpKind::Wake,
            _ => return None,
        })
    }
}

/// Bit 63 of `user_data`: set on the driver's own operations, clear on every [`Token`].
pub(super) const DRIVER_BIT: u64 = 1 << 63;

const _: () = assert!(((OpKind::LAST as u64) << 56) & DRIVER_BIT == 0);

/// An operation's identity as the worker names it: its kind, a slab key and a 24-bit
/// generation, packed into io_uring's 64-bit `user_data` as bits 56..64 the kind,
/// 32..56 the generation, 0..32 the key.
///
/// The only constructor is [`Token::new`], whose kind byte is at most [`OpKind::LAST`]:
/// bit 63 of a token is always clear. The driver's own operations (the send and connect
/// slots of its in-flight table, the waker's poll, cancels) carry bit 63 set, so a token can
/// never be decoded as one of them, whatever key or generation it holds (tests:
/// `no_token_decodes_as_a_driver_operation`). There is no way to make a token from raw
/// bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    pub(super) kind: OpKind,
    pub(super) generation: u32,
    pub(super) key: u32,
}

impl Token {
    /// The largest generation a token can carry; larger values wrap.
    pub const MAX_GENERATION: u32 = (1 << 24) - 1;

    /// The token of [`OpKind::Wake`](OpKind::Wake) completions.
    pub const WAKE: Token = Token::new(OpKind::Wake, 0, 0);

    /// Packs a kind, a slab key and a generation (taken modulo 2^24).
    pub const fn new(kind: OpKind, key: u32, generation: u32) -> Token {
        Token {
            kind,
            generation: generation & Self::MAX_GENERATION,
            key,
        }
    }

    /// The operation kind.
    pub fn kind(self) -> OpKind {
        self.kind
    }

    /// The slab key.
    pub const fn key(self) -> u32 {
        self.key
    }

    /// The generation (24 bits).
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The packed form, as the kernel carries it: bit 63 clear.
    pub(super) const fn user_data(self) -> u64 {
        ((self.kind as u64) << 56) | ((self.generation as u64) << 32) | self.key as u64
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Token({:?}, key {}, gen {})",
            self.kind, self.key, self.generation
        )
    }
}

/// The driver's own operations, in the half of the `user_data` space with bit 63 set:
/// bits 56..63 the tag, 0..32 a slot of the in-flight table where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Internal {
    /// A send whose buffers sit in the in-flight table.
    Send(u32),
    /// A connect whose address sits in the in-flight table.
    Connect(u32),
    /// The poll of the waker's eventfd.
    Wake,
    /// A cancel request; its own completion is not reported.
    Cancel,
    /// A close; its completion is not reported.
    Close,
}

impl Internal {
    /// The packed form: bit 63 set.
    pub(super) const fn user_data(self) -> u64 {
        let (tag, slot) = match self {
            Internal::Send(slot) => (0, slot),
            Internal::Connect(slot) => (1, slot),
            Internal::Wake => (2, 0),
            Internal::Cancel => (3, 0),
            Internal::Close => (4, 0),
        };
        DRIVER_BIT | ((tag as u64) << 56) | slot as u64
    }
}

/// Whose operation a completion's `user_data` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The worker's: handed out as a [`Completion`](super::Completion).
    Worker(Token),
    /// The driver's own: handled inside the driver.
    Driver(Internal),
    /// Neither (never submitted by this driver): dropped, its buffer given back.
    Unknown,
}

impl Owner {
    /// Splits the `user_data` space by bit 63, then checks the tag or kind byte.
    pub(super) fn decode(raw: u64) -> Owner {
        let byte = (raw >> 56) as u8;
        let slot = raw as u32;
        if raw & DRIVER_BIT == 0 {
            return match OpKind::from_u8(byte) {
                Some(kind) => Owner::Worker(Token::new(kind, slot, (raw >> 32) as u32)),
                None => Owner::Unknown,
            };
        }
        Owner::Driver(match byte & 0x7f {
            0 => Internal::Send(slot),
            1 => Internal::Connect(slot),
            2 => Internal::Wake,
            3 => Internal::Cancel,
            4 => Internal::Close,
            _ => return Owner::Unknown,
        })
    }
}
