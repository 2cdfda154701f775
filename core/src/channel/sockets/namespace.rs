//! One namespace's membership: which session holds which socket, and who is in which room.

use std::collections::{BTreeMap, BTreeSet, btree_map, btree_set};

use crate::channel::engine::SessionKey;

/// A session has at most one socket per namespace, so inside a namespace the session's key names
/// its socket.
#[derive(Debug, Default)]
pub(crate) struct Namespace {
    /// Socket id → the session that owns it.
    pub sockets: BTreeMap<String, SessionKey>,
    /// Room → the sessions whose socket is in it.
    pub rooms: BTreeMap<String, BTreeSet<SessionKey>>,
}

impl Namespace {
    /// The sessions an emit reaches: the whole namespace when `rooms` is empty, otherwise the union
    /// of those rooms, each session once, leaving out `except`. As in socket.io, a socket's id is a
    /// room of its own, so `rooms` may name sockets.
    pub fn recipients<'a>(
        &'a self,
        rooms: &[String],
        except: &'a [SessionKey],
    ) -> impl Iterator<Item = SessionKey> + 'a {
        let members = if rooms.is_empty() {
            Members::All(self.sockets.values())
        } else {
            let mut union = BTreeSet::new();
            for room in rooms {
                // A socket is always in the room of its own id, whoever else a server put there.
                if let Some(key) = self.sockets.get(room) {
                    union.insert(*key);
                }
                if let Some(members) = self.rooms.get(room) {
                    union.extend(members.iter().copied());
                }
            }
            Members::Rooms(union.into_iter())
        };
        members.filter(move |key| !except.contains(key))
    }

    pub fn join(&mut self, room: String, key: SessionKey) {
        self.rooms.entry(room).or_default().insert(key);
    }

    pub fn leave(&mut self, room: &str, key: SessionKey) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&key);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

enum Members<'a> {
    All(btree_map::Values<'a, String, SessionKey>),
    Rooms(btree_set::IntoIter<SessionKey>),
}

impl Iterator for Members<'_> {
    type Item = SessionKey;

    fn next(&mut self) -> Option<SessionKey> {
        match self {
            Members::All(sockets) => sockets.next().copied(),
            Members::Rooms(members) => members.next(),
        }
    }
}
