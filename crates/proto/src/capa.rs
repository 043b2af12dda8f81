//! The capability model (RFC 2449 CAPA).
