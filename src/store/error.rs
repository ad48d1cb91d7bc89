//! Why a store operation failed, and which failures mean the store is out of service
//! rather than refusing one request.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a store operation failed. URLs in messages have their password replaced by `***`.
///
/// Clone because one failed batch answers every request in it (sources are behind `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("store {url}: cannot create directory {}: {source}", path.display())]
    CreateDir {
        url: String,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("store {url}: cannot open: {source}")]
    Open {
        url: String,
        source: Arc<sqlx::Error>,
    },
    #[error("store {url}: migration failed: {source}")]
    Migrate {
        url: String,
        source: Arc<sqlx::migrate::MigrateError>,
    },
    #[error("store {operation} failed: {source}")]
    Query {
        operation: &'static str,
        source: Arc<sqlx::Error>,
    },
    #[error("store holds a malformed row: {detail}")]
    Corrupt { detail: String },
    #[error("deduplicator has stopped")]
    Stopped,
    /// A directory change deleted an entry that is not there; nothing was changed.
    #[error("{what} not found")]
    NotFound { what: String },
    /// Another process holds the SQLite store's lock.
    #[error(
        "{} is in use by another process{}; an SQLite store belongs to one gateway at a \
         time: stop the other one, give this one a data_dir of its own, or let several \
         instances share a PostgreSQL store",
        path.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    /// The SQLite file or its lock file cannot be opened, locked or looked at.
    #[error("cannot use {}: {source}", path.display())]
    Access {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// The SQLite file is no longer the one that was opened: deleted or replaced.
    #[error("{problem}")]
    File { problem: String },
}

impl StoreError {
    /// Whether the store is out of service rather than refusing this one request: not
    /// reachable, out of disk, its file gone, its role locked out. A retry later can
    /// succeed; the same request now would fail the same way.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Query { source, .. } | StoreError::Open { source, .. } => {
                sqlx_outage(source)
            }
            StoreError::Stopped
            | StoreError::Locked { .. }
            | StoreError::Access { .. }
            | StoreError::File { .. }
            | StoreError::CreateDir { .. } => true,
            StoreError::BadUrl { .. }
            | StoreError::Migrate { .. }
            | StoreError::Corrupt { .. }
            | StoreError::NotFound { .. } => false,
        }
    }

    pub(super) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query {
            operation,
            source: Arc::new(source),
        }
    }
}

fn sqlx_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| outage_code(&code)),
        _ => false,
    }
}

/// SQLite result codes (primary or extended; the primary code is the low byte) and
/// PostgreSQL SQLSTATE classes that mean the database is out of service: SQLite busy,
/// locked, read-only, I/O error, cannot open, disk full; PostgreSQL connection exceptions
/// (08), authorisation refused (28, e.g. a role set NOLOGIN), insufficient resources (53,
/// disk full), operator intervention (57, e.g. a terminated backend or a shutdown).
fn outage_code(code: &str) -> bool {
    if let Ok(sqlite) = code.parse::<u32>() {
        return matches!(sqlite & 0xff, 5 | 6 | 8 | 10 | 13 | 14);
    }
    matches!(code.get(..2), Some("08" | "28" | "53" | "57"))
}
