//! RabbitMQ nodes of a test's own, beside the machine's broker: on ports of their own, with
//! folders in a temporary directory that belongs to the rabbitmq user (or the node dies
//! silently), killed with SIGKILL and booted again at will, stopped when dropped.
//!
//! Nodes run as the rabbitmq user (the Debian wrapper switches to it), so they and
//! rabbitmqctl share that user's Erlang cookie: nodes of one test can form a cluster.
//! No rabbitmq-server on the machine: the test fails, saying so.
//!
//! Ports: a node listens on its port (plain AMQP, or TLS only) and on that port + 20000 for
//! Erlang distribution. Tests of one binary run at once, and a node a crashed binary left
//! behind still holds its ports, so every test has ports no other test uses:
//! 5673, 5800, 5810 node.rs, 5680–5682 cluster.rs, 5690 tls.rs, 5700–5702 definitions.rs,
//! 5750 health.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where a node takes clients; its distribution port is this port + 20000.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    /// Plain AMQP on 127.0.0.1.
    Plain(u16),
    /// No plain listener: the node's configuration opens a TLS listener on this port.
    TlsOnly(u16),
}

pub struct Node {
    /// The Erlang node name, `label-pid@localhost`.
    pub name: String,
    /// The node's folder; files written by `Node::create` are here.
    pub dir: PathBuf,
    listener: Listener,
}

impl Node {
    /// Prepares a node (`boot` starts it): `conf` is its new-style configuration (listeners
    /// and TLS; `{dir}` in it stands for the node's folder), `files` are written into its
    /// folder first (certificates, definitions; readable by the rabbitmq user there).
    pub fn create(label: &str, listener: Listener, conf: &str, files: &[(&str, &[u8])]) -> Node {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("ozgtest-node-{label}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("plugins"), "[].\n").unwrap();
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        // Its own configuration file: the machine's may pin the listener to 5672.
        let plain = match listener {
            Listener::Plain(port) => format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
            Listener::TlsOnly(_) => "listeners.tcp = none\n".to_owned(),
        };
        let conf = conf.replace("{dir}", &dir.display().to_string());
        std::fs::write(dir.join("node.conf"), format!("{plain}{conf}\n")).unwrap();
        let node = Node {
            name: format!("{label}-{pid}@localhost"),
            dir,
            listener,
        };
        node.hand_to_rabbitmq();
        node
    }

    /// A plain node with these plugins and no further configuration, booted.
    pub fn start(label: &str, port: u16, plugins: &[&str]) -> Node {
        let node = Node::create(label, Listener::Plain(port), "", &[]);
        node.enable_plugins(plugins);
        node.boot();
        node
    }

    /// The plugins the node starts with (before `boot`).
    pub fn enable_plugins(&self, plugins: &[&str]) {
        std::fs::write(
            self.dir.join("plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .unwrap();
        self.hand_to_rabbitmq();
    }

    fn hand_to_rabbitmq(&self) {
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the node's folders failed");
    }

    fn port(&self) -> u16 {
        match self.listener {
            Listener::Plain(port) | Listener::TlsOnly(port) => port,
        }
    }

    /// The URL of a vhost as guest, on the plain listener (of a node that seeded guest).
    pub fn url(&self, vhost: &str) -> String {
        let Listener::Plain(port) = self.listener else {
            panic!("node {} has no plain listener", self.name);
        };
        format!(
            "amqp://guest:guest@127.0.0.1:{port}/{}",
            vhost.replace('/', "%2f")
        )
    }

    /// Copies a file into the node's folder (readable by the rabbitmq user); its new path.
    pub fn copy_in(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
        self.hand_to_rabbitmq();
        to
    }

    /// The absolute path of a file in the node's folder.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts the node and waits until it runs (about 6 s here).
    pub fn boot(&self) {
        let started = Instant::now();
        let d = &self.dir;
        let mut command = Command::new("rabbitmq-server");
        command
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env(
                "RABBITMQ_DIST_PORT",
                (u32::from(self.port()) + 20000).to_string(),
            )
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("node.conf"));
        if let Listener::Plain(port) = self.listener {
            command.env("RABBITMQ_NODE_PORT", port.to_string());
        }
        let status = command
            .status()
            .expect("rabbitmq-server is needed for this test (deploy/local/test.sh installs it)");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let waited = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "wait"])
            .arg(d.join("pid"))
            .args(["--timeout", "90"])
            .output()
            .unwrap();
        assert!(
            waited.status.success(),
            "node {} did not start: {}\n(its log: {})",
            self.name,
            String::from_utf8_lossy(&waited.stderr),
            d.join("log").display()
        );
        println!("node {} up in {:?}", self.name, started.elapsed());
    }

    /// Boots several nodes at once (each boot is mostly waiting).
    pub fn boot_all(nodes: &[&Node]) {
        std::thread::scope(|scope| {
            for node in nodes {
                scope.spawn(|| node.boot());
            }
        });
    }

    /// SIGKILL to the node's Erlang VM: the abrupt end of a crash or a power cut.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = std::fs::remove_file(self.dir.join("pid"));
        // Dead (and so gone from epmd) before anyone boots it again; a zombie that init has
        // not reaped yet is dead too.
        let stat = Path::new("/proc").join(pid.trim()).join("stat");
        let alive = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctl_output(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("rabbitmqctl is needed for this test (deploy/local/test.sh installs it)")
    }

    /// `rabbitmqctl -n NODE ARGS…`; panics with its stderr if it fails. Returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {}: {}{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rabbitmqctl -n NODE ARGS…` with `input` on stdin (a password, so that it is not on
    /// the command line).
    pub fn ctl_with_input(&self, args: &[&str], input: &str) {
        use std::io::Write;
        let mut child = Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{input}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.ctl_output(&["stop"]);
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}
