//! spike-keeper
