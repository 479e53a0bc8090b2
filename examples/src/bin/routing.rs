//! `routing`: the echo app mounted at `/api` and at `/legacy/app`, and a directory of static
//! files at `/static` (`--static-dir`, by default the `static` directory beside this crate's
//! sources), served on whatever interface the launcher's flags say.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gateway_middleware::{Mount, StaticFiles};
use gateway_servers::LauncherArgs;

#[derive(Debug, Parser)]
#[command(about = "echo at /api and /legacy/app, static files at /static")]
struct Cli {
    #[command(flatten)]
    launcher: LauncherArgs,
    /// The directory served at /static.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/static"))]
    static_dir: PathBuf,
}

fn main() -> ExitCode {
    let app = |static_dir: PathBuf| {
        Mount::builder()
            .mount("/api", examples::echo)
            .mount("/legacy/app", examples::echo)
            .mount("/static", StaticFiles::new(static_dir))
            .build()
    };
    if gateway_servers::is_cgi() {
        let default = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static"));
        return gateway_servers::cgi::run(app(default));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return gateway_servers::flag_error(&error),
    };
    gateway_servers::run_with(app(cli.static_dir), cli.launcher)
}
