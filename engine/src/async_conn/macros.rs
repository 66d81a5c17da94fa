//! The settings and the `Sink` that a whole connection and its halves share, written
//! once: the read settings act on `self.read`, the write settings through
//! `self.with_write`, the `Sink` through [`WritePath`](super::write::WritePath).

/// The read methods, settings and handlers, for a type with a `read: ReadSide` field
/// and a `poll_read`; `$source` is its variant of the message reader's source.
macro_rules! read_methods {
    ($source:ident) => {
        /// Read the next data message whole: its type (text or binary) and payload.
        /// Pings, pongs and a close met on the way go to their handlers. A received
        /// close is returned as [`Error::Closed`] (once the close handler's answer is
        /// out); after any error, every later read returns it again. Cancellation-safe:
        /// dropped before it returns, it loses nothing, and the next read finishes the
        /// message.
        pub async fn read_message(&mut self) -> Result<(MessageType, Vec<u8>), Error> {
            std::future::poll_fn(|cx| self.poll_read(cx, |core, io| core.poll_message(io))).await
        }

        /// The next data message as an `AsyncRead` that ends with the message
        /// (gorilla/websocket's `NextReader`); its bytes are not gathered. An unread rest
        /// is skipped by the next read. Compressed messages arrive whole (they are
        /// inflated whole).
        pub async fn next_reader(
            &mut self,
        ) -> Result<(MessageType, $crate::async_conn::AsyncMessageReader<'_, S>), Error> {
            let message_type = std::future::poll_fn(|cx| {
                self.poll_read(cx, |core, io| core.poll_next_message(io))
            })
            .await?;
            let source = $crate::async_conn::reader::Source::$source(self);
            Ok((
                message_type,
                $crate::async_conn::AsyncMessageReader::new(source),
            ))
        }

        /// Read the next message and decode it as JSON (gorilla/websocket's `ReadJSON`).
        pub async fn read_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Error> {
            let (_, payload) = self.read_message().await?;
            Ok(serde_json::from_slice(&payload)?)
        }

        /// The largest message accepted from the peer, in bytes (default 64 MiB; 0:
        /// none). A larger one fails the read with [`Error::ReadLimit`] and closes 1009.
        pub fn set_read_limit(&mut self, limit: u64) {
            self.read.core.state.decoder_mut().set_read_limit(limit);
        }

        /// The read limit in force.
        pub fn read_limit(&self) -> u64 {
            self.read.core.state.decoder().read_limit()
        }

        /// Reads fail with an `Io` error of kind `TimedOut` after `deadline` (`None`:
        /// never); after that every later read fails with the same error.
        pub fn set_read_deadline(&mut self, deadline: Option<std::time::Instant>) {
            self.read.core.state.deadline = deadline;
        }

        /// Reads fail with `TimedOut` once the peer has sent nothing for `timeout`
        /// (`None`: none). It does the job of a read deadline that a pong handler pushes
        /// back (the gorilla/websocket idiom), except that any bytes from the peer count,
        /// not only pongs; it ends reads for good like a deadline.
        pub fn set_idle_timeout(&mut self, timeout: Option<std::time::Duration>) {
            self.read.core.state.set_idle_timeout(timeout);
        }

        /// Set the handler for received pings; `None` restores the default (answer with
        /// a pong, dropped when more than 64 KiB wait to be written). Handlers run
        /// inside the read: a frame they write is queued, not waited for.
        pub fn set_ping_handler(&mut self, handler: Option<$crate::conn::PingHandler>) {
            self.read.core.state.ping_handler =
                handler.unwrap_or_else($crate::conn::control::default_ping_handler);
        }

        /// The current ping handler (to wrap it).
        pub fn ping_handler(&self) -> $crate::conn::PingHandler {
            std::sync::Arc::clone(&self.read.core.state.ping_handler)
        }

        /// Set the handler for received pongs; `None` restores the default (nothing).
        pub fn set_pong_handler(&mut self, handler: Option<$crate::conn::PongHandler>) {
            self.read.core.state.pong_handler =
                handler.unwrap_or_else($crate::conn::control::default_pong_handler);
        }

        /// The current pong handler.
        pub fn pong_handler(&self) -> $crate::conn::PongHandler {
            std::sync::Arc::clone(&self.read.core.state.pong_handler)
        }

        /// Set the handler for a received close; `None` restores the default (answer
        /// with a close frame of the same code). Either way the read returns
        /// [`Error::Closed`].
        pub fn set_close_handler(&mut self, handler: Option<$crate::conn::CloseHandler>) {
            self.read.core.state.close_handler =
                handler.unwrap_or_else($crate::conn::control::default_close_handler);
        }

        /// The current close handler.
        pub fn close_handler(&self) -> $crate::conn::CloseHandler {
            std::sync::Arc::clone(&self.read.core.state.close_handler)
        }
    };
}

