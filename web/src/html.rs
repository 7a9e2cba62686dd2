//! HTML building blocks: escaping, URL encoding, the page layout and the
//! POST forms. Every value that comes from the store goes through
//! [`escape`] (text and attributes) or [`enc_path`]/[`enc_query`] (URLs).

use std::fmt::Write as _;

/// Escapes `text` for HTML text and for double- or single-quoted
/// attribute values: `&`, `<`, `>`, `"` and `'` become character
/// references, so store values (job arguments, error text, queue names
/// written by other clients) cannot open a tag or leave an attribute.
///
/// ```
/// assert_eq!(resq_web::escape("<script>alert('x')</script>"),
///            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `text` as one path segment (everything but the RFC 3986
/// unreserved characters).
pub(crate) fn enc_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Encodes `text` as a query-string value.
pub(crate) fn enc_query(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What a page needs to know about the request it answers.
pub(crate) struct Ctx {
    /// The path the dashboard is mounted under, no trailing slash.
    pub(crate) prefix: String,
    pub(crate) read_only: bool,
    pub(crate) csrf: String,
    pub(crate) title: String,
}

impl Ctx {
    /// An absolute link to `path` (which starts with `/`) in the dashboard.
    /// The overview (`/`) is the mount path itself when mounted: axum's
    /// `nest` routes `/admin/jobs`, not `/admin/jobs/`, to it.
    pub(crate) fn link(&self, path: &str) -> String {
        if path == "/" && !self.prefix.is_empty() {
            return escape(&self.prefix);
        }
        escape(&format!("{}{path}", self.prefix))
    }

    /// A POST form to `action` with hidden `fields` and a submit button, or
    /// nothing in read-only mode. `confirm` adds a browser confirmation.
    pub(crate) fn form(&self, action: &str, fields: &[(&str, &str)], button: &str, confirm: Option<&str>) -> String {
        if self.read_only {
            return String::new();
        }
        let mut out = format!(
            "<form method=\"post\" class=\"inline\" action=\"{}\"",
            self.link(action)
        );
        if let Some(question) = confirm {
            let _ = write!(out, " data-confirm=\"{}\"", escape(question));
        }
        out.push('>');
        out.push_str(&self.csrf_field());
        for (name, value) in fields {
            let _ = write!(
                out,
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(name),
                escape(value)
            );
        }
        let _ = write!(out, "<button type=\"submit\">{}</button></form>", escape(button));
        out
    }

    /// The hidden CSRF input of a form.
    pub(crate) fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            crate::guard::CSRF_FIELD,
            escape(&self.csrf)
        )
    }

    /// A whole page: header, navigation, `body`. A `live` page's main
    /// element is refetched as a fragment every 2 s by the script.
    pub(crate) fn page(&self, heading: &str, body: &str, live: bool) -> String {
        let nav = [
            ("/", "Overview"),
            ("/delayed", "Delayed"),
            ("/failed", "Failed"),
            ("/workers", "Workers"),
            ("/locks", "Locks"),
        ]
        .iter()
        .map(|(path, label)| format!("<a href=\"{}\">{label}</a>", self.link(path)))
        .collect::<Vec<_>>()
        .join(" ");
        let mode = if self.read_only {
            "<span class=\"badge\">read-only</span>"
        } else {
            ""
        };
        let live_attr = if live { " data-live=\"2000\"" } else { "" };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · {heading}</title>\
             <link rel=\"stylesheet\" href=\"{css}\"></head>\
             <body><header><strong>{title}</strong> {mode}<nav>{nav}</nav></header>\
             <main id=\"main\"{live_attr}>{body}</main>\
             <script src=\"{js}\"></script></body></html>\n",
            title = escape(&self.title),
            heading = escape(heading),
            css = self.link("/assets/style.css"),
            js = self.link("/assets/app.js"),
        )
    }
}

/// A table with `head` cells and pre-rendered `rows` (each a `<tr>`).
pub(crate) fn table(head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", escape(empty));
    }
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str(r);
    }
    out.push_str("</tbody></table>");
    out
}

/// Pager links for a listing at `offset` of `total` with `limit` rows, to
/// `base` (a path with a query string ending in `?` or `&`).
pub(crate) fn pager(ctx: &Ctx, base: &str, offset: u64, limit: u64, total: u64) -> String {
    let limit = limit.max(1);
    let shown_to = offset.saturating_add(limit).min(total);
    let mut out = format!(
        "<p class=\"pager\">{}–{} of {}",
        if total == 0 { 0 } else { offset + 1 },
        shown_to,
        total
    );
    if offset > 0 {
        let prev = offset.saturating_sub(limit);
        let _ = write!(
            out,
            " <a href=\"{}\">← previous</a>",
            ctx.link(&format!("{base}offset={prev}"))
        );
    }
    if shown_to < total {
        let _ = write!(
            out,
            " <a href=\"{}\">next →</a>",
            ctx.link(&format!("{base}offset={shown_to}"))
        );
    }
    out.push_str("</p>");
    out
}

/// Epoch ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn time_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => ms.to_string(),
    }
}

/// Seconds, rounded for display.
pub(crate) fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("a & b ' c"), "a &amp; b &#39; c");
        assert_eq!(escape("&lt;"), "&amp;lt;");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        let attr = format!("<input value=\"{}\">", escape("\" onfocus=\"alert(1)"));
        assert!(!attr.contains("\" onfocus"));
    }

    #[test]
    fn encodes_urls() {
        assert_eq!(enc_path("a b/c?<d>"), "a%20b%2Fc%3F%3Cd%3E");
        assert_eq!(enc_query("a b&c=d"), "a+b%26c%3Dd");
    }

    #[test]
    fn read_only_forms_are_empty() {
        let mut ctx = Ctx {
            prefix: "/admin".into(),
            read_only: true,
            csrf: "t".into(),
            title: "x".into(),
        };
        assert_eq!(ctx.form("/locks/delete", &[("key", "k")], "Delete", None), "");
        ctx.read_only = false;
        let form = ctx.form("/locks/delete", &[("key", "<k>")], "Delete", None);
        assert!(form.contains("action=\"/admin/locks/delete\""));
        assert!(form.contains("value=\"&lt;k&gt;\""));
        assert!(form.contains("name=\"csrf\" value=\"t\""));
    }
}
