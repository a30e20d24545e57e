//! Switchboard header-modifier layer (in progress).
