//! Durations on the command line: `5s`, `500ms`, `2m`, `1h`, or a plain
//! number of seconds (`5`, `0.5`) as before.

use std::time::Duration;

/// Why a duration flag was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?} is not a duration: use e.g. 5s, 500ms, 2m, 1h or a number of seconds")]
    Invalid(String),
    #[error("{0:?} is negative or too large")]
    Range(String),
}

/// Parses a duration flag value.
pub fn parse(raw: &str) -> Result<Duration, DurationError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Invalid(raw.to_string()))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::Invalid(raw.to_string())),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| DurationError::Range(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_seconds() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "5x", "5 m s", "-1", "1e3s", "ms"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
