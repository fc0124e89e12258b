//! The logger configured by Seelog-style XML: verbs, Go layouts, the example file,
//! outputs, level filters, the async writer, and bad files refused by the binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_server::logging::{
    Entry, Format, Layout, Level, LevelSet, LogConfig, Logger, LoggerKind, DEFAULT_CONFIG,
};
use chrono::{DateTime, FixedOffset, TimeZone};
use log::Log;

const DEADLINE: Duration = Duration::from_secs(10);

/// The issue's example, as it must work when written.
const EXAMPLE: &str = r#"<seelog minlevel="debug" type="asynctimer" asyncinterval="1000">
    <outputs formatid="common">
        <console/>
    </outputs>
    <formats>
        <format id="common" format="%Date(02-01-2006 15:04:05.000-0700) [%LEVEL] %Msg%n"/>
    </formats>
</seelog>
"#;

/// Thursday 2026-03-05 09:07:03.120450000 at -07:00 (16:07:03 UTC), day 64 of the year.
fn t0() -> DateTime<FixedOffset> {
    FixedOffset::west_opt(7 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 3, 5, 9, 7, 3)
        .unwrap()
        + chrono::Duration::nanoseconds(120_450_000)
}

fn entry(level: Level, msg: &str) -> Entry {
    Entry {
        time: t0(),
        level,
        msg: msg.into(),
        file: Some("agora-server/src/conn.rs".into()),
        line: Some(42),
    }
}

fn render(format: &str) -> String {
    Format::compile(format)
        .unwrap_or_else(|e| panic!("{format:?}: {e}"))
        .to_line(&entry(Level::Warn, "hello"))
}

#[test]
fn every_verb() {
    let ns = t0().timestamp_nanos_opt().unwrap().to_string();
    let table: &[(&str, &str)] = &[
        ("%Date", "2026-03-05"),
        ("%Date(15:04)", "09:07"),
        ("%Time", "09:07:03"),
        ("%UTCDate", "2026-03-05"),
        ("%UTCDate(15:04 MST)", "16:07 UTC"),
        ("%UTCTime", "16:07:03"),
        ("%LEVEL", "WARN"),
        ("%Level", "Warn"),
        ("%Lev", "Wrn"),
        ("%LEV", "WRN"),
        ("%l", "w"),
        ("%Msg", "hello"),
        ("%n", "\n"),
        ("%t", "\t"),
        ("%r", "\r"),
        ("%File", "conn.rs"),
        ("%RelFile", "agora-server/src/conn.rs"),
        ("%Line", "42"),
        ("%%", "%"),
        ("%Ns", &ns),
        ("%UTCNs", &ns),
        ("%EscM(36)x%EscM(0)", "\x1b[36mx\x1b[0m"),
        // Seelog takes the longest verb that prefixes the letters.
        ("%Msgs", "hellos"),
        ("%Levelx", "Warnx"),
        ("%LEVELS", "WARNS"),
        ("100%% [%l] %Msg%n", "100% [w] hello\n"),
        ("no verbs at all", "no verbs at all"),
        ("", ""),
    ];
    for (format, want) in table {
        assert_eq!(render(format), *want, "{format:?}");
    }
}

#[test]
fn every_level_in_every_style() {
    let f = Format::compile("%LEVEL|%Level|%Lev|%LEV|%l").unwrap();
    let want = [
        (Level::Trace, "TRACE|Trace|Trc|TRC|t"),
        (Level::Debug, "DEBUG|Debug|Dbg|DBG|d"),
        (Level::Info, "INFO|Info|Inf|INF|i"),
        (Level::Warn, "WARN|Warn|Wrn|WRN|w"),
        (Level::Error, "ERROR|Error|Err|ERR|e"),
        (Level::Critical, "CRITICAL|Critical|Crt|CRT|c"),
    ];
    for (level, text) in want {
        assert_eq!(f.to_line(&entry(level, "")), text);
    }
}

