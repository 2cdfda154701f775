//! Presence: who is in a channel, as users rather than sockets.
//!
//! On a channel with `presence` configured, each socket makes its user a **member**: the token's
//! `sub` or the connect hook's `user.id`, with the token's `info` claim or the hook's `user.info`.
//! A socket without a user is a member of its own, under its socket id, shown as anonymous with
//! the `info` its client declared in its CONNECT `auth`, if any. A user with three tabs
//! open is one member, who leaves when the last of their sockets goes.
//!
//! The Socket.IO layer tells [`Presence`] when a socket joins or leaves; each call returns the
//! change it made to the member list, if any (for webhooks), and queues it for the clients. The
//! queued changes go out as one `switchboard:presence` event to every socket of the channel: at
//! once, or when the `coalesce` window that the first of them opened closes, so that a burst of
//! joins costs each socket one event instead of one per join.
//!
//! Two things keep a member in the list after its last socket went:
//!
//! - on a channel with connection-state recovery, a socket whose transport dropped is **parked**
//!   for the `leave_grace`: if it recovers in time, nobody sees it leave and join again;
//! - nothing else. A socket that stopped answering leaves at its ping timeout, as any other.
//!
//! Nothing here is stored. A rebuilt channel (a Durable Object woken from hibernation) gets its
//! members back from its sockets' snapshots, and the members in their grace from the parked
//! sockets that recovery stores: presence costs no storage write of its own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::channel::FastMap;
use crate::config::PresencePolicy;

/// The reserved event a client emits, with an ack, for the member list (and an optional
/// `{ after, limit }`).
pub const MEMBERS_EVENT: &str = "switchboard:members";
/// The reserved event the channel sends its sockets when members join or leave.
pub const PRESENCE_EVENT: &str = "switchboard:presence";
/// Most changes one `switchboard:presence` event carries: a longer burst goes out in several.
pub const MAX_CHANGES_PER_EVENT: usize = 500;

/// Who a member is. Users sort before anonymous sockets; each kind by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MemberKey {
    User(String),
    /// A socket without a user, by its socket id.
    Anonymous(String),
}

impl MemberKey {
    pub fn of(user: Option<&str>, socket_id: &str) -> Self {
        match user {
            Some(user) => MemberKey::User(user.to_string()),
            None => MemberKey::Anonymous(socket_id.to_string()),
        }
    }

    /// Where a page that ends with this member leaves off: `u:<id>` or `a:<socket id>`.
    fn cursor(&self) -> String {
        match self {
            MemberKey::User(id) => format!("u:{id}"),
            MemberKey::Anonymous(id) => format!("a:{id}"),
        }
    }

    fn from_cursor(cursor: &str) -> Option<Self> {
        match cursor.split_at_checked(2)? {
            ("u:", id) => Some(MemberKey::User(id.to_string())),
            ("a:", id) => Some(MemberKey::Anonymous(id.to_string())),
            _ => None,
        }
    }
}

/// A member as clients, the API and webhooks see it: `{ id, info }` for a user,
/// `{ id, anonymous: true, info }` for a socket without one (its info, if any, is what the
/// client declared in its CONNECT `auth.info`: nobody vouches for it).
pub(crate) fn member_json(key: &MemberKey, info: Option<&Value>) -> Value {
    match key {
        MemberKey::User(id) => match info {
            Some(info) => json!({ "id": id, "info": info }),
            None => json!({ "id": id }),
        },
        MemberKey::Anonymous(id) => match info {
            Some(info) => json!({ "id": id, "anonymous": true, "info": info }),
            None => json!({ "id": id, "anonymous": true }),
        },
    }
}

#[derive(Debug)]
struct Member {
    /// The info of the socket that made it a member.
    info: Option<Value>,
    /// Its sockets, those in their leave grace included.
    sockets: u32,
}

/// One change to the member list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub joined: bool,
    /// The member, as [`member_json`] shows it.
    pub member: Value,
}

impl Change {
    fn to_json(&self) -> Value {
        let kind = if self.joined { "join" } else { "leave" };
        json!({ "type": kind, "member": self.member })
    }
}

/// A parked socket still counted as its member's.
#[derive(Debug)]
struct InGrace {
    key: MemberKey,
    deadline: u64,
    /// Its private id, for recovery to note that its leave was announced.
    pid: String,
}

/// One page of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresencePage {
    /// `{ id, info }` or `{ id, anonymous: true }`, in order of id (users first).
    pub members: Vec<Value>,
    /// Members in all.
    pub count: usize,
    /// The cursor of the next page (`after`), if there is one.
    pub next: Option<String>,
}

/// Why a member list cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("this channel has no presence: its pattern does not configure it")]
    Off,
    #[error("{0:?} is not a cursor of the member list (use the previous page's next)")]
    InvalidCursor(String),
}

