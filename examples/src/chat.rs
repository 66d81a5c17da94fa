//! The chat rooms both chat servers run on the engine (`chat`, and `axum-chat`, whose
//! axum routes hand their WebSockets to it): [`ChatRooms`], the page, and what a room
//! name may be.

use ringcast::proto::handshake::{HandshakeError, Request};
use ringcast::server::{Handler, HttpResponse, ServerHandle, Socket};
use ringcast::{CloseCode, MessageType, Upgrader};

/// The chat page (examples/chat/index.html): it joins `/ws?room=NAME` of the server that
/// served it.
pub const PAGE: &str = include_str!("../chat/index.html");

/// The settings both chat servers take on their command lines.
#[derive(Debug, clap::Args)]
pub struct RoomArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Engine worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub max_message: u64,
    /// Refuse permessage-deflate (on by default: browsers offer it).
    #[arg(long)]
    pub no_compression: bool,
    /// Rooms larger than this announce a join only to the joining client, and no leaves.
    #[arg(long, default_value_t = 1000)]
    pub announce_limit: usize,
    /// How long a member may hold published messages for a fuller send, in µs (the
    /// engine's `ServerConfig::coalesce`; 0: off; default: the engine's).
    #[arg(long, value_name = "US")]
    pub coalesce_us: Option<u64>,
    /// The most bytes queued for one member before it is closed as a slow consumer
    /// (1008), in KiB (the engine's `max_queued_bytes`). The default, 256, holds
    /// thousands of chat lines; rooms of large messages need more: a member may fall
    /// this far behind, and each stalled member can cost this much memory.
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    pub max_queued_kib: usize,
    /// Send messages of at least this many bytes without a copy (io_uring's SEND_ZC; the
    /// engine's `ServerConfig::send_zero_copy`). Off by default: it costs a notification
    /// and pinned pages per send, so it can pay only for large messages; measure the
    /// crossover on the real network, since over loopback the kernel copies anyway (the
    /// `zero_copy_sends_total` metric tells which happened). Ignored on epoll.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub zero_copy_min: Option<u64>,
}

impl RoomArgs {
    /// The engine settings these ask for, over `config`: coalescing, the queue cap and
    /// zero-copy sends.
    pub fn engine(&self, config: ringcast::server::ServerConfig) -> ringcast::server::ServerConfig {
        let config = ringcast::server::ServerConfig {
            coalesce: self.coalesce(),
            max_queued_bytes: self.max_queued_kib.saturating_mul(1024),
            ..config
        };
        match self.zero_copy_min {
            Some(min) => config.send_zero_copy(usize::try_from(min).unwrap_or(usize::MAX)),
            None => config,
        }
    }

    /// The engine's coalescing bound these ask for.
    pub fn coalesce(&self) -> std::time::Duration {
        self.coalesce_us.map_or(
            ringcast::server::DEFAULT_COALESCE,
            std::time::Duration::from_micros,
        )
    }

    /// The upgrade settings these ask for: compression unless refused, the message
    /// limit, 10 s for the whole handshake, and the default origin check (the page is
    /// served from this origin; other sites' pages may not join).
    pub fn upgrader(&self) -> Upgrader {
        Upgrader {
            enable_compression: !self.no_compression,
            read_limit: Some(self.max_message),
            handshake_timeout: Some(std::time::Duration::from_secs(10)),
            ..Upgrader::default()
        }
    }
}

/// The longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// The room a `/ws` request asks for (its `room` query parameter; `lobby` when none),
/// or the refusal of a name over [`MAX_ROOM_LEN`].
pub fn requested_room(target: &str) -> Result<String, HandshakeError> {
    let room = crate::query_param(target, "room").unwrap_or_default();
    if room.len() > MAX_ROOM_LEN {
        return Err(HandshakeError::new(400, "room names are at most 64 bytes"));
    }
    Ok(if room.is_empty() {
        "lobby".to_owned()
    } else {
        room
    })
}

/// The topic of room `room`.
pub fn room_topic(room: &str) -> Vec<u8> {
    format!("room:{room}").into_bytes()
}

/// The room named by `topic`, if it is a room's.
pub fn topic_room(topic: &[u8]) -> Option<&str> {
    std::str::from_utf8(topic.strip_prefix(b"room:")?).ok()
}

