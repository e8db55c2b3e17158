//! The `bifrost` command: arguments, logging, configuration, then the proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use bifrost::config::Config;
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
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check: bool,
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

    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "bifrost: {} configuration error(s) in {}",
                    errors.errors.len(),
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        None => {
            if !args.check {
                log::info!(
                    "no --config given: using the embedded default \
                     (listen 127.0.0.1:11311, blind_forward to 127.0.0.1:11211)"
                );
            }
            Config::embedded_default()
        }
    };
    if let Some(workers) = args.workers {
        config.workers = workers;
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
