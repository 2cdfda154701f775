//! The byte stream under one WebSocket connection.
//!
//! tungstenite reads frames from it and writes its own frames (pongs, close) through it. Broadcasts
//! do not go through tungstenite: a server frame is never masked, so the channel encodes each
//! broadcast's WebSocket frames once and every recipient's connection appends those same bytes here
//! ([`WebSocketIo::push_frames`]). That saves encoding the frame per recipient and touching the
//! shared payload's reference count per recipient, which two cores otherwise fight over.
//!
//! Everything written, by tungstenite or pushed, goes into one buffer in call order, so frames never
//! interleave; a flush writes the buffer out. tungstenite always writes whole frames into it, so a
//! frame is never split between a tungstenite write and a pushed one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::buffers::QuietStreak;

/// Buffered bytes above which a write from tungstenite first waits for the socket: a client that
/// sends pings but never reads cannot make the server buffer pongs without bound.
const TUNGSTENITE_BACKLOG: usize = 64 * 1024;
/// Buffer capacity a quiet connection keeps between flushes.
const KEEP_CAPACITY: usize = 512;

pub struct WebSocketIo<T> {
    inner: T,
    /// Bytes accepted and not yet written; `written` of them already went out.
    pending: Vec<u8>,
    written: usize,
    quiet: QuietStreak,
}

impl<T> WebSocketIo<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
            quiet: QuietStreak::default(),
        }
    }

    /// Appends complete, encoded WebSocket frames; they go out with the next flush.
    pub fn push_frames(&mut self, frames: &[u8]) {
        self.pending.extend_from_slice(frames);
    }
}

impl<T: AsyncWrite + Unpin> WebSocketIo<T> {
    /// Writes out everything pending.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.written = 0;
        let used = self.pending.len();
        self.pending.clear();
        if let Some(capacity) = self
            .quiet
            .after_use(self.pending.capacity(), used, KEEP_CAPACITY)
        {
            self.pending.shrink_to(capacity);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WebSocketIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WebSocketIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() - self.written > TUNGSTENITE_BACKLOG {
            ready!(self.poll_write_pending(cx))?;
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn pushed_and_written_bytes_leave_in_call_order_on_flush() {
        let (client, mut server) = tokio::io::duplex(8);
        let mut io = WebSocketIo::new(client);
        io.write_all(b"one,").await.unwrap();
        io.push_frames(b"two,");
        io.write_all(b"three").await.unwrap();
        // Nothing leaves before the flush.
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            server.read(&mut probe),
        )
        .await;
        assert!(early.is_err());
        // The duplex holds 8 bytes at a time: the flush has to wait for the reader.
        let reader = tokio::spawn(async move {
            let mut received = vec![0u8; 13];
            server.read_exact(&mut received).await.unwrap();
            received
        });
        io.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), b"one,two,three");
    }

    #[tokio::test]
    async fn a_large_backlog_makes_writes_wait_for_the_socket() {
        let (client, _server) = tokio::io::duplex(16);
        let mut io = WebSocketIo::new(client);
        io.push_frames(&vec![0u8; TUNGSTENITE_BACKLOG + 1024]);
        // Nobody reads: the write cannot complete.
        let write = tokio::time::timeout(std::time::Duration::from_millis(20), io.write(b"x"));
        assert!(write.await.is_err());
    }
}
