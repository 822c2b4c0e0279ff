//! Inbound mail (being written).
