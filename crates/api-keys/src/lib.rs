//! Switchboard api-keys layer (in progress).
