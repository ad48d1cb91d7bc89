//! RabbitMQ nodes of a test's own, beside the machine's broker: on ports of their own, with
//! folders in a temporary directory that belongs to the rabbitmq user (or the node dies
//! silently), killed with SIGKILL and booted again at will, stopped when dropped.
//!
//! Nodes run as the rabbitmq user (the Debian wrapper switches to it), so they and
//! rabbitmqctl share that user's Erlang cookie: nodes of one test can form a cluster.
//! No rabbitmq-server on the machine: the test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    /// The Erlang node name, `label-pid@localhost`.
    pub name: String,
    /// The node's folder; files written by `Node::create` are here.
    pub dir: PathBuf,
    dist_port: u16,
    amqp_port: Option<u16>,
}

impl Node {
    /// Prepares a node (`boot` starts it): `conf` is its new-style configuration (listeners
    /// and TLS; `{dir}` in it stands for the node's folder), `files` are written into its
    /// folder first (certificates, readable by the rabbitmq user there). `amqp_port` is the
    /// plain listener (none: no plain listener at all); `dist_port` the Erlang distribution
    /// port.
    pub fn create(
        label: &str,
        amqp_port: Option<u16>,
        dist_port: u16,
        conf: &str,
        files: &[(&str, &[u8])],
    ) -> Node {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("ozgtest-node-{label}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("plugins"), "[].\n").unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        // Its own configuration file: the machine's may pin the listener to 5672.
        let listener = amqp_port
            .map(|p| format!("listeners.tcp.local = 127.0.0.1:{p}\n"))
            .unwrap_or_else(|| "listeners.tcp = none\n".to_owned());
        let conf = conf.replace("{dir}", &dir.display().to_string());
        std::fs::write(dir.join("node.conf"), format!("{listener}{conf}")).unwrap();
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the node's folders failed");
        Node {
            name: format!("{label}-{pid}@localhost"),
            dir,
            dist_port,
            amqp_port,
        }
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
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("node.conf"));
        if let Some(port) = self.amqp_port {
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
        // Dead (and so gone from epmd) before anyone boots it again.
        let proc = Path::new("/proc").join(pid.trim());
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctl_output(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
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
