//! The native server's recovery store (`--data-dir`): what core asks to keep of each channel's
//! connection-state recovery (its history, its sockets), in one SQLite file.
//!
//! Core decides what is stored and when ([`StoreOp`]); this only carries it out, one
//! transaction per batch, and reads it all back when a channel starts ([`StoredState`]). Without
//! `--data-dir` the state lives in the channel's memory alone.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use rusqlite::{Connection, params};
use switchboard_core::channel::{StoreOp, StoredState};

/// The file inside the data directory.
pub const FILE_NAME: &str = "switchboard.sqlite3";

#[derive(Debug)]
pub struct RecoveryStore {
    connection: Mutex<Connection>,
}

impl RecoveryStore {
    /// Opens (creating if needed) `<dir>/switchboard.sqlite3`.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let connection =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // WAL: a write is an append, and a crash loses at most the last batch.
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS channel_epochs (
                 channel TEXT PRIMARY KEY, epoch TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS channel_events (
                 channel TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
                 PRIMARY KEY (channel, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS channel_sockets (
                 channel TEXT NOT NULL, pid TEXT NOT NULL, record TEXT NOT NULL,
                 PRIMARY KEY (channel, pid)) WITHOUT ROWID;",
        )?;
        Ok(Arc::new(Self {
            connection: Mutex::new(connection),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything kept for `channel`.
    pub fn load(&self, channel: &str) -> anyhow::Result<StoredState> {
        let connection = self.lock();
        let epoch = connection
            .query_row(
                "SELECT epoch FROM channel_epochs WHERE channel = ?1",
                [channel],
                |row| row.get::<_, String>(0),
            )
            .ok();
        let mut events = Vec::new();
        let mut statement = connection
            .prepare_cached("SELECT seq, record FROM channel_events WHERE channel = ?1")?;
        for row in statement.query_map([channel], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Vec<u8>>(1)?))
        })? {
            let (seq, record) = row?;
            events.push((seq, Bytes::from(record)));
        }
        let mut sockets = Vec::new();
        let mut statement = connection
            .prepare_cached("SELECT pid, record FROM channel_sockets WHERE channel = ?1")?;
        for row in statement.query_map([channel], |row| Ok((row.get(0)?, row.get(1)?)))? {
            sockets.push(row?);
        }
        Ok(StoredState {
            epoch,
            events,
            sockets,
        })
    }

    /// Carries out one batch of `channel`'s writes, in one transaction.
    pub fn apply(&self, channel: &str, ops: &[StoreOp]) -> anyhow::Result<()> {
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        for op in ops {
            match op {
                StoreOp::SetEpoch(epoch) => {
                    transaction.execute(
                        "INSERT OR REPLACE INTO channel_epochs (channel, epoch) VALUES (?1, ?2)",
                        params![channel, epoch],
                    )?;
                }
                StoreOp::PutEvent { seq, record } => {
                    transaction
                        .prepare_cached(
                            "INSERT OR REPLACE INTO channel_events (channel, seq, record) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![channel, *seq as i64, record.as_ref()])?;
                }
                StoreOp::DeleteEventsThrough { seq } => {
                    transaction
                        .prepare_cached(
                            "DELETE FROM channel_events WHERE channel = ?1 AND seq <= ?2",
                        )?
                        .execute(params![channel, *seq as i64])?;
                }
                StoreOp::PutSocket { pid, record } => {
                    transaction
                        .prepare_cached(
                            "INSERT OR REPLACE INTO channel_sockets (channel, pid, record) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![channel, pid, record])?;
                }
                StoreOp::DeleteSocket { pid } => {
                    transaction
                        .prepare_cached(
                            "DELETE FROM channel_sockets WHERE channel = ?1 AND pid = ?2",
                        )?
                        .execute(params![channel, pid])?;
                }
            }
        }
        transaction.commit()?;
        Ok(())
    }
}
