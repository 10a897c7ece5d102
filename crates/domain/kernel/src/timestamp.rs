//! Timestamps in JSON, written as chrono writes them (RFC 3339 in UTC with a `Z`,
//! and as many fraction digits — none, 3, 6 or 9 — as the value needs) but without
//! going through `fmt`.
//!
//! chrono serialises a `DateTime` through `Display`, which writes the text a piece at
//! a time through the formatting machinery and then escapes it character by character
//! into the JSON. A page of twenty users carries sixty timestamps, and that was 5–6 %
//! of the server's CPU for `GET /v1/users` (docs/benchmarks.md). Here the text is
//! built in a small buffer and handed to the serializer once. Values chrono writes
//! differently from the common case (years outside 0000–9999, leap seconds) go through
//! chrono itself, so the output is always chrono's.
//!
//! Use with `#[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]`, or
//! `trellis_kernel::timestamp::rfc3339_opt` for an `Option`: the HTTP crate's response
//! types and the domain types it writes as they are (agents, conversations, messages,
//! memories, tools) both do. The field's type is unchanged, so the OpenAPI schema
//! still says `date-time`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// Longest text: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Serialises `at` as chrono does.
///
/// # Errors
/// Whatever the serializer returns.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0_u8; MAX_LEN];
    match write(at, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(len) => serializer
            .serialize_str(std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?),
        None => serde::Serialize::serialize(at, serializer),
    }
}

/// [`rfc3339`] for an optional timestamp (`null` when absent).
///
/// # Errors
/// Whatever the serializer returns.
#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
pub fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// Writes `at` into `buf` and returns the length, or `None` when chrono would write
/// something other than the common form.
fn write(at: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.nanosecond();
    // chrono keeps a leap second as 1_000_000_000 nanoseconds or more.
    if nanos >= 1_000_000_000 {
        return None;
    }
    digits(&mut buf[0..4], year);
    buf[4] = b'-';
    digits(&mut buf[5..7], at.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], at.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], at.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], at.minute());
    buf[16] = b':';
    digits(&mut buf[17..19], at.second());
    let mut len = 19;
    let (value, width) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        buf[len] = b'.';
        digits(&mut buf[len + 1..len + 1 + width], value);
        len += 1 + width;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// Writes `value` in decimal into all of `out`, zero-padded on the left.
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        // `value % 10` is below 10, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (value % 10) as u8;
        *slot = b'0' + digit;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Fast {
        #[serde(serialize_with = "rfc3339")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "rfc3339_opt")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chrono {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    fn both(at: DateTime<Utc>, maybe: Option<DateTime<Utc>>) -> (String, String) {
        let fast = serde_json::to_string(&Fast { at, maybe }).unwrap();
        let chrono = serde_json::to_string(&Chrono { at, maybe }).unwrap();
        (fast, chrono)
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> DateTime<Utc> {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_nano_opt(h, mi, s, nanos)
            .unwrap();
        Utc.from_utc_datetime(&naive)
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        let fractions = [
            0,
            1,
            999_999_999,
            123_000_000,
            120_000_000,
            100_000_000,
            123_456_000,
            123_456_700,
            1_000,
            1_000_000,
            500,
        ];
        let moments = [
            (2026, 12, 4, 13, 48, 34),
            (1970, 1, 1, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59),
            (0, 1, 1, 0, 0, 0),
            (2000, 2, 29, 9, 5, 7),
        ];
        for (y, mo, d, h, mi, s) in moments {
            for nanos in fractions {
                let t = at(y, mo, d, h, mi, s, nanos);
                let (fast, chrono) = both(t, Some(t));
                assert_eq!(fast, chrono, "{t:?}");
            }
        }
    }

    #[test]
    fn a_missing_timestamp_is_null() {
        let (fast, chrono) = both(at(2026, 1, 2, 3, 4, 5, 0), None);
        assert_eq!(fast, chrono);
        assert!(fast.ends_with(r#""maybe":null}"#), "{fast}");
    }

    #[test]
    fn years_and_leap_seconds_chrono_writes_its_own_way_still_match_chrono() {
        let odd = [
            at(10_000, 1, 1, 0, 0, 0, 0),
            at(-1, 6, 1, 12, 0, 0, 5_000_000),
            // A leap second: chrono keeps it as 1 s or more of nanoseconds.
            at(2016, 12, 31, 23, 59, 59, 1_500_000_000),
        ];
        for t in odd {
            let (fast, chrono) = both(t, Some(t));
            assert_eq!(fast, chrono, "{t:?}");
        }
    }

    #[test]
    fn the_current_time_round_trips_through_the_text() {
        let now = Utc::now();
        let text = serde_json::to_value(Fast {
            at: now,
            maybe: None,
        })
        .unwrap();
        let back: DateTime<Utc> = serde_json::from_value(text["at"].clone()).unwrap();
        assert_eq!(back, now);
    }
}