#[test]
fn bad_verbs_are_named() {
    for (format, needle) in [
        ("%FuncShort %Msg", "unsupported verb %FuncShort"),
        ("%Func", "unsupported verb %Func"),
        ("%FullPath", "unsupported verb %FullPath"),
        ("%Bogus", "unknown verb %Bogus"),
        ("50%", "'%' at the end"),
        ("%Date(15:04", "no closing"),
        ("%Msg(x)", "%Msg takes no parameter"),
        ("%EscM", "%EscM needs a parameter"),
        ("%Date(15:04 MST)", "MST"),
    ] {
        let e = Format::compile(format).unwrap_err();
        assert!(e.contains(needle), "{format:?}: {e}");
    }
}

#[test]
fn go_layouts_give_the_exact_text() {
    // (layout, in the entry's zone, in UTC)
    let table: &[(&str, &str, &str)] = &[
        (
            "02-01-2006 15:04:05.000-0700",
            "05-03-2026 09:07:03.120-0700",
            "05-03-2026 16:07:03.120+0000",
        ),
        (
            "Mon Jan _2 15:04:05 2006",
            "Thu Mar  5 09:07:03 2026",
            "Thu Mar  5 16:07:03 2026",
        ),
        (
            "02 Jan 06 15:04 -0700",
            "05 Mar 26 09:07 -0700",
            "05 Mar 26 16:07 +0000",
        ),
        (
            "Monday, 02-Jan-06 15:04:05 -07:00",
            "Thursday, 05-Mar-26 09:07:03 -07:00",
            "Thursday, 05-Mar-26 16:07:03 +00:00",
        ),
        (
            "Mon, 02 Jan 2006 15:04:05 -0700",
            "Thu, 05 Mar 2026 09:07:03 -0700",
            "Thu, 05 Mar 2026 16:07:03 +0000",
        ),
        (
            "2006-01-02T15:04:05Z07:00",
            "2026-03-05T09:07:03-07:00",
            "2026-03-05T16:07:03Z",
        ),
        (
            "2006-01-02T15:04:05.999999999Z07:00",
            "2026-03-05T09:07:03.12045-07:00",
            "2026-03-05T16:07:03.12045Z",
        ),
        ("3:04PM", "9:07AM", "4:07PM"),
        ("03:04:05 pm", "09:07:03 am", "04:07:03 pm"),
        ("Jan _2 15:04:05", "Mar  5 09:07:03", "Mar  5 16:07:03"),
        (
            "Jan _2 15:04:05.000",
            "Mar  5 09:07:03.120",
            "Mar  5 16:07:03.120",
        ),
        (
            "Jan _2 15:04:05.000000",
            "Mar  5 09:07:03.120450",
            "Mar  5 16:07:03.120450",
        ),
        (
            "Jan _2 15:04:05.000000000",
            "Mar  5 09:07:03.120450000",
            "Mar  5 16:07:03.120450000",
        ),
        (
            "2006-01-02 15:04:05",
            "2026-03-05 09:07:03",
            "2026-03-05 16:07:03",
        ),
        ("2006-01-02", "2026-03-05", "2026-03-05"),
        ("15:04:05", "09:07:03", "16:07:03"),
        ("1/2/06 3:4:5", "3/5/26 9:7:3", "3/5/26 4:7:3"),
        ("January 2, 2006", "March 5, 2026", "March 5, 2026"),
        ("002 __2", "064  64", "064  64"),
        ("15:04:05,000", "09:07:03,120", "16:07:03,120"),
        ("05.9 05.99 05.999", "03.1 03.12 03.12", "03.1 03.12 03.12"),
        (
            "-07 -070000 -07:00:00 Z0700 Z07",
            "-07 -070000 -07:00:00 -0700 -07",
            "+00 +000000 +00:00:00 Z Z",
        ),
        // Not layout elements: literal text, as in Go.
        ("_2006", "_2026", "_2026"),
        ("Janet Monkey", "Janet Monkey", "Janet Monkey"),
        ("log at 15h04", "log at 09h07", "log at 16h07"),
        // A run of zeros followed by a digit is no fraction: `.`, `0`, then `01`.
        ("05.001", "03.003", "03.003"),
    ];
    let utc = t0().with_timezone(&FixedOffset::east_opt(0).unwrap());
    for (layout, local, in_utc) in table {
        let l = Layout::compile(layout, false).unwrap();
        let mut s = String::new();
        l.render(&t0(), false, &mut s);
        assert_eq!(s, *local, "{layout:?} local");
        let l = Layout::compile(layout, true).unwrap();
        let mut s = String::new();
        l.render(&utc, true, &mut s);
        assert_eq!(s, *in_utc, "{layout:?} UTC");
    }
    // The zone name is known only in UTC.
    let mut s = String::new();
    Layout::compile("Mon Jan _2 15:04:05 MST 2006", true)
        .unwrap()
        .render(&utc, true, &mut s);
    assert_eq!(s, "Thu Mar  5 16:07:03 UTC 2026");
    let e = Layout::compile("15:04 MST", false).unwrap_err();
    assert!(e.contains("MST"), "{e}");
    let e = Layout::compile("05.0000000000", false).unwrap_err();
    assert!(e.contains("9 fractional"), "{e}");
}

