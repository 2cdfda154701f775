//! Connection-state recovery, as socket.io 4.6+ defines it and socket.io-client speaks it.
//!
//! On a channel with `recovery` configured:
//!
//! - every event broadcast to the namespace, to rooms or to sockets (not one that asks for an
//!   ack) gets the next **offset** as its last argument, and is kept in the channel's history,
//!   bounded in events, bytes and age;
//! - a socket's CONNECT reply carries a private id (`pid`) next to its `sid`;
//! - a socket that goes away for a reason that allows recovery (transport close or error, ping
//!   timeout, server shutdown) is **parked**: its id, rooms and user are kept for the window;
//! - a client that comes back with `{ pid, offset }` in its CONNECT auth within the window gets
//!   the same socket id and rooms, then every kept event after its offset that its rooms would
//!   have received, in order. Anything else (unknown pid, expired, an offset older than the
//!   history) connects as a new socket.
//!
//! Everything lives in memory. A host that can keep it across restarts asks for
//! [`StoreOp`]s (see [`crate::channel::Channel::with_durable_store`]): one batch per input, which
//! it writes as it comes, and which it hands back at start as a [`StoredState`].

use std::collections::{BTreeSet, VecDeque};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::{FastMap, Frames};
use crate::config::RecoveryPolicy;
use crate::frame::WireFrame;
use crate::socketio;

/// Most disconnected sockets a channel keeps for recovery; the oldest go first.
pub const MAX_PARKED_SOCKETS: usize = 10_000;

/// The reasons (socket.io's names) for which a socket's state is kept: the client did not mean
/// to leave. An explicit disconnect, by either side, ends the socket for good.
pub(crate) fn keeps_state(reason: &str) -> bool {
    matches!(
        reason,
        "transport close" | "transport error" | "ping timeout" | "server shutting down"
    )
}

/// A write for a host that keeps recovery state across restarts. Rows are keyed by `seq` (events)
/// and `pid` (sockets); the records are opaque to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// The prefix of every offset of this channel's history, set once.
    SetEpoch(String),
    /// Keep this event.
    PutEvent {
        seq: u64,
        record: Bytes,
    },
    /// Drop every event up to and including `seq`.
    DeleteEventsThrough {
        seq: u64,
    },
    /// Keep (or replace) this socket's state, connected or parked.
    PutSocket {
        pid: String,
        record: String,
    },
    DeleteSocket {
        pid: String,
    },
}

/// What a host kept of a channel's recovery state, handed back at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    pub epoch: Option<String>,
    /// `(seq, record)`, in any order.
    pub events: Vec<(u64, Bytes)>,
    /// `(pid, record)`.
    pub sockets: Vec<(String, String)>,
}

/// What a socket on a recovery channel carries besides its ordinary state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketRecovery {
    pub pid: String,
    /// The sequence number of the last event kept when it connected (or recovered): what it
    /// missed, if its client never saw an offset, is everything after it.
    pub since: u64,
}

/// Who a CONNECT that may recover a parked socket turned out to be, once its token (and connect
/// hook) were checked.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    /// The socket id it is admitted under.
    pub sid: &'a str,
    /// Its user: a parked socket is only recovered for the same one.
    pub user: Option<&'a str>,
    /// What a token checked again grants now: rooms granted before and not now are dropped.
    /// `None` when nothing was checked again, or clients may join any room themselves.
    pub granted_rooms: Option<&'a [String]>,
}

/// A socket's recoverable state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SocketRecord {
    pub namespace: String,
    pub sid: String,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    pub since: u64,
    /// `None` while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<u64>,
    /// On a channel with presence: parked, and its leave already announced (so that a rebuilt
    /// channel does not announce it twice).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence_left: bool,
}

/// One kept event.
#[derive(Debug, Clone)]
struct Recorded {
    seq: u64,
    namespace: String,
    /// Empty: the whole namespace.
    rooms: Vec<String>,
    /// Socket ids left out.
    except: Vec<String>,
    frames: Frames,
    bytes: usize,
    emitted_at: u64,
}

/// A kept event as stored.
#[derive(Serialize, Deserialize)]
struct EventRecord {
    ns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    except: Vec<String>,
    at: u64,
    /// The Engine.IO message frame, offset included.
    packet: String,
    /// Binary attachments, base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bin: Vec<String>,
}

