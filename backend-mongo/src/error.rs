//! One function maps driver errors to core errors, by server error code, error label and
//! driver error kind (never by message text).

use cqrs_core::{Error, LimitKind, Outcome};
use mongodb::error::{ErrorKind, WriteFailure};

use crate::options::MAX_BSON_DOCUMENT_BYTES;

/// Server error codes this backend acts on.
pub(crate) mod code {
    /// `DuplicateKey`: a unique index refused the write.
    pub(crate) const DUPLICATE_KEY: i32 = 11000;
    /// `NamespaceExists`: the collection is already there (concurrent `init`).
    pub(crate) const NAMESPACE_EXISTS: i32 = 48;
    /// `IllegalOperation`: transactions on a standalone server, among others.
    pub(crate) const ILLEGAL_OPERATION: i32 = 20;
    /// `WriteConflict`: another transaction wrote the document first.
    pub(crate) const WRITE_CONFLICT: i32 = 112;
    /// `NoSuchTransaction`.
    pub(crate) const NO_SUCH_TRANSACTION: i32 = 251;
    /// `BSONObjectTooLarge`.
    pub(crate) const BSON_OBJECT_TOO_LARGE: i32 = 10334;
    /// `AuthenticationFailed`: wrong user, password or mechanism.
    pub(crate) const AUTHENTICATION_FAILED: i32 = 18;
    /// `Unauthorized`: the user lacks a privilege.
    pub(crate) const UNAUTHORIZED: i32 = 13;
    /// `IndexOptionsConflict` and `IndexKeySpecsConflict`.
    pub(crate) const INDEX_CONFLICT: [i32; 2] = [85, 86];
    /// Not primary, stepping down, shutting down, interrupted, network and time limits:
    /// the operation did not complete and may be retried.
    pub(crate) const RETRYABLE: [i32; 14] = [
        6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 10058,
    ];
}

/// The server error code of a driver error, if it carries one.
pub(crate) fn server_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m.write_errors.as_ref().and_then(|e| e.first()).map(|e| e.code),
        _ => None,
    }
}

/// Whether the server refused a write because a unique index already holds the key.
pub(crate) fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    server_code(err) == Some(code::DUPLICATE_KEY)
}

/// What a server error code means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeClass {
    /// A unique index refused the write.
    DuplicateKey,
    /// A document over 16 MiB.
    TooLarge,
    /// Retry: nothing was applied (transaction aborted) or the outcome is unknown.
    Retryable,
    /// The server cannot do this (transactions on a standalone server).
    Unsupported,
    /// Conflicting index definition: bad input.
    Invalid,
    /// Refused for good (authentication, authorization): what to do about it.
    Permanent(&'static str),
    /// Anything else.
    Other,
}

/// What to do when the server refuses the login.
const LOGIN_REFUSED: &str = "MongoDB refused the login: check the user, password and authSource of the URL";

/// Classifies a server error code.
pub(crate) fn classify(c: i32) -> CodeClass {
    match c {
        code::DUPLICATE_KEY => CodeClass::DuplicateKey,
        code::BSON_OBJECT_TOO_LARGE | 17419 | 17420 => CodeClass::TooLarge,
        code::WRITE_CONFLICT | code::NO_SUCH_TRANSACTION => CodeClass::Retryable,
        c if code::RETRYABLE.contains(&c) => CodeClass::Retryable,
        code::ILLEGAL_OPERATION => CodeClass::Unsupported,
        c if code::INDEX_CONFLICT.contains(&c) => CodeClass::Invalid,
        code::AUTHENTICATION_FAILED => CodeClass::Permanent(LOGIN_REFUSED),
        code::UNAUTHORIZED => CodeClass::Permanent(
            "the MongoDB user lacks a role this backend needs (readWrite on the database, createIndex): grant it",
        ),
        _ => CodeClass::Other,
    }
}

/// Maps a driver error to the core error a caller can act on.
pub(crate) fn map(err: mongodb::error::Error) -> Error {
    if err.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) {
        return Error::unavailable(Outcome::NotSent, err);
    }
    if err.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) {
        return Error::unavailable(Outcome::Unknown, err);
    }
    if let Some(c) = server_code(&err) {
        return match classify(c) {
            CodeClass::TooLarge => Error::TooLarge {
                kind: LimitKind::DocumentBytes,
                limit: MAX_BSON_DOCUMENT_BYTES as u64,
                actual: MAX_BSON_DOCUMENT_BYTES as u64 + 1,
            },
            CodeClass::Retryable => Error::unavailable(Outcome::Unknown, err),
            CodeClass::Unsupported => Error::Unsupported {
                capability: "this operation needs a MongoDB replica set (transactions)",
            },
            CodeClass::Invalid => Error::invalid(format!("refused by MongoDB (code {c})")),
            CodeClass::Permanent(hint) => Error::permanent("MongoDB", err, hint),
            CodeClass::DuplicateKey | CodeClass::Other => Error::backend("MongoDB", err),
        };
    }
    match err.kind.as_ref() {
        ErrorKind::ServerSelection { .. } | ErrorKind::DnsResolve { .. } => {
            Error::unavailable(Outcome::NotSent, err)
        }
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            Error::unavailable(Outcome::Unknown, err)
        }
        ErrorKind::Shutdown => Error::Closed,
        ErrorKind::BsonDeserialization(_) => Error::corrupt(format!("unreadable stored document: {err}")),
        ErrorKind::InvalidArgument { .. } => Error::invalid(format!("refused by the MongoDB driver: {err}")),
        // A refused login or a TLS set-up the driver cannot use fails the same way on every
        // retry; the driver reports both as kinds, so they need no server code.
        ErrorKind::Authentication { .. } => Error::permanent("MongoDB", err, LOGIN_REFUSED),
        ErrorKind::InvalidTlsConfig { .. } => Error::permanent(
            "MongoDB",
            err,
            "fix the TLS options of the URL (tls, tlsCAFile, tlsCertificateKeyFile)",
        ),
        ErrorKind::SessionsNotSupported => Error::Unsupported {
            capability: "this operation needs a MongoDB replica set (sessions)",
        },
        _ => Error::backend("MongoDB", err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_by_number() {
        assert_eq!(classify(11000), CodeClass::DuplicateKey);
        assert_eq!(classify(10334), CodeClass::TooLarge);
        assert_eq!(classify(112), CodeClass::Retryable);
        assert_eq!(classify(10107), CodeClass::Retryable);
        assert_eq!(classify(20), CodeClass::Unsupported);
        assert_eq!(classify(85), CodeClass::Invalid);
        assert_eq!(classify(2), CodeClass::Other);
        // A wrong password or a missing role is not an outage: never retryable.
        assert_eq!(classify(18), CodeClass::Permanent(LOGIN_REFUSED));
        assert!(matches!(classify(13), CodeClass::Permanent(h) if h.contains("grant it")));
    }

    #[test]
    fn driver_kinds_map_without_reading_messages() {
        let e = mongodb::error::Error::custom("x");
        assert!(matches!(map(e), Error::Backend { .. }));
        let io = mongodb::error::Error::from(std::io::Error::other("reset"));
        assert!(matches!(
            map(io),
            Error::Unavailable {
                outcome: Outcome::Unknown,
                ..
            }
        ));
    }
}
