//! RFC 3339 timestamps as the cloud APIs write them, to milliseconds since
//! the Unix epoch: AWS `2018-05-08T16:46:19.000Z` (moto adds microseconds),
//! GCE `2024-03-04T05:10:11.123-08:00`. Small and pure so the crate does not
//! need a date library for one conversion.

/// Milliseconds since the Unix epoch, or why `s` is not an RFC 3339 time.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 timestamp ({why})");
    // ASCII only, so every byte index below is a char boundary.
    if !s.is_ascii() {
        return Err(bad("non-ASCII character"));
    }
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        let part = &s[from..to];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("non-digit in a number"));
        }
        part.parse::<i64>().map_err(|_| bad("number out of range"))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    // 60 is a leap second; it folds into the next minute like most libraries do.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time of day"));
    }

    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("empty fraction"));
        }
        // Keep milliseconds, drop the finer digits.
        for (i, c) in frac.bytes().take(digits.min(3)).enumerate() {
            millis += i64::from(c - b'0') * 10i64.pow(2 - i as u32);
        }
        rest = &frac[digits..];
    }

    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':' =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let base = s.len() - 6;
            let (oh, om) = (num(base + 1, base + 3)?, num(base + 4, base + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad("bad UTC offset"));
            }
            sign * (oh * 60 + om)
        }
        _ => return Err(bad("expected Z or a ±HH:MM offset")),
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| bad("before 1970"))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_gce_and_moto_forms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        // date -u -d 2018-05-08T16:46:19Z +%s  => 1525797979
        assert_eq!(
            parse_rfc3339_ms("2018-05-08T16:46:19.000Z"),
            Ok(1_525_797_979_000)
        );
        // date -u -d 2026-11-22T02:58:48Z +%s => 1795316328; microseconds are cut to ms.
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T02:58:48.292968Z"),
            Ok(1_795_316_328_292)
        );
        // 05:10:11.123-08:00 is 13:10:11.123Z; date -u -d 2024-03-04T13:10:11Z +%s => 1709557811
        assert_eq!(
            parse_rfc3339_ms("2024-03-04T05:10:11.123-08:00"),
            Ok(1_709_557_811_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-03-04T18:40:11.5+05:30"),
            Ok(1_709_557_811_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000)
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for s in [
            "",
            "2018-05-08",
            "2018-05-08T16:46:19",
            "2018-13-08T16:46:19Z",
            "2019-02-29T00:00:00Z",
            "2018-05-08T24:00:00Z",
            "2018-05-08T16:46:19.Z",
            "2018-05-08T16:46:19+0100",
            "1969-12-31T23:59:59Z",
            "２０18-05-08T16:46:19Z",
            "2018-05-08T16:46:19.000Zjunk",
        ] {
            assert!(parse_rfc3339_ms(s).is_err(), "{s:?} must be rejected");
        }
    }

    proptest::proptest! {
        // Cloud answers are external input: no string may panic the parser.
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&s);
        }

        #[test]
        fn never_panics_near_valid_forms(
            s in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9+:-]{0,5})?(Z|[+-][0-9]{2}:[0-9]{2}|.{0,4})"
        ) {
            let _ = parse_rfc3339_ms(&s);
        }
    }
}