/// A recorded event, as the history API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub offset: String,
    pub namespace: String,
    /// The event array (name first), without the offset; binary inline as `{"_binary": base64}`.
    pub event: Value,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub emitted_at: u64,
}

/// How much a channel's recovery keeps (for stats and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RecoveryStats {
    pub events: usize,
    pub bytes: usize,
    pub parked_sockets: usize,
}

/// Why a history request cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("this channel keeps no history: its pattern has no recovery configured")]
    Off,
    #[error("offset {0:?} is not one of this channel's, or is older than its history")]
    UnknownOffset(String),
    #[error("offset {0:?} is not an offset (they read <epoch>.<number>)")]
    InvalidOffset(String),
}

/// Why a reconnecting client could not be recovered; it connects as a new socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotRecovered {
    UnknownSession,
    Expired,
    OffsetTooOld,
}

/// The channel's history and its parked sockets.
#[derive(Debug)]
pub(crate) struct Recovery {
    policy: RecoveryPolicy,
    epoch: String,
    next_seq: u64,
    history: VecDeque<Recorded>,
    history_bytes: usize,
    /// Disconnected sockets by pid.
    parked: FastMap<String, SocketRecord>,
    /// The socket ids of `parked`: a client may not take one as a room name (it would receive
    /// what is sent to that socket once it is back). Kept with `parked` by `keep_parked` and
    /// `drop_parked`.
    parked_sids: BTreeSet<String>,
    /// Two parked records once shared a sid (new sockets never take a parked one, but stored
    /// rows are what they are): `drop_parked` then keeps a sid another record still holds.
    shared_sids: bool,
    /// `(disconnected_at, pid)`, oldest first; entries of pids recovered since are skipped.
    parked_order: VecDeque<(u64, String)>,
    /// Set by a host that stores what it is given: the writes of the current input.
    durable: bool,
    /// Something is still worth keeping the channel for: a parked socket, or an event younger
    /// than the window (as of the last prune).
    holds_state: bool,
    ops: Vec<StoreOp>,
}

impl Recovery {
    pub fn new(policy: RecoveryPolicy, epoch: String) -> Self {
        Self {
            policy,
            epoch,
            next_seq: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            parked: FastMap::default(),
            parked_sids: BTreeSet::new(),
            shared_sids: false,
            parked_order: VecDeque::new(),
            durable: false,
            holds_state: false,
            ops: Vec::new(),
        }
    }

    /// From now on, every change is also a [`StoreOp`]; the epoch is written first.
    pub fn make_durable(&mut self) {
        if !self.durable {
            self.durable = true;
            self.ops.push(StoreOp::SetEpoch(self.epoch.clone()));
        }
    }

    /// Takes back what a host stored. `is_live(namespace, sid)` tells the sockets this channel
    /// holds now (rebuilt from snapshots); any other socket stored as connected went away
    /// without a word (the host restarted) and is parked from `now`.
    pub fn load(
        &mut self,
        state: StoredState,
        is_live: impl Fn(&str, &str) -> bool,
        now: u64,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(epoch) = state.epoch {
            self.epoch = epoch;
            // Already stored: no need to write it again.
            self.ops.retain(|op| !matches!(op, StoreOp::SetEpoch(_)));
        }
        let mut events = state.events;
        crate::sort::sort_by_key(&mut events, |(seq, _)| *seq);
        self.history.clear();
        self.history_bytes = 0;
        // Offsets are never handed out twice, even past a row that cannot be read.
        if let Some((newest, _)) = events.last() {
            self.next_seq = self.next_seq.max(newest.saturating_add(1));
        }
        for (seq, record) in events {
            match decode_event(seq, &record) {
                Some(recorded) => {
                    self.history_bytes += recorded.bytes;
                    self.history.push_back(recorded);
                }
                None => problems.push(format!("stored event {seq} is unreadable; skipped")),
            }
        }
        let mut parked: Vec<(String, SocketRecord)> = Vec::new();
        for (pid, record) in state.sockets {
            match serde_json::from_slice::<SocketRecord>(record.as_bytes()) {
                Ok(mut record) => {
                    if record.disconnected_at.is_none() {
                        if is_live(&record.namespace, &record.sid) {
                            continue;
                        }
                        // Stored as parked from now, so that the next start does not park it
                        // again from its own now, and so keep it forever.
                        record.disconnected_at = Some(now);
                        self.socket_changed(&pid, &record);
                    }
                    parked.push((pid, record));
                }
                Err(_) => problems.push(format!("stored socket {pid:?} is unreadable; skipped")),
            }
        }
        crate::sort::sort_by_key(&mut parked, |(_, record)| record.disconnected_at);
        for (pid, record) in parked {
            let at = record.disconnected_at.unwrap_or(now);
            self.parked_order.push_back((at, pid.clone()));
            self.keep_parked(pid, record);
        }
        self.prune(now);
        problems
    }

