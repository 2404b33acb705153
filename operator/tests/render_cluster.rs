//! Renders every object of two sample `SpikeCluster`s (the defaults; and a gateway, SPIRE
//! registrations and a hostPath identity) to YAML files, one object per file, so a schema
//! checker (`kubernetes-validate --strict`) can check them as the API server would.
//!
//! The files go to `$SPIKE_RENDER_DIR` when it is set (CI then validates that directory),
//! else to a fresh temporary directory that the test checks and removes.

use std::path::PathBuf;

use spike_operator::build::cluster_objects;
use spike_operator::crd::SpikeCluster;
use spike_operator::validate::validate_cluster;

fn cluster(name: &str, spec: serde_json::Value) -> SpikeCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "spike.spiffe.io/v1alpha1",
        "kind": "SpikeCluster",
        "metadata": {
            "name": name,
            "namespace": "spike-system",
            "uid": "0b7f5d36-8e7e-4d8f-a0f4-4c6f1f1d2e3a",
        },
        "spec": spec,
    }))
    .expect("a sample SpikeCluster")
}

#[test]
fn every_object_renders_to_a_yaml_file() {
    let (dir, keep) = match std::env::var_os("SPIKE_RENDER_DIR") {
        Some(d) => (PathBuf::from(d), true),
        None => (
            std::env::temp_dir().join(format!("spike-render-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let samples = [
        cluster("spike", serde_json::json!({"trustDomain": "example.org"})),
        cluster(
            "full",
            serde_json::json!({
                "trustDomain": "example.org",
                "keepers": {"replicas": 5, "threshold": 3,
                            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}},
                "nexus": {"storage": {"size": "2Gi", "storageClassName": "fast"}},
                "identity": {"hostPath": {"path": "/run/spire/agent-sockets", "socketName": "agent.sock"}},
                "clusterSpiffeIds": {"enabled": true, "className": "spire"},
                "gateway": {"name": "edge", "replicas": 2, "forwardProxy": true, "routes": [
                    {"name": "groq", "upstream": "https://api.groq.com/openai/v1",
                     "rules": [{"method": "POST", "pathPrefix": "/chat/completions", "action": "read"}]},
                    {"name": "internal", "upstream": "https://llm.ai.svc:8443",
                     "allowNetworks": ["10.0.0.0/8"], "ca": {"name": "internal-ca", "key": "ca.pem"}}
                ]},
            }),
        ),
    ];
    let mut written = 0;
    for c in &samples {
        let valid = validate_cluster(c).unwrap();
        let objects = cluster_objects(c, &valid).unwrap();
        for obj in objects.to_json().unwrap() {
            let kind = obj["kind"].as_str().unwrap().to_ascii_lowercase();
            let name = obj["metadata"]["name"].as_str().unwrap();
            let yaml = serde_saphyr::to_string(&obj).unwrap();
            let path = dir.join(format!("{kind}-{name}.yaml"));
            assert!(!path.exists() || keep, "two objects named {name}");
            std::fs::write(&path, &yaml).unwrap();
            // What was written reads back as the same object.
            let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(back, obj, "{}", path.display());
            written += 1;
        }
    }
    assert_eq!(written, 14 + 22);
    if !keep {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
