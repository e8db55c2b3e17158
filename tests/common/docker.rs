//! Docker for the container tests: the `docker` command, the project's images (built once per
//! test binary by the scripts under deploy/), private networks and named containers, each
//! removed when dropped. Without Docker every helper panics, saying so.

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use super::free_port;

const IMAGE: &str = "bifrost:latest";

/// Runs `docker` with `args`; panics, naming the command, when it cannot run.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("docker {args:?}: cannot run docker ({e}): install Docker and start its daemon")
        })
}

/// `docker args`, which must succeed; its standard output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `deploy/<script>`, which must succeed (each image builder is run once per test binary).
fn build_with(script: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/deploy/{script}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run deploy/{script}: {e}"));
    assert!(
        out.status.success(),
        "deploy/{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the image once per test binary (deploy/build-image.sh, as the README says).
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            info.status.success(),
            "the Docker daemon is not reachable: {}",
            String::from_utf8_lossy(&info.stderr)
        );
        build_with("build-image.sh");
    });
    IMAGE
}

/// Builds the memcached image once per test binary (deploy/build-memcached-image.sh).
pub fn memcached_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_with("build-memcached-image.sh");
    });
    "bifrost-memcached:latest"
}

/// A private network with a subnet of its own (so containers can be given addresses), removed
/// when dropped.
pub struct Network {
    pub name: String,
    /// The first three octets of its /24.
    pub prefix: String,
}

impl Network {
    pub fn create() -> Network {
        let port = free_port();
        let name = format!("bifrost-test-{port}");
        let prefix = format!("10.{}.{}", 100 + port % 100, port / 100 % 250);
        let subnet = format!("--subnet={prefix}.0/24");
        docker_ok(&["network", "create", &subnet, &name]);
        Network { name, prefix }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A container removed when dropped (by name).
pub struct Named(pub String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// Runs memcached as container `name` at `ip` on `net`.
pub fn memcached_container(net: &Network, name: &str, ip: &str) -> Named {
    run_named(net, name, Some(ip), &[], memcached_image(), &[])
}

/// `docker run -d` of `image` with `args`, as container `name` on `net` (at `ip` when given),
/// with the extra `docker run` options `options` (a volume, a memory limit).
pub fn run_named(
    net: &Network,
    name: &str,
    ip: Option<&str>,
    options: &[&str],
    image: &str,
    args: &[&str],
) -> Named {
    let mut all = vec!["run", "-d", "--name", name, "--network", &net.name];
    if let Some(ip) = ip {
        all.extend(["--ip", ip]);
    }
    all.extend_from_slice(options);
    all.push(image);
    all.extend_from_slice(args);
    docker_ok(&all);
    Named(name.to_string())
}

/// From a proxy's log, the time from its SIGTERM to its exit (the last such pair), by the
/// log's millisecond timestamps.
pub fn drain_time(log: &str) -> Option<Duration> {
    let stamp = |line: &str| -> Option<u64> {
        // `[2026-12-07T10:15:43.503Z INFO ...`: seconds of the minute and milliseconds.
        let time = line.get(1..24)?.split('T').nth(1)?;
        let (hms, ms) = time.trim_end_matches('Z').split_once('.')?;
        let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
    };
    let signal = log
        .lines()
        .rev()
        .find(|l| l.contains("signal 15 received"))?;
    let stopped = log.lines().rev().find(|l| l.ends_with("stopped"))?;
    Some(Duration::from_millis(
        stamp(stopped)?.checked_sub(stamp(signal)?)?,
    ))
}

/// Builds the fleet tests' load tool image once per test binary
/// (deploy/build-fleet-client-image.sh).
pub fn fleet_client_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        build_with("build-fleet-client-image.sh");
    });
    "bifrost-fleet-client:latest"
}

/// The host's clock in milliseconds since the Unix epoch (the fleet tool reports its events on
/// the same clock).
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
