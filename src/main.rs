use clap::Parser;

fn main() -> std::process::ExitCode {
    mailwarden::memory::return_large_blocks();
    mailwarden::tls::install_provider();
    let cli = mailwarden::cli::Cli::parse();
    match mailwarden::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr, the whole cause chain.
            eprintln!("mailwarden: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
