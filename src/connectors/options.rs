//! `WITH (...)` options of a stream, normalised: keys lower-cased, Flink's
//! spellings mapped onto Weir's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConnectorError;

/// The options of a `CREATE STREAM ... WITH (...)`, keys lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorOptions {
    map: BTreeMap<String, String>,
}

impl ConnectorOptions {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        ConnectorOptions {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// The first of `keys` that is set (Weir's spelling first, then Flink's).
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub fn require(&self, key: &str) -> Result<&str, ConnectorError> {
        self.get(key)
            .ok_or_else(|| ConnectorError::MissingOption(key.to_string()))
    }

    /// The connector name; Flink's `filesystem` means `file`.
    pub fn connector(&self) -> Result<String, ConnectorError> {
        let c = self.require("connector")?.to_ascii_lowercase();
        Ok(match c.as_str() {
            "filesystem" => "file".to_string(),
            _ => c,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `connector = <connector>` and `pairs` (for tests).
    #[cfg(test)]
    pub(crate) fn of(connector: &str, pairs: &[(&str, &str)]) -> Self {
        let mut o = ConnectorOptions::new([("connector".to_string(), connector.to_string())]);
        for (k, v) in pairs {
            o.insert(k, v);
        }
        o
    }

    pub fn insert(&mut self, key: &str, value: &str) {
        self.map.insert(key.to_ascii_lowercase(), value.to_string());
    }

    /// The first of `keys` that is set, with the key it was found under.
    pub fn find(&self, keys: &[&str]) -> Option<(&str, &str)> {
        keys.iter()
            .find_map(|k| self.map.get_key_value(*k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A non-negative integer option under the first of `keys` that is set.
    pub fn get_u64(&self, keys: &[&str]) -> Result<Option<u64>, ConnectorError> {
        self.find(keys)
            .map(|(k, v)| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(k, format!("expected a non-negative integer, got '{v}'")))
            })
            .transpose()
    }

    /// A boolean option (`true`/`false`) under the first of `keys` that is set.
    pub fn get_bool(&self, keys: &[&str]) -> Result<Option<bool>, ConnectorError> {
        self.find(keys)
            .map(|(k, v)| match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(invalid(k, format!("expected 'true' or 'false', got '{v}'"))),
            })
            .transpose()
    }

    /// A duration option (`'1 s'`, `'500ms'`, `'2 minutes'`; a bare number
    /// is milliseconds, as in Flink) under the first of `keys` that is set.
    pub fn get_duration(&self, keys: &[&str]) -> Result<Option<Duration>, ConnectorError> {
        self.find(keys)
            .map(|(k, v)| {
                parse_duration(v).ok_or_else(|| {
                    invalid(
                        k,
                        format!(
                            "expected a duration such as '1 s', '500 ms' or '2 minutes', got '{v}'"
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// An [`ConnectorError::InvalidOption`] for `option`.
pub(crate) fn invalid(option: &str, message: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption {
        option: option.to_string(),
        message: message.into(),
    }
}

/// Parses a non-negative duration: a number (fractions allowed) followed by
/// an optional unit (ns, us, ms, s, min, h, d and their long spellings,
/// case-insensitive); no unit means milliseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let nanos_per_unit: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1.0,
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1e3,
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1e6,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e9,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e9,
        "h" | "hour" | "hours" => 3600e9,
        "d" | "day" | "days" => 86400e9,
        _ => return None,
    };
    if number.is_empty() || number == "." {
        return None;
    }
    let nanos = number.parse::<f64>().ok()? * nanos_per_unit;
    // Below 2^63 ns (about 292 years) so that callers may use it as an i64.
    (nanos.is_finite() && nanos < 9.2e18).then(|| Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1 second"), Some(ms(1000)));
        assert_eq!(parse_duration("100 ms"), Some(ms(100)));
        assert_eq!(parse_duration("5s"), Some(ms(5000)));
        assert_eq!(parse_duration("2 minutes"), Some(ms(120_000)));
        assert_eq!(parse_duration(" 1 S "), Some(ms(1000)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_duration("250"), Some(ms(250)));
        assert_eq!(parse_duration("3 us"), Some(Duration::from_micros(3)));
        assert_eq!(parse_duration("1 day"), Some(ms(86_400_000)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1 s"), None);
        assert_eq!(parse_duration("1 fortnight"), None);
        assert_eq!(parse_duration("1.2.3 s"), None);
        assert_eq!(parse_duration("1e300 d"), None);
    }

    #[test]
    fn typed_getters() {
        let o = ConnectorOptions::new([
            ("Rows".to_string(), "10".to_string()),
            ("follow".to_string(), "TRUE".to_string()),
            ("bad".to_string(), "x".to_string()),
        ]);
        assert_eq!(o.get_u64(&["rows"]).unwrap(), Some(10));
        assert_eq!(o.get_u64(&["missing", "rows"]).unwrap(), Some(10));
        assert_eq!(o.get_u64(&["missing"]).unwrap(), None);
        assert_eq!(o.get_bool(&["follow"]).unwrap(), Some(true));
        let err = o.get_bool(&["bad"]).unwrap_err();
        assert!(matches!(err, ConnectorError::InvalidOption { ref option, .. } if option == "bad"));
        assert!(o.get_duration(&["bad"]).is_err());
    }
}
