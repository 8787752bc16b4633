//! The decoders of bytes this backend stores, for the fuzz targets in `fuzz/` (feature
//! `fuzzing`). Not a stable API: it exists so the targets call the very functions the
//! stores call, instead of copies of them.

use cqrs_core::{Position, Result};

pub use crate::bus::decode_outbox_row;

/// The log position of an event row from its `tx_id` and `seq` columns.
///
/// # Errors
/// [`cqrs_core::Error::Corrupt`] for a negative stored number.
pub fn event_position(tx: i64, seq: i64) -> Result<Position> {
    crate::backend::position(tx, seq)
}
