//! The names one backend instance derives from its schema: the quoted
//! schema for SQL, the `LISTEN`/`NOTIFY` channel, and the advisory-lock
//! namespace. Every SQL statement is rendered once per backend from a
//! template with these filled in, so statements stay schema-qualified even
//! on a caller's own connection (see [`crate::PostgresBackend::push_in`]).

/// The longest schema name accepted, in bytes. PostgreSQL identifiers and
/// channel names stop at 63 bytes, and the channels add a suffix (at most
/// 13 bytes, `.resq_delayed`).
pub const MAX_SCHEMA_LEN: usize = 48;

/// PostgreSQL's system schemas that do not start with `pg_`.
const SYSTEM_SCHEMAS: &[&str] = &["information_schema"];

/// Why `schema` cannot be used as resq's schema name, if it cannot: it must
/// be 1 to [`MAX_SCHEMA_LEN`] bytes of lowercase ASCII letters, digits and
/// `_`, must not start with a digit, and must not be one of PostgreSQL's
/// system schemas: `information_schema`, or a name starting with `pg_`
/// (`pg_catalog`, `pg_toast*`, `pg_temp*` and any other PostgreSQL may add,
/// as it reserves the prefix). resq creates its tables in its schema, and a
/// system schema is no place for them.
pub fn schema_problem(schema: &str) -> Option<String> {
    if schema.is_empty() {
        return Some("the schema name is empty".into());
    }
    if schema.len() > MAX_SCHEMA_LEN {
        return Some(format!(
            "the schema name {schema:?} is longer than {MAX_SCHEMA_LEN} bytes"
        ));
    }
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Some(format!(
            "the schema name {schema:?} may only hold lowercase ASCII letters, digits and `_`"
        ));
    }
    if schema.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return Some(format!("the schema name {schema:?} must not start with a digit"));
    }
    if schema.starts_with("pg_") {
        return Some(format!(
            "the schema name {schema:?} is a PostgreSQL system schema (it starts with `pg_`, which PostgreSQL reserves); choose another schema for resq's tables"
        ));
    }
    if SYSTEM_SCHEMAS.contains(&schema) {
        return Some(format!(
            "the schema name {schema:?} is a PostgreSQL system schema; choose another schema for resq's tables"
        ));
    }
    None
}

/// A schema's derived names. Build it only from a name that passed
/// [`schema_problem`].
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// The schema, unquoted.
    pub(crate) schema: String,
    /// The schema as a quoted SQL identifier.
    pub(crate) quoted: String,
    /// The `NOTIFY` channel that wakes this schema's workers.
    pub(crate) channel: String,
    /// The `NOTIFY` channel that wakes this schema's leading scheduler
    /// when an item is scheduled to fall due before every other.
    pub(crate) delayed_channel: String,
    /// The `NOTIFY` channel that carries cancel requests (the member of
    /// the worker whose job is to stop).
    pub(crate) cancel_channel: String,
    /// The first key of this schema's advisory locks.
    pub(crate) lock_ns: i32,
}

impl Names {
    /// The names for `schema`.
    pub(crate) fn new(schema: &str) -> Names {
        Names {
            schema: schema.to_owned(),
            quoted: format!("\"{schema}\""),
            channel: format!("{schema}.resq_jobs"),
            delayed_channel: format!("{schema}.resq_delayed"),
            cancel_channel: format!("{schema}.resq_stop"),
            lock_ns: lock_namespace(schema),
        }
    }

    /// Fills a statement template: `{s}` is the quoted schema, `{ch}` the
    /// channel, `{dch}` the delayed channel, `{cancel_ch}` the cancel
    /// channel and `{ns}` the advisory-lock namespace.
    pub(crate) fn render(&self, template: &str) -> String {
        template
            .replace("{s}", &self.quoted)
            .replace("{cancel_ch}", &self.cancel_channel)
            .replace("{ch}", &self.channel)
            .replace("{dch}", &self.delayed_channel)
            .replace("{ns}", &self.lock_ns.to_string())
    }
}

/// A stable 32-bit key for a schema's advisory locks (FNV-1a), so that two
/// schemas in one database do not share queue locks.
fn lock_namespace(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in "resq:".bytes().chain(schema.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_rules() {
        assert_eq!(schema_problem("resq"), None);
        assert_eq!(schema_problem("_x9"), None);
        assert_eq!(schema_problem(&"a".repeat(MAX_SCHEMA_LEN)), None);
        for bad in [
            "",
            "Resq",
            "re-sq",
            "9x",
            "pg_x",
            "pg_catalog",
            "information_schema",
            "a b",
            "\"x\"",
            "é",
        ] {
            assert!(schema_problem(bad).is_some(), "{bad:?}");
        }
        assert!(schema_problem(&"a".repeat(MAX_SCHEMA_LEN + 1)).is_some());
    }

    #[test]
    fn renders_templates() {
        let n = Names::new("jobs_a");
        assert_eq!(
            n.render("SELECT pg_notify('{ch}', x) FROM {s}.t, ({ns})"),
            format!(
                "SELECT pg_notify('jobs_a.resq_jobs', x) FROM \"jobs_a\".t, ({})",
                n.lock_ns
            )
        );
        assert_ne!(Names::new("a").lock_ns, Names::new("b").lock_ns);
    }
}
