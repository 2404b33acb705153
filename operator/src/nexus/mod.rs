//! Declared secrets and policies, written to Nexus with compare-and-set.
