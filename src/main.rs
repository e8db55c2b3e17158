//! The `bifrost` command: arguments, logging, configuration, then the proxy.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bifrost::config::{twemproxy, AdminConfig, Config, ConfigErrors};
use clap::Parser;

/// musl's allocator returns memory to the kernel eagerly (an mmap/munmap pair every few
/// requests under load); mimalloc keeps per-thread free lists.
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bifröst, a memcached proxy.
#[derive(Parser, Debug)]
#[command(name = "bifrost", version, about)]
struct Args {
    /// Configuration file (YAML, or JSON by the .json extension). Without it, an embedded
    /// default: listen on 127.0.0.1:11311 and forward to memcached on 127.0.0.1:11211.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run a twemproxy (nutcracker) configuration as it is: every pool becomes a listener on
    /// its `listen` address with a consistent_hash route over its servers (docs/twemproxy.md).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    twemproxy: Option<PathBuf>,
    /// Validate the configuration (`--config` or `--twemproxy`) and exit: 0 when valid, 2 on
    /// errors; warnings go to stderr.
    #[arg(long)]
    check: bool,
    /// Print the configuration as Bifröst YAML on stdout and exit: the translation of a
    /// `--twemproxy` file, or the `--config` file's document (or the embedded default).
    #[arg(long)]
    print_config: bool,
    /// Serve the admin HTTP API on HOST:PORT (overrides `admin.bind`; with `--twemproxy`, whose
    /// file has no admin block, this is how to get metrics and warming). A non-loopback address
    /// needs a token from the config's `admin.token` or `admin.token_file`.
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<std::net::SocketAddr>,
    /// Worker threads (overrides the config; 0 = one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Log level: error, warn, info, debug, trace (RUST_LOG, if set, takes precedence).
    #[arg(long, value_name = "L", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .parse_filters(&args.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();

    let (mut config, printed) = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if args.print_config {
        print!("{printed}");
        return ExitCode::SUCCESS;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(bind) = args.admin {
        let mut admin = config
            .admin
            .take()
            .unwrap_or_else(|| AdminConfig::with_defaults(bind));
        admin.bind = bind;
        if admin.token.is_none() && !bind.ip().is_loopback() {
            eprintln!(
                "bifrost: --admin {bind} is not a loopback address and no admin.token or \
                 admin.token_file is set: anyone who can reach it could start and cancel warming \
                 jobs; set a token in the config or bind to 127.0.0.1"
            );
            return ExitCode::from(2);
        }
        config.admin = Some(admin);
    }
    let unsupported = config.unsupported_features();
    if args.check {
        for message in &unsupported {
            eprintln!("warning: {message}");
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if !unsupported.is_empty() {
        for message in &unsupported {
            eprintln!("bifrost: {message}");
        }
        eprintln!("bifrost: refusing to start: the configuration uses features this release lacks");
        return ExitCode::from(2);
    }
    match bifrost::app::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bifrost: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The embedded default (see [`Config::embedded_default`]) as a config file, for
/// `--print-config` without a file; a unit test checks that it loads to that very config.
const EMBEDDED_DEFAULT_YAML: &str = "\
# Bifröst's embedded default (bifrost without --config)
listeners:
  - name: main
    bind: 127.0.0.1:11311
backends:
  default:
    servers: [127.0.0.1:11211]
routes:
  - name: default
    match: \"*\"
    strategy: blind_forward
    backend: default
";

/// The configuration to run and its YAML (printed by `--print-config`); on a configuration
/// error, the messages are printed already and the exit code is returned (2).
fn load(args: &Args) -> Result<(Config, String), ExitCode> {
    if let Some(path) = &args.twemproxy {
        return match Config::load_twemproxy(path) {
            Ok(translation) => {
                for warning in &translation.warnings {
                    eprintln!("warning: {warning}");
                }
                Ok((translation.config, translation.yaml))
            }
            Err(rejection) => {
                for warning in &rejection.warnings {
                    eprintln!("warning: {warning}");
                }
                Err(report(&rejection.errors, path, "twemproxy configuration"))
            }
        };
    }
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(errors) => return Err(report(&errors, path, "configuration")),
        },
        None => {
            if !args.check && !args.print_config {
                log::info!(
                    "no --config given: using the embedded default \
                     (listen 127.0.0.1:11311, blind_forward to 127.0.0.1:11211)"
                );
            }
            return Ok((
                Config::embedded_default(),
                EMBEDDED_DEFAULT_YAML.to_string(),
            ));
        }
    };
    // The document is only printed on demand: reading it again costs a second parse.
    let printed = match (&args.config, args.print_config) {
        (Some(path), true) => match twemproxy::document_as_yaml(path) {
            Ok(yaml) => yaml,
            Err(errors) => return Err(report(&errors, path, "configuration")),
        },
        _ => String::new(),
    };
    Ok((config, printed))
}

/// Prints configuration errors and a summary naming the file; the exit code for them.
fn report(errors: &ConfigErrors, path: &Path, what: &str) -> ExitCode {
    eprintln!("{errors}");
    eprintln!(
        "bifrost: {} {what} error(s) in {}",
        errors.errors.len(),
        path.display()
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost::config::Format;

    #[test]
    fn printed_embedded_default_is_the_embedded_default() {
        let printed = Config::parse(EMBEDDED_DEFAULT_YAML, "embedded", Format::Yaml);
        assert_eq!(printed.ok(), Some(Config::embedded_default()));
    }
}
