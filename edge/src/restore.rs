//! What a Durable Object woken from hibernation rebuilds its channel from: the attachment of each
//! WebSocket the runtime kept for it.
//!
//! Pure, so that it is tested natively: WebSocket attachments and open states in; the sessions to
//! restore, the sockets to close, and the next free connection id out.

use serde::{Deserialize, Serialize};
use switchboard_core::channel::{ConnId, SessionSnapshot};

/// What each hibernatable WebSocket carries: enough to rebuild the channel without any storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub conn: ConnId,
    pub channel: String,
    /// The session's snapshot; `None` for a probe that never completed its upgrade, or a socket
    /// already closed by the channel.
    #[serde(default)]
    pub session: Option<SessionSnapshot>,
}

/// One WebSocket as the runtime hands it back: its attachment (if it had a readable one) and
/// whether it is still open.
#[derive(Debug, Clone)]
pub struct KeptSocket {
    pub attachment: Option<Attachment>,
    pub open: bool,
}

/// What to do with the kept sockets, by their index in the list given to [`plan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestorePlan {
    /// Open sockets carrying a session: (index, connection, snapshot).
    pub restored: Vec<(usize, ConnId, SessionSnapshot)>,
    /// Open sockets without a session to restore: to be closed.
    pub orphans: Vec<usize>,
    /// The channel the sockets belong to, from the first restored one.
    pub channel: Option<String>,
    /// The first connection id no kept socket uses, closing ones included: a socket still closing
    /// must not share its id with a new one, or its close would end the new one's session.
    pub next_conn: ConnId,
}

/// Plans the rebuild from the sockets the runtime kept.
pub fn plan(sockets: Vec<KeptSocket>) -> RestorePlan {
    let mut plan = RestorePlan {
        next_conn: 1,
        ..RestorePlan::default()
    };
    for (index, socket) in sockets.into_iter().enumerate() {
        if let Some(attachment) = &socket.attachment {
            plan.next_conn = plan.next_conn.max(attachment.conn.saturating_add(1));
        }
        // Only open sockets carry live sessions; closing ones are left to finish.
        if !socket.open {
            continue;
        }
        match socket.attachment {
            Some(Attachment {
                conn,
                channel,
                session: Some(session),
            }) => {
                plan.channel.get_or_insert(channel);
                plan.restored.push((index, conn, session));
            }
            _ => plan.orphans.push(index),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(conn: ConnId, session: bool, open: bool) -> KeptSocket {
        KeptSocket {
            attachment: Some(Attachment {
                conn,
                channel: "chats/1".into(),
                session: session.then(|| SessionSnapshot {
                    sid: format!("sid{conn}"),
                    awaiting_connect: false,
                    connected_at: 0,
                    sockets: Vec::new(),
                    client: None,
                    calls: Vec::new(),
                }),
            }),
            open,
        }
    }

    #[test]
    fn a_socket_still_closing_keeps_its_id_from_new_sockets() {
        // conn 7 is closing (its client has not answered our close yet); conn 3 is live.
        let plan = plan(vec![kept(7, false, false), kept(3, true, true)]);
        assert_eq!(
            plan.next_conn, 8,
            "a new socket must not take the closing one's id"
        );
        assert_eq!(plan.restored.len(), 1);
        assert_eq!(plan.restored[0].1, 3);
        assert!(plan.orphans.is_empty());
    }

    #[test]
    fn open_sockets_without_a_session_are_orphans() {
        let plan = plan(vec![
            kept(1, true, true),
            kept(2, false, true),
            KeptSocket {
                attachment: None,
                open: true,
            },
        ]);
        assert_eq!(plan.orphans, vec![1, 2]);
        assert_eq!(plan.channel.as_deref(), Some("chats/1"));
        assert_eq!(plan.next_conn, 3);
    }

    #[test]
    fn nothing_kept_starts_at_one() {
        assert_eq!(plan(Vec::new()).next_conn, 1);
    }
}