fn notice(kind: &str, room: &str, count: usize) -> String {
    serde_json::json!({ "type": kind, "room": room, "count": count }).to_string()
}

/// The chat's engine handler, one per worker; the room of each connection is its data.
///
/// - Every text message goes to every member of its room, the sender included (as
///   gorilla/websocket's chat example does); binary messages are dropped.
/// - Joins and leaves are announced to the room as JSON lines
///   (`{"type":"join","room":"lobby","count":3}`); past `announce_limit` members only the
///   joining client is told, and leaves are not announced.
/// - Plain HTTP: the page at `/`, 426 at `/ws`, 404 elsewhere.
pub struct ChatRooms {
    server: Option<ServerHandle>,
    announce_limit: usize,
}

impl ChatRooms {
    /// A handler announcing joins to rooms of up to `announce_limit` members.
    pub fn new(announce_limit: usize) -> ChatRooms {
        ChatRooms {
            server: None,
            announce_limit,
        }
    }
}

impl ChatRooms {
    fn count(&mut self, socket: &Socket<'_, String>, topic: &[u8]) -> usize {
        self.server
            .get_or_insert_with(|| socket.server())
            .subscribers(topic)
    }
}

impl Handler for ChatRooms {
    type Data = String;

    fn on_upgrade(&mut self, request: &Request) -> Result<Vec<(String, String)>, HandshakeError> {
        if request.path() != "/ws" {
            return Err(HandshakeError::new(404, "the WebSocket is at /ws"));
        }
        requested_room(&request.target)?;
        Ok(Vec::new())
    }

    fn on_open(&mut self, socket: &mut Socket<'_, String>, request: &Request) {
        let Ok(room) = requested_room(&request.target) else {
            return socket.close(CloseCode::POLICY_VIOLATION, "bad room");
        };
        let topic = room_topic(&room);
        if socket.subscribe(&topic).is_err() {
            return socket.close(CloseCode::POLICY_VIOLATION, "bad room");
        }
        let count = self.count(socket, &topic);
        let joined = notice("join", &room, count);
        if count <= self.announce_limit {
            let _ = socket.publish_with_self(&topic, MessageType::Text, joined.as_bytes());
        } else {
            let _ = socket.send(MessageType::Text, joined.as_bytes());
        }
        *socket.data() = room;
    }

    fn on_message(&mut self, socket: &mut Socket<'_, String>, kind: MessageType, payload: &[u8]) {
        if kind != MessageType::Text {
            return; // the room is for text: binary messages are dropped
        }
        let topic = room_topic(socket.data());
        let _ = socket.publish_with_self(&topic, MessageType::Text, payload);
    }

    fn on_close(&mut self, socket: &mut Socket<'_, String>, _code: CloseCode, _reason: &str) {
        let room = std::mem::take(socket.data());
        if room.is_empty() {
            return;
        }
        let topic = room_topic(&room);
        // Still subscribed until the socket is gone, so one less than counted.
        let count = self.count(socket, &topic).saturating_sub(1);
        if count >= self.announce_limit {
            return; // its join was not announced either
        }
        let _ = socket.publish(
            &topic,
            MessageType::Text,
            notice("leave", &room, count).as_bytes(),
        );
    }

    fn on_http(&mut self, request: &Request) -> HttpResponse {
        match (request.method.as_str(), request.path()) {
            ("GET", "/") | ("GET", "/index.html") => {
                HttpResponse::new(200, "text/html; charset=utf-8", PAGE)
            }
            ("GET", "/ws") => HttpResponse::upgrade_required(),
            _ => HttpResponse::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rooms: super::RoomArgs,
    }

    fn zero_copy_min(args: &[&str]) -> Option<usize> {
        let cli = Cli::parse_from(std::iter::once("chat").chain(args.iter().copied()));
        cli.rooms.engine(Default::default()).driver.zero_copy_min
    }

    #[test]
    fn zero_copy_min_reaches_the_engine_and_is_off_by_default() {
        assert_eq!(zero_copy_min(&[]), None);
        assert_eq!(
            zero_copy_min(&["--zero-copy-min", "65536"]),
            Some(64 * 1024)
        );
        assert!(Cli::try_parse_from(["chat", "--zero-copy-min", "0"]).is_err());
    }
}
