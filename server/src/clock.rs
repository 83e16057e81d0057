//! The wall clock, read at the edge. Domain code takes `now` as a parameter.

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A unix-milliseconds time as RFC 3339 (UTC) with exactly three fractional digits,
/// e.g. `2026-11-22T14:05:09.120Z`, for API answers. Fixed width, so the strings sort
/// in time order (a format that drops trailing zeros, `...:09.12Z` next to
/// `...:09Z`, would not).
pub fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_a_fixed_width_and_sort_as_strings() {
        let base = 1_795_000_000_000_i64;
        let times: Vec<String> = [0, 1, 10, 100, 120, 999, 1000, 1001, 60_000]
            .iter()
            .map(|d| rfc3339(base + d))
            .collect();
        assert_eq!(rfc3339(base), "2026-11-18T11:06:40.000Z");
        assert_eq!(rfc3339(base + 120), "2026-11-18T11:06:40.120Z");
        for pair in times.windows(2) {
            assert_eq!(pair[0].len(), pair[1].len());
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        for (t, d) in times
            .iter()
            .zip([0, 1, 10, 100, 120, 999, 1000, 1001, 60_000])
        {
            assert_eq!(parse_rfc3339(t), Some(base + d));
        }
    }
}
