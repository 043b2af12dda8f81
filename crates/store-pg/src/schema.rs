//! The tables. Created on first use (under an advisory lock, so frontends starting
//! together do not race; a database that has them is not touched again: no DDL lock
//! on live tables when a frontend starts); `correio_schema` records the version for
//! later migrations.
//!
//! - `correio_mailbox`: one row per mailbox; `next_uid` only grows, so a UID (and the
//!   UIDL made from it) is never given twice; `last_login` (Unix ms) for LOGIN-DELAY.
//! - `correio_body`: one row per distinct stored body (SHA-256 of the stored bytes),
//!   written before any message row points to it; `touched` keeps the collector away
//!   from a body a delivery is about to use.
//! - `correio_body_chunk`: the bytes of a body kept in the database, 256 KiB a row.
//! - `correio_message`: the messages, with the CRLF wire size stored at delivery (so
//!   STAT, LIST and UIDL of a mailbox are one index scan) and the first retrieval
//!   time (Unix s) for EXPIRE. The foreign key to `correio_body` makes the collector
//!   fail rather than remove a body a new message row points to.
//! - `correio_lease`: who holds a mailbox for a POP3 session, until when (the
//!   database's clock).

/// The current schema version.
pub const VERSION: i32 = 1;

/// The DDL, run in one transaction.
pub const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS correio_schema (version integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS correio_mailbox (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        next_uid bigint NOT NULL DEFAULT 1,
        last_login bigint
    )",
    "CREATE TABLE IF NOT EXISTS correio_body (
        hash bytea PRIMARY KEY,
        size bigint NOT NULL,
        in_db boolean NOT NULL,
        touched timestamptz NOT NULL DEFAULT now()
    )",
    "CREATE TABLE IF NOT EXISTS correio_body_chunk (
        hash bytea NOT NULL REFERENCES correio_body (hash) ON DELETE CASCADE,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (hash, seq)
    )",
    "CREATE TABLE IF NOT EXISTS correio_message (
        mailbox_id bigint NOT NULL REFERENCES correio_mailbox (id),
        uid bigint NOT NULL,
        uidl text NOT NULL,
        size bigint NOT NULL,
        wire_size bigint NOT NULL,
        body_hash bytea NOT NULL REFERENCES correio_body (hash),
        delivered bigint NOT NULL,
        first_retrieved bigint,
        PRIMARY KEY (mailbox_id, uid),
        UNIQUE (mailbox_id, uidl)
    )",
    // A chunk row up to 8 KB stays in the table, uncompressed (mail bodies are mostly
    // compressed or base64 already: PostgreSQL's default would move a 4 KB body out
    // to the TOAST table and cost two more index lookups per read); larger chunks
    // go out of line, still uncompressed (no decompression on every read).
    "ALTER TABLE correio_body_chunk SET (toast_tuple_target = 8160)",
    "ALTER TABLE correio_body_chunk ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE INDEX IF NOT EXISTS correio_message_body ON correio_message (body_hash)",
    "CREATE TABLE IF NOT EXISTS correio_lease (
        mailbox_id bigint PRIMARY KEY REFERENCES correio_mailbox (id),
        owner text NOT NULL,
        expires timestamptz NOT NULL
    )",
    // Every session inserts and deletes one lease row: a small table with many dead
    // rows, vacuumed by count rather than by share of the table.
    "ALTER TABLE correio_lease SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)",
];