/// The write methods and settings, for a type that is a
/// [`WritePath`](super::write::WritePath) with a `with_write`; `$target` is its variant
/// of the message writer's target.
macro_rules! write_methods {
    ($target:ident) => {
        /// Write one message as a single frame and wait until the stream took it. Text
        /// and binary are compressed when compression was negotiated and is enabled;
        /// close, ping and pong are control frames (at most 125 bytes). Fails with
        /// [`Error::CloseSent`] once a close frame was sent. Dropped before it returns,
        /// it leaves its frame queued whole (it goes out with the next write or read)
        /// or not at all.
        pub async fn write_message(
            &mut self,
            message_type: MessageType,
            data: &[u8],
        ) -> Result<(), Error> {
            $crate::async_conn::write::send(self, |core| {
                if message_type.is_control() {
                    core.queue_control(message_type, data)
                } else {
                    core.queue_data(message_type, data)
                }
            })
            .await
        }

        /// A writer for the next text or binary message (gorilla/websocket's
        /// `NextWriter`), an `AsyncWrite`; close, ping and pong are refused with
        /// [`Error::InvalidArgument`] (use `write_control`). Bytes gather up to the write
        /// buffer size and leave as a fragment each time it fills (a compressed message is
        /// gathered whole and sent as one frame);
        /// [`finish`]($crate::async_conn::AsyncMessageWriter::finish) sends the end.
        /// Control frames of the read side and of control handles go out between its
        /// fragments.
        pub fn next_writer(
            &mut self,
            message_type: MessageType,
        ) -> Result<$crate::async_conn::AsyncMessageWriter<'_, S>, Error> {
            let target = $crate::async_conn::writer::Target::$target(self);
            $crate::async_conn::AsyncMessageWriter::new(target, message_type)
        }

        /// Encode `value` as JSON and send it as a text message (gorilla/websocket's
        /// `WriteJSON`).
        pub async fn write_json<T: serde::Serialize + ?Sized>(
            &mut self,
            value: &T,
        ) -> Result<(), Error> {
            let payload = serde_json::to_vec(value)?;
            self.write_message(MessageType::Text, &payload).await
        }

        /// Write a [`PreparedMessage`]($crate::PreparedMessage): its frame for this side
        /// and compression setting is built (and compressed) once and shared by every
        /// connection sending it.
        pub async fn write_prepared_message(
            &mut self,
            message: &$crate::PreparedMessage,
        ) -> Result<(), Error> {
            $crate::async_conn::write::send(self, |core| core.queue_prepared(message)).await
        }

        /// Queue a [`PreparedMessage`]($crate::PreparedMessage) without waiting for it
        /// to go out (only for room, as the `Sink`'s `feed` does): it leaves with the next
        /// [`flush`](Self::flush) or write, or once the write buffer fills. A fan-out
        /// writer feeds every message waiting for its connection, then flushes once: one
        /// write for all of them.
        pub async fn feed_prepared_message(
            &mut self,
            message: &$crate::PreparedMessage,
        ) -> Result<(), Error> {
            std::future::poll_fn(|cx| WritePath::poll_room(self, cx)).await?;
            self.with_core(&mut |core| core.queue_prepared(message))
        }

        /// Wait until every queued frame has gone out (the `Sink`'s `flush`).
        pub async fn flush(&mut self) -> Result<(), Error> {
            std::future::poll_fn(|cx| WritePath::poll_flush(self, cx)).await
        }

        /// Write a close, ping or pong frame (at most 125 bytes), after the frames
        /// already queued. To bound the wait, wrap it in `tokio::time::timeout`: a frame
        /// that was queued still goes out later, and the connection stays usable.
        pub async fn write_control(
            &mut self,
            message_type: MessageType,
            data: &[u8],
        ) -> Result<(), Error> {
            $crate::async_conn::write::send(self, |core| core.queue_control(message_type, data))
                .await
        }

        /// Send a close frame with `code` and `reason`; the reading side then reads on
        /// until the peer's close arrives as [`Error::Closed`]. A reason longer than the
        /// 123 bytes a close frame carries is refused with [`Error::InvalidArgument`].
        pub async fn close_with(
            &mut self,
            code: $crate::CloseCode,
            reason: &str,
        ) -> Result<(), Error> {
            let payload = $crate::conn::close_payload(code, reason)?;
            self.write_control(MessageType::Close, &payload).await
        }

        /// Writes fail after `deadline` (`None`: never); a write that times out breaks
        /// the write side for good.
        pub fn set_write_deadline(&mut self, deadline: Option<std::time::Instant>) {
            self.with_write(|core| core.state.deadline = deadline);
        }

        /// Each data write must be out within `timeout` of being queued (`None`: no
        /// bound but the write deadline), as gorilla/websocket code gets by calling
        /// `SetWriteDeadline(time.Now().Add(writeWait))` before every write. A write that
        /// times out breaks the write side for good.
        pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
            self.with_write(|core| core.state.write_timeout = timeout);
        }

        /// Compress later text and binary messages (default: on when negotiated). No
        /// effect when compression was not negotiated.
        pub fn enable_write_compression(&mut self, enable: bool) {
            self.with_write(|core| {
                core.state.compress = enable && core.state.compression_negotiated;
            });
        }

        /// The compression level for later messages, on the flate scale gorilla/websocket
        /// takes (Go's `compress/flate` levels, -2..=9; default 1). A level outside that
        /// range is refused with [`Error::InvalidArgument`].
        pub fn set_compression_level(&mut self, level: i32) -> Result<(), Error> {
            self.with_write(|core| core.state.set_compression_level(level))
        }
    };
}