/// A channel's members, the sockets in their leave grace, and the changes not yet sent.
#[derive(Debug)]
pub(crate) struct Presence {
    policy: PresencePolicy,
    members: BTreeMap<MemberKey, Member>,
    /// Parked sockets in their leave grace, by socket id.
    in_grace: FastMap<String, InGrace>,
    /// `(deadline, socket id)` of the same, soonest first.
    grace_order: BTreeSet<(u64, String)>,
    /// Changes for the clients, oldest first, and when they go out.
    pending: Vec<Change>,
    flush_at: Option<u64>,
}

impl Presence {
    pub fn new(policy: PresencePolicy) -> Self {
        Self {
            policy,
            members: BTreeMap::new(),
            in_grace: FastMap::default(),
            grace_order: BTreeSet::new(),
            pending: Vec::new(),
            flush_at: None,
        }
    }

    pub fn count(&self) -> usize {
        self.members.len()
    }

    pub fn leave_grace_ms(&self) -> u64 {
        self.policy.leave_grace_ms
    }

    /// Whether socket `socket_id` is parked, in its leave grace.
    pub fn in_grace(&self, socket_id: &str) -> bool {
        self.in_grace.contains_key(socket_id)
    }

    /// Whether a socket of member `key`, with `info`, may join: the channel's member cap and the
    /// info's size, each refused with the reason a client is told.
    pub fn check_admission(&self, key: &MemberKey, info: Option<&Value>) -> Result<(), String> {
        let info_bytes = info.map_or(0, |info| info.to_string().len());
        if info_bytes > self.policy.max_info_bytes {
            return Err(format!(
                "user info is {info_bytes} bytes of JSON: presence takes at most {}",
                self.policy.max_info_bytes
            ));
        }
        if !self.members.contains_key(key) && self.members.len() >= self.policy.max_members {
            return Err(format!(
                "presence is full: at most {} members",
                self.policy.max_members
            ));
        }
        Ok(())
    }

    /// Socket `socket_id` of member `key` joined. A socket back from its leave grace changes
    /// nothing; otherwise a new member is a change.
    pub fn socket_joined(
        &mut self,
        key: MemberKey,
        info: Option<Value>,
        socket_id: &str,
        now: u64,
    ) -> Option<Change> {
        if let Some(grace) = self.in_grace.remove(socket_id) {
            self.grace_order
                .remove(&(grace.deadline, socket_id.to_string()));
            if grace.key == key {
                return None;
            }
            // Recovered under another user (cannot happen: recovery checks the user); count it
            // as a leave of the old one.
            let left = self.release(&grace.key, now);
            let joined = self.add(key, info, now);
            return joined.or(left);
        }
        self.add(key, info, now)
    }

    /// Socket `socket_id` of member `key` left. Parked (`parked_as` its pid: it may come back),
    /// its member stays until the leave grace runs out.
    pub fn socket_left(
        &mut self,
        key: MemberKey,
        socket_id: &str,
        parked_as: Option<String>,
        now: u64,
    ) -> Option<Change> {
        match parked_as {
            Some(pid) if self.policy.leave_grace_ms > 0 && self.members.contains_key(&key) => {
                let deadline = now.saturating_add(self.policy.leave_grace_ms);
                self.hold(key, socket_id, pid, deadline);
                None
            }
            _ => self.release(&key, now),
        }
    }

    /// A socket rebuilt from its snapshot: counted, with no change to announce.
    pub fn restore_socket(&mut self, key: MemberKey, info: Option<Value>) {
        self.count_socket(key, info);
    }

    /// A parked socket whose leave was not yet announced, from what recovery kept: counted until
    /// `deadline` (which may have passed: the next timeout announces it then).
    pub fn restore_in_grace(
        &mut self,
        key: MemberKey,
        info: Option<Value>,
        socket_id: &str,
        pid: String,
        deadline: u64,
    ) {
        if self.in_grace.contains_key(socket_id) {
            return;
        }
        self.count_socket(key.clone(), info);
        self.hold(key, socket_id, pid, deadline);
    }

    /// Takes over the sockets in their grace of `from`, the layer this one was rebuilt from (by a
    /// host that keeps recovery in memory).
    pub fn adopt_in_grace(&mut self, from: &mut Presence) {
        for (socket_id, grace) in std::mem::take(&mut from.in_grace) {
            let info = from
                .members
                .get(&grace.key)
                .and_then(|member| member.info.clone());
            self.restore_in_grace(grace.key, info, &socket_id, grace.pid, grace.deadline);
        }
    }

