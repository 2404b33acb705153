//! Nexus's `/v1` request bodies (`spike_core::api`): the first byte picks a request type, the
//! rest is its JSON body. Reading never panics; an accepted body serializes to JSON that reads
//! back to a value serializing the same (types with equality compare equal too).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_core::api::{
    BatchPutRequest, CreateTokenRequest, DecryptRequest, EncryptRequest, ExplainRequest,
    InitRequest, PutPolicyRequest, PutSecretRequest, RecoverRequest, RekeyRequest, ResolveRequest,
    RestoreRequest, ShareBody, UpdateScopeRequest, VersionsRequest,
};

/// Reads `body` as `T`; an accepted body round-trips.
fn check<T: Serialize + DeserializeOwned>(body: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(body).ok()?;
    Some(common::json_round_trip(&v))
}

/// Like [`check`], and the value read back equals the first.
fn check_eq<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        assert_eq!(common::json_round_trip(&v), v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 15 {
        0 => {
            if let Some(r) = check::<PutSecretRequest>(body) {
                // Every key of an accepted put is a key of its map, values intact.
                let again: PutSecretRequest =
                    serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
                assert_eq!(
                    serde_json::to_string(&again.data).unwrap(),
                    serde_json::to_string(&r.data).unwrap()
                );
            }
        }
        1 => check_eq::<UpdateScopeRequest>(body),
        2 => {
            check::<VersionsRequest>(body);
        }
        3 => check_eq::<PutPolicyRequest>(body),
        4 => check_eq::<InitRequest>(body),
        5 => {
            check::<BatchPutRequest>(body);
        }
        6 => check_eq::<ExplainRequest>(body),
        7 => {
            check::<EncryptRequest>(body);
        }
        8 => check_eq::<DecryptRequest>(body),
        9 => check_eq::<RecoverRequest>(body),
        10 => {
            check::<RestoreRequest>(body);
        }
        11 => check_eq::<RekeyRequest>(body),
        12 => {
            check::<CreateTokenRequest>(body);
        }
        13 => {
            check::<ResolveRequest>(body);
        }
        _ => {
            // The keeper's share body, read and written through its wiping helpers.
            if let Ok(s) = ShareBody::from_json(body.to_vec()) {
                let json = s.to_json().expect("a share body serializes");
                let back = ShareBody::from_json(json.to_vec()).expect("and reads back");
                assert_eq!(*back.to_json().unwrap(), *json);
            }
        }
    }
});