/// A console that publishes what it was given only when flushed, like a buffered
/// stream, so tests see exactly what the logger flushed.
#[derive(Clone, Default)]
struct Console {
    pending: Arc<Mutex<Vec<u8>>>,
    flushed: Arc<Mutex<Vec<u8>>>,
}

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.pending.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let mut p = self.pending.lock().unwrap();
        self.flushed.lock().unwrap().append(&mut p);
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8(self.flushed.lock().unwrap().clone()).unwrap()
    }

    fn wait_for(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let t = self.text();
            if t.contains(needle) {
                return t;
            }
            assert!(Instant::now() < end, "{needle:?} never appeared in {t:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn logger(xml: &str, console: &Console) -> Logger {
    let config = LogConfig::parse(xml, "test.xml").unwrap_or_else(|e| panic!("{e}"));
    let c = console.clone();
    Logger::builder(&config)
        .clock(t0)
        .console(move || Box::new(c.clone()))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn log_at(logger: &Logger, level: log::Level, target: &str, msg: &str) {
    logger.log(
        &log::Record::builder()
            .level(level)
            .target(target)
            .file(Some("agora-server/src/lib.rs"))
            .line(Some(7))
            .args(format_args!("{msg}"))
            .build(),
    );
}

#[test]
fn the_example_is_the_default_and_gives_the_expected_line() {
    assert_eq!(DEFAULT_CONFIG, EXAMPLE);
    let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/logconfig.xml");
    assert_eq!(std::fs::read_to_string(on_disk).unwrap(), EXAMPLE);
    let config = LogConfig::builtin();
    assert_eq!(
        config.kind,
        LoggerKind::AsyncTimer(Duration::from_nanos(1000))
    );
    assert_eq!(
        config.levels,
        LevelSet::range(Level::Debug, Level::Critical)
    );

    let console = Console::default();
    let l = Logger::builder(&config)
        .clock(|| {
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 25, 14, 2, 3)
                .unwrap()
                .fixed_offset()
                + chrono::Duration::milliseconds(123)
        })
        .console({
            let c = console.clone();
            move || Box::new(c.clone())
        })
        .build()
        .unwrap();
    assert_eq!(l.max_level(), log::LevelFilter::Debug);
    log_at(&l, log::Level::Trace, "agora", "not shown");
    log_at(
        &l,
        log::Level::Info,
        "agora",
        "listening on 127.0.0.1:48879",
    );
    l.flush();
    assert_eq!(
        console.text(),
        "25-11-2026 14:02:03.123+0000 [INFO] listening on 127.0.0.1:48879\n"
    );
}

#[test]
fn async_output_appears_without_a_flush_and_all_is_flushed_at_shutdown() {
    // asyncloop: flushed as soon as the channel is empty.
    let console = Console::default();
    let l = logger(
        r#"<seelog type="asyncloop"><outputs formatid="f"><console/></outputs>
           <formats><format id="f" format="%Msg%n"/></formats></seelog>"#,
        &console,
    );
    log_at(&l, log::Level::Info, "agora", "one");
    console.wait_for("one\n");
    // asynctimer with an hour's interval: the first batch is flushed at once, the
    // rest waits for the hour, or for shutdown.
    let console = Console::default();
    let l = logger(
        r#"<seelog type="asynctimer" asyncinterval="3600000000000"><outputs formatid="f"><console/></outputs>
           <formats><format id="f" format="%Msg%n"/></formats></seelog>"#,
        &console,
    );
    log_at(&l, log::Level::Info, "agora", "first");
    console.wait_for("first\n");
    for i in 0..100 {
        log_at(&l, log::Level::Info, "agora", &format!("r{i}"));
    }
    assert!(l.shutdown());
    let want: String = std::iter::once("first\n".to_owned())
        .chain((0..100).map(|i| format!("r{i}\n")))
        .collect();
    assert_eq!(console.text(), want);
    // After shutdown, records are discarded rather than lost in a dead channel.
    log_at(&l, log::Level::Info, "agora", "late");
    assert_eq!(console.text(), want);
}

/// A console whose first write blocks until the test opens the gate.
struct Gate {
    entered: Option<mpsc::Sender<()>>,
    open: Arc<Mutex<mpsc::Receiver<()>>>,
    inner: Console,
}

impl Write for Gate {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Some(tx) = self.entered.take() {
            tx.send(()).unwrap();
            self.open.lock().unwrap().recv().unwrap();
        }
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn a_full_channel_drops_counts_and_reports() {
    let config = LogConfig::parse(
        r#"<seelog type="asyncloop"><outputs formatid="f"><console/></outputs>
           <formats><format id="f" format="[%LEVEL] %Msg%n"/></formats></seelog>"#,
        "test.xml",
    )
    .unwrap();
    let console = Console::default();
    let (entered_tx, entered) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let gate = Gate {
        entered: Some(entered_tx),
        open: Arc::new(Mutex::new(open_rx)),
        inner: console.clone(),
    };
    let mut gate = Some(gate);
    let l = Logger::builder(&config)
        .clock(t0)
        .capacity(4)
        .console(move || Box::new(gate.take().unwrap()))
        .build()
        .unwrap();
    log_at(&l, log::Level::Info, "agora", "r0");
    // The writer is now stuck writing r0 and the channel is empty.
    entered.recv_timeout(DEADLINE).unwrap();
    for i in 1..=10 {
        log_at(&l, log::Level::Info, "agora", &format!("r{i}"));
    }
    open.send(()).unwrap();
    assert!(l.shutdown());
    assert_eq!(
        console.text(),
        "[INFO] r0\n[INFO] r1\n[INFO] r2\n[INFO] r3\n[INFO] r4\n\
         [WARN] log channel full: 6 records dropped\n"
    );
}

#[test]
fn shutdown_gives_up_on_an_output_that_never_takes_bytes() {
    let config = LogConfig::parse(
        r#"<seelog type="asyncloop"><outputs><console/></outputs></seelog>"#,
        "test.xml",
    )
    .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let mut gate = Some(Gate {
        entered: Some(entered_tx),
        open: Arc::new(Mutex::new(open_rx)),
        inner: Console::default(),
    });
    let l = Logger::builder(&config)
        .capacity(1)
        .shutdown_grace(Duration::from_millis(50))
        .console(move || Box::new(gate.take().unwrap()))
        .build()
        .unwrap();
    log_at(&l, log::Level::Info, "agora", "stuck");
    entered.recv_timeout(DEADLINE).unwrap();
    log_at(&l, log::Level::Info, "agora", "fills the channel");
    // The writer is stuck and the channel full: shutdown reports that it could not
    // finish instead of waiting for ever.
    assert!(!l.shutdown());
    open.send(()).unwrap();
}

#[test]
fn level_filters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let xml = format!(
        r#"<seelog type="sync" minlevel="info" maxlevel="error">
             <outputs formatid="f">
               <filter levels="error,critical"><file path="{d}/errors.log"/></filter>
               <file path="{d}/all.log"/>
               <splitter formatid="g"><filter levels="warn, info"><file path="{d}/g.log"/></filter></splitter>
             </outputs>
             <formats><format id="f" format="%l %Msg%n"/><format id="g" format="%LEV%n"/></formats>
           </seelog>"#
    );
    let l = logger(&xml, &Console::default());
    assert_eq!(l.max_level(), log::LevelFilter::Info);
    for (level, target) in [
        (log::Level::Trace, "agora"),
        (log::Level::Debug, "agora"),
        (log::Level::Info, "agora"),
        (log::Level::Warn, "agora"),
        (log::Level::Error, "agora"),
        (log::Level::Error, "critical"),
    ] {
        log_at(&l, level, target, target);
    }
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(read("errors.log"), "e agora\n");
    assert_eq!(read("all.log"), "i agora\nw agora\ne agora\n");
    assert_eq!(read("g.log"), "INF\nWRN\n");

    // `levels` lists exactly the levels wanted; critical is an Error record with the
    // target "critical".
    let console = Console::default();
    let l = logger(
        r#"<seelog type="sync" levels="debug,critical"><outputs formatid="f"><console/></outputs>
           <formats><format id="f" format="%Lev %Msg%n"/></formats></seelog>"#,
        &console,
    );
    assert_eq!(l.max_level(), log::LevelFilter::Debug);
    for level in [
        log::Level::Trace,
        log::Level::Debug,
        log::Level::Info,
        log::Level::Error,
    ] {
        log_at(&l, level, "agora", "x");
    }
    log_at(&l, log::Level::Error, "critical", "y");
    assert_eq!(console.text(), "Dbg x\nCrt y\n");

    // off lets nothing through, and the log macros are told so.
    let l = logger(
        r#"<seelog type="sync" minlevel="off"><outputs><console/></outputs></seelog>"#,
        &Console::default(),
    );
    assert_eq!(l.max_level(), log::LevelFilter::Off);
}

#[test]
fn file_output_appends_and_creates_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/agora.log");
    let xml = format!(
        r#"<seelog type="asyncloop"><outputs formatid="f"><file path="{}"/></outputs>
           <formats><format id="f" format="%Date(2006-01-02T15:04:05.000Z07:00) %LEV %File:%Line %Msg%n"/></formats></seelog>"#,
        path.display()
    );
    for round in 0..2 {
        let l = logger(&xml, &Console::default());
        log_at(&l, log::Level::Warn, "agora", &format!("round {round}"));
        assert!(l.shutdown());
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "2026-03-05T09:07:03.120-07:00 WRN lib.rs:7 round 0\n\
         2026-03-05T09:07:03.120-07:00 WRN lib.rs:7 round 1\n"
    );
}

