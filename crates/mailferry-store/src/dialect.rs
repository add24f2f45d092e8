//! What really differs between SQLite and PostgreSQL, as SQL fragments. Everything else is
//! one text for both: parameters are `$n` (SQLite reads `$1` as parameter 1 too), upserts
//! are `ON CONFLICT … DO UPDATE`, counts use `FILTER (WHERE …)`, casts are `CAST(… AS …)`.
//!
//! Times: PostgreSQL keeps TIMESTAMPTZ on the database clock; SQLite keeps RFC 3339 UTC text
//! with milliseconds, which sorts as time. Both hand every time out in that text form
//! (`2024-05-01T12:00:00.000Z`): each time column is read through [`Dialect::text`].
//! JSON columns are JSONB on PostgreSQL and TEXT on SQLite: written and read as text through
//! [`Dialect::cast`].

/// A backend's dialect, implemented by the store type itself ([`PgStore`](crate::PgStore),
/// [`SqliteStore`](crate::SqliteStore)) so the shared implementations say `Self::NOW`.
pub(crate) trait Dialect {
    /// sqlx's database type.
    type Db: sqlx::Database;
    /// True for PostgreSQL, where many processes write at once: read-then-write
    /// transactions lock their rows ([`lock`]), and queue claims are serialised by an
    /// advisory lock. False for SQLite, whose single writer serialises everything; such
    /// transactions start with `BEGIN IMMEDIATE` instead, holding the write lock from their
    /// first read ([`begin_write`]).
    const MANY_WRITERS: bool;
    /// The current time as a column value (PostgreSQL: the transaction's time; SQLite: the
    /// statement's).
    const NOW: &'static str;
    /// The clock read now, as text that `CAST($n AS TIMESTAMPTZ)` (PostgreSQL) takes back
    /// exactly: for a transaction that compares several times with one instant.
    const CLOCK: &'static str;
    /// The expiry of a released source claim: sorts before every time.
    const RELEASED: &'static str;
    /// The substring search, as `{STRPOS}(haystack, needle) > 0` (no wildcards).
    const STRPOS: &'static str;
    /// "The job's labels hold key = value", around the two bound parameters.
    const LABEL: [&'static str; 3];
    /// The time column `col` as RFC 3339 UTC text with milliseconds, named `col`.
    fn text(col: &str) -> String;
    /// The cast appended to a text parameter bound for a typed PostgreSQL column (`jsonb`,
    /// `timestamptz`), or to a JSON column read out as `text`; SQLite stores both as TEXT
    /// and needs none.
    fn cast(pg_type: &str) -> String;
    /// The clock now plus `secs` seconds (a bound f64; NULL gives NULL).
    fn after(secs: &str) -> String;
    /// Seconds from the time `expr` to now, as a float (NULL for NULL).
    fn secs_since(expr: &str) -> String;
}

/// A row-locking clause (`FOR UPDATE`, `FOR SHARE`, `… SKIP LOCKED`) where rows are
/// locked; nothing on SQLite ([`Dialect::MANY_WRITERS`]).
pub(crate) fn lock<D: Dialect>(clause: &str) -> &str {
    if D::MANY_WRITERS {
        clause
    } else {
        ""
    }
}

/// How a transaction that reads and then writes what it read starts.
pub(crate) fn begin_write<D: Dialect>() -> &'static str {
    if D::MANY_WRITERS {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    }
}

/// A transaction of the backend `D`.
pub(crate) type Tx<D> = sqlx::Transaction<'static, <D as Dialect>::Db>;

/// A statement of the backend `D`, its parameters bound.
pub(crate) type Statement<'q, D> =
    sqlx::query::Query<'q, <D as Dialect>::Db, <<D as Dialect>::Db as sqlx::Database>::Arguments<'q>>;