    /// The writes since the last call, for the host.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    /// The sequence number of the newest kept event (0 before the first).
    pub fn head(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn offset_of(&self, seq: u64) -> String {
        format!("{}.{seq}", self.epoch)
    }

    /// Appends the next offset to an event's arguments and returns its sequence number; the
    /// event is then kept with [`Recovery::keep`] once encoded.
    pub fn stamp(&mut self, args: &mut Value) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Value::Array(items) = args {
            items.push(Value::String(self.offset_of(seq)));
        }
        seq
    }

    /// Keeps the stamped event `seq`, encoded as `frames`, sent to `rooms` (empty: everyone)
    /// except the sockets `except`.
    pub fn keep(
        &mut self,
        seq: u64,
        namespace: &str,
        rooms: Vec<String>,
        except: Vec<String>,
        frames: &Frames,
        now: u64,
    ) {
        let bytes = frames.iter().map(|frame| frame.bytes().len()).sum();
        let recorded = Recorded {
            seq,
            namespace: namespace.to_string(),
            rooms,
            except,
            frames: frames.clone(),
            bytes,
            emitted_at: now,
        };
        if self.durable {
            self.ops.push(StoreOp::PutEvent {
                seq,
                record: encode_event(&recorded),
            });
        }
        self.history_bytes += bytes;
        self.history.push_back(recorded);
        self.prune(now);
    }

    /// Drops what the bounds no longer allow: events beyond the count or byte bound or older
    /// than the window (always keeping the newest, whose offset names where the history is), and
    /// parked sockets past the window or beyond [`MAX_PARKED_SOCKETS`].
    pub fn prune(&mut self, now: u64) {
        let oldest_allowed = now.saturating_sub(self.policy.window_ms);
        let mut dropped_through = None;
        while self.history.len() > 1
            && (self.history.len() > self.policy.max_events
                || self.history_bytes > self.policy.max_bytes
                || self
                    .history
                    .front()
                    .is_some_and(|event| event.emitted_at < oldest_allowed))
        {
            let Some(event) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= event.bytes;
            dropped_through = Some(event.seq);
        }
        if let Some(seq) = dropped_through
            && self.durable
        {
            self.ops.push(StoreOp::DeleteEventsThrough { seq });
        }
        while let Some((at, pid)) = self.parked_order.front() {
            // Recovered (or parked again) since: this entry no longer names it.
            let stale = self
                .parked
                .get(pid)
                .is_none_or(|record| record.disconnected_at != Some(*at));
            let expired = *at < oldest_allowed || self.parked.len() > MAX_PARKED_SOCKETS;
            if !stale && !expired {
                break;
            }
            let Some((_, pid)) = self.parked_order.pop_front() else {
                break;
            };
            if !stale {
                self.drop_parked(&pid);
                if self.durable {
                    self.ops.push(StoreOp::DeleteSocket { pid });
                }
            }
        }
        self.holds_state = !self.parked.is_empty()
            || self
                .history
                .back()
                .is_some_and(|event| event.emitted_at.saturating_add(self.policy.window_ms) > now);
    }

    /// When something kept runs out of its window: the next [`Recovery::prune`] is due then. Each
    /// of these is after the last prune's `now`, so a host never finds a timer already due.
    pub fn next_deadline(&self) -> Option<u64> {
        let window = self.policy.window_ms;
        // The oldest parked socket goes.
        let parked = self
            .parked_order
            .front()
            .map(|(at, _)| at.saturating_add(window).saturating_add(1));
        // The oldest event goes (never the newest: its offset says where the history stands).
        let oldest_event = self
            .history
            .front()
            .filter(|_| self.history.len() > 1)
            .map(|event| event.emitted_at.saturating_add(window).saturating_add(1));
        // Nothing is parked, and the newest event leaves the window: nothing is held any more.
        let released = self
            .history
            .back()
            .filter(|_| self.holds_state && self.parked.is_empty())
            .map(|event| event.emitted_at.saturating_add(window));
        [parked, oldest_event, released].into_iter().flatten().min()
    }

