//! One module per top-level command.

pub mod audit;
pub mod bootstrap;
pub mod cipher;
pub mod completions;
pub mod dev;
pub mod dev_gateway;
pub mod import;
pub mod operator;
pub mod policy;
pub mod secret;
pub mod seed;
pub mod status;
pub mod token;
