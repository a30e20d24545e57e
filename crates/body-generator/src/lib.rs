//! Switchboard body-generator layer (in progress).