    /// Whether the channel still keeps something a client could come back for. A host that
    /// keeps nothing across restarts must keep the channel until it does not.
    pub fn holds_state(&self) -> bool {
        self.holds_state
    }

    /// A connected socket's state changed (it connected, or its rooms changed): a durable host
    /// keeps it, so that a restart that loses the connection does not lose the socket.
    pub fn socket_changed(&mut self, pid: &str, record: &SocketRecord) {
        if !self.durable {
            return;
        }
        let record = serde_json::to_string(record).unwrap_or_default();
        // One write per socket per input is enough.
        if let Some(StoreOp::PutSocket {
            record: earlier, ..
        }) = self
            .ops
            .iter_mut()
            .rev()
            .find(|op| matches!(op, StoreOp::PutSocket { pid: earlier, .. } if earlier == pid))
        {
            *earlier = record;
            return;
        }
        self.ops.push(StoreOp::PutSocket {
            pid: pid.to_string(),
            record,
        });
    }

    /// A socket went away for a reason that keeps its state: it may come back within the window.
    pub fn park(&mut self, pid: String, mut record: SocketRecord, now: u64) {
        record.disconnected_at = Some(now);
        self.socket_changed(&pid, &record);
        self.parked_order.push_back((now, pid.clone()));
        self.keep_parked(pid, record);
        // Entries of sockets recovered since are skipped by `prune` only once they reach the
        // front; drop them before they pile up behind a live one.
        if self.parked_order.len() > 2 * self.parked.len() + 16 {
            let parked = &self.parked;
            self.parked_order.retain(|(at, pid)| {
                parked
                    .get(pid)
                    .is_some_and(|record| record.disconnected_at == Some(*at))
            });
        }
        self.prune(now);
    }

    /// Whether `sid` is the id of a parked socket (of any namespace).
    pub fn parks_sid(&self, sid: &str) -> bool {
        self.parked_sids.contains(sid)
    }

    fn keep_parked(&mut self, pid: String, record: SocketRecord) {
        let sid = record.sid.clone();
        if let Some(earlier) = self.parked.insert(pid, record) {
            self.unlist_sid(&earlier.sid);
        }
        if !self.parked_sids.insert(sid) {
            self.shared_sids = true;
        }
    }

    fn drop_parked(&mut self, pid: &str) -> Option<SocketRecord> {
        let record = self.parked.remove(pid)?;
        self.unlist_sid(&record.sid);
        Some(record)
    }

    fn unlist_sid(&mut self, sid: &str) {
        if !self.shared_sids || !self.parked.values().any(|record| record.sid == sid) {
            self.parked_sids.remove(sid);
        }
    }

    /// The parked sockets, by pid.
    pub fn parked(&self) -> impl Iterator<Item = (&String, &SocketRecord)> {
        self.parked.iter()
    }

    /// Presence announced that parked socket `pid` left (its leave grace ran out).
    pub fn mark_presence_left(&mut self, pid: &str) {
        let Some(record) = self.parked.get_mut(pid) else {
            return;
        };
        record.presence_left = true;
        let record = record.clone();
        self.socket_changed(pid, &record);
    }

    /// A socket went away for good.
    pub fn forget(&mut self, pid: &str) {
        self.drop_parked(pid);
        if self.durable {
            self.ops.retain(
                |op| !matches!(op, StoreOp::PutSocket { pid: earlier, .. } if earlier == pid),
            );
            self.ops.push(StoreOp::DeleteSocket {
                pid: pid.to_string(),
            });
        }
    }

