//! Command line: `lockstep [EAL options] -- [application options]`, as
//! `dpdk-testpmd` takes it.

use std::path::PathBuf;

use clap::Parser;

/// Application options (after `--`).
#[derive(Debug, Parser)]
#[command(
    name = "lockstep",
    version,
    about = "DPDK data plane that keeps traffic and sessions alive when its server dies",
    override_usage = "lockstep [EAL options] -- --config FILE [--role ROLE] [--stats-period SECS] [-i]"
)]
pub struct AppArgs {
    /// Node configuration (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override `node.role` (standalone, primary, backup).
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Print port statistics every SECS seconds (0 = never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stats_period: u64,
    /// Interactive prompt on standard input (`help` lists the commands).
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Check the configuration and exit (no EAL).
    #[arg(long)]
    pub check_config: bool,
}

/// Splits `argv` at the first `--`: EAL gets the program name and what comes
/// before, the application what comes after.
pub fn split_args(argv: &[String]) -> (Vec<String>, Vec<String>) {
    let prog = argv.first().cloned().unwrap_or_else(|| "lockstep".to_string());
    match argv.iter().position(|a| a == "--") {
        Some(i) => {
            let eal = argv[..i].to_vec();
            let mut app = vec![prog];
            app.extend_from_slice(&argv[i + 1..]);
            (eal, app)
        }
        None => (vec![prog.clone()], argv.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn eal_gets_what_precedes_the_double_dash() {
        let (eal, app) = split_args(&v(&[
            "lockstep",
            "-l",
            "0,1",
            "--no-huge",
            "--",
            "--config",
            "x.toml",
            "-i",
        ]));
        assert_eq!(eal, v(&["lockstep", "-l", "0,1", "--no-huge"]));
        assert_eq!(app, v(&["lockstep", "--config", "x.toml", "-i"]));
        let a = AppArgs::try_parse_from(&app).unwrap();
        assert!(a.interactive);
        assert_eq!(a.config, PathBuf::from("x.toml"));
    }

    #[test]
    fn without_double_dash_everything_is_application() {
        let (eal, app) = split_args(&v(&["lockstep", "--config", "x.toml"]));
        assert_eq!(eal, v(&["lockstep"]));
        assert_eq!(app.len(), 3);
    }
}
