//! Socket.IO v5: namespaces, events and acknowledgements on top of Engine.IO messages.
//!
//! A Socket.IO packet travels as the text of an Engine.IO message (`4<packet>`); binary arguments are
//! replaced by placeholders in the JSON and follow as separate Engine.IO binary messages. This module
//! only encodes, decodes and reassembles packets; what they mean is the engine's business.

pub mod packet;

pub use packet::*;
