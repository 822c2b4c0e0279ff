//! Discord's markdown: what we send and what we receive (being written).
