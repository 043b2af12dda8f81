//! The server session state machine.
