//! Switchboard policies layer (in progress).
