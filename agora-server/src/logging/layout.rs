//! Go reference-time layouts (`02-01-2006 15:04:05.000-0700`), compiled once into a
//! list of elements and rendered for the `%Date`/`%UTCDate` verbs of a [`Format`].
//!
//! Owns only the date text: it never reads a clock; the time comes in as an argument.
//!
//! [`Format`]: super::Format

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

/// A compiled Go reference-time layout (the reference time is
/// `Mon Jan 2 15:04:05 MST 2006`, i.e. `01/02 03:04:05PM '06 -0700`).
#[derive(Debug, Clone)]
pub struct Layout {
    elems: Vec<Elem>,
}

#[derive(Debug, Clone, PartialEq)]
enum Elem {
    Lit(String),
    /// `2006`
    LongYear,
    /// `06`
    Year,
    /// `January`
    LongMonth,
    /// `Jan`
    Month,
    /// `1`
    NumMonth,
    /// `01`
    ZeroMonth,
    /// `Monday`
    LongWeekDay,
    /// `Mon`
    WeekDay,
    /// `2`
    Day,
    /// `_2`
    UnderDay,
    /// `02`
    ZeroDay,
    /// `__2`
    UnderYearDay,
    /// `002`
    ZeroYearDay,
    /// `15`
    Hour,
    /// `3`
    Hour12,
    /// `03`
    ZeroHour12,
    /// `4`
    Minute,
    /// `04`
    ZeroMinute,
    /// `5`
    Second,
    /// `05`
    ZeroSecond,
    /// `PM`
    PM,
    /// `pm`
    Pm,
    /// `MST` (only where the zone is UTC: a `FixedOffset` has no abbreviation)
    TzName,
    /// `.000` or `,000`: `digits` fixed digits after `sep`.
    Frac0 {
        sep: char,
        digits: usize,
    },
    /// `.999` or `,999`: up to `digits` digits, trailing zeros (and the separator, if
    /// nothing is left) removed.
    Frac9 {
        sep: char,
        digits: usize,
    },
    /// `-0700`, `-07:00`, `-07`, `-070000`, `-07:00:00`, and the `Z…` forms, which
    /// print `Z` for UTC.
    Zone {
        z: bool,
        colon: bool,
        minutes: bool,
        seconds: bool,
    },
}

