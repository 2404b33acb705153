//! Wall-clock timestamps for records (a leaf: engines and keys stamp what they write).

/// Now, as RFC 3339 UTC.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