#[test]
fn rolling_file_rolls_at_the_size_and_keeps_maxrolls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roll.log");
    let xml = format!(
        r#"<seelog type="sync"><outputs formatid="f">
             <rollingfile type="size" filename="{}" maxsize="100" maxrolls="2"/>
           </outputs><formats><format id="f" format="%Msg%n"/></formats></seelog>"#,
        path.display()
    );
    let l = logger(&xml, &Console::default());
    // 30 bytes a line: three fit in 100 bytes, the fourth rolls the file.
    let line = |i: usize| format!("record {i:02} {}", "x".repeat(19));
    for i in 1..=12 {
        log_at(&l, log::Level::Info, "agora", &line(i));
    }
    assert!(l.shutdown());
    let lines =
        |r: std::ops::RangeInclusive<usize>| -> String { r.map(|i| line(i) + "\n").collect() };
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Rolls 1..=3 were made; only the newest two are kept.
    assert_eq!(names, ["roll.log", "roll.log.2", "roll.log.3"]);
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(read("roll.log.2"), lines(4..=6));
    assert_eq!(read("roll.log.3"), lines(7..=9));
    assert_eq!(read("roll.log"), lines(10..=12));
    for n in &names {
        assert!(read(n).len() <= 100, "{n}");
    }
}

#[test]
fn config_errors_name_line_and_column() {
    let e = LogConfig::parse(
        "<seelog>\n  <outputs>\n    <syslog/>\n  </outputs>\n</seelog>",
        "x.xml",
    )
    .unwrap_err();
    assert_eq!(e.position, Some((3, 5)));
    assert!(
        e.to_string()
            .starts_with("x.xml:3:5: unknown output <syslog>"),
        "{e}"
    );
    for (xml, needle) in [
        (
            r#"<seelog minlevel="loud"><outputs><console/></outputs></seelog>"#,
            "unknown level \"loud\"",
        ),
        (
            r#"<seelog type="adaptive"><outputs><console/></outputs></seelog>"#,
            "\"adaptive\" is not supported",
        ),
        (
            r#"<seelog type="asynctimer"><outputs><console/></outputs></seelog>"#,
            "needs asyncinterval",
        ),
        (
            r#"<seelog levels="info" minlevel="info"><outputs><console/></outputs></seelog>"#,
            "cannot be combined",
        ),
        (
            r#"<seelog><outputs><console formatid="nope"/></outputs></seelog>"#,
            "format id \"nope\" is not defined",
        ),
        (
            r#"<seelog><outputs><file/></outputs></seelog>"#,
            "<file> needs path",
        ),
        (
            r#"<seelog><outputs><rollingfile type="date" filename="x"/></outputs></seelog>"#,
            "\"date\" is not supported",
        ),
        (
            r#"<seelog><outputs><console colour="on"/></outputs></seelog>"#,
            "attribute \"colour\"",
        ),
        (
            r#"<seelog><outputs/><exceptions/></seelog>"#,
            "<exceptions> is not supported",
        ),
        (
            r#"<log><outputs><console/></outputs></log>"#,
            "expected <seelog>",
        ),
        (r#"<seelog><outputs><console/></outputs>"#, "malformed XML"),
        (
            r#"<seelog><outputs formatid="a"><console/></outputs><formats><format id="a" format="%FuncShort"/></formats></seelog>"#,
            "%FuncShort",
        ),
    ] {
        let e = LogConfig::parse(xml, "x.xml").unwrap_err().to_string();
        assert!(e.starts_with("x.xml:") && e.contains(needle), "{xml}: {e}");
    }
}

/// Runs the binary with `args`, expecting it to refuse to start.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "{args:?}"
    );
    err
}