    /// Ends the grace of every parked socket whose grace ran out: returns the changes, and the
    /// pids whose leave is now announced.
    pub fn handle_timeout(&mut self, now: u64) -> (Vec<Change>, Vec<String>) {
        let mut changes = Vec::new();
        let mut announced = Vec::new();
        while let Some((deadline, socket_id)) = self.grace_order.first().cloned() {
            if deadline > now {
                break;
            }
            self.grace_order.pop_first();
            let Some(grace) = self.in_grace.remove(&socket_id) else {
                continue;
            };
            announced.push(grace.pid);
            changes.extend(self.release(&grace.key, now));
        }
        (changes, announced)
    }

    /// When presence needs the next timeout: a grace running out, or coalesced changes due.
    pub fn next_deadline(&self) -> Option<u64> {
        let grace = self.grace_order.first().map(|(deadline, _)| *deadline);
        grace.into_iter().chain(self.flush_at).min()
    }

    /// The changes due for the clients now, as the arguments of one `switchboard:presence`
    /// event each (at most [`MAX_CHANGES_PER_EVENT`] changes apiece).
    pub fn take_due_events(&mut self, now: u64) -> Vec<Value> {
        if self.pending.is_empty() || self.flush_at.is_some_and(|at| at > now) {
            return Vec::new();
        }
        self.flush_at = None;
        let count = self.members.len();
        std::mem::take(&mut self.pending)
            .chunks(MAX_CHANGES_PER_EVENT)
            .map(|changes| {
                let changes: Vec<Value> = changes.iter().map(Change::to_json).collect();
                json!([PRESENCE_EVENT, { "changes": changes, "count": count }])
            })
            .collect()
    }

    /// The members after cursor `after` (from the first without it), at most `limit` (and at
    /// most the channel's page size).
    pub fn page(&self, after: Option<&str>, limit: usize) -> Result<PresencePage, PresenceError> {
        let limit = limit.min(self.policy.page_size).max(1);
        let start = match after {
            None => None,
            Some(cursor) => Some(
                MemberKey::from_cursor(cursor)
                    .ok_or_else(|| PresenceError::InvalidCursor(cursor.to_string()))?,
            ),
        };
        let mut range = match &start {
            None => self.members.range::<MemberKey, _>(..),
            Some(start) => self.members.range::<MemberKey, _>((
                std::ops::Bound::Excluded(start),
                std::ops::Bound::Unbounded,
            )),
        };
        let mut members = Vec::new();
        let mut last = None;
        for (key, member) in range.by_ref().take(limit) {
            members.push(member_json(key, member.info.as_ref()));
            last = Some(key);
        }
        let next = match (last, range.next()) {
            (Some(last), Some(_)) => Some(last.cursor()),
            _ => None,
        };
        Ok(PresencePage {
            members,
            count: self.members.len(),
            next,
        })
    }

    // ---------------------------------------------------------------------------------------------

    fn count_socket(&mut self, key: MemberKey, info: Option<Value>) -> bool {
        match self.members.get_mut(&key) {
            Some(member) => {
                member.sockets = member.sockets.saturating_add(1);
                false
            }
            None => {
                self.members.insert(key, Member { info, sockets: 1 });
                true
            }
        }
    }

    fn add(&mut self, key: MemberKey, info: Option<Value>, now: u64) -> Option<Change> {
        let change = Change {
            joined: true,
            member: member_json(&key, info.as_ref()),
        };
        if !self.count_socket(key, info) {
            return None;
        }
        self.queue(change.clone(), now);
        Some(change)
    }

    fn release(&mut self, key: &MemberKey, now: u64) -> Option<Change> {
        let member = self.members.get_mut(key)?;
        member.sockets = member.sockets.saturating_sub(1);
        if member.sockets > 0 {
            return None;
        }
        let member = self.members.remove(key)?;
        let change = Change {
            joined: false,
            member: member_json(key, member.info.as_ref()),
        };
        self.queue(change.clone(), now);
        Some(change)
    }

    fn hold(&mut self, key: MemberKey, socket_id: &str, pid: String, deadline: u64) {
        // One grace per socket id: an earlier one (a socket parked twice) ends now, uncounted.
        if let Some(earlier) = self.in_grace.remove(socket_id) {
            self.grace_order
                .remove(&(earlier.deadline, socket_id.to_string()));
            if let Some(member) = self.members.get_mut(&earlier.key) {
                member.sockets = member.sockets.saturating_sub(1);
                if member.sockets == 0 {
                    self.members.remove(&earlier.key);
                }
            }
        }
        self.grace_order.insert((deadline, socket_id.to_string()));
        self.in_grace
            .insert(socket_id.to_string(), InGrace { key, deadline, pid });
    }

    fn queue(&mut self, change: Change, now: u64) {
        self.pending.push(change);
        if self.flush_at.is_none() {
            self.flush_at = Some(now.saturating_add(self.policy.coalesce_ms));
        }
        // A burst longer than an event holds goes out without waiting for the window.
        if self.pending.len() >= MAX_CHANGES_PER_EVENT {
            self.flush_at = Some(now);
        }
    }
}
