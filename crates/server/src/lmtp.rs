//! The LMTP listener (RFC 2033).
