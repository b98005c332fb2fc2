//! CONNECT from a test, and the built `pinproxy` binary run as a child.

use super::*;

/// Sends CONNECT; returns the status, the response head and the stream.
pub async fn connect_status(proxy: SocketAddr, target: &str) -> (u16, String, TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await.unwrap_or_default();
    let s = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (s, head, tcp)
}

/// Runs the built binary on free loopback ports: (child, proxy, admin),
/// returning at once, before it listens. Only for a test that must watch
/// the start itself (`ca_is_written_before_readyz_turns_ready` polls
/// `/readyz` from the first moment); everything else uses
/// `TestProxy::builder()….spawn()`, which waits for the listener.
pub fn spawn_binary(
    pins: &std::path::Path,
    extra: &[&str],
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let (listen, admin) = (super::proxy::free(), super::proxy::free());
    let mut args = vec![
        "run".to_string(),
        "--pins".into(),
        pins.display().to_string(),
        "--listen".into(),
        listen.to_string(),
        "--admin".into(),
        admin.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(&args)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, listen, admin)
}

/// Waits (bounded) until `addr` accepts connections.
pub async fn wait_listening(addr: std::net::SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never listened");
}

/// Runs the built `pinproxy` binary with `args`: (exit code, stdout, stderr).
pub fn run_pinproxy(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
        .args(args)
        .output()
        .expect("run pinproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args`, capturing stderr line by line.
pub struct Run {
    pub child: tokio::process::Child,
    /// Its stderr line by line; `None` when it was left uncaptured
    /// (`Builder::stderr_uncaptured`).
    pub lines: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>>,
    pub listen: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl Run {
    pub async fn start(pins: &std::path::Path, extra: &[&str]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (listen, admin) = (free(), free());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--pins", pins.to_str().unwrap()])
            .args([
                "--listen",
                &listen.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stderr.take().unwrap(),
        ));
        wait_listening(listen).await;
        Self {
            child,
            lines: Some(lines),
            listen,
            admin,
        }
    }

    fn stderr(
        &mut self,
    ) -> &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>> {
        self.lines
            .as_mut()
            .expect("the child's stderr was left uncaptured (.stderr_uncaptured())")
    }

    /// Lines until one contains `needle` (or 5 s pass): all of them.
    pub async fn until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.stderr().next_line()).await
        {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
        panic!("no line containing {needle:?} in:\n{}", seen.join("\n"));
    }

    /// The lines printed within `wait` (a multi-line message's rest).
    pub async fn more(&mut self, wait: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.stderr().next_line()).await
        {
            seen.push(line);
        }
        seen
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
    }
}
