//! The one error of the service layer. Each face maps it once: the gRPC API to a status
//! (`admin::convert::status`), a console to its page.

use crate::store::StoreError;

/// Why a call did not do what was asked. Messages are for the operator: they name the
/// field or the rule, quote at most a short escaped piece of what was sent, and never
/// carry a database's own text or payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// It does not exist, or the caller may not know that it does: both say the same.
    #[error("{0}")]
    NotFound(String),
    /// The caller's roles or scope do not allow it; the message says which.
    #[error("{0}")]
    PermissionDenied(String),
    /// A field of the request is wrong.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// What is to be created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Someone else changed it meanwhile; read again and retry.
    #[error("{0}")]
    Aborted(String),
    /// Not possible in the present state (a file entry, a destination still routed to).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Try again later (the store or the broker cannot be reached).
    #[error("{0}")]
    Unavailable(String),
    /// A fault that a retry would not mend; the gateway's log says more.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
        ServiceError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A store failure: NOT_FOUND as it is; otherwise the database's own text goes to the
    /// log only (it can name tables, statements, even a value of the request). UNAVAILABLE,
    /// which clients retry, only when the store is out of service (unreachable, disk full,
    /// its file gone: `StoreError::is_outage`).
    pub fn store(e: StoreError) -> ServiceError {
        match e {
            StoreError::NotFound { what } => ServiceError::NotFound(what),
            other => {
                tracing::error!(error = %other, "admin: store failed");
                if other.is_outage() {
                    ServiceError::Unavailable(
                        "the store cannot be reached now; try again later (the gateway's log says why)"
                            .to_owned(),
                    )
                } else {
                    ServiceError::Internal(
                        "the store failed (the gateway's log says why)".to_owned(),
                    )
                }
            }
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        ServiceError::store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn store_errors_reach_callers_without_the_databases_text() {
        let query = |source: sqlx::Error| StoreError::Query {
            operation: "list dead letters",
            source: Arc::new(source),
        };
        let unavailable = |e: &ServiceError| matches!(e, ServiceError::Unavailable(_));
        let internal = |e: &ServiceError| matches!(e, ServiceError::Internal(_));
        let not_found = |e: &ServiceError| matches!(e, ServiceError::NotFound(_));
        type Kind = fn(&ServiceError) -> bool;
        let cases: [(StoreError, Kind); 5] = [
            (
                query(sqlx::Error::Protocol("connection reset by peer".into())),
                unavailable,
            ),
            (query(sqlx::Error::PoolTimedOut), unavailable),
            (
                query(sqlx::Error::ColumnNotFound("secret_column".into())),
                internal,
            ),
            (
                StoreError::Corrupt {
                    detail: "row 7: secret_column".into(),
                },
                internal,
            ),
            (
                StoreError::NotFound {
                    what: "destination he-x".into(),
                },
                not_found,
            ),
        ];
        for (error, kind) in cases {
            let shown = error.to_string();
            let mapped = ServiceError::store(error);
            assert!(kind(&mapped), "{shown}: {mapped:?}");
            for word in ["secret_column", "connection reset", "list dead letters"] {
                assert!(!mapped.to_string().contains(word), "{shown}: {mapped:?}");
            }
        }
    }
}