#[test]
fn the_binary_refuses_each_kind_of_bad_file_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let cases = [
        ("malformed.xml", "<seelog>\n<outputs>\n<console/>\n</output>\n</seelog>".to_owned(), ":4:", "malformed XML"),
        ("level.xml", r#"<seelog minlevel="verbose"><outputs><console/></outputs></seelog>"#.to_owned(), ":1:1:", "unknown level \"verbose\""),
        ("verb.xml", "<seelog><outputs formatid=\"a\"><console/></outputs>\n<formats>\n  <format id=\"a\" format=\"%FuncShort %Msg\"/></formats></seelog>".to_owned(), ":3:3:", "unsupported verb %FuncShort"),
        ("unknown-verb.xml", r#"<seelog><outputs formatid="a"><console/></outputs><formats><format id="a" format="%Wat"/></formats></seelog>"#.to_owned(), ":1:", "unknown verb %Wat"),
        ("layout.xml", r#"<seelog><outputs formatid="a"><console/></outputs><formats><format id="a" format="%Date(MST)"/></formats></seelog>"#.to_owned(), ":1:", "MST"),
        ("output.xml", "<seelog><outputs>\n  <smtp/></outputs></seelog>".to_owned(), ":2:3:", "output <smtp> is not supported"),
        ("formatid.xml", "<seelog><outputs>\n <console formatid=\"main\"/></outputs></seelog>".to_owned(), ":2:2:", "format id \"main\" is not defined"),
        ("path.xml", format!("<seelog><outputs>\n<file path=\"{}/x.log\"/></outputs></seelog>", blocker.display()), ":2:1:", "cannot open"),
    ];
    for (name, xml, at, problem) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, xml).unwrap();
        let err = refused(&["--log-config", file.to_str().unwrap()]);
        let whole = format!("{}{at}", file.display());
        assert!(err.contains(&whole), "{name}: {err}");
        assert!(err.contains(problem), "{name}: {err}");
        // The environment variable works as the flag does.
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_MEMORY_ONLY", "true")
            .env("AGORA_LOG_CONFIG", &file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} via AGORA_LOG_CONFIG");
    }
    let missing = dir.path().join("missing.xml");
    let err = refused(&["--log-config", missing.to_str().unwrap()]);
    assert!(err.contains("missing.xml: cannot read"), "{err}");
}