    /// The parked socket a CONNECT's `auth` names for `namespace`, if it may be recovered now: the
    /// pid is known, its window has not passed, and nothing it may have missed has left the
    /// history. Left parked: [`Recovery::take`] takes it once the socket is admitted.
    pub fn find(
        &self,
        auth: Option<&Value>,
        namespace: &str,
        now: u64,
    ) -> Result<Option<&SocketRecord>, NotRecovered> {
        let Some((pid, offset)) = recovery_auth(auth) else {
            return Ok(None);
        };
        let record = self
            .parked
            .get(pid)
            .filter(|record| record.namespace == namespace)
            .ok_or(NotRecovered::UnknownSession)?;
        let disconnected_at = record.disconnected_at.unwrap_or(now);
        if disconnected_at.saturating_add(self.policy.window_ms) < now {
            return Err(NotRecovered::Expired);
        }
        self.missed_since(record, offset)?;
        Ok(Some(record))
    }

    /// Takes the parked socket `auth` names (see [`Recovery::find`]), if it is still `sid`, with
    /// the frames of every kept event it missed, in order.
    pub fn take(
        &mut self,
        auth: Option<&Value>,
        namespace: &str,
        claim: &Claim<'_>,
        now: u64,
    ) -> Option<(String, SocketRecord, Vec<Frames>)> {
        let record = self.find(auth, namespace, now).ok().flatten()?;
        // The socket is recovered for the same user, under its old id; anyone else is new.
        if record.sid != claim.sid || record.user.as_deref() != claim.user {
            return None;
        }
        let (pid, offset) = recovery_auth(auth)?;
        let since = self.missed_since(record, offset).ok()?;
        let pid = pid.to_string();
        let mut record = self.drop_parked(&pid)?;
        // Rooms its new token no longer grants are not given back, nor what was sent to them.
        if let Some(granted) = claim.granted_rooms {
            let revoked: Vec<String> = record
                .granted_rooms
                .iter()
                .filter(|room| !granted.contains(room))
                .cloned()
                .collect();
            record.rooms.retain(|room| !revoked.contains(room));
        }
        let mut member_of: Vec<&str> = record.rooms.iter().map(String::as_str).collect();
        member_of.push(&record.sid);
        let missed = self
            .history
            .iter()
            .filter(|event| event.seq > since && event.namespace == namespace)
            .filter(|event| {
                (event.rooms.is_empty()
                    || event
                        .rooms
                        .iter()
                        .any(|room| member_of.contains(&room.as_str())))
                    && !event
                        .except
                        .iter()
                        .any(|id| member_of.contains(&id.as_str()))
            })
            .map(|event| event.frames.clone())
            .collect();
        Some((pid, record, missed))
    }

    /// The sequence number after which a parked socket missed events: its client's offset, or
    /// where the history stood when it connected. An error if the history no longer reaches back
    /// there.
    fn missed_since(
        &self,
        record: &SocketRecord,
        offset: Option<&str>,
    ) -> Result<u64, NotRecovered> {
        let since = match offset {
            Some(offset) => self
                .parse_offset(offset)
                .ok_or(NotRecovered::OffsetTooOld)?,
            None => record.since,
        };
        if !self.reaches_back_to(since) {
            return Err(NotRecovered::OffsetTooOld);
        }
        Ok(since)
    }

    /// Whether every event after `seq` is still kept (and `seq` is one this channel handed out).
    fn reaches_back_to(&self, seq: u64) -> bool {
        let oldest = self
            .history
            .front()
            .map_or(self.next_seq, |event| event.seq);
        seq >= oldest.saturating_sub(1) && seq < self.next_seq
    }

    fn parse_offset(&self, offset: &str) -> Option<u64> {
        let (epoch, seq) = offset.rsplit_once('.')?;
        (epoch == self.epoch).then_some(())?;
        seq.parse().ok()
    }

    /// Kept events after `after` (from the oldest without it), at most `limit`.
    pub fn history_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, HistoryError> {
        let since = match after {
            None => 0,
            Some(offset) => {
                let (epoch, seq) = offset
                    .rsplit_once('.')
                    .and_then(|(epoch, seq)| Some((epoch, seq.parse::<u64>().ok()?)))
                    .ok_or_else(|| HistoryError::InvalidOffset(offset.to_string()))?;
                if epoch != self.epoch || !self.reaches_back_to(seq) {
                    return Err(HistoryError::UnknownOffset(offset.to_string()));
                }
                seq
            }
        };
        Ok(self
            .history
            .iter()
            .filter(|event| event.seq > since)
            .take(limit)
            .map(|event| self.shown(event))
            .collect())
    }

