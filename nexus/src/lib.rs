//! spike-nexus
