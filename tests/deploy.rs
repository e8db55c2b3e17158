//! The deployment files are what they claim: the Kubernetes manifests validate offline against
//! the API's schemas (`kubernetes-validate --strict`, from PyPI; `.ci/run` installs it), the
//! configs inside them and beside the Compose file load with `bifrost --check`, the Compose file
//! is valid for `docker-compose`, and the proxy Deployment's shutdown timing covers its preStop
//! sleep and the proxy's drain. Without `kubernetes-validate` or `docker-compose` these tests
//! fail, saying so.

mod common;

use common::Run;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_serde::Value;

/// The proxy's drain on SIGTERM (src/runtime/shutdown.rs: workers answer what they accepted,
/// then leave, 5 s at most).
const DRAIN_SECONDS: u64 = 5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "deployment, service, pdb, configmap, sidecar: {files:?}"
    );
    files
}

/// `kubernetes-validate --strict FILE`: its success and output.
fn validate(file: &Path) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate cannot run ({e}): pip install kubernetes-validate")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every document of a multi-document YAML file.
fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.split("\n---\n")
        .map(|doc| {
            yaml_serde::from_str::<Value>(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()))
        })
        .collect()
}

#[test]
fn kubernetes_manifests_validate_offline_and_strictly() {
    for file in manifests() {
        let (ok, out) = validate(&file);
        assert!(ok, "{} does not validate:\n{out}", file.display());
    }
    // The validator is strict: a field the API does not have fails (so a typo cannot pass).
    let bad = std::env::temp_dir().join(format!("bifrost-bad-{}.yaml", common::free_port()));
    let deployment = std::fs::read_to_string(root().join("deploy/kubernetes/deployment.yaml"))
        .expect("deployment.yaml");
    let typo = deployment.replace("readinessProbe:", "readynessProbe:");
    assert_ne!(typo, deployment);
    std::fs::write(&bad, typo).expect("temp file");
    let (ok, out) = validate(&bad);
    let _ = std::fs::remove_file(&bad);
    assert!(!ok, "a misspelt field passed validation:\n{out}");
}

#[test]
fn the_configs_in_the_manifests_and_beside_the_compose_file_load() {
    let mut checked = 0;
    for file in manifests() {
        for doc in documents(&file) {
            if doc["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            let Some(config) = doc["data"]["bifrost.yaml"].as_str() else {
                continue;
            };
            let path =
                std::env::temp_dir().join(format!("bifrost-cm-{}.yaml", common::free_port()));
            // The token file the Deployment mounts from its Secret is not here: point the
            // check at a stand-in.
            let token = std::env::temp_dir().join(format!("bifrost-token-{}", common::free_port()));
            std::fs::write(&token, "a-token-for-the-check").expect("token file");
            {
                use std::os::unix::fs::PermissionsExt;
                let private = std::fs::Permissions::from_mode(0o600);
                std::fs::set_permissions(&token, private).expect("chmod");
            }
            let config = config.replace(
                "/etc/bifrost/token/admin-token",
                &token.display().to_string(),
            );
            std::fs::write(&path, config).expect("temp config");
            let run = Run::to_exit(&["--check", "--config", &path.display().to_string()]);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&token);
            assert!(
                run.status().success(),
                "the config of {} does not load:\n{}",
                file.display(),
                run.stderr()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "the proxy's and the sidecar's configs: {checked}"
    );
    let compose_config = root().join("deploy/compose-bifrost.yaml");
    let run = Run::to_exit(&["--check", "--config", &compose_config.display().to_string()]);
    assert!(run.status().success(), "{}", run.stderr());
}

#[test]
fn the_compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", "deploy/compose.yaml", "config", "-q"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose cannot run ({e}): apt-get install docker-compose")
        });
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_deployment_gives_the_prestop_sleep_and_the_drain_their_time() {
    let file = root().join("deploy/kubernetes/deployment.yaml");
    let doc = documents(&file).remove(0);
    let spec = &doc["spec"]["template"]["spec"];
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let container = &spec["containers"][0];
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    assert!(
        grace > pre_stop + DRAIN_SECONDS,
        "terminationGracePeriodSeconds {grace} must exceed the preStop sleep {pre_stop} s and \
         the {DRAIN_SECONDS} s drain"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/ready")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/health")
    );
}
