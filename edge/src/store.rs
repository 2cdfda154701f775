//! The Durable Object's recovery store: what core asks to keep of the channel's connection-state
//! recovery (its history, its sockets), in the object's own SQLite storage (`ctx.storage.sql`).
//!
//! Core decides what is stored and when ([`StoreOp`], one batch per input); this only carries it
//! out, and reads it all back when the object rebuilds its channel (after hibernation, eviction
//! or a deploy), as a [`StoredState`]. The runtime commits each event's writes together.

use bytes::Bytes;
use switchboard_core::channel::{StoreOp, StoredState};
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS recovery_epoch (id INTEGER PRIMARY KEY CHECK (id = 0), epoch TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS recovery_events (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS recovery_sockets (pid TEXT PRIMARY KEY, record TEXT NOT NULL);";

fn text(value: &SqlStorageValue) -> Option<String> {
    match value {
        SqlStorageValue::String(text) => Some(text.clone()),
        _ => None,
    }
}

fn integer(value: &SqlStorageValue) -> Option<u64> {
    match value {
        SqlStorageValue::Integer(n) => u64::try_from(*n).ok(),
        SqlStorageValue::Float(n) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

/// Rows of `query`, each as its columns.
fn rows(sql: &SqlStorage, query: &str) -> worker::Result<Vec<Vec<SqlStorageValue>>> {
    sql.exec(query, None)?.raw().collect()
}

/// Everything kept for this object's channel.
pub fn load(sql: &SqlStorage) -> worker::Result<StoredState> {
    sql.exec(SCHEMA, None)?;
    let epoch = rows(sql, "SELECT epoch FROM recovery_epoch WHERE id = 0")?
        .first()
        .and_then(|row| row.first().and_then(text));
    let events = rows(sql, "SELECT seq, record FROM recovery_events")?
        .iter()
        .filter_map(|row| {
            let seq = integer(row.first()?)?;
            let record = text(row.get(1)?)?;
            Some((seq, Bytes::from(record)))
        })
        .collect();
    let sockets = rows(sql, "SELECT pid, record FROM recovery_sockets")?
        .iter()
        .filter_map(|row| Some((text(row.first()?)?, text(row.get(1)?)?)))
        .collect();
    Ok(StoredState {
        epoch,
        events,
        sockets,
    })
}

/// Carries out one batch of writes.
pub fn apply(sql: &SqlStorage, ops: Vec<StoreOp>) -> worker::Result<()> {
    sql.exec(SCHEMA, None)?;
    for op in ops {
        match op {
            StoreOp::SetEpoch(epoch) => {
                sql.exec(
                    "INSERT OR REPLACE INTO recovery_epoch (id, epoch) VALUES (0, ?)",
                    vec![SqlStorageValue::String(epoch)],
                )?;
            }
            StoreOp::PutEvent { seq, record } => {
                // Core's records are JSON, so text.
                let record = String::from_utf8_lossy(&record).into_owned();
                sql.exec(
                    "INSERT OR REPLACE INTO recovery_events (seq, record) VALUES (?, ?)",
                    vec![
                        SqlStorageValue::try_from_i64(seq as i64)?,
                        SqlStorageValue::String(record),
                    ],
                )?;
            }
            StoreOp::DeleteEventsThrough { seq } => {
                sql.exec(
                    "DELETE FROM recovery_events WHERE seq <= ?",
                    vec![SqlStorageValue::try_from_i64(seq as i64)?],
                )?;
            }
            StoreOp::PutSocket { pid, record } => {
                sql.exec(
                    "INSERT OR REPLACE INTO recovery_sockets (pid, record) VALUES (?, ?)",
                    vec![
                        SqlStorageValue::String(pid),
                        SqlStorageValue::String(record),
                    ],
                )?;
            }
            StoreOp::DeleteSocket { pid } => {
                sql.exec(
                    "DELETE FROM recovery_sockets WHERE pid = ?",
                    vec![SqlStorageValue::String(pid)],
                )?;
            }
        }
    }
    Ok(())
}
