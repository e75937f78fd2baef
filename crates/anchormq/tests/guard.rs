//! `anchormq pub --guard`, checked by running the built binary: bad rule files are refused naming
//! the rule and the field, and against a running `anchormq up --paper` a subscriber receives
//! exactly the readings the guard lets pass.

mod common;
use common::{Sub, UpPaper, anchormq_with_input, assert_one_line_error, stderr, stdout};

/// Rule files are checked before anything connects; each error is one line naming the rule and
/// the field (or the unknown key).
#[tokio::test(flavor = "multi_thread")]
async fn bad_guard_files_name_the_rule_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[[rule]]\ntopic = \"line1/#\"\n\n[[rule]]\ntopic = \"line2/#\"\nmaxx = 3.0\n",
            "rule 2: unknown field `maxx`",
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\nmin = 70\nmax = 60\n",
            r#"rule 1 ("line1/+"): min 70 is above max 60"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\nmax_step = -1.5\n",
            r#"rule 1 ("line1/+"): max_step -1.5 is negative"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\ndeadband = -0.2\n",
            r#"rule 1 ("line1/+"): deadband -0.2 is negative"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/#/x\"\n",
            r#"rule 1: topic "line1/#/x" is not a valid MQTT topic filter"#,
        ),
        ("[[rule]]\nmin = 1.0\n", "rule 1: missing field `topic`"),
        ("[[rules]]\ntopic = \"line1/#\"\n", "unknown field `rules`"),
    ];
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("guard{i}.toml"));
        std::fs::write(&path, text).expect("write guard file");
        let path = path.to_str().expect("utf-8 path");
        let args = [
            "pub",
            "--as",
            "1111",
            "--key",
            "/nonexistent/1111.key",
            "-t",
            "line1/temp",
            "-m",
            "21.5",
        ];
        let out = anchormq_with_input(&[&args[..], &["--guard", path][..]].concat(), &[], "").await;
        assert_one_line_error(&out, 1, needle);
        assert!(stderr(&out).contains(path), "{}", stderr(&out));
        // the same from the environment
        let out = anchormq_with_input(&args, &[("ANCHORMQ_GUARD", path)], "").await;
        assert_one_line_error(&out, 1, needle);
    }
    let help = anchormq_with_input(&["pub", "--help"], &[], "").await;
    assert!(
        stdout(&help).contains("3 when the guard refused a reading"),
        "{}",
        stdout(&help)
    );
}

/// `pub -l --guard` against `up --paper`: each line goes through the guard; 1112 receives exactly
/// the readings that pass, `pub` says why the others were not sent, prints a summary and exits 3
/// because readings were refused (0 when they were only suppressed).
#[tokio::test(flavor = "multi_thread")]
async fn pub_lines_through_the_guard_deliver_only_the_readings_that_pass() {
    let up = UpPaper::start().await;
    let env = up.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = dir.path().join("guard.toml");
    std::fs::write(
        &guard,
        "[[rule]]\n\
         topic = \"hsu/0001/temperature\"\n\
         min = -20.0\n\
         max = 60\n\
         max_step = 5.0\n\
         deadband = 0.2\n\
         heartbeat_secs = 3600\n",
    )
    .expect("write guard file");
    let guard = guard.to_str().expect("utf-8 path");

    let reader = Sub::start(
        &[
            "--as",
            "1112",
            "--key",
            &up.key("1112"),
            "-t",
            "hsu/0001/temperature",
            "-C",
            "4",
            "-W",
            "90",
        ],
        &env,
    )
    .await;
    let key = up.key("1111");
    let publish = [
        "pub",
        "--as",
        "1111",
        "--key",
        &key,
        "-t",
        "hsu/0001/temperature",
        "-q",
        "1",
        "--wait",
        "30",
        "-l",
        "--guard",
        guard,
    ];
    let out = anchormq_with_input(
        &publish,
        &env,
        "21.3\n21.4\n85.0\n21.8\nwarm\n27.5\n21.9\n23.0\n",
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "reading 21.4 suppressed: within deadband 0.2 of last sent 21.3",
            "reading 85.0 on hsu/0001/temperature refused: above max 60 (rule for 'hsu/0001/temperature')",
            r#"payload "warm" on hsu/0001/temperature refused: not a number (rule for 'hsu/0001/temperature')"#,
            "reading 27.5 on hsu/0001/temperature refused: more than max_step 5 from previous accepted 21.8 (rule for 'hsu/0001/temperature')",
            "reading 21.9 suppressed: within deadband 0.2 of last sent 21.8",
            "3 sent, 2 suppressed, 3 refused",
            "error: 3 of 8 reading(s) refused by the guard",
        ],
        "{err}"
    );

    // only suppressed readings: exit 0 (a new process remembers nothing of the last one)
    let out = anchormq_with_input(&publish, &env, "23.0\n23.1\n").await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "reading 23.1 suppressed: within deadband 0.2 of last sent 23",
            "1 sent, 1 suppressed, 0 refused",
        ]
    );

    let (code, out, _) = reader.finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "21.3\n21.8\n23.0\n23.0\n");
    assert_eq!(up.interrupt().await.code(), Some(0));
}
