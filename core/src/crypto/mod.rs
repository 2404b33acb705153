//! Crypto: key hierarchy, envelope, Shamir.