    /// What is kept: events, their bytes, and parked sockets.
    pub fn stats(&self) -> RecoveryStats {
        RecoveryStats {
            events: self.history.len(),
            bytes: self.history_bytes,
            parked_sockets: self.parked.len(),
        }
    }

    /// The offset of the newest kept event, if any.
    pub fn latest_offset(&self) -> Option<String> {
        self.history.back().map(|event| self.offset_of(event.seq))
    }

    fn shown(&self, event: &Recorded) -> HistoryEvent {
        let text = event
            .frames
            .first()
            .and_then(WireFrame::as_text)
            .unwrap_or("");
        let mut args = text
            .strip_prefix('4')
            .and_then(|packet| socketio::Packet::decode(packet).ok())
            .and_then(|packet| packet.data)
            .unwrap_or(Value::Null);
        if let Value::Array(items) = &mut args {
            items.pop();
        }
        let attachments: Vec<Bytes> = event
            .frames
            .iter()
            .skip(1)
            .map(|frame| frame.bytes().clone())
            .collect();
        HistoryEvent {
            offset: self.offset_of(event.seq),
            namespace: event.namespace.clone(),
            event: crate::backend::with_binary_inline(&args, &attachments),
            rooms: event.rooms.clone(),
            except: event.except.clone(),
            emitted_at: event.emitted_at,
        }
    }
}

/// `pid` and `offset` of a CONNECT's auth, as socket.io-client sends them.
fn recovery_auth(auth: Option<&Value>) -> Option<(&str, Option<&str>)> {
    let auth = auth?.as_object()?;
    let pid = auth.get("pid")?.as_str()?;
    Some((pid, auth.get("offset").and_then(Value::as_str)))
}

fn encode_event(event: &Recorded) -> Bytes {
    let packet = event
        .frames
        .first()
        .and_then(WireFrame::as_text)
        .unwrap_or("")
        .to_string();
    let bin = event
        .frames
        .iter()
        .skip(1)
        .map(|frame| base64::engine::general_purpose::STANDARD.encode(frame.bytes()))
        .collect();
    let record = EventRecord {
        ns: event.namespace.clone(),
        rooms: event.rooms.clone(),
        except: event.except.clone(),
        at: event.emitted_at,
        packet,
        bin,
    };
    Bytes::from(serde_json::to_vec(&record).unwrap_or_default())
}

fn decode_event(seq: u64, record: &[u8]) -> Option<Recorded> {
    let record: EventRecord = serde_json::from_slice(record).ok()?;
    let mut frames = Vec::with_capacity(1 + record.bin.len());
    frames.push(WireFrame::text(record.packet));
    for attachment in record.bin {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(attachment)
            .ok()?;
        frames.push(WireFrame::binary(bytes));
    }
    let frames: Frames = frames.into();
    Some(Recorded {
        seq,
        namespace: record.ns,
        rooms: record.rooms,
        except: record.except,
        bytes: frames.iter().map(|frame| frame.bytes().len()).sum(),
        frames,
        emitted_at: record.at,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn record(sid: &str) -> SocketRecord {
        SocketRecord {
            namespace: "/".into(),
            sid: sid.into(),
            rooms: Vec::new(),
            user: None,
            granted_rooms: Vec::new(),
            expires_at: None,
            user_info: None,
            data: None,
            since: 0,
            disconnected_at: None,
            presence_left: false,
        }
    }

    #[test]
    fn a_parked_sid_stays_listed_while_any_record_holds_it() {
        let mut recovery = Recovery::new(RecoveryPolicy::default(), "e".into());
        recovery.park("p1".into(), record("x"), 1);
        recovery.park("p2".into(), record("x"), 2);
        recovery.park("p3".into(), record("y"), 3);
        recovery.forget("p1");
        assert!(recovery.parks_sid("x"), "p2 still holds it");
        recovery.forget("p2");
        assert!(!recovery.parks_sid("x"));
        assert!(recovery.parks_sid("y"));
        // A pid parked again under another sid lets the old one go.
        recovery.park("p3".into(), record("z"), 4);
        assert!(!recovery.parks_sid("y") && recovery.parks_sid("z"));
    }
}
