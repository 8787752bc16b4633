//! Validated names: stream ids and the keys of state entries and documents.

use std::{borrow::Borrow, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest stream id (and any other key) in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Checks a name used as a key: non-empty, at most [`MAX_NAME_BYTES`] bytes, no control
/// characters. No normalisation: two names that differ in any byte are different names.
///
/// # Errors
/// [`Error::InvalidInput`] naming `what` and the reason.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes, the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    // Most names are ASCII: a byte scan instead of decoding chars.
    let control = if name.is_ascii() {
        name.bytes().find(u8::is_ascii_control).map(char::from)
    } else {
        name.chars().find(|c| c.is_control())
    };
    if let Some(c) = control {
        return Err(Error::invalid(format!(
            "{what} contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// The name of an event stream: non-empty, at most 1024 UTF-8 bytes, no control characters.
///
/// Any printable Unicode works on every backend, including `:` `{` `}` quotes, `%`, `_`,
/// spaces and 4-byte characters: backends never build keys or SQL by concatenating it.
///
/// ```
/// use cqrs_core::StreamId;
/// let id: StreamId = "order-1".parse()?;
/// assert_eq!(id.as_str(), "order-1");
/// assert!("".parse::<StreamId>().is_err());
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Validates and wraps a stream name.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the name is empty, too long or holds a control character.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name("stream id", &name)?;
        Ok(StreamId(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, consumed.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamId::new(s).map_err(serde::de::Error::custom)
    }
}

impl FromStr for StreamId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StreamId::new(s)
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        StreamId::new(s)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        StreamId::new(s)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostile_printable_names() {
        for name in ["a", "{x}:y", "'\";%_ ", "😀/ü", "}{"] {
            assert_eq!(
                StreamId::new(name).map(|s| s.into_string()).ok().as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn limit_is_in_bytes_not_chars() {
        let ok = "😀".repeat(256); // 1024 bytes
        assert!(StreamId::new(ok).is_ok());
        let too_long = format!("{}a", "😀".repeat(256));
        assert!(matches!(StreamId::new(too_long), Err(Error::InvalidInput { .. })));
    }

    #[test]
    fn refuses_empty_and_control_characters() {
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("a\nb").is_err());
        assert!(StreamId::new("a\u{0}b").is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
        assert!(serde_json::from_str::<StreamId>("\"ok\"").is_ok());
    }
}
