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
        Some(Command::Standby(args)) => run::standby::run(args),
        Some(Command::Cleanup(args)) => run::cleanup::run(args),
        Some(Command::Status(args)) => run::status::run(args),
    };
    if let Err(e) = result {
        eprintln!("calitrace: {e:#}");
        std::process::exit(run::exit_code(&e));
    }
}

/// The command line; installed as `kubectl-calitrace`, the same binary is a
/// kubectl plugin: its help and usage say `kubectl calitrace`, and its
/// `cluster` goes through the API server (`--k8s`) unless given `--node`.
fn parse() -> Cli {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let plugin = args.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .is_some_and(|n| n == "kubectl-calitrace")
    });
    let mut command = Cli::command();
    if plugin {
        command = command
            .name("kubectl calitrace")
            .bin_name("kubectl calitrace");
        let flag = |a: &std::ffi::OsString, f: &str| {
            a.to_str()
                .is_some_and(|a| a == f || a.starts_with(&format!("{f}=")))
        };
        // `kubectl calitrace status` is the cluster's status, not a node's.
        if args.get(1).is_some_and(|a| a == "status") {
            args.splice(1..2, ["cluster".into(), "--status".into()]);
        }
        let cluster = args.get(1).is_some_and(|a| a == "cluster");
        if cluster && !args.iter().any(|a| flag(a, "--k8s") || flag(a, "--node")) {
            args.insert(2, "--k8s".into());
        }
    }
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
