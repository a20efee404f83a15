//! RFC 3339 UTC timestamps (`2026-11-22T03:11:41.123Z`) formatted into a
//! stack buffer with integer arithmetic, two digits at a time: no
//! allocation and no `fmt` machinery. Every response that carries metadata
//! writes three of them and every audit line one, so they are on the hot
//! path.
//!
//! Times before 1970 are written as the epoch and times after 9999 as the
//! last millisecond of 9999; neither can come from the store, whose times
//! are "now" plus a TTL bounded by `--max-ttl`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Digits after the decimal point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fraction {
    /// `.123`
    Millis,
    /// `.123456`
    Micros,
}

/// A formatted timestamp.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    bytes: [u8; LONGEST],
    len: usize,
}

/// `2026-11-22T03:11:41.123456Z`
const LONGEST: usize = 27;

/// 9999-12-31T23:59:59 UTC, the last second RFC 3339's four-digit year holds.
const LAST_SECOND: u64 = 253_402_300_799;

impl Rfc3339 {
    /// The timestamp's bytes (ASCII), for the writers that copy them as
    /// they are: no UTF-8 check, no escaping.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The timestamp as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and `-T:.Z` are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `time` since the epoch, clamped to the range both formats can write.
fn since_epoch(time: SystemTime) -> Duration {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    if since.as_secs() > LAST_SECOND {
        Duration::new(LAST_SECOND, 999_999_999)
    } else {
        since
    }
}

/// An HTTP date (RFC 9110 §5.6.7, IMF-fixdate), `Sun, 06 Nov 1994
/// 08:49:37 GMT`: the `Expires` header of every GET.
#[derive(Clone, Copy)]
pub struct HttpDate([u8; HTTP_DATE_LEN]);

const HTTP_DATE_LEN: usize = 29;

impl HttpDate {
    /// The date's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HttpDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

/// Formats `time` (whole seconds) as an HTTP date, with the same table as
/// [`rfc3339`]: `httpdate` goes through `fmt` and a `String`, about 600
/// instructions a GET.
pub fn http_date(time: SystemTime) -> HttpDate {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let seconds = since_epoch(time).as_secs();
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days);
    let of_day = seconds % 86_400;
    let mut bytes = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    // 1970-01-01 was a Thursday.
    bytes[..3].copy_from_slice(WEEKDAYS[((days + 4) % 7) as usize]);
    bytes[8..11].copy_from_slice(MONTHS[((month + 11) % 12) as usize]);
    let mut put = |at: usize, value: u64| put_pair(&mut bytes, at, value);
    put(5, day);
    put(12, year / 100);
    put(14, year);
    put(17, of_day / 3600);
    put(20, of_day / 60 % 60);
    put(23, of_day % 60);
    HttpDate(bytes)
}

/// Formats `time` in UTC with `fraction`.
pub fn rfc3339(time: SystemTime, fraction: Fraction) -> Rfc3339 {
    let since = since_epoch(time);
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut bytes = [0u8; LONGEST];
    // The layout is fixed, so every field has its place: two digits at a
    // time from a table, no loop and no division by a variable.
    let mut put = |at: usize, value: u64| put_pair(&mut bytes, at, value);
    put(0, year / 100);
    put(2, year);
    put(5, month);
    put(8, day);
    put(11, of_day / 3600);
    put(14, of_day / 60 % 60);
    put(17, of_day % 60);
    let len = match fraction {
        Fraction::Millis => {
            let millis = u64::from(since.subsec_millis());
            put(21, millis);
            bytes[20] = b'0' + (millis / 100) as u8;
            24
        }
        Fraction::Micros => {
            let micros = u64::from(since.subsec_micros());
            put(20, micros / 10_000);
            put(22, micros / 100);
            put(24, micros);
            27
        }
    };
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        bytes[at] = separator;
    }
    bytes[len - 1] = b'Z';
    Rfc3339 { bytes, len }
}

/// Writes the last two digits of `value` at `at`.
fn put_pair(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 2].copy_from_slice(&PAIRS[(value % 100) as usize]);
}

/// `"00"` to `"99"`.
const PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut value = 0;
    while value < 100 {
        pairs[value] = [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8];
        value += 1;
    }
    pairs
};

/// Year, month (1-12) and day (1-31) of the `days`th day after 1970-01-01,
/// by Howard Hinnant's `civil_from_days` for the proleptic Gregorian
/// calendar (all unsigned here: no date before 1970 reaches it).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    /// Seconds spread over 1970..9999: the edges of a day, a leap day and
    /// its neighbours, the last second, and 20,000 from a xorshift.
    fn samples() -> Vec<u64> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut samples: Vec<u64> = vec![
            0,
            59,
            86_399,
            86_400,
            68_169_600,
            951_782_400,
            4_107_542_399,
            LAST_SECOND,
        ];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            samples.push(state % (LAST_SECOND + 1));
        }
        samples
    }

    #[test]
    fn known_instants() {
        assert_eq!(
            rfc3339(at(0, 0), Fraction::Millis).as_str(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(at(951_782_400, 7_000_000), Fraction::Millis).as_str(),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            rfc3339(at(1_795_000_000, 123_456_789), Fraction::Micros).as_str(),
            "2026-11-18T11:06:40.123456Z"
        );
    }

    #[test]
    fn http_dates_agree_with_httpdate_across_the_range() {
        assert_eq!(
            http_date(at(784_111_777, 0)).as_bytes(),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        for seconds in samples() {
            let time = at(seconds, 999_999_999);
            assert_eq!(
                http_date(time).as_bytes(),
                httpdate::fmt_http_date(time).as_bytes(),
                "{seconds}"
            );
        }
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)).as_bytes(),
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            http_date(at(LAST_SECOND + 86_400, 0)).as_bytes(),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn out_of_range_times_are_clamped() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5), Fraction::Millis).as_str(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(at(LAST_SECOND + 86_400 * 400, 0), Fraction::Micros).as_str(),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn agrees_with_humantime_across_the_range() {
        for seconds in samples() {
            let time = at(seconds, (seconds % 1_000_000_000) as u32);
            assert_eq!(
                rfc3339(time, Fraction::Millis).as_str(),
                humantime::format_rfc3339_millis(time).to_string(),
                "{seconds}"
            );
            let micros = rfc3339(time, Fraction::Micros);
            assert_eq!(
                micros.as_str(),
                humantime::format_rfc3339_micros(time).to_string(),
                "{seconds}"
            );
            assert_eq!(micros.as_bytes(), micros.as_str().as_bytes());
        }
    }
}
