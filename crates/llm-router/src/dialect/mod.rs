//! Wire formats spoken both by clients and by vendors, each readable and
//! writable in both directions.

pub(crate) mod anthropic;
pub(crate) mod openai_chat;
