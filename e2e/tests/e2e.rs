//! End-to-end tests: real processes, real sockets, real mTLS. One test binary, one module
//! per area (rustls-style), so the processes' binaries are found once.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "e2e/access.rs"]
mod access;
#[path = "e2e/at_rest.rs"]
mod at_rest;
#[path = "e2e/audit_log.rs"]
mod audit_log;
#[path = "e2e/backup.rs"]
mod backup;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/bootstrap.rs"]
mod bootstrap;
#[path = "e2e/cipher.rs"]
mod cipher;
#[path = "e2e/client_refusals.rs"]
mod client_refusals;
#[path = "e2e/contract.rs"]
mod contract;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/fault_ledger.rs"]
mod fault_ledger;
#[path = "e2e/first_hour.rs"]
mod first_hour;
#[path = "e2e/gateway.rs"]
mod gateway;
#[path = "e2e/gateway_audit.rs"]
mod gateway_audit;
#[path = "e2e/gateway_names.rs"]
mod gateway_names;
#[path = "e2e/import.rs"]
mod import;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/operator_scope.rs"]
mod operator_scope;
#[path = "e2e/oracle.rs"]
mod oracle;
#[path = "e2e/quickstart.rs"]
mod quickstart;
#[path = "e2e/recovery.rs"]
mod recovery;
#[path = "e2e/rollback.rs"]
mod rollback;
#[path = "e2e/rotation_faults.rs"]
mod rotation_faults;
#[path = "e2e/rotation_revokes.rs"]
mod rotation_revokes;
#[path = "e2e/seed.rs"]
mod seed;
#[path = "e2e/tokens.rs"]
mod tokens;
#[path = "e2e/workload_api.rs"]
mod workload_api;