/// `DD-DD-DDDD DD:DD:DD.DDD+DDDD [LEVEL] ` with any digit for D and a sign for +.
fn has_example_shape(line: &str) -> bool {
    let shape = "00-00-0000 00:00:00.000+0000 [";
    let head: String = line
        .chars()
        .take(shape.len())
        .map(|c| match c {
            '0'..='9' => '0',
            '-' | '+' => '±',
            c => c,
        })
        .collect();
    let want: String = shape
        .chars()
        .map(|c| if c == '-' || c == '+' { '±' } else { c })
        .collect();
    let rest = &line[line.len().min(shape.len())..];
    head == want
        && ["TRACE] ", "DEBUG] ", "INFO] ", "WARN] ", "ERROR] "]
            .iter()
            .any(|l| rest.starts_with(l))
}

#[test]
fn the_binary_logs_in_the_example_shape_and_flushes_at_shutdown() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = agora_protocol::startup::read_listener(&mut out, "tcp").unwrap();
    // A client connects and leaves, so there is a debug line too.
    drop(std::net::TcpStream::connect(addr).unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    // Should a line never come, the broker is killed at the deadline and the read ends.
    let (done, watch) = mpsc::channel::<()>();
    let pid = child.id().to_string();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(DEADLINE) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let mut seen = Vec::new();
    let want = format!("[INFO] listening on {addr}");
    // Wait for the client's line too: a connection still in the listen backlog when the
    // signal comes is never accepted, so it would log nothing.
    let wanted = |seen: &[String]| {
        seen.iter().any(|l| l.contains(&want)) && seen.iter().any(|l| l.contains("[DEBUG] client "))
    };
    while !wanted(&seen) {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "stderr ended: {seen:?}");
        seen.push(l);
    }
    drop(done);
    watchdog.join().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    seen.extend(rest.lines().map(|l| format!("{l}\n")));
    for l in &seen {
        assert!(
            l.ends_with('\n') && has_example_shape(l),
            "{l:?} in {seen:?}"
        );
    }
    let all = seen.concat();
    assert!(all.contains("[INFO] agora 0.1.0 starting"), "{all}");
    assert!(all.contains("[DEBUG] client "), "{all}");
    // The last lines, written after the signal, were flushed before exit.
    assert!(all.trim_end().ends_with("[INFO] stopped"), "{all}");
}

#[test]
fn the_binary_exits_even_if_nobody_reads_its_log() {
    // Standard error is a pipe nobody reads: once it is full the writer thread is stuck,
    // records are dropped, and shutdown must still end the process.
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = agora_protocol::startup::read_listener(&mut out, "tcp").unwrap();
    // Two debug lines of about 70 bytes per client: well past a 64 KiB pipe.
    for _ in 0..2000 {
        drop(std::net::TcpStream::connect(addr).unwrap());
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "agora did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}
