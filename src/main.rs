//! `shardbouncer` command line: run the pooler, or validate a config with `--check`.

use clap::Parser;
use shardbouncer::app::App;
use shardbouncer::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// A PgBouncer-style transaction pooler and tenant-aware shard router for PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "shardbouncer", version, about)]
struct Cli {
    /// Path to the TOML config file.
    #[arg(short, long, default_value = "conf/shardbouncer.toml")]
    config: PathBuf,
    /// Validate the config (and shard maps) and exit: 0 if valid, 1 with the reason if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHARDBOUNCER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardbouncer: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let app = match App::new(config, Some(cli.config.clone())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shardbouncer: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.check {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shardbouncer: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(shardbouncer::run(app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardbouncer: {e}");
            ExitCode::from(1)
        }
    }
}