/// `Sink<Message>` for a type that is a [`WritePath`](super::write::WritePath).
macro_rules! sink_via_write_path {
    ($type:ty) => {
        impl<S: AsyncRead + AsyncWrite + Unpin> futures_sink::Sink<Message> for $type {
            type Error = Error;

            fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                WritePath::poll_room(self.get_mut(), cx)
            }

            fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
                self.get_mut()
                    .with_core(&mut |core| $crate::async_conn::write::queue_message(core, &item))
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                WritePath::poll_flush(self.get_mut(), cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                $crate::async_conn::write::poll_sink_close(self.get_mut(), cx)
            }
        }
    };
}

/// `Stream<Item = Result<Message, Error>>` and the message reader's source, for a type
/// with a `poll_read` and a `read: ReadSide` field.
macro_rules! stream_via_poll_read {
    ($type:ty) => {
        impl<S: AsyncRead + AsyncWrite + Unpin> futures_core::Stream for $type {
            type Item = Result<Message, Error>;

            fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                let this = self.get_mut();
                if this.read.core.ended {
                    return Poll::Ready(None);
                }
                let polled = this.poll_read(cx, |core, io| core.poll_message(io));
                $crate::async_conn::stream_item(&mut this.read.core.ended, polled)
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> futures_core::FusedStream for $type {
            fn is_terminated(&self) -> bool {
                self.read.core.ended
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> $crate::async_conn::reader::ReadPath for $type {
            fn poll_part(
                &mut self,
                cx: &mut Context<'_>,
                dst: &mut [u8],
            ) -> Poll<Result<usize, Error>> {
                self.poll_read(cx, |core, io| core.poll_part(io, dst))
            }
        }
    };
}
