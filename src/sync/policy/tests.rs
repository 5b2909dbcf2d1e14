use super::*;

fn parse(text: &str) -> Result<SyncPolicy, ConfigError> {
    SyncPolicy::from_toml_str(text, Path::new("test.toml"))
}

fn sync(body: &str) -> Result<SyncPolicy, ConfigError> {
    parse(&format!("[sync]\n{body}\n"))
}

/// Asserts the `[sync]` body is rejected with a value error for `key`; returns the message.
fn rejected(body: &str, key: &str) -> String {
    match sync(body) {
        Err(e @ ConfigError::Value { key: k, .. }) if k == key => e.to_string(),
        other => panic!("{body:?}: expected an error for {key}, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let p = parse("").unwrap();
    assert_eq!(p, SyncPolicy::default());
    assert_eq!(p.mode, Mode::ReadOnly);
    assert!(p.repositories.is_empty() && p.schedule.is_none() && p.platforms.is_empty());
    assert_eq!(p.interval, Duration::from_secs(60));
    assert_eq!(p.message_ttl, Duration::from_secs(2 * 86_400));
    assert_eq!(p.chunk_size, 8 * 1024 * 1024);
    assert_eq!(p.max_parallel, 4);
    assert_eq!(p.bandwidth_limit, None);
    assert!(p.referrers);
    assert!(!p.audit_logs);
    assert!(sync("audit_logs = true").unwrap().audit_logs);
    assert!(sync("audit_logs = \"yes\"").is_err());
    assert!(p.tag_selected("anything") && p.platform_selected("linux", "s390x", None));
    assert_eq!(sync("").unwrap(), SyncPolicy::default());
}

#[test]
fn full_example() {
    let p = parse(
        r#"
mode = "ReadWrite"
[server]
listen = "0.0.0.0:8080"
[sync]
repositories = ["hello-world", "team/app", "hello-world"]
schedule = "*/5 * * * *"
window = "PT1H"
interval = "5s"
message_ttl = "P2D"
chunk_size_mb = 16
max_parallel = 8
bandwidth_limit = "20MB/s"
platforms = ["linux/arm64", "linux/arm/v7"]
tags = { include = "^v", exclude = "-rc" }
referrers = false
[other]
whatever = 1
"#,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::ReadWrite);
    let repos: Vec<&str> = p.repositories.iter().map(|r| r.as_str()).collect();
    assert_eq!(repos, ["hello-world", "team/app"]);
    let s = p.schedule.as_ref().unwrap();
    assert_eq!(
        (s.pattern(), s.window()),
        ("*/5 * * * *", Duration::from_secs(3600))
    );
    assert_eq!(p.interval, Duration::from_secs(5));
    assert_eq!(p.message_ttl, Duration::from_secs(172_800));
    assert_eq!(p.chunk_size, 16 << 20);
    assert_eq!(p.max_parallel, 8);
    assert_eq!(p.bandwidth_limit, Some(20_000_000));
    assert_eq!(p.platforms.len(), 2);
    assert!(!p.referrers);
    assert!(p.includes_repository("team/app") && !p.includes_repository("team"));
    // Equality compares regex and cron text.
    assert_eq!(p.clone(), p);
    let mut q = p.clone();
    q.tags.exclude = Some(Regex::new("-beta").unwrap());
    assert_ne!(p, q);
}

#[test]
fn mode_values() {
    assert_eq!(parse("mode = \"readwrite\"").unwrap().mode, Mode::ReadWrite);
    assert_eq!(parse("mode = \"Mirror\"").unwrap().mode, Mode::ReadOnly);
    let e = parse("mode = \"Sideways\"").unwrap_err();
    assert!(matches!(e, ConfigError::Value { key: "mode", .. }), "{e}");
}

#[test]
fn unknown_keys_and_bad_toml_are_parse_errors() {
    let e = sync("repos = [\"a\"]").unwrap_err();
    assert!(
        matches!(e, ConfigError::Parse { .. }) && e.to_string().contains("repos"),
        "{e}"
    );
    let e = sync("tags = { inclde = \"^v\" }").unwrap_err();
    assert!(e.to_string().contains("inclde"), "{e}");
    let e = sync("chunk_size_mb = \"8\"").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert!(parse("[sync\n").is_err());
}

#[test]
fn repositories() {
    let m = rejected("repositories = [\"Hello\"]", "sync.repositories");
    assert!(m.contains("Hello") && m.contains("repository name"), "{m}");
    rejected("repositories = [\"a//b\"]", "sync.repositories");
    rejected("repositories = [\"\"]", "sync.repositories");
    assert!(sync("repositories = []").unwrap().repositories.is_empty());
}

#[test]
fn schedule_and_window() {
    let p = sync("schedule = \"0 */5 * * * *\"\nwindow = \"30m\"").unwrap();
    assert_eq!(p.schedule.unwrap().window(), Duration::from_secs(1800));
    let m = rejected("schedule = \"*/5 * * * *\"", "sync.window");
    assert!(m.contains("required"), "{m}");
    rejected("window = \"PT1H\"", "sync.window");
    rejected("schedule = \"* * * * *\"\nwindow = \"PT0S\"", "sync.window");
    rejected("schedule = \"* * * * *\"\nwindow = \"soon\"", "sync.window");
    let m = rejected(
        "schedule = \"every day\"\nwindow = \"PT1H\"",
        "sync.schedule",
    );
    assert!(m.contains("every day"), "{m}");
    rejected(
        "schedule = \"0 0 0 * * * 2030\"\nwindow = \"PT1H\"",
        "sync.schedule",
    );
}

#[test]
fn durations() {
    assert_eq!(
        sync("interval = \"PT2M\"").unwrap().interval,
        Duration::from_secs(120)
    );
    assert_eq!(
        sync("message_ttl = \"7d\"").unwrap().message_ttl,
        Duration::from_secs(604_800)
    );
    rejected("interval = \"often\"", "sync.interval");
    rejected("interval = \"0s\"", "sync.interval");
    let m = rejected("message_ttl = \"P1Y\"", "sync.message_ttl");
    assert!(m.contains("ISO-8601"), "{m}");
    rejected("message_ttl = \"PT0S\"", "sync.message_ttl");
}

#[test]
fn chunk_size_and_parallelism() {
    assert_eq!(sync("chunk_size_mb = 1").unwrap().chunk_size, 1 << 20);
    assert_eq!(sync("chunk_size_mb = 1024").unwrap().chunk_size, 1 << 30);
    for v in ["0", "1025", "-8"] {
        let m = rejected(&format!("chunk_size_mb = {v}"), "sync.chunk_size_mb");
        assert!(m.contains("between 1 and 1024"), "{m}");
    }
    assert_eq!(sync("max_parallel = 1").unwrap().max_parallel, 1);
    assert_eq!(sync("max_parallel = 64").unwrap().max_parallel, 64);
    for v in ["0", "65", "-1"] {
        let m = rejected(&format!("max_parallel = {v}"), "sync.max_parallel");
        assert!(m.contains("between 1 and 64"), "{m}");
    }
}

#[test]
fn bandwidth_units() {
    let cases = [
        ("20MB/s", 20_000_000),
        ("20 MB/s", 20_000_000),
        ("512KB/s", 512_000),
        ("1.5MiB/s", 1_572_864),
        ("100000", 100_000),
        ("100000 B/s", 100_000),
        ("2gb", 2_000_000_000),
        ("1GiB/S", 1 << 30),
        ("3 kib", 3072),
        (" 7mb/s ", 7_000_000),
    ];
    for (s, want) in cases {
        assert_eq!(parse_bandwidth(s), Ok(want), "{s}");
    }
    for s in [
        "fast",
        "",
        "/s",
        "0",
        "0MB/s",
        "0.0001B",
        "20 Mbit/s",
        "1.2.3MB",
        "-5MB",
        "1e3",
    ] {
        assert!(parse_bandwidth(s).is_err(), "{s} should be rejected");
    }
    assert_eq!(
        sync("bandwidth_limit = \"20MB/s\"")
            .unwrap()
            .bandwidth_limit,
        Some(20_000_000)
    );
    assert_eq!(
        sync("bandwidth_limit = 4096").unwrap().bandwidth_limit,
        Some(4096)
    );
    let m = rejected("bandwidth_limit = \"fast\"", "sync.bandwidth_limit");
    assert!(m.contains("fast") && m.contains("MB/s"), "{m}");
    rejected("bandwidth_limit = 0", "sync.bandwidth_limit");
    rejected("bandwidth_limit = true", "sync.bandwidth_limit");
}

#[test]
fn platforms() {
    let p = sync("platforms = [\"linux/arm64\", \"linux/arm/v7\", \"Linux/X86_64\"]").unwrap();
    assert_eq!(p.platforms[2].to_string(), "linux/amd64");
    assert!(p.platform_selected("linux", "arm64", None));
    assert!(p.platform_selected("linux", "arm64", Some("v8")));
    assert!(p.platform_selected("linux", "arm", Some("v7")));
    assert!(!p.platform_selected("linux", "arm", Some("v6")));
    assert!(!p.platform_selected("linux", "arm", None));
    assert!(p.platform_selected("linux", "amd64", None));
    assert!(!p.platform_selected("windows", "amd64", None));
    assert!(!p.platform_selected("linux", "s390x", None));
    assert!(!p.platform_selected("unknown", "unknown", None));
    // An arm64 manifest without a variant is v8.
    let v8 = sync("platforms = [\"linux/arm64/v8\"]").unwrap();
    assert!(v8.platform_selected("linux", "arm64", None));
    assert!(v8.platform_selected("linux", "arm64", Some("v8")));
    assert!(!v8.platform_selected("linux", "arm64", Some("v9")));
    for bad in [
        "linux",
        "linux/",
        "/amd64",
        "linux/arm/v7/x",
        "linux/am d64",
        "linux//v7",
    ] {
        let m = rejected(&format!("platforms = [\"{bad}\"]"), "sync.platforms");
        assert!(m.contains("os/arch"), "{m}");
    }
    rejected("platforms = []", "sync.platforms");
}

#[test]
fn tag_filters() {
    let p = sync("tags = { include = \"^v\", exclude = \"-rc\" }").unwrap();
    assert!(p.tag_selected("v1.2.3"));
    assert!(!p.tag_selected("v1.2.3-rc1"));
    assert!(!p.tag_selected("latest"));
    let only_exclude = sync("[sync.tags]\nexclude = \"^dev-\"").unwrap();
    assert!(only_exclude.tag_selected("latest") && !only_exclude.tag_selected("dev-1"));
    let only_include = sync("tags = { include = \"^(latest|stable)$\" }").unwrap();
    assert!(only_include.tag_selected("stable") && !only_include.tag_selected("stable2"));
    let m = rejected("tags = { include = \"(\" }", "sync.tags.include");
    assert!(m.contains("regular expression"), "{m}");
    rejected("tags = { exclude = \"[z-a]\" }", "sync.tags.exclude");
}

#[test]
fn referrers() {
    assert!(!sync("referrers = false").unwrap().referrers);
    assert!(sync("referrers = true").unwrap().referrers);
    assert!(sync("referrers = \"yes\"").is_err());
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[sync]\nrepositories = [\"a\"]\n").unwrap();
    assert!(SyncPolicy::load(&f).unwrap().includes_repository("a"));
    let e = SyncPolicy::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn policy_file_without_a_path() {
    let mut pf = PolicyFile::new(None);
    assert_eq!(pf.poll().unwrap().unwrap().policy, SyncPolicy::default());
    assert!(pf.poll().is_none());
    assert!(pf.poll().is_none());
}

#[test]
fn policy_file_reports_changes_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let write = |text: &str| std::fs::write(&f, text).unwrap();
    write("[sync]\nrepositories = [\"aa\"]\n");
    let mut pf = PolicyFile::new(Some(f.clone()));
    assert!(pf.poll().unwrap().unwrap().policy.includes_repository("aa"));
    assert!(pf.poll().is_none());

    // Same size, different content, possibly within the same mtime tick.
    write("[sync]\nrepositories = [\"bb\"]\n");
    assert!(pf.poll().unwrap().unwrap().policy.includes_repository("bb"));
    assert!(pf.poll().is_none());

    // An invalid edit is reported once; fixing it answers again.
    write("[sync]\nmax_parallel = 0\n");
    assert!(matches!(pf.poll(), Some(Err(ConfigError::Value { .. }))));
    assert!(pf.poll().is_none());
    write("[sync]\nmax_parallel = 2\n");
    assert_eq!(pf.poll().unwrap().unwrap().policy.max_parallel, 2);

    // A removed file is one error, not an empty policy.
    std::fs::remove_file(&f).unwrap();
    assert!(matches!(pf.poll(), Some(Err(ConfigError::Read { .. }))));
    assert!(pf.poll().is_none());
    write("[sync]\nmax_parallel = 2\n");
    assert_eq!(pf.poll().unwrap().unwrap().policy.max_parallel, 2);
    assert!(pf.poll().is_none());
}

#[test]
fn policy_file_first_poll_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut pf = PolicyFile::new(Some(dir.path().join("none.toml")));
    assert!(matches!(pf.poll(), Some(Err(ConfigError::Read { .. }))));
    assert!(pf.poll().is_none());
}
