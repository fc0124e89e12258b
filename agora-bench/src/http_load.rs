//! `agora-lean-http`'s load on the broker's HTTP port, while a run measures it.

use std::time::{Duration, Instant};

/// An operator's use of the HTTP port: a Prometheus-like scrape of `/metrics` every
/// second, and one console's event stream read as it comes. On threads of the bench
/// (their CPU is the client's), stopped with the server.
pub(crate) struct HttpLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl HttpLoad {
    pub(crate) fn start(web: std::net::SocketAddr) -> HttpLoad {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ask = move |path: &str, keep_reading: bool, stop: &std::sync::atomic::AtomicBool| {
            let Ok(mut s) = std::net::TcpStream::connect(web) else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let req = format!("GET {path} HTTP/1.1\r\nhost: {web}\r\nconnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_err() {
                return;
            }
            let mut buf = [0u8; 64 * 1024];
            // A scrape reads to the end; the event stream until told to stop.
            while !stop.load(SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if !keep_reading {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        };
        let (s1, s2) = (stop.clone(), stop.clone());
        let scrape = std::thread::spawn(move || {
            while !s1.load(SeqCst) {
                let t = Instant::now();
                ask("/metrics", false, &s1);
                // Every second, as `scrape_interval: 1s`; the stop flag is looked at
                // every 50 ms.
                while t.elapsed() < Duration::from_secs(1) && !s1.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let console = std::thread::spawn(move || {
            while !s2.load(SeqCst) {
                ask("/api/events", true, &s2);
            }
        });
        HttpLoad {
            stop,
            threads: vec![scrape, console],
        }
    }
}

impl Drop for HttpLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
