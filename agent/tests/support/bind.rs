//! A real BIND 9 primary (`named -g`) in a test host's network namespace,
//! serving one zone that only a TSIG key may update and transfer, as an
//! operator would set it up for `dns.provider: rfc2136`. Debian's `bind9`
//! and `bind9-dnsutils` come from `ci/install-deps.sh`; without them the
//! test fails and says so, it never skips.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::netns::{Host, Proc, wait_until};

pub const KEY_NAME: &str = "muster-test";
/// A fixed hmac-sha256 key (32 bytes, base64), as `tsig-keygen` prints one.
pub const KEY_SECRET: &str = "1ZVzV+yGfGWmjMcmIRvJJoiWGGZbikD0Az8OJRQ/QJk=";
const NAMED: &str = "/usr/sbin/named";

pub struct Bind {
    pub zone: String,
    pub server: String,
    _named: Proc,
}

impl Bind {
    /// Starts named on `host` port 53 with `zone` (SOA, NS and nothing else).
    pub fn start(host: &Host, zone: &str) -> Bind {
        assert!(
            Path::new(NAMED).is_file(),
            "{NAMED} not found: run `bash ci/install-deps.sh` (Debian bind9)"
        );
        let dir = host.dir().join("bind");
        std::fs::create_dir_all(&dir).expect("bind dir");
        let conf = format!(
            r#"key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{KEY_SECRET}"; }};
options {{
  directory "{dir}";
  pid-file none; session-keyfile none;
  listen-on port 53 {{ {ip}; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; notify no;
}};
controls {{ }};
zone "{zone}" {{
  type primary; file "db.zone";
  allow-update {{ key "{KEY_NAME}"; }};
  allow-transfer {{ key "{KEY_NAME}"; }};
}};
"#,
            dir = dir.display(),
            ip = host.ip(),
        );
        std::fs::write(dir.join("named.conf"), conf).expect("named.conf");
        std::fs::write(
            dir.join("db.zone"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A {}\n",
                host.ip()
            ),
        )
        .expect("zone file");
        let conf_path = dir.join("named.conf");
        let named = host.spawn(
            NAMED,
            &["-g", "-4", "-c", &conf_path.to_string_lossy()],
            &[],
            "named.log",
        );
        let bind = Bind {
            zone: zone.to_string(),
            server: host.ip().to_string(),
            _named: named,
        };
        wait_until(
            "named answers",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || bind.dig(host, &["+short", "SOA", zone]).contains("ns."),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(host.dir().join("named.log")).unwrap_or_default()
            )
        });
        bind
    }

    /// `dig @server ARGS` run from `from` (another namespace), stdout.
    pub fn dig(&self, from: &Host, args: &[&str]) -> String {
        let server = format!("@{}", self.server);
        let mut all = vec![server.as_str(), "+time=2", "+tries=1"];
        all.extend_from_slice(args);
        let out: Output = from.run("dig", &all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The whole zone by a signed AXFR, one record per line, sorted, SOA
    /// serials dropped: what "nothing changed" is compared on.
    pub fn zone_dump(&self, from: &Host) -> String {
        let key = format!("hmac-sha256:{KEY_NAME}:{KEY_SECRET}");
        let out = self.dig(from, &["+noall", "+answer", "-y", &key, "AXFR", &self.zone]);
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| !l.contains("\tSOA\t") && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        lines.sort();
        lines.dedup();
        lines.join("\n")
    }

    /// Adds records as another tool would (`nsupdate` with the key).
    pub fn nsupdate(&self, from: &Host, commands: &str) {
        let script = format!(
            "server {} 53\nkey hmac-sha256:{KEY_NAME} {KEY_SECRET}\nzone {}\n{commands}\nsend\n",
            self.server, self.zone
        );
        let path = from.dir().join("nsupdate.txt");
        std::fs::write(&path, script).expect("nsupdate script");
        let out = from.run("nsupdate", &[&path.to_string_lossy()]);
        assert!(
            out.status.success(),
            "nsupdate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
