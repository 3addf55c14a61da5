//! Clocks and how times are written: the kernel's monotonic clock that every
//! event carries, wall time, and their formats in the views.

use std::time::{SystemTime, UNIX_EPOCH};

pub const SEC: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns()`,
/// which no std type exposes as a number.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives
    // on this stack frame; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * SEC + ts.tv_nsec as u64
}

/// Wall time now, in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `[   1.000250]`: seconds since a first event, as the text view prints them.
pub fn relative(ts_ns: u64, first_ns: u64) -> String {
    let d = ts_ns.saturating_sub(first_ns);
    format!("[{:4}.{:06}]", d / SEC, (d / 1000) % 1_000_000)
}

/// `20261127T101500Z` for now (UTC).
pub fn utc_stamp() -> String {
    format_utc(realtime_ns() / SEC)
}

/// `20261127T101500Z` for `secs` since the Unix epoch (UTC).
pub fn format_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_clocks_read_as_people_write_them() {
        assert_eq!(format_utc(0), "19700101T000000Z");
        assert_eq!(format_utc(951_782_400), "20000229T000000Z");
        assert_eq!(format_utc(1_795_774_500), "20261127T101500Z");
        assert_eq!(relative(3 * SEC + 250_000, 2 * SEC), "[   1.000250]");
        assert_eq!(relative(0, 5), "[   0.000000]", "never negative");
        let (a, b) = (monotonic_ns(), monotonic_ns());
        assert!(a > 0 && b >= a);
    }
}
