//! The custom resources of `spike.spiffe.io/v1alpha1`.
