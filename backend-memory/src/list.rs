//! Redis list semantics on a `VecDeque`: `LRANGE` index windows and `LREM`.

use std::collections::VecDeque;

/// The half-open index window `LRANGE start stop` selects in a list of
/// `len` items, or `None` when it selects nothing.
///
/// Redis rules: negative indexes count from the tail (`-1` is the last);
/// after that, a negative `start` becomes 0, and the window is empty when
/// `start > stop` or `start >= len`; a `stop` past the end is clamped.
pub(crate) fn window(len: usize, start: i64, stop: i64) -> Option<std::ops::Range<usize>> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    // `len` is non-negative, so adding a negative index cannot overflow.
    let mut start = if start < 0 { len + start } else { start };
    let stop = if stop < 0 { len + stop } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    let stop = stop.min(len - 1);
    // Both bounds now lie in 0..len, which came from a usize.
    let start = usize::try_from(start).ok()?;
    let stop = usize::try_from(stop).ok()?;
    Some(start..stop + 1)
}

/// The items `LRANGE start stop` returns, cloned.
pub(crate) fn range(list: &VecDeque<String>, start: i64, stop: i64) -> Vec<String> {
    match window(list.len(), start, stop) {
        Some(w) => list.range(w).cloned().collect(),
        None => Vec::new(),
    }
}

/// The `LREM` rule as a keep-predicate for a list that holds `matches`
/// items equal to `value`: called once per item, head first, it returns
/// false for the items `LREM value count` removes.
pub(crate) fn lrem_keep(matches: usize, value: &str, count: i64) -> impl FnMut(&str) -> bool + '_ {
    let wanted = if count == 0 {
        matches
    } else {
        usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX).min(matches)
    };
    let mut skip = if count >= 0 { 0 } else { matches - wanted };
    let mut drop = wanted;
    move |item: &str| {
        if drop == 0 || item != value {
            return true;
        }
        if skip > 0 {
            skip -= 1;
            return true;
        }
        drop -= 1;
        false
    }
}

/// `LREM`: removes items equal to `value`; `count` 0 removes all, > 0 that
/// many from the head, < 0 that many from the tail. Returns how many went.
pub(crate) fn remove(list: &mut VecDeque<String>, value: &str, count: i64) -> u64 {
    let before = list.len();
    let matches = list.iter().filter(|item| *item == value).count();
    let mut keep = lrem_keep(matches, value, count);
    list.retain(|item| keep(item));
    (before - list.len()) as u64
}
