//! A RabbitMQ node of a test's own, on its own ports (AMQP `port`, Erlang distribution
//! `port + 20000`), with its folders in a temporary directory owned by the rabbitmq user
//! (or the node dies silently). Stopped and removed when dropped. A machine without
//! rabbitmq-server fails the test with a message saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct RabbitNode {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
}

impl RabbitNode {
    /// Boots a node with these plugins and these extra lines of rabbitmq.conf. Files the
    /// configuration names must be inside [`RabbitNode::dir`]: see [`RabbitNode::prepare`].
    pub fn start(label: &str, port: u16, plugins: &[&str], extra_conf: &str) -> RabbitNode {
        let node = RabbitNode::prepare(label, port);
        node.configure(plugins, extra_conf);
        node.boot();
        node
    }

    /// The node's folders, not yet booted: a test puts its files into `dir` first.
    pub fn prepare(label: &str, port: u16) -> RabbitNode {
        let dir = std::env::temp_dir().join(format!("ozgtest-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        RabbitNode {
            name: format!("ozgtest-{label}-{}@localhost", std::process::id()),
            dir,
            port,
        }
    }

    pub fn configure(&self, plugins: &[&str], extra_conf: &str) {
        std::fs::write(
            self.dir.join("plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .unwrap();
        // Its own configuration file: the machine's may pin the listener to 5672.
        std::fs::write(
            self.dir.join("node.conf"),
            format!(
                "listeners.tcp.local = 127.0.0.1:{}\n{extra_conf}\n",
                self.port
            ),
        )
        .unwrap();
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of the node's folders failed");
    }

    pub fn boot(&self) {
        let d = &self.dir;
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env(
                "RABBITMQ_DIST_PORT",
                (u32::from(self.port) + 20000).to_string(),
            )
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("node.conf"))
            .status()
            .expect("rabbitmq-server is needed for this test (deploy/local/test.sh installs it)");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let waited = self.ctl(&[
            "wait",
            &d.join("pid").display().to_string(),
            "--timeout",
            "90",
        ]);
        assert!(
            waited.status.success(),
            "node {} did not start: {}\n(log in {})",
            self.name,
            String::from_utf8_lossy(&waited.stderr),
            d.join("log").display()
        );
    }

    /// `rabbitmqctl -n <node> ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl is needed for this test (deploy/local/test.sh installs it)")
    }

    /// `rabbitmqctl`, asserting success; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies a file into the node's folder (readable by the rabbitmq user); its new path.
    pub fn copy_in(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(from, &to).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&self.dir)
            .status();
        to
    }

    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }

    /// The URL for a vhost as guest (on a node that seeded its default user).
    pub fn url(&self, vhost: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            self.port,
            vhost.replace('/', "%2f")
        )
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
