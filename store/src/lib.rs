//! spike-store
