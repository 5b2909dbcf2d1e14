//! Durations as users write them: `90s`, `15m`, `24h`, `7d`, plain seconds, or ISO-8601 (`PT1H`,
//! `P2D`, `P1DT12H`), the form ACR uses for sync windows and message TTLs.

use std::time::Duration;

/// Parses a duration; the error says what was wrong.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.starts_with('P') || t.starts_with('p') {
        return parse_iso8601(t);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 30s, 15m, 24h, 7d or PT1H)"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}' (use s, m, h or d)"
            ))
        }
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too long"))
}

/// ISO-8601 durations with days, hours, minutes and seconds (no years or months: ambiguous).
fn parse_iso8601(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not an ISO-8601 duration like PT1H, P2D or P1DT30M");
    let body = &s[1..];
    let (date, time) = match body.find(['T', 't']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut total: u64 = 0;
    let mut any = false;
    for (part, units) in [(Some(date), "DW"), (time, "HMS")] {
        let Some(mut rest) = part else { continue };
        if units == "HMS" && rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u64 = rest[..end].parse().map_err(|_| bad())?;
            let unit = rest[end..]
                .chars()
                .next()
                .ok_or_else(bad)?
                .to_ascii_uppercase();
            if !units.contains(unit) {
                return Err(bad());
            }
            let mult = match unit {
                'W' => 604_800,
                'D' => 86_400,
                'H' => 3600,
                'M' => 60,
                _ => 1,
            };
            total = n
                .checked_mul(mult)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            any = true;
            rest = &rest[end + 1..];
        }
    }
    if !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_units() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
    }

    #[test]
    fn iso8601() {
        assert_eq!(parse_duration("PT1H").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("P2D").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("P1DT12H30M5S").unwrap().as_secs(), 131_405);
        assert_eq!(parse_duration("PT90S").unwrap().as_secs(), 90);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "P",
            "PT",
            "1y",
            "h",
            "-5s",
            "P1Y",
            "PT1D",
            "P1H",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(s).is_err(), "{s} should be rejected");
        }
    }
}
