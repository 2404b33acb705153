//! spike
