//! spike-agent
