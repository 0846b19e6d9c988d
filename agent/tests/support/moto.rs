//! Starts moto (the AWS API emulator) on 127.0.0.1 and a free port for one
//! test, and kills it when dropped, panics included. moto is installed by
//! `ci/install-deps.sh`; without it the test fails and says so: a missing
//! emulator must never look like a pass.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_MOTO: &str = "/opt/muster-test/moto/bin/moto_server";

/// The keys every test gives moto (it accepts any unless told to check).
pub const KEY: &str = "AKIDMUSTERTEST";
pub const SECRET_KEY: &str = "muster-test-secret";

/// A client of this test's moto in `region` whose retries are quick (20 ms
/// doubling to 200 ms, 10 s in all): moto answers at once or not at all.
pub fn quick_client(
    moto: &Moto,
    region: &str,
    credentials: muster::cloud::aws::Credentials,
) -> muster::cloud::aws::AwsClient {
    use muster::cloud::aws::{AwsClient, AwsOptions};
    let mut opts = AwsOptions::new(region);
    opts.endpoint = Some(moto.endpoint.clone());
    opts.backoff = muster::retry::Backoff {
        initial: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        total: Duration::from_secs(10),
    };
    AwsClient::new(opts, credentials).expect("aws client")
}

/// An AWS client in us-east-1 for moto at `endpoint`, with the test keys.
pub fn client(endpoint: &str) -> muster::cloud::aws::AwsClient {
    use muster::cloud::aws::{AwsClient, AwsOptions, Credentials};
    let mut opts = AwsOptions::new("us-east-1");
    opts.endpoint = Some(url::Url::parse(endpoint).expect("moto endpoint url"));
    AwsClient::new(opts, Credentials::new(KEY, SECRET_KEY, None)).expect("aws client")
}

/// The moto_server binary; fails the test (never skips it) when missing.
pub fn binary() -> PathBuf {
    let binary = std::env::var_os("MUSTER_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_MOTO.into());
    assert!(
        binary.is_file(),
        "moto_server not found at {}: run `bash ci/install-deps.sh` (or set MUSTER_MOTO_SERVER)",
        binary.display()
    );
    binary
}

/// The Python that runs moto (beside `moto_server`): it runs the
/// throttling front too.
pub fn python() -> PathBuf {
    binary().with_file_name("python3")
}

/// AWS's request throttling, as `moto_throttled.py` applies it.
#[derive(Clone, Debug)]
pub struct Throttling {
    /// Tokens in each EC2 read action's bucket (AWS: 100).
    pub bucket: f64,
    /// EC2 read tokens added per second (AWS: 20).
    pub refill: f64,
    /// Auto Scaling's one shared bucket and refill (not published by AWS;
    /// the EC2 figures when `None`).
    pub autoscaling: Option<(f64, f64)>,
    /// How long an identical read is answered from the front's cache.
    pub cache_ttl: Duration,
}

impl Throttling {
    /// EC2's documented figures for non-mutating actions.
    pub fn aws() -> Throttling {
        Throttling {
            bucket: 100.0,
            refill: 20.0,
            autoscaling: None,
            cache_ttl: Duration::from_secs(1),
        }
    }

    /// The front's command line (after the Python interpreter).
    pub fn args(&self, host: &str, port: u16, log: &std::path::Path) -> Vec<String> {
        let mut args = vec![
            front_script().display().to_string(),
            "-H".into(),
            host.into(),
            "-p".into(),
            port.to_string(),
            "--bucket".into(),
            self.bucket.to_string(),
            "--refill".into(),
            self.refill.to_string(),
            "--cache-ttl".into(),
            self.cache_ttl.as_secs_f64().to_string(),
            "--log".into(),
            log.display().to_string(),
        ];
        if let Some((bucket, refill)) = self.autoscaling {
            args.extend(["--asg-bucket".into(), bucket.to_string()]);
            args.extend(["--asg-refill".into(), refill.to_string()]);
        }
        args
    }
}

/// The throttling front's script.
pub fn front_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_throttled.py")
}

/// Request outcomes from the front's log (one line per request:
/// `<unix time> <service> <action> <answered|cached|throttled>`).
#[derive(Clone, Debug, Default)]
pub struct FrontOutcomes {
    /// (unix time, service, action, outcome) per request, in order.
    pub requests: Vec<(f64, String, String, String)>,
}

impl FrontOutcomes {
    pub fn read(path: &std::path::Path) -> FrontOutcomes {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let requests = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let t = f.next()?.parse().ok()?;
                Some((
                    t,
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                ))
            })
            .collect();
        FrontOutcomes { requests }
    }

    /// Requests of `service` with `outcome` (`None`: any service, any
    /// outcome).
    pub fn count(&self, service: Option<&str>, outcome: Option<&str>) -> usize {
        self.requests
            .iter()
            .filter(|(_, s, _, o)| {
                service.is_none_or(|want| s == want) && outcome.is_none_or(|want| o == want)
            })
            .count()
    }
}

