//! Switchboard jwt-claims layer (in progress).
