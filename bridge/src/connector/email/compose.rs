//! Outbound mail (being written).
