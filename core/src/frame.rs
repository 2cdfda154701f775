//! The unit a host writes to the network: one complete WebSocket message.
//!
//! A frame is built once and then shared. Cloning a [`WireFrame`] clones a reference-counted [`Bytes`]
//! handle, so a broadcast to ten thousand sockets holds one copy of the encoded packet.

use bytes::Bytes;

/// One complete WebSocket message, already encoded for the wire (Engine.IO prefix included).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WireFrame {
    kind: FrameKind,
    bytes: Bytes,
}

/// Whether a frame travels as a WebSocket text or binary message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Text,
    Binary,
}

impl WireFrame {
    /// A text frame. Taking a `String` keeps the UTF-8 invariant without re-validating.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: FrameKind::Text,
            bytes: Bytes::from(text.into()),
        }
    }

    /// A text frame from a static string, without allocating.
    pub fn static_text(text: &'static str) -> Self {
        Self {
            kind: FrameKind::Text,
            bytes: Bytes::from_static(text.as_bytes()),
        }
    }

    /// A binary frame (an Engine.IO binary message: the raw bytes, no prefix).
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: FrameKind::Binary,
            bytes: bytes.into(),
        }
    }

    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    pub fn is_text(&self) -> bool {
        self.kind == FrameKind::Text
    }

    /// The encoded bytes; for a text frame these are valid UTF-8.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The text of a text frame, `None` for a binary frame.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            // Text frames are only built from `String` or `&'static str`, so this never fails; the
            // fallible call keeps the crate free of `unsafe`.
            FrameKind::Text => std::str::from_utf8(&self.bytes).ok(),
            FrameKind::Binary => None,
        }
    }

    /// Number of bytes on the wire (payload only, without WebSocket framing).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl std::fmt::Debug for WireFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_text() {
            Some(text) => write!(f, "Text({text:?})"),
            None => write!(f, "Binary({:?})", self.bytes),
        }
    }
}
