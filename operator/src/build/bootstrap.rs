//! The bootstrap Job: `spike bootstrap` once, which creates the root key and has Nexus send
//! every keeper its share. It talks to Nexus only (Nexus, not bootstrap, reaches the keepers).

use k8s_openapi::api::batch::v1::{Job, JobSpec};

use crate::names;

use super::Ctx;
use super::meta::{Component, labels};
use super::pod::{self, PodInput};
use super::settings::BOOTSTRAP_FILE;

/// Pod restarts before the Job counts as failed: bootstrap itself waits for Nexus
/// ([`BOOTSTRAP_WAIT`]), so a failure past that is worth a condition, not endless retries.
pub const BACKOFF_LIMIT: i32 = 6;
/// How long each run waits for Nexus and the keepers to come up.
pub const BOOTSTRAP_WAIT: &str = "5m";

/// The Job. It has no `ttlSecondsAfterFinished`: the controller reads its completion to set
/// `Bootstrapped`. `spike bootstrap` is idempotent (a second run changes nothing), so a
/// restart after a half-finished run is safe. Its pod template is immutable once created: a
/// change of `keepers` needs the controller to replace the Job, not apply over it.
pub fn job(ctx: &Ctx<'_>) -> Job {
    let k = &ctx.spec.keepers;
    let template = pod::template(
        PodInput {
            labels: labels(ctx.name, Component::Bootstrap),
            service_account: names::bootstrap(ctx.name),
            container: "bootstrap",
            binary: "spike",
            settings_file: BOOTSTRAP_FILE,
            args: vec![
                "bootstrap".into(),
                "--shares".into(),
                k.replicas.to_string(),
                "--threshold".into(),
                k.threshold.to_string(),
                "--wait".into(),
                BOOTSTRAP_WAIT.into(),
            ],
            ports: Vec::new(),
            readiness: None,
            liveness: None,
            resources: None,
            volumes: Vec::new(),
            mounts: Vec::new(),
            restart_policy: Some("OnFailure"),
        },
        ctx,
    );
    Job {
        metadata: ctx.meta(names::bootstrap(ctx.name), Component::Bootstrap),
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            ttl_seconds_after_finished: None,
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};

    #[test]
    fn bootstrap_runs_once_with_the_keepers_shares_and_threshold() {
        let mut c = sample();
        c.spec.keepers.replicas = 5;
        c.spec.keepers.threshold = 3;
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let job = job(&ctx).spec.unwrap();
        assert_eq!(job.backoff_limit, Some(BACKOFF_LIMIT));
        assert!(job.ttl_seconds_after_finished.is_none());
        let pod = job.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let c0 = &pod.containers[0];
        assert_eq!(c0.command.as_ref().unwrap()[0], "/usr/local/bin/spike");
        assert_eq!(
            c0.args.as_ref().unwrap().join(" "),
            "--config /etc/spike/bootstrap.toml bootstrap --shares 5 --threshold 3 --wait 5m"
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("spike-bootstrap"));
    }
}
