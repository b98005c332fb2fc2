//! Network namespaces for tests that need real kernel rules (transparent
//! mode). Each [`Pod`] is two fresh named namespaces joined by a veth pair:
//! `app` plays the pod (192.0.2.1, 2001:db8::1) and `world` holds the
//! destinations its connections go to (192.0.2.2-3, 2001:db8::2-3), so they
//! are not loopback and nat sees them as egress. Addresses are the
//! documentation ranges and exist only inside these namespaces.
//!
//! Processes run inside with `ip netns exec`, as another UID with
//! `setpriv`; a Rust listener runs on a thread moved into the namespace
//! with `setns`. Dropping a namespace kills what runs in it (all started by
//! the test) and deletes it, also when the test panicked.
//!
//! Tests skip — printing why, past libtest's capture — only when the
//! kernel refuses namespaces (not root, or `unshare -n` fails). A missing
//! tool (ip, iptables, setpriv, python3) fails the test: `scripts/test.sh`
//! installs them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::io::AsyncWriteExt;

pub const APP_V4: &str = "192.0.2.1";
pub const APP_V6: &str = "2001:db8::1";
pub const WORLD_V4: [&str; 2] = ["192.0.2.2", "192.0.2.3"];
pub const WORLD_V6: [&str; 2] = ["2001:db8::2", "2001:db8::3"];

