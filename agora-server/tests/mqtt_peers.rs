//! Agora's MQTT port with clients this project did not write: mosquitto's command-line
//! clients and paho-mqtt (Python). `.ci/run` installs them; a missing one fails the
//! test, naming what to install.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use agora_server::Config;
use common::*;

fn server() -> (TestServer, u16) {
    let s = start_with(Config {
        mqtt_port: Some(0),
        ..Config::ephemeral()
    });
    let port = s.mqtt.unwrap().port();
    (s, port)
}

fn tool(name: &str, install: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{name}` is not installed: {install}");
    Command::new(name)
}

/// Kills a child that outlived its test.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto_pub(port: u16, version: &str, args: &[&str]) {
    let out = tool("mosquitto_pub", "apt-get install mosquitto-clients")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mosquitto_clients_publish_and_subscribe_in_both_versions() {
    let (_s, port) = server();
    for version in ["mqttv311", "mqttv5"] {
        let base = format!("mosq/{version}");
        // A retained message first: mosquitto_sub prints it as soon as its
        // subscription is in place, which tells this test when to publish live ones.
        mosquitto_pub(
            port,
            version,
            &[
                "-t",
                &format!("{base}/state"),
                "-m",
                "ready",
                "-r",
                "-q",
                "1",
            ],
        );
        let child = tool("mosquitto_sub", "apt-get install mosquitto-clients")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(["-t", &format!("{base}/#"), "-q", "1", "-C", "3", "-W", "10"])
            .args(["-F", "%t|%q|%r|%p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Reaped(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a line").unwrap();
        assert_eq!(
            first,
            format!("{base}/state|1|1|ready"),
            "the retained message"
        );
        mosquitto_pub(
            port,
            version,
            &[
                "-t",
                &format!("{base}/room 1/temp"),
                "-m",
                "21.5",
                "-q",
                "1",
            ],
        );
        mosquitto_pub(port, version, &["-t", &format!("{base}/hall"), "-m", "19"]);
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert_eq!(
            rest,
            [
                format!("{base}/room 1/temp|1|0|21.5"),
                format!("{base}/hall|1|0|19")
            ],
            "{}",
            version
        );
        assert!(child.0.wait().unwrap().success());
    }
}

#[test]
fn paho_publishes_subscribes_retains_and_carries_v5_properties() {
    let (_s, port) = server();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/paho_check.py");
    let found = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "paho-mqtt is not installed: python3 -m pip install 'paho-mqtt>=2,<3'"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for version in ["3.1.1", "5.0"] {
        let props = if version == "5.0" { ", properties" } else { "" };
        let line = format!(
            "paho {version}: publish, subscribe, QoS 1, retained, persistent session{props}: ok"
        );
        assert!(said.contains(&line), "{said}");
    }
}

/// `mosquitto_sub -c` (clean session 0; on 5.0 with `-x`, a session expiry): it
/// subscribes and leaves; what is published meanwhile waits for it; it comes back and
/// gets it.
#[test]
fn mosquitto_sub_in_persistent_mode_gets_what_was_published_while_it_was_away() {
    let (_s, port) = server();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("away/{version}/meter");
        let id = format!("mosq-away-{version}");
        let sub = |extra: &[&str]| {
            let mut c = tool("mosquitto_sub", "apt-get install mosquitto-clients");
            c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
                .args(["-c", "-i", &id, "-q", "1", "-t", &topic, "-W", "10"])
                .args(["-F", "%t|%q|%p"]);
            if version == "mqttv5" {
                c.args(["-x", "300"]);
            }
            c.args(extra).output().unwrap()
        };
        // Subscribes, and exits once the broker acknowledged it.
        let first = sub(&["-E"]);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        for n in ["1", "2"] {
            mosquitto_pub(port, version, &["-t", &topic, "-m", n, "-q", "1"]);
        }
        let back = sub(&["-C", "2"]);
        assert!(
            back.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&back.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&back.stdout),
            format!("{topic}|1|1\n{topic}|1|2\n"),
            "{version}"
        );
    }
}
