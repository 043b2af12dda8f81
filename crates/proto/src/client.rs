//! The client session state machine.
