//! Days since the Unix epoch to proleptic Gregorian dates, in integer
//! arithmetic (Howard Hinnant's `civil_from_days`), for formatting many
//! timestamps without a calendar library call per value.

pub const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// The (year, month 1–12, day 1–31) of `days` since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The day of the year, 1–366.
pub fn day_of_year(year: i64, month: u32, day: u32) -> u32 {
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = u32::from(month > 2 && is_leap(year));
    BEFORE[month as usize - 1] + leap + day
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate};

    #[test]
    fn agrees_with_chrono_every_day_from_1600_to_2400() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut date = NaiveDate::from_ymd_opt(1600, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2400, 1, 1).unwrap();
        while date < end {
            let days = (date - epoch).num_days();
            let (y, m, d) = civil_from_days(days);
            assert_eq!((y, m, d), (date.year() as i64, date.month(), date.day()));
            assert_eq!(day_of_year(y, m, d), date.ordinal());
            date = date.succ_opt().unwrap();
        }
    }
}
