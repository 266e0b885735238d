//! Query-string conventions shared by list and report endpoints (README §4):
//! `page`/`limit` pagination and `from`/`to` accepting RFC 3339 or
//! `YYYY-MM-DD`.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page size.
pub const MAX_LIMIT: i64 = 100;

/// `?page&limit`, both optional.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PageParams {
    /// 1-based page (1).
    pub page: Option<i64>,
    /// Items per page (20, at most 100).
    pub limit: Option<i64>,
}

impl PageParams {
    /// Checked `(page, limit)`.
    pub fn resolve(self) -> Result<(i64, i64), ApiError> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=1_000_000).contains(&page) {
            return Err(ApiError::invalid_field("page", "must be 1 or more"));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be from 1 to {MAX_LIMIT}"),
            ));
        }
        Ok((page, limit))
    }
}

/// Parses an instant: RFC 3339, or a date meaning its start (or, with
/// `end_of_day`, the start of the next day, so `to=2026-11-29` includes
/// the whole of that day).
pub fn parse_instant(field: &str, raw: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let d = if end_of_day {
            d.succ_opt().unwrap_or(d)
        } else {
            d
        };
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(ApiError::invalid_field(
        field,
        "must be an RFC 3339 time or a YYYY-MM-DD date",
    ))
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
}

impl DateRange {
    /// `?from&to`; either may be missing. Without `to`: now; without
    /// `from`: `default_days` before `to`. `from` after `to` is a 400.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        default_days: i64,
    ) -> Result<Self, ApiError> {
        // An empty parameter (`?from=`) counts as absent.
        let (from, to) = (from.filter(|f| !f.is_empty()), to.filter(|t| !t.is_empty()));
        let to = match to {
            Some(raw) => parse_instant("to", raw, true)?,
            None => Utc::now(),
        };
        let from = match from {
            Some(raw) => parse_instant("from", raw, false)?,
            None => to - Duration::days(default_days),
        };
        if from > to {
            return Err(ApiError::invalid_field("from", "must not be after to"));
        }
        Ok(DateRange { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_rfc3339_times_are_accepted() {
        let t = parse_instant("from", "2026-11-29T10:00:00Z", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-29T10:00:00+00:00");
        let d = parse_instant("from", "2026-11-29", false).unwrap();
        assert_eq!(d.to_rfc3339(), "2026-11-29T00:00:00+00:00");
        let end = parse_instant("to", "2026-11-29", true).unwrap();
        assert_eq!(end.to_rfc3339(), "2026-11-30T00:00:00+00:00");
        let err = parse_instant("to", "yesterday", true).unwrap_err();
        assert!(err.to_string().starts_with("to:"));
    }

    #[test]
    fn ranges_default_and_refuse_inversion() {
        let r = DateRange::parse(None, Some("2026-11-29"), 30).unwrap();
        assert_eq!(r.to - r.from, Duration::days(30));
        assert!(DateRange::parse(Some("2026-12-01"), Some("2026-11-01"), 30).is_err());
        let empty = DateRange::parse(Some(""), Some(""), 7).unwrap();
        assert_eq!(empty.to - empty.from, Duration::days(7));
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(PageParams::default().resolve().unwrap(), (1, 20));
        let bad = PageParams {
            page: Some(0),
            limit: None,
        };
        assert!(bad.resolve().is_err());
        let bad = PageParams {
            page: None,
            limit: Some(101),
        };
        assert!(bad.resolve().is_err());
    }
}
