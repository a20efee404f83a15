//! Parsing of the human units that flags, query strings and JSON bodies use:
//! durations (`90s`, `15m`, `2h`, `1d`, plain seconds) and byte sizes
//! (`65536`, `64KiB`, `256M`).
//!
//! These parsers see untrusted input (the `ttl` query parameter), so they are
//! total: every string gets a value or an error, never a panic or an overflow.

use std::fmt;
use std::time::Duration;

/// Why a duration or size string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Nothing to parse.
    #[error("empty value")]
    Empty,
    /// The number part is missing or not a whole number.
    #[error("{0:?} is not a whole number followed by an optional unit")]
    NotANumber(String),
    /// The suffix is not one we know.
    #[error("unknown unit {unit:?} (use {expected})")]
    UnknownUnit {
        /// The suffix found.
        unit: String,
        /// The suffixes accepted.
        expected: &'static str,
    },
    /// The value does not fit.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Longest accepted input; anything longer is surely not a duration or size.
const MAX_INPUT_LEN: usize = 32;

fn split_number(input: &str) -> Result<(u64, &str), UnitError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty);
    }
    if trimmed.len() > MAX_INPUT_LEN {
        return Err(UnitError::TooLarge(truncate(trimmed)));
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(UnitError::NotANumber(trimmed.to_owned()));
    }
    let number = trimmed[..digits_end]
        .parse::<u64>()
        .map_err(|_| UnitError::TooLarge(trimmed.to_owned()))?;
    Ok((number, trimmed[digits_end..].trim_start()))
}

fn truncate(input: &str) -> String {
    input.chars().take(MAX_INPUT_LEN).collect::<String>() + "..."
}

/// Parses `90s`, `15m`, `2h`, `1d`, `500ms` or plain seconds (`300`).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(input)?;
    let millis_per_unit: u64 = match unit {
        "" | "s" | "sec" | "secs" => 1_000,
        "ms" => 1,
        "m" | "min" | "mins" => 60_000,
        "h" | "hr" | "hrs" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_owned(),
                expected: "ms, s, m, h or d",
            })
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::TooLarge(input.trim().to_owned()))
}

/// Parses a byte count: plain bytes, or with `K`/`KB`/`KiB`, `M`..., `G`...
/// suffixes. All suffixes are binary (1K = 1024), as memory limits are.
pub fn parse_bytes(input: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(input)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_owned(),
                expected: "B, KiB, MiB or GiB",
            })
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| UnitError::TooLarge(input.trim().to_owned()))
}

/// Formats a duration the way the flags accept it, in the largest exact unit.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1_000 != 0 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// A byte count that prints in the largest exact binary unit (`64KiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5 m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn bad_durations_are_errors_not_panics() {
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert!(matches!(parse_duration("m"), Err(UnitError::NotANumber(_))));
        assert!(matches!(
            parse_duration("-5s"),
            Err(UnitError::NotANumber(_))
        ));
        assert!(matches!(
            parse_duration("5y"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.5h"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(UnitError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615d"),
            Err(UnitError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration(&"9".repeat(100)),
            Err(UnitError::TooLarge(_))
        ));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65_536));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("64k"), Ok(65_536));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(matches!(
            parse_bytes("1TB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert_eq!(ByteSize(65_536).to_string(), "64KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn durations_format_back() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
