//! Five-field cron expressions, evaluated in UTC: `minute hour day-of-month month day-of-week`.
//! Each field takes `*`, a value, a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, and lists of
//! these; months and weekdays also by name (`jan`, `mon`); weekday 0 or 7 is Sunday. As in Vixie
//! cron, when both day fields are restricted a day matching either fires.

use std::fmt;

/// Longest search for the next firing, in days (a 29 February can be eight years away).
const SEARCH_DAYS: i64 = 10 * 366;
const MINUTE_MS: i64 = 60_000;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(min + i as u32);
    }
    match text.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("{what} {text:?} is not in {min}-{max}")),
    }
}

/// One field as a bit set, and whether it started with `*`.
fn field(
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(s) if s >= 1 => (range, s),
                _ => return Err(format!("{what} step {step:?} must be a positive number")),
            },
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                value(a, what, min, max, names)?,
                value(b, what, min, max, names)?,
            );
            if a > b {
                return Err(format!("{what} range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range, what, min, max, names)?;
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = low;
        while v <= high {
            bits |= 1u64 << v;
            v += step;
        }
    }
    Ok((bits, text.starts_with('*')))
}

impl Cron {
    /// Parses `text` (five fields separated by spaces).
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "cron {text:?}: five fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        let wrap = |e: String| format!("cron {text:?}: {e}");
        let (minutes, _) = field(minute, "minute", 0, 59, &[]).map_err(wrap)?;
        let (hours, _) = field(hour, "hour", 0, 23, &[]).map_err(wrap)?;
        let (days, any_day) = field(day, "day of month", 1, 31, &[]).map_err(wrap)?;
        let (months, _) = field(month, "month", 1, 12, &MONTHS).map_err(wrap)?;
        let (mut weekdays, any_weekday) =
            field(weekday, "day of week", 0, 7, &WEEKDAYS).map_err(wrap)?;
        if weekdays & (1u64 << 7) != 0 {
            weekdays = (weekdays & !(1u64 << 7)) | 1;
        }
        let cron = Cron {
            text: fields.join(" "),
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        };
        if cron.next_after(0).is_none() {
            return Err(format!("cron {text:?} never matches a date"));
        }
        Ok(cron)
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1u64 << day) != 0;
        let by_weekday = self.weekdays & (1u64 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (false, false) => by_day || by_weekday,
        }
    }

    /// The first minute (unix ms) strictly after `after_ms` that matches; `None` if none does
    /// within ten years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut minute = after_ms.div_euclid(MINUTE_MS) + 1;
        let limit = minute + SEARCH_DAYS * 1440;
        while minute < limit {
            let day_number = minute.div_euclid(1440);
            let (year, month, day) = civil_from_days(day_number);
            if self.months & (1u64 << month) == 0 {
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                minute = days_from_civil(y, m, 1) * 1440;
                continue;
            }
            let weekday = (day_number + 4).rem_euclid(7) as u32;
            if !self.day_matches(day, weekday) {
                minute = (day_number + 1) * 1440;
                continue;
            }
            let of_day = minute.rem_euclid(1440);
            if self.hours & (1u64 << (of_day / 60)) == 0 {
                minute = day_number * 1440 + (of_day / 60 + 1) * 60;
                continue;
            }
            if self.minutes & (1u64 << (of_day % 60)) == 0 {
                minute += 1;
                continue;
            }
            return Some(minute * MINUTE_MS);
        }
        None
    }

    /// The latest firing at or before `now_ms` that is at or after `from_ms` (the ticks missed
    /// between them coalesce into this one).
    pub fn latest_between(&self, from_ms: i64, now_ms: i64) -> Option<i64> {
        let mut tick = self.next_after(from_ms - 1)?;
        if tick > now_ms {
            return None;
        }
        for _ in 0..100_000 {
            match self.next_after(tick) {
                Some(next) if next <= now_ms => tick = next,
                _ => return Some(tick),
            }
        }
        Some(tick)
    }
}

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix ms of a UTC date and time (tests and documentation).
pub fn utc_ms(year: i64, month: u32, day: u32, hour: u32, minute: u32) -> i64 {
    (days_from_civil(year, month, day) * 1440 + i64::from(hour) * 60 + i64::from(minute))
        * MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 59, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(utc_ms(2026, 12, 5, 16, 0), 1_796_486_400_000);
    }

    #[test]
    fn next_firings() {
        let every_15 = Cron::parse("*/15 * * * *").unwrap();
        let t = utc_ms(2026, 1, 1, 10, 7);
        assert_eq!(every_15.next_after(t), Some(utc_ms(2026, 1, 1, 10, 15)));
        assert_eq!(
            every_15.next_after(utc_ms(2026, 1, 1, 10, 15)),
            Some(utc_ms(2026, 1, 1, 10, 30))
        );
        let weekdays_9 = Cron::parse("0 9 * * mon-fri").unwrap();
        // 2026-01-03 is a Saturday.
        assert_eq!(
            weekdays_9.next_after(utc_ms(2026, 1, 2, 9, 0)),
            Some(utc_ms(2026, 1, 5, 9, 0))
        );
        let leap = Cron::parse("30 6 29 feb *").unwrap();
        assert_eq!(
            leap.next_after(utc_ms(2026, 3, 1, 0, 0)),
            Some(utc_ms(2028, 2, 29, 6, 30))
        );
        // Both day fields restricted: either matches (the 1st, or any Sunday).
        let either = Cron::parse("0 0 1 * 0").unwrap();
        assert_eq!(
            either.next_after(utc_ms(2026, 1, 1, 0, 0)),
            Some(utc_ms(2026, 1, 4, 0, 0))
        );
        let sunday7 = Cron::parse("0 12 * * 7").unwrap();
        assert_eq!(
            sunday7.next_after(utc_ms(2026, 1, 1, 0, 0)),
            Some(utc_ms(2026, 1, 4, 12, 0))
        );
        let list = Cron::parse("5,10-12 0 * * *").unwrap();
        assert_eq!(
            list.next_after(utc_ms(2026, 1, 1, 0, 5)),
            Some(utc_ms(2026, 1, 1, 0, 10))
        );
        assert_eq!(
            every_15.latest_between(utc_ms(2026, 1, 1, 10, 15), utc_ms(2026, 1, 1, 11, 20)),
            Some(utc_ms(2026, 1, 1, 11, 15))
        );
        assert_eq!(
            every_15.latest_between(utc_ms(2026, 1, 1, 10, 16), utc_ms(2026, 1, 1, 10, 29)),
            None
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (text, why) in [
            ("* * * *", "five fields"),
            ("60 * * * *", "minute \"60\""),
            ("* 24 * * *", "hour"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("* * * foo *", "month"),
            ("0 0 30 2 *", "never"),
        ] {
            let err = Cron::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
