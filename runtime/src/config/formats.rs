//! Serde helpers for the value shapes TOML lacks: durations, optional paths and strings, the
//! log format.

/// Serde for durations as human-readable strings: `"10s"`, `"300ms"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `d` as e.g. `"10s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses e.g. `"10s"`, `"300ms"`, `"2m 30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"10s\", \"300ms\" or \"2m\"")
        })
    }
}

/// Serde for an optional path: `""` is none.
pub mod opt_path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as `""`.
    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_str(""),
        }
    }

    /// Reads `""` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }
}

/// Serde for an optional string: `""` is none.
pub mod opt_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `None` as `""`.
    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    /// Reads `""` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then_some(s))
    }
}

/// Serde for [`LogFormat`](crate::telemetry::LogFormat): `"text"` or `"json"`.
pub mod log_format {
    use clap::ValueEnum;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::telemetry::LogFormat;

    /// Serializes as `"text"` or `"json"`.
    pub fn serialize<S: Serializer>(f: &LogFormat, s: S) -> Result<S::Ok, S::Error> {
        match f.to_possible_value() {
            Some(v) => s.serialize_str(v.get_name()),
            None => Err(serde::ser::Error::custom("unnamed log format")),
        }
    }

    /// Parses `"text"` or `"json"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        let s = String::deserialize(d)?;
        LogFormat::from_str(s.trim(), true)
            .map_err(|_| serde::de::Error::custom("expected \"text\" or \"json\""))
    }
}
