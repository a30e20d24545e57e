//! Switchboard response-masker layer (in progress).
