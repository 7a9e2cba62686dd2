//! Printing: tables for people, JSON for scripts, progress bars and
//! confirmation prompts on a terminal.

use crate::{CliError, CliResult};
use comfy_table::{presets, Table};
use std::io::{BufRead, IsTerminal, Write};

/// Prints `value` as pretty JSON on standard output.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Runtime(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A table with `headers` and `rows`, ready to print.
pub fn table<R, C>(headers: &[&str], rows: R) -> Table
where
    R: IntoIterator<Item = Vec<C>>,
    C: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY);
    t.set_header(headers.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    t
}

/// `text` cut to `max` characters with an ellipsis, on one line.
pub fn short(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `value` or `-`.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A Unix-ms time as RFC 3339 (UTC, seconds).
pub fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A progress bar on standard error when it is a terminal and the output
/// is not JSON; hidden otherwise.
pub fn progress(total: u64, json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    // The template is a constant that parses; fall back to the default style anyway.
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} scanned, {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Asks for confirmation of a change: yes with `--yes`; a usage error when
/// standard input is not a terminal; else a y/N question on standard error.
pub fn confirm(yes: bool, question: &str) -> CliResult<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "refusing to change without --yes (stdin is not a terminal)".into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Runtime(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
