//! `onda`: one multi-call binary. This file only parses the command line, sets up logging and the
//! TLS provider, and calls into the crates.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "onda",
    version,
    about = "Onda: a streaming cluster for hosting companies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane, local nodes and a demo station on the air, under ./.onda-dev/, for trying
    /// Onda out.
    Dev {
        /// Panel API address.
        #[arg(long, env = "ONDA_DEV_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the database and dev.json live.
        #[arg(long, env = "ONDA_DEV_DIR", default_value = ".onda-dev")]
        dir: PathBuf,
        /// Local nodes to run (separate processes), so one can be killed to watch failover.
        #[arg(long, env = "ONDA_DEV_NODES", default_value_t = 1)]
        nodes: usize,
        /// Edge port of the first node; the others count up from it. 0: any free port.
        #[arg(long, env = "ONDA_DEV_EDGE_PORT", default_value_t = 8000)]
        edge_port: u16,
        /// The built web app (station pages, the app at /app/).
        #[arg(long, env = "ONDA_DEV_APP_DIR", default_value = "web/dist")]
        app_dir: PathBuf,
    },
    /// The control plane: panel API, redirector, control channel, scheduler.
    ControlPlane {
        /// TOML configuration; every key can be overridden as ONDA_<SECTION>_<KEY>.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// A cluster node: an edge driven by the control plane.
    Agent {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One-time join token from the control plane.
        #[arg(long)]
        join: Option<String>,
        /// Join (with --join) and exit instead of serving: for provisioning, which starts the
        /// service afterwards. A node that already joined exits at once.
        #[arg(long, requires = "join")]
        join_only: bool,
        /// Exit when this process (the `onda dev` that started the node) dies.
        #[arg(long, hide = true)]
        exit_with_parent: Option<u32>,
    },
    /// A standalone edge node: an Icecast-compatible server, no control plane.
    Edge {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // One TLS provider for the whole process (ring), before anything opens a TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onda: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Command::Agent {
            exit_with_parent: Some(parent),
            ..
        } = cli.command
        {
            onda_agent::exit_with_parent(parent)?;
        }
        match cli.command {
            Command::Dev {
                listen,
                dir,
                nodes,
                edge_port,
                app_dir,
            } => {
                onda_control_plane::dev::run(onda_control_plane::dev::DevOptions {
                    dir,
                    listen,
                    nodes,
                    edge_port,
                    app_dir,
                })
                .await
            }
            Command::ControlPlane { config } => {
                let cfg: onda_control_plane::config::ControlPlaneConfig =
                    onda_shared::config::load(config.as_deref())?;
                onda_control_plane::server::run(cfg.validate()?).await
            }
            Command::Agent {
                config,
                join,
                join_only: true,
                ..
            } => onda_agent::join_only(config.as_deref(), join.as_deref()).await,
            Command::Agent { config, join, .. } => {
                onda_agent::run(config.as_deref(), join.as_deref()).await
            }
            Command::Edge { config } => onda_edge::run(config.as_deref()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onda: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONDA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