static NEXT: AtomicUsize = AtomicUsize::new(0);
/// On a fresh machine the first `ip netns add` sets up the /run/netns
/// mount; two doing that at once from parallel tests can race.
static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `Err(why)` when this machine refuses network namespaces to us.
pub fn available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!("not running as root (euid {euid})"));
    }
    match Command::new("unshare").args(["-n", "true"]).output() {
        Err(e) => panic!("cannot run unshare (util-linux): {e}; scripts/test.sh installs it"),
        Ok(o) if !o.status.success() => Err(format!(
            "`unshare -n true` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// True (after saying so on the terminal) when `test` must skip because
/// namespaces are refused.
pub fn skip(test: &str) -> bool {
    match available() {
        Ok(()) => false,
        Err(reason) => {
            // Written to the stream itself: libtest captures print!/eprint!
            // of passing tests, and a skip must never be silent.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no network namespaces here: {reason}"
            );
            true
        }
    }
}

/// The python3 that other UIDs can execute (pyenv shims under /root can't).
pub fn python() -> &'static str {
    const PATH: &str = "/usr/bin/python3";
    assert!(
        std::path::Path::new(PATH).exists(),
        "{PATH} is missing; scripts/test.sh installs python3"
    );
    PATH
}

// === Netns ===

/// A named network namespace with `lo` up, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "ppx-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        {
            let _one_at_a_time = CREATE.lock().unwrap_or_else(|e| e.into_inner());
            check(Command::new("ip").args(["netns", "add", &name]));
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        check(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `program` to be run inside the namespace, as root.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `program` to be run inside the namespace as `uid` (and gid `uid`,
    /// no supplementary groups).
    pub fn command_as(&self, uid: u32, program: &str) -> Command {
        let id = uid.to_string();
        let mut cmd = self.command("setpriv");
        cmd.args(["--reuid", &id, "--regid", &id, "--clear-groups", program]);
        cmd
    }

    /// Runs `f` on a new thread that has moved into this namespace: the
    /// sockets it opens live here.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the test namespace");
            f()
        })
    }

    /// Gives the namespace its own `/etc/FILE`: `ip netns exec` binds
    /// `/etc/netns/NAME/FILE` over it for everything it runs (a
    /// `resolv.conf` naming a resolver in the world, a `hosts` file
    /// pinproxy's resolver reads). Removed on drop.
    pub fn etc(&self, file: &str, contents: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir}: {e}"));
        let path = format!("{dir}/{file}");
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    /// Writes `value` to `/proc/sys/KEY` as seen from inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        check(
            self.command("sh")
                .args(["-c", &format!("echo {value} > {path}")]),
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything inside was started by this test.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Runs `cmd`, panicking with its stderr unless it succeeds.
pub fn check(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// Polls `url` from inside `ns` (curl, every 50 ms, up to 10 s) until it
/// answers 2xx: a proxy's `/readyz` (loopback is never redirected).
pub fn wait_ready(ns: &Netns, url: &str) -> bool {
    for _ in 0..200 {
        let up = ns
            .command("curl")
            .args(["-sf", url])
            .output()
            .is_ok_and(|o| o.status.success());
        if up {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

// === Pod ===

/// An app namespace and the world it connects to, joined by a veth pair.
pub struct Pod {
    pub app: Netns,
    pub world: Netns,
}

impl Pod {
    pub fn new(tag: &str) -> Pod {
        Pod::build(tag, true)
    }

    /// A pod whose namespace has IPv6 disabled (no address, not even ::1).
    pub fn without_ipv6(tag: &str) -> Pod {
        Pod::build(tag, false)
    }

    fn build(tag: &str, ipv6: bool) -> Pod {
        let app = Netns::new(&format!("{tag}-app"));
        let world = Netns::new(&format!("{tag}-world"));
        if !ipv6 {
            for key in ["all", "default", "lo"] {
                app.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1");
            }
        }
        app.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            world.name(),
        ]);
        app.ip(&["addr", "add", &format!("{APP_V4}/24"), "dev", "eth0"]);
        if ipv6 {
            app.ip(&[
                "addr",
                "add",
                &format!("{APP_V6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        for a in WORLD_V4 {
            world.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        for a in WORLD_V6 {
            world.ip(&["addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"]);
        }
        app.ip(&["link", "set", "eth0", "up"]);
        world.ip(&["link", "set", "eth0", "up"]);
        Pod { app, world }
    }
}

// === processes ===

/// A process started in a namespace; killed on drop.
pub struct Proc {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVER: &str = r#"
import socket, sys, threading
tag = sys.argv[1]
def fmt(addr):
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
def serve(s):
    while True:
        c, _ = s.accept()
        try:
            c.sendall(f"{tag} {fmt(c.getsockname())}\n".encode())
        finally:
            c.close()
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(port)))
    s.listen(64)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

const CLIENT: &str = r#"
import errno, socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    data = b""
    while not data.endswith(b"\n"):
        chunk = c.recv(256)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip() or "closed")
except OSError as e:
    print("error", errno.errorcode.get(e.errno, str(e)))
"#;

/// A TCP server on every address of `ns` (dual-stack `[::]`), on each of
/// `ports`, answering every connection with `TAG ADDR:PORT` (the address
/// the connection reached) and closing.
pub fn serve(ns: &Netns, tag: &str, ports: &[u16]) -> Proc {
    let mut cmd = ns.command(python());
    cmd.args(["-I", "-c", SERVER, tag]);
    cmd.args(ports.iter().map(u16::to_string));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the python server");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout was piped");
    let proc = Proc {
        child,
        _stdin: stdin,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's ready line");
    assert_eq!(
        line.trim(),
        "ready",
        "server {tag} on {ports:?} did not start"
    );
    proc
}

/// Starts `cmd` (stdin and stdout piped) and waits for it to print
/// `ready`; it runs until the returned [`Proc`] is dropped.
pub fn spawn_ready(cmd: &mut Command, what: &str) -> Proc {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout was piped");
    let proc = Proc {
        child,
        _stdin: stdin,
    };
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    assert_eq!(line.trim(), "ready", "{what} did not start");
    proc
}

/// Connects from inside `ns` as `uid` to `host:port` and returns the line
/// the server sent, or `error ECONNREFUSED`-style on failure.
pub fn connect(ns: &Netns, uid: u32, host: &str, port: u16) -> String {
    let out =
        check(
            ns.command_as(uid, python())
                .args(["-I", "-c", CLIENT, host, &port.to_string()]),
        );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// === the redirect target ===

/// A stand-in for pinproxy's transparent listener, running in a namespace:
/// it answers each connection with `original ADDR:PORT`, the destination
/// [`pinproxy::proxy::original_dst::original_dst`] reads for it, and counts them.
pub struct OriginalDstListener {
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OriginalDstListener {
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> OriginalDstListener {
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        let addrs = addrs.to_vec();
        let count = accepted.clone();
        let thread = ns.spawn_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let mut listeners = Vec::new();
                for addr in addrs {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => listeners.push(l),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("bind {addr}: {e}")));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                for listener in listeners {
                    let count = count.clone();
                    tokio::spawn(async move {
                        while let Ok((mut stream, _)) = listener.accept().await {
                            count.fetch_add(1, Ordering::SeqCst);
                            let line = match pinproxy::proxy::original_dst::original_dst(&stream) {
                                Ok(addr) => format!("original {addr}\n"),
                                Err(e) => format!("no-original-dst {:?}\n", e.kind()),
                            };
                            let _ = stream.write_all(line.as_bytes()).await;
                        }
                    });
                }
                let _ = stopped.await;
            });
        });
        ready
            .recv()
            .expect("listener thread ended before binding")
            .unwrap_or_else(|e| panic!("original-dst listener: {e}"));
        OriginalDstListener {
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for OriginalDstListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
