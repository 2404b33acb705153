//! One module per top-level command.

pub mod audit;
pub mod bootstrap;
pub mod cipher;
pub mod dev;
pub mod operator;
pub mod policy;
pub mod secret;
pub mod status;
