//! End-to-end test harness: starts real SPIKE processes on loopback.
