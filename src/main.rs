use backstop::cli::{run, Cli};
use backstop::error::{exit_kind_of, ExitKind};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    let json_logs = cli.log_format.resolve() == backstop::logging::LogFormat::Json;
    backstop::logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop: cannot start the async runtime: {e}");
            std::process::exit(ExitKind::Failed.code());
        }
    };
    let kind = match runtime.block_on(run(cli)) {
        Ok(kind) => kind,
        Err(err) => {
            let kind = exit_kind_of(&err);
            if json_logs {
                tracing::error!(exit_code = kind.code(), "{err:#}");
            } else {
                eprintln!("backstop: error: {err:#}");
            }
            kind
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(kind.code());
}
