//! Janus in a network namespace of its own: a veth pair whose host end the load generator's
//! clients bind, a config folder in a temporary directory with only the VideoRoom plugin and the
//! HTTP transport, and the `janus` process. Everything is removed when the [`JanusLab`] drops.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `janus` package puts its plugins and transports.
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// Port of Janus's HTTP API inside the namespace.
const HTTP_PORT: u16 = 8088;

/// Labs made by this process (so two at once get different names and addresses).
static LABS: AtomicU32 = AtomicU32::new(0);

/// A running Janus in a namespace; dropping it kills Janus and removes the namespace and veth.
pub(crate) struct JanusLab {
    namespace: String,
    host_veth: String,
    dir: PathBuf,
    child: Option<Child>,
    /// The host end of the veth: the address clients bind.
    pub(crate) host_ip: Ipv4Addr,
    /// The namespace end: Janus's ICE candidates and HTTP API.
    pub(crate) janus_ip: Ipv4Addr,
}

/// Why Janus cannot run here, if it cannot (the comparison is then skipped).
pub(crate) fn unavailable() -> Option<String> {
    let installed = Command::new("janus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        return Some("janus is not installed (Debian package `janus`; scripts/setup.sh)".into());
    }
    if !Path::new(JANUS_LIB)
        .join("plugins/libjanus_videoroom.so")
        .exists()
    {
        return Some(format!("no VideoRoom plugin under {JANUS_LIB}"));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root: cannot create the network namespace Janus runs in".into());
    }
    let has_ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_ip {
        return Some("no `ip` command (iproute2)".into());
    }
    None
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl JanusLab {
    /// Creates the namespace and veth, writes the config and starts Janus, waiting (at most
    /// 15 s) until its HTTP API answers.
    pub(crate) async fn start() -> Result<Self, String> {
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        // 10.213.x.y/30 pairs: 16384 of them, picked by process and lab.
        let index = (pid.wrapping_mul(16).wrapping_add(n)) % 16384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + index * 4;
        let tag = format!("{:x}", ((pid << 4) | (n & 15)) & 0xfff_ffff);
        let mut lab = Self {
            namespace: format!("dm-janus-{pid}-{n}"),
            host_veth: format!("dmjh{tag}"),
            dir: std::env::temp_dir().join(format!("dartmouth-janus-{pid}-{n}")),
            child: None,
            host_ip: Ipv4Addr::from(base + 1),
            janus_ip: Ipv4Addr::from(base + 2),
        };
        let ns_veth = format!("dmjn{tag}");
        let ns = lab.namespace.clone();
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip",
            "link",
            "add",
            &lab.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &ns_veth,
        ])?;
        run(&["ip", "link", "set", &ns_veth, "netns", &ns])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", lab.host_ip),
            "dev",
            &lab.host_veth,
        ])?;
        run(&["ip", "link", "set", &lab.host_veth, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        let janus_cidr = format!("{}/30", lab.janus_ip);
        in_ns(&["ip", "addr", "add", &janus_cidr, "dev", &ns_veth])?;
        in_ns(&["ip", "link", "set", &ns_veth, "up"])?;
        // A default route, so Janus's local-address detection finds the veth address.
        let host_ip = lab.host_ip.to_string();
        in_ns(&["ip", "route", "add", "default", "via", &host_ip])?;
        lab.write_config(&ns_veth)?;
        let log = std::fs::File::create(lab.dir.join("janus.log")).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "janus", "-F"])
            .arg(lab.dir.join("conf"))
            .args(["-i", &lab.janus_ip.to_string(), "-d", "2", "-o"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting janus: {e}"))?;
        lab.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = lab.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("janus exited ({status}): {}", lab.log_tail()));
            }
            let probe = http
                .get(format!("{}/info", lab.api_url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(lab);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "janus did not answer within 15 s: {}",
                    lab.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Base URL of Janus's HTTP API.
    pub(crate) fn api_url(&self) -> String {
        format!("http://{}:{HTTP_PORT}/janus", self.janus_ip)
    }

    /// `/proc/<pid>/stat` of the Janus process (`ip netns exec` execs Janus in its own place).
    pub(crate) fn stat_path(&self) -> String {
        let pid = self.child.as_ref().map_or(0, Child::id);
        format!("/proc/{pid}/stat")
    }

    /// Janus's resident set, KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4)
    }

    /// The last lines of Janus's log.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// Only VideoRoom and HTTP: their libraries linked into folders of their own, a minimal
    /// `janus.jcfg` (ICE on the namespace's veth only, no STUN/TURN, errors-only logging).
    fn write_config(&self, ns_veth: &str) -> Result<(), String> {
        let err = |e: std::io::Error| e.to_string();
        for sub in ["conf", "plugins", "transports", "none"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(err)?;
        }
        for (sub, lib) in [
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_http.so"),
        ] {
            let link = self.dir.join(sub).join(lib);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(JANUS_LIB).join(sub).join(lib), link)
                .map_err(err)?;
        }
        let dir = self.dir.display();
        let janus = format!(
            "general: {{\n  configs_folder = \"{dir}/conf\"\n  plugins_folder = \"{dir}/plugins\"\n  \
             transports_folder = \"{dir}/transports\"\n  events_folder = \"{dir}/none\"\n  \
             loggers_folder = \"{dir}/none\"\n  debug_level = 2\n  session_timeout = 60\n}}\n\
             certificates: {{\n}}\nmedia: {{\n}}\n\
             nat: {{\n  nice_debug = false\n  ice_enforce_list = \"{ns_veth}\"\n}}\n\
             plugins: {{\n}}\ntransports: {{\n}}\nloggers: {{\n}}\nevents: {{\n}}\n"
        );
        let http = format!(
            "general: {{\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  \
             port = {HTTP_PORT}\n  ip = \"{}\"\n  https = false\n}}\n\
             admin: {{\n  admin_http = false\n  admin_https = false\n}}\ncors: {{\n}}\n",
            self.janus_ip
        );
        let conf = self.dir.join("conf");
        std::fs::write(conf.join("janus.jcfg"), janus).map_err(err)?;
        std::fs::write(conf.join("janus.transport.http.jcfg"), http).map_err(err)?;
        std::fs::write(
            conf.join("janus.plugin.videoroom.jcfg"),
            "general: {\n  string_ids = false\n}\n",
        )
        .map_err(err)
    }
}

impl Drop for JanusLab {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespace removes its veth end, and with it the host end.
        let _ = run(&["ip", "link", "del", &self.host_veth]);
        let _ = run(&["ip", "netns", "del", &self.namespace]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