/// Query API parameters from string pairs.
pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The text of the first `<tag>` in an answer (setup only needs ids).
pub fn first(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').expect("closing tag");
    xml[start..end].to_string()
}

/// VPC + subnet + launch template + an Auto Scaling group of `desired`
/// instances in `subnet_cidr` (inside `vpc_cidr`).
pub async fn create_group(
    aws: &muster::cloud::aws::AwsClient,
    name: &str,
    desired: u32,
    vpc_cidr: &str,
    subnet_cidr: &str,
) {
    use muster::cloud::aws::{AUTOSCALING, EC2};
    let vpc = aws
        .query(&EC2, "CreateVpc", &params(&[("CidrBlock", vpc_cidr)]))
        .await
        .expect("CreateVpc");
    let vpc_id = first(&vpc, "vpcId");
    let subnet = aws
        .query(
            &EC2,
            "CreateSubnet",
            &params(&[
                ("VpcId", &vpc_id),
                ("CidrBlock", subnet_cidr),
                ("AvailabilityZone", "us-east-1a"),
            ]),
        )
        .await
        .expect("CreateSubnet");
    let subnet_id = first(&subnet, "subnetId");
    aws.query(
        &EC2,
        "CreateLaunchTemplate",
        &params(&[
            ("LaunchTemplateName", name),
            ("LaunchTemplateData.ImageId", "ami-12345678"),
            ("LaunchTemplateData.InstanceType", "t3.micro"),
        ]),
    )
    .await
    .expect("CreateLaunchTemplate");
    aws.query(
        &AUTOSCALING,
        "CreateAutoScalingGroup",
        &params(&[
            ("AutoScalingGroupName", name),
            ("LaunchTemplate.LaunchTemplateName", name),
            ("MinSize", "0"),
            ("MaxSize", &desired.max(10).to_string()),
            ("DesiredCapacity", &desired.to_string()),
            ("VPCZoneIdentifier", &subnet_id),
        ]),
    )
    .await
    .expect("CreateAutoScalingGroup");
}

pub struct Moto {
    pub endpoint: url::Url,
    child: Child,
    log: tempfile::NamedTempFile,
    /// The throttling front's request log, when there is a front.
    front_log: Option<tempfile::NamedTempFile>,
}

impl Moto {
    /// moto with default settings (no credential checks).
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// moto with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// to make it check credentials like AWS does.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        Moto::launch(
            &binary(),
            |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            },
            env,
            None,
        )
    }

    /// moto behind `moto_throttled.py`: AWS's token buckets and throttling
    /// answers, and a short read cache (see the script's docstring).
    pub fn start_throttled(throttling: &Throttling) -> Moto {
        let front_log = tempfile::NamedTempFile::new().expect("temp file for the front's log");
        let log_path = front_log.path().to_path_buf();
        Moto::launch(
            &python(),
            |port| throttling.args("127.0.0.1", port, &log_path),
            &[],
            Some(front_log),
        )
    }

    fn launch(
        program: &std::path::Path,
        args: impl Fn(u16) -> Vec<String>,
        env: &[(&str, &str)],
        front_log: Option<tempfile::NamedTempFile>,
    ) -> Moto {
        // A port taken by someone else between probe and bind makes moto exit: try again.
        let mut last = String::new();
        let mut front_log = front_log;
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("temp file for the moto log");
            let child = Command::new(program)
                .args(args(port))
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("log"))
                .stderr(log.reopen().expect("log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let endpoint = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
            let mut moto = Moto {
                endpoint,
                child,
                log,
                front_log: front_log.take(),
            };
            match moto.wait_ready(port, Duration::from_secs(60)) {
                Ok(()) => return moto,
                Err(why) => {
                    last = why;
                    front_log = moto.front_log.take();
                }
            }
        }
        panic!("moto did not start: {last}");
    }

    /// The throttling front's request outcomes so far (empty without one).
    pub fn front_outcomes(&self) -> FrontOutcomes {
        self.front_log
            .as_ref()
            .map(|f| FrontOutcomes::read(f.path()))
            .unwrap_or_default()
    }

    fn wait_ready(&mut self, port: u16, budget: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < budget {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "moto_server exited with {status}: {}",
                    self.log_text()
                ));
            }
            if answers(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "no answer on port {port} after {budget:?}: {}",
            self.log_text()
        ))
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = self
            .log
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut text));
        text.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// True once moto answers HTTP (its own API's index).
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
