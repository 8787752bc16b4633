//! Dead-lettered messages.

use std::fmt;

use super::{Message, MessageId};
use crate::Timestamp;

/// Why a message went to the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Every attempt of the retry policy failed; the last error.
    MaxAttempts {
        /// The last handler error.
        last_error: String,
    },
    /// The handler said no retry can help.
    Permanent {
        /// The handler's error.
        error: String,
    },
    /// The stored entry (or the handler) could not decode the message.
    Undecodable {
        /// What failed.
        error: String,
    },
    /// An earlier message of the same key is in the dead letter (ordered topics): this one
    /// was parked behind it, not handled.
    Parked {
        /// The dead-lettered message it is parked behind.
        behind: MessageId,
    },
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::MaxAttempts { last_error } => write!(f, "max attempts: {last_error}"),
            DeadLetterReason::Permanent { error } => write!(f, "permanent: {error}"),
            DeadLetterReason::Undecodable { error } => write!(f, "undecodable: {error}"),
            DeadLetterReason::Parked { behind } => write!(f, "parked behind {behind}"),
        }
    }
}

/// One dead-lettered message of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic.
    pub topic: String,
    /// The group that gave up on it.
    pub group: String,
    /// The original message id (`None`: the entry did not decode).
    pub original_id: Option<MessageId>,
    /// The transport's entry id.
    pub entry: String,
    /// The partition.
    pub partition: u32,
    /// The message, when it decoded.
    pub message: Option<Message>,
    /// Why.
    pub reason: DeadLetterReason,
    /// Deliveries made (0 for a parked message).
    pub attempts: u32,
    /// When it was dead-lettered.
    pub at: Timestamp,
}