impl Layout {
    /// Compiles a Go layout, splitting it the way Go's `nextStdChunk` does. `utc` says
    /// whether it will render UTC times (the only ones whose zone name is known).
    pub fn compile(src: &str, utc: bool) -> Result<Layout, String> {
        let b = src.as_bytes();
        let mut elems = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        let starts_lower = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_lowercase());
        while i < b.len() {
            let at = |s: &str| src[i..].starts_with(s);
            let (elem, len) = match b[i] {
                b'J' if at("January") => (Some(Elem::LongMonth), 7),
                b'J' if at("Jan") && !starts_lower(i + 3) => (Some(Elem::Month), 3),
                b'M' if at("Monday") => (Some(Elem::LongWeekDay), 6),
                b'M' if at("Mon") && !starts_lower(i + 3) => (Some(Elem::WeekDay), 3),
                b'M' if at("MST") => {
                    if !utc {
                        return Err(format!(
                            "layout {src:?}: the zone abbreviation MST is only available in %UTCDate; use -0700 or Z07:00 for local time"
                        ));
                    }
                    (Some(Elem::TzName), 3)
                }
                b'0' if b.get(i + 1).is_some_and(|c| (b'1'..=b'6').contains(c)) => (
                    Some(match b[i + 1] {
                        b'1' => Elem::ZeroMonth,
                        b'2' => Elem::ZeroDay,
                        b'3' => Elem::ZeroHour12,
                        b'4' => Elem::ZeroMinute,
                        b'5' => Elem::ZeroSecond,
                        _ => Elem::Year,
                    }),
                    2,
                ),
                b'0' if at("002") => (Some(Elem::ZeroYearDay), 3),
                b'1' if at("15") => (Some(Elem::Hour), 2),
                b'1' => (Some(Elem::NumMonth), 1),
                b'2' if at("2006") => (Some(Elem::LongYear), 4),
                b'2' => (Some(Elem::Day), 1),
                // `_2006` is a literal `_` followed by the year.
                b'_' if at("_2006") => (None, 1),
                b'_' if at("_2") => (Some(Elem::UnderDay), 2),
                b'_' if at("__2") => (Some(Elem::UnderYearDay), 3),
                b'3' => (Some(Elem::Hour12), 1),
                b'4' => (Some(Elem::Minute), 1),
                b'5' => (Some(Elem::Second), 1),
                b'P' if at("PM") => (Some(Elem::PM), 2),
                b'p' if at("pm") => (Some(Elem::Pm), 2),
                b'-' | b'Z' => {
                    let z = b[i] == b'Z';
                    let tail = &src[i + 1..];
                    let zone = |colon, minutes, seconds| Elem::Zone {
                        z,
                        colon,
                        minutes,
                        seconds,
                    };
                    if tail.starts_with("070000") {
                        (Some(zone(false, true, true)), 7)
                    } else if tail.starts_with("07:00:00") {
                        (Some(zone(true, true, true)), 9)
                    } else if tail.starts_with("0700") {
                        (Some(zone(false, true, false)), 5)
                    } else if tail.starts_with("07:00") {
                        (Some(zone(true, true, false)), 6)
                    } else if tail.starts_with("07") {
                        (Some(zone(false, false, false)), 3)
                    } else {
                        (None, 1)
                    }
                }
                sep @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                    let ch = b[i + 1];
                    let mut j = i + 1;
                    while b.get(j) == Some(&ch) {
                        j += 1;
                    }
                    // Only a fractional second if the run of digits ends here.
                    if b.get(j).is_some_and(u8::is_ascii_digit) {
                        // As Go: the separator is literal, the digits are read again.
                        (None, 1)
                    } else {
                        let digits = j - i - 1;
                        if digits > 9 {
                            return Err(format!(
                                "layout {src:?}: more than 9 fractional-second digits"
                            ));
                        }
                        let sep = sep as char;
                        (
                            Some(if ch == b'0' {
                                Elem::Frac0 { sep, digits }
                            } else {
                                Elem::Frac9 { sep, digits }
                            }),
                            j - i,
                        )
                    }
                }
                _ => (None, src[i..].chars().next().map_or(1, char::len_utf8)),
            };
            match elem {
                Some(e) => {
                    if !lit.is_empty() {
                        elems.push(Elem::Lit(std::mem::take(&mut lit)));
                    }
                    elems.push(e);
                }
                None => lit.push_str(&src[i..i + len]),
            }
            i += len;
        }
        if !lit.is_empty() {
            elems.push(Elem::Lit(lit));
        }
        Ok(Layout { elems })
    }

    /// Appends `t` rendered by this layout to `out`. `utc` says whether `t` is UTC (for
    /// `MST`).
    pub fn render(&self, t: &DateTime<FixedOffset>, utc: bool, out: &mut String) {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        const DAYS: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let month = MONTHS[t.month0() as usize];
        let day = DAYS[t.weekday().num_days_from_monday() as usize];
        let h12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        // chrono puts a leap second in nanoseconds >= 1e9; Go has none.
        let nanos = t.nanosecond().min(999_999_999);
        for e in &self.elems {
            let _ = match e {
                Elem::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Elem::LongYear => write!(out, "{:04}", t.year()),
                Elem::Year => write!(out, "{:02}", t.year().rem_euclid(100)),
                Elem::LongMonth => write!(out, "{month}"),
                Elem::Month => write!(out, "{}", &month[..3]),
                Elem::NumMonth => write!(out, "{}", t.month()),
                Elem::ZeroMonth => write!(out, "{:02}", t.month()),
                Elem::LongWeekDay => write!(out, "{day}"),
                Elem::WeekDay => write!(out, "{}", &day[..3]),
                Elem::Day => write!(out, "{}", t.day()),
                Elem::UnderDay => write!(out, "{:>2}", t.day()),
                Elem::ZeroDay => write!(out, "{:02}", t.day()),
                Elem::UnderYearDay => write!(out, "{:>3}", t.ordinal()),
                Elem::ZeroYearDay => write!(out, "{:03}", t.ordinal()),
                Elem::Hour => write!(out, "{:02}", t.hour()),
                Elem::Hour12 => write!(out, "{h12}"),
                Elem::ZeroHour12 => write!(out, "{h12:02}"),
                Elem::Minute => write!(out, "{}", t.minute()),
                Elem::ZeroMinute => write!(out, "{:02}", t.minute()),
                Elem::Second => write!(out, "{}", t.second()),
                Elem::ZeroSecond => write!(out, "{:02}", t.second()),
                Elem::PM => write!(out, "{}", if t.hour() >= 12 { "PM" } else { "AM" }),
                Elem::Pm => write!(out, "{}", if t.hour() >= 12 { "pm" } else { "am" }),
                Elem::TzName => write!(out, "{}", if utc { "UTC" } else { "" }),
                Elem::Frac0 { sep, digits } => {
                    let s = format!("{nanos:09}");
                    write!(out, "{sep}{}", &s[..*digits])
                }
                Elem::Frac9 { sep, digits } => {
                    let s = format!("{nanos:09}");
                    let s = s[..*digits].trim_end_matches('0');
                    if s.is_empty() {
                        Ok(())
                    } else {
                        write!(out, "{sep}{s}")
                    }
                }
                Elem::Zone {
                    z,
                    colon,
                    minutes,
                    seconds,
                } => {
                    let off = t.offset().local_minus_utc();
                    if *z && off == 0 {
                        out.push('Z');
                        Ok(())
                    } else {
                        let sign = if off < 0 { '-' } else { '+' };
                        let a = off.unsigned_abs();
                        let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
                        let c = if *colon { ":" } else { "" };
                        let _ = write!(out, "{sign}{h:02}");
                        if *minutes {
                            let _ = write!(out, "{c}{m:02}");
                        }
                        if *seconds {
                            let _ = write!(out, "{c}{s:02}");
                        }
                        Ok(())
                    }
                }
            };
        }
    }
}
