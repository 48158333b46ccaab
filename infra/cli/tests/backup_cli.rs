//! `toaster backup` and `toaster restore` as a shell or a Job runs them: the real binary,
//! with stand-ins for pg_dump, pg_restore and psql (`TOASTER_PG_BIN`) that record how
//! they were called. What only the command line shows: the exit status, the messages,
//! and where the password goes (their environment, never their argv, never our output).
//! The real programs against a real server: tests/tests/backup.rs.

use std::path::Path;
use std::process::{Command, Output};

const PASSWORD: &str = "Hunter2-correct-horse";

/// pg_dump, pg_restore and psql that log "<program> <args> | PGPASSWORD=<value>" and
/// answer what `toaster` asks. `tables`: what psql says the target database holds.
fn fake_tools(dir: &Path, tables: &str) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("calls.log");
    let script = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $* | PGPASSWORD=$PGPASSWORD\" >> '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "pg_dump",
        r#"if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 15.20"; exit 0; fi
for a in "$@"; do case "$a" in --file=*) echo dump > "${a#--file=}";; esac; done"#,
    );
    script(
        "pg_restore",
        r#"if [ "$1" = "--list" ]; then echo "; Archive"; echo "3370; 0 16390 TABLE DATA public tenants toaster"; exit 0; fi
echo "SELECT 1;""#,
    );
    script(
        "psql",
        &format!(
            r#"case "$*" in
  *server_version_num*) echo 150020 ;;
  *to_regclass*) echo 0005_assertion_replay ;;
  *pg_class*) printf '{tables}' ;;
  *) cat > '{stdin}' ;;
esac"#,
            stdin = dir.join("psql-stdin.sql").display()
        ),
    );
}

fn toaster(tools: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toaster"))
        .args(args)
        .env("TOASTER_PG_BIN", tools)
        .env_remove("PGPASSWORD")
        .env_remove("TOASTER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn url() -> String {
    format!("postgres://toaster:{PASSWORD}@db.example:5432/toaster")
}

#[test]
fn restore_into_a_database_with_tables_exits_non_zero_and_says_why() {
    let tools = tempfile::tempdir().unwrap();
    fake_tools(
        tools.path(),
        "public.toaster_migrations\\npublic.tenants\\n",
    );
    let backup = tools.path().join("b.dump");
    std::fs::write(&backup, "archive").unwrap();

    let out = toaster(
        tools.path(),
        &[
            "restore",
            "--database-url",
            &url(),
            backup.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("database toaster already holds 2 table(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("public.toaster_migrations"), "{stderr}");
    assert!(stderr.contains("--clean"), "{stderr}");
    let calls = std::fs::read_to_string(tools.path().join("calls.log")).unwrap();
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("psql") && l.contains("-f -")),
        "nothing was applied:\n{calls}"
    );

    // With --clean it goes ahead.
    let out = toaster(
        tools.path(),
        &[
            "restore",
            "--clean",
            "--database-url",
            &url(),
            backup.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("migrations up to 0005_assertion_replay"),
        "{stdout}"
    );
}

#[test]
fn the_password_goes_to_pgpassword_never_to_argv_or_the_output() {
    let tools = tempfile::tempdir().unwrap();
    fake_tools(tools.path(), "");
    let out_file = tools.path().join("toaster.dump");
    let out = toaster(
        tools.path(),
        &[
            "backup",
            "--database-url",
            &url(),
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("wrote"), "{stdout}");
    assert!(out_file.exists());
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    let calls = std::fs::read_to_string(tools.path().join("calls.log")).unwrap();
    let dump = calls
        .lines()
        .find(|l| l.starts_with("pg_dump --format=custom"))
        .unwrap_or_else(|| panic!("pg_dump was not run:\n{calls}"));
    let (argv, env) = dump.split_once(" | ").unwrap();
    assert!(!argv.contains(PASSWORD), "{argv}");
    assert!(
        argv.contains("--dbname=postgres://toaster@db.example:5432/toaster"),
        "{argv}"
    );
    assert_eq!(env, format!("PGPASSWORD={PASSWORD}"));
    for line in calls.lines() {
        let (argv, _) = line.split_once(" | ").unwrap();
        assert!(!argv.contains(PASSWORD), "{line}");
    }

    // A failure shows the URL redacted.
    std::fs::write(
        tools.path().join("psql"),
        "#!/bin/sh\necho 'psql: error: connection to server at \"db.example\" failed: Connection refused' >&2\nexit 2\n",
    )
    .unwrap();
    let out = toaster(
        tools.path(),
        &[
            "backup",
            "--database-url",
            &url(),
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("postgres://toaster:***@db.example:5432/toaster"),
        "{stderr}"
    );
    assert!(stderr.contains("reachable"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[test]
fn an_older_pg_dump_than_the_server_is_refused_with_what_to_install() {
    let tools = tempfile::tempdir().unwrap();
    fake_tools(tools.path(), "");
    // The server says 17; the only pg_dump is 15.
    std::fs::write(tools.path().join("psql"), "#!/bin/sh\necho 170002\n").unwrap();
    let out = toaster(
        tools.path(),
        &[
            "backup",
            "--database-url",
            &url(),
            "--out",
            tools.path().join("x.dump").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("server is version 17"), "{stderr}");
    assert!(stderr.contains("postgresql-client-17"), "{stderr}");
    assert!(!tools.path().join("x.dump").exists());
}

#[test]
fn commit_is_sent_only_when_pg_restore_read_the_whole_backup() {
    let tools = tempfile::tempdir().unwrap();
    fake_tools(tools.path(), "");
    let backup = tools.path().join("b.dump");
    std::fs::write(&backup, "archive").unwrap();

    let out = toaster(
        tools.path(),
        &[
            "restore",
            "--database-url",
            &url(),
            backup.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fed = std::fs::read_to_string(tools.path().join("psql-stdin.sql")).unwrap();
    assert_eq!(fed, "BEGIN;\nSELECT 1;\nCOMMIT;\n");

    // pg_restore gives up halfway (a corrupt archive): what it wrote is not committed.
    std::fs::write(
        tools.path().join("pg_restore"),
        "#!/bin/sh\nif [ \"$1\" = \"--list\" ]; then echo '; Archive'; exit 0; fi\n\
         echo 'CREATE TABLE half_of_it ();'\n\
         echo 'pg_restore: error: could not read from input file: end of file' >&2\nexit 1\n",
    )
    .unwrap();
    let out = toaster(
        tools.path(),
        &[
            "restore",
            "--database-url",
            &url(),
            backup.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("end of file"), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    let fed = std::fs::read_to_string(tools.path().join("psql-stdin.sql")).unwrap();
    assert_eq!(fed, "BEGIN;\nCREATE TABLE half_of_it ();\n", "no COMMIT");
}
