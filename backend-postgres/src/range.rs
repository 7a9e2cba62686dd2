//! Redis `LRANGE` windows over a table ordered by `id`, for queues and the
//! failed list.
//!
//! Non-negative bounds (and "from `start` to the end") need no row count:
//! they are an `OFFSET`/`LIMIT`. Bounds counted from the tail use a
//! statement that counts the rows and computes the window in the same
//! snapshot, with arithmetic that cannot overflow for any `i64` bounds.

/// How to read an `LRANGE start stop` window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// It is empty whatever the list holds.
    Empty,
    /// `OFFSET offset LIMIT limit` (`None`: no limit).
    Slice {
        /// Rows to skip.
        offset: i64,
        /// Rows to return at most.
        limit: Option<i64>,
    },
    /// Needs the row count: use the counting statement with the raw bounds.
    FromTail,
}

/// The window for `LRANGE start stop`.
pub(crate) fn window(start: i64, stop: i64) -> Window {
    match (start >= 0, stop >= 0) {
        (true, true) if start > stop => Window::Empty,
        (true, true) => Window::Slice {
            offset: start,
            limit: Some(stop.saturating_sub(start).saturating_add(1)),
        },
        (true, false) if stop == -1 => Window::Slice {
            offset: start,
            limit: None,
        },
        _ => Window::FromTail,
    }
}

/// The counting statement's window arithmetic, for a `FROM`/`WHERE` of the
/// list's rows (`{rows}`), the column to return (`{col}`) and the bound
/// parameters `{start}`/`{stop}`. Redis rules: a negative index counts from
/// the tail, a negative start is then clamped to 0, a stop past the end to
/// the last item, and the window is empty when start > stop or start >= len.
macro_rules! from_tail_sql {
    ($col:literal, $rows:literal, $start:literal, $stop:literal) => {
        concat!(
            "WITH n AS (SELECT count(*) AS len FROM ",
            $rows,
            "), w AS (SELECT len, ",
            "CASE WHEN ",
            $start,
            "::bigint < 0 THEN GREATEST(len + ",
            $start,
            "::bigint, 0) ELSE ",
            $start,
            "::bigint END AS lo, ",
            "CASE WHEN ",
            $stop,
            "::bigint < 0 THEN len + ",
            $stop,
            "::bigint ELSE LEAST(",
            $stop,
            "::bigint, len - 1) END AS hi FROM n) ",
            "SELECT ",
            $col,
            " FROM ",
            $rows,
            " ORDER BY id OFFSET (SELECT lo FROM w) ",
            "LIMIT (SELECT CASE WHEN lo > hi OR lo >= len THEN 0 ELSE hi - lo + 1 END FROM w)"
        )
    };
}
pub(crate) use from_tail_sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(window(0, -1), Window::Slice { offset: 0, limit: None });
        assert_eq!(
            window(1, 3),
            Window::Slice {
                offset: 1,
                limit: Some(3)
            }
        );
        assert_eq!(window(3, 1), Window::Empty);
        assert_eq!(
            window(0, i64::MAX),
            Window::Slice {
                offset: 0,
                limit: Some(i64::MAX)
            }
        );
        assert_eq!(window(-2, -1), Window::FromTail);
        assert_eq!(window(0, -2), Window::FromTail);
        assert_eq!(window(i64::MIN, i64::MAX), Window::FromTail);
    }
}
