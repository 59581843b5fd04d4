//! Formatting event times as the order's date strings, without a format-string parser on the
//! hot path (chrono's `format` costs more than the rest of an order put together).
//!
//! `timestamp` is New York local time, `%Y-%m-%dT%H:%M:%S.%6f`, no offset (as the original wrote
//! it); the other dates are UTC, `%Y-%m-%d %H:%M:%S.%3f`.

use chrono::{Offset, TimeZone};
use chrono_tz::America::New_York;

const MS_PER_DAY: i64 = 86_400_000;

/// Seconds east of UTC in New York at the given UTC instant (-18000 or -14400).
pub fn new_york_offset_secs(time_ms: i64) -> i64 {
    match chrono::DateTime::from_timestamp_millis(time_ms) {
        Some(utc) => i64::from(
            New_York
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        ),
        None => 0,
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` as exactly `N` decimal digits (zero-padded; callers pass values that fit).
fn digits<const N: usize>(out: &mut [u8], value: i64) {
    let mut v = value.unsigned_abs();
    for slot in out[..N].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `YYYY-MM-DD?HH:MM:SS.mmm` into a fixed buffer (years 0..=9999, which is every event time).
fn datetime_bytes(ms: i64, date_time_sep: u8) -> [u8; 23] {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let mut b = *b"0000-00-00 00:00:00.000";
    digits::<4>(&mut b[0..], y.clamp(0, 9999));
    digits::<2>(&mut b[5..], i64::from(mo));
    digits::<2>(&mut b[8..], i64::from(d));
    b[10] = date_time_sep;
    digits::<2>(&mut b[11..], in_day / 3_600_000);
    digits::<2>(&mut b[14..], in_day / 60_000 % 60);
    digits::<2>(&mut b[17..], in_day / 1000 % 60);
    digits::<3>(&mut b[20..], in_day % 1000);
    b
}

fn ascii(bytes: &[u8]) -> &str {
    // Only ASCII digits and separators are ever written.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// `2026-11-25T05:30:19.123000`: New York local time with microseconds (the event time has
/// millisecond precision, so the last three digits are zero).
pub fn new_york_micros(time_ms: i64) -> String {
    let local = datetime_bytes(time_ms + new_york_offset_secs(time_ms) * 1000, b'T');
    let mut s = String::with_capacity(26);
    s.push_str(ascii(&local));
    s.push_str("000");
    s
}

/// `2026-11-25 10:30:19.123`: UTC with milliseconds.
pub fn utc_millis(time_ms: i64) -> String {
    ascii(&datetime_bytes(time_ms, b' ')).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_utc(ms: i64, fmt: &str) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("in range")
            .format(fmt)
            .to_string()
    }

    #[test]
    fn matches_chrono_on_many_instants() {
        let mut ms = 0_i64;
        while ms < 4_102_444_800_000 {
            assert_eq!(utc_millis(ms), chrono_utc(ms, "%Y-%m-%d %H:%M:%S%.3f"));
            let ny = chrono::DateTime::from_timestamp_millis(ms)
                .expect("in range")
                .with_timezone(&New_York)
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string();
            assert_eq!(new_york_micros(ms), ny);
            ms += 7_777_777_777;
        }
    }

    #[test]
    fn daylight_saving_boundaries() {
        // 2026-03-08 07:00:00 UTC is 03:00 EDT (clocks jumped from 02:00 EST).
        assert_eq!(
            new_york_micros(1_772_953_200_000),
            "2026-03-08T03:00:00.000000"
        );
        assert_eq!(
            new_york_micros(1_772_953_199_999),
            "2026-03-08T01:59:59.999000"
        );
        // 2026-11-01 06:00:00 UTC is 01:00 EST, the second 1 a.m. of the night.
        assert_eq!(
            new_york_micros(1_793_512_800_000),
            "2026-11-01T01:00:00.000000"
        );
        assert_eq!(utc_millis(0), "1970-01-01 00:00:00.000");
    }
}
