use clap::{CommandFactory, FromArgMatches};
use tracer_user::cli::{Cli, Command};
use tracer_user::run;

fn main() {
    let cli = parse();
    let result = match cli.command {
        None => run::live::run(cli.trace),
        Some(Command::Trace(args)) => run::live::run(args),
        Some(Command::Probes) => run::probes::run(),
        Some(Command::Replay(args)) => run::replay::run(args),
        Some(Command::Agent(args)) => run::agent::run(args),
        Some(Command::Cluster(args)) => run::cluster::run(args),
        Some(Command::Doctor(args)) => run::doctor::run(args),
    };
    if let Err(e) = result {
        eprintln!("calitrace: {e:#}");
        std::process::exit(run::exit_code(&e));
    }
}

/// The command line; installed as `kubectl-calitrace`, the same binary is a
/// kubectl plugin and its help and usage say `kubectl calitrace`.
fn parse() -> Cli {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "kubectl-calitrace");
    let mut command = Cli::command();
    if plugin {
        command = command
            .name("kubectl calitrace")
            .bin_name("kubectl calitrace");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
