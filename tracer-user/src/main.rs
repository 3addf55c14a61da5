use clap::Parser;
use tracer_user::cli::{Cli, Command};
use tracer_user::run;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run::live::run(cli.trace),
        Some(Command::Trace(args)) => run::live::run(args),
        Some(Command::Probes) => run::probes::run(),
        Some(Command::Replay(args)) => run::replay::run(args),
        Some(Command::Agent(args)) => run::agent::run(args),
        Some(Command::Cluster(args)) => run::cluster::run(args),
        Some(Command::Doctor(args)) => run::doctor::run(args),
        Some(Command::Standby(args)) => run::standby::run(args),
    };
    if let Err(e) = result {
        eprintln!("calitrace: {e:#}");
        std::process::exit(run::exit_code(&e));
    }
}
