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
}

impl Moto {
    /// moto with default settings (no credential checks).
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// moto with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// to make it check credentials like AWS does.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let binary = binary();
        // A port taken by someone else between probe and bind makes moto exit: try again.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("temp file for the moto log");
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("log"))
                .stderr(log.reopen().expect("log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let endpoint = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
            let mut moto = Moto {
                endpoint,
                child,
                log,
            };
            match moto.wait_ready(port, Duration::from_secs(60)) {
                Ok(()) => return moto,
                Err(why) => last = why,
            }
        }
        panic!("moto did not start: {last}");
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
