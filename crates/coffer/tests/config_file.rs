//! The TOML file feeds settings with the lowest precedence. One test in its
//! own binary: it changes this process's environment.

use clap::{CommandFactory, Parser};
use coffer::cli::Cli;

#[test]
fn file_settings_apply_below_environment_and_flags() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("coffer.toml");
    std::fs::write(
        &path,
        r#"
listen = "127.0.0.1:9999"
queue_capacity = 5
api_keys = ["admin:0123456789abcdef0123", "reader:fedcba98765432100123"]
insecure_no_auth = true
body_bytes_max = 1000
"#,
    )
    .unwrap();
    std::env::set_var("COFFER_BODY_BYTES_MAX", "2000");
    coffer::config_file::apply(&path, &Cli::command()).unwrap();
    let cli = Cli::parse_from(["coffer", "--queue-capacity", "9"]);
    assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:9999", "from the file");
    assert_eq!(
        cli.serve.api_keys.len(),
        2,
        "a list becomes the comma-separated variable"
    );
    assert!(cli.serve.insecure_no_auth);
    assert_eq!(cli.serve.body_bytes_max, 2000, "the environment wins over the file");
    assert_eq!(cli.serve.queue_capacity, 9, "a flag wins over everything");

    std::fs::write(&path, "listen_address = \"x\"\n").unwrap();
    let error = coffer::config_file::apply(&path, &Cli::command())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown setting \"listen_address\"") && error.contains("listen"),
        "{error}"
    );
    std::fs::write(&path, "listen = [1, 2]\n").unwrap();
    assert!(coffer::config_file::apply(&path, &Cli::command()).is_err());
    std::fs::write(&path, "not toml at all [").unwrap();
    assert!(coffer::config_file::apply(&path, &Cli::command()).is_err());
}
