//! Byte-stuffing (server) and unstuffing (client), and the exact size rule.
//! (Being written: see the issue for the contract.)
