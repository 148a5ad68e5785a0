//! The same point-in-time restore against real S3 and Azure Blob servers on loopback:
//! `s3s-fs` (an S3 implementation over a directory) and Azurite (Microsoft's Azure Storage
//! emulator). `scripts/setup` (run by `scripts/test`) installs both; each test starts its own server on a free port.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

fn program(name: &str) -> String {
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
        .join(name);
    if cargo_bin.exists() {
        return cargo_bin.to_string_lossy().to_string();
    }
    name.to_string()
}

fn spawn(cmd: &mut Command, what: &str, log: &std::path::Path) -> Server {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what} ({e}); `scripts/setup` installs it (`scripts/test` runs it first)"));
    Server(child)
}

/// Creates a cluster, writes rows around a moment, and restores to that moment in the
/// other cloud; all of it through the object store `up` was started with.
fn pitr_round_trip(up: &Up) {
    let out = up.cli_ok(&["cluster", "create", "src", "--wait"]);
    let src = out.lines().last().unwrap().trim().to_string();
    wait_for("the initial base backup", Duration::from_secs(120), || {
        let list: Value = serde_json::from_str(&up.cli_ok(&["backup", "list", "src", "--output", "json"])).unwrap();
        assert!(
            !list.as_array().unwrap().iter().any(|b| b["status"] == "failed"),
            "{list}"
        );
        list.as_array().unwrap().iter().any(|b| b["status"] == "complete")
    });
    psql_ok(&src, "create table t (id int primary key)");
    psql_ok(&src, "insert into t values (1)");
    psql_ok(&src, "insert into t values (2)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = psql_ok(&src, "select extract(epoch from clock_timestamp())::text");
    std::thread::sleep(Duration::from_millis(200));
    psql_ok(&src, "insert into t values (3)");
    let lsn = psql_ok(&src, "select pg_current_wal_lsn()");
    let lsn = parse_lsn(&lsn);
    wait_for("the WAL to be archived", Duration::from_secs(60), || {
        let shown: Value = serde_json::from_str(&up.cli_ok(&["cluster", "show", "src", "--output", "json"])).unwrap();
        shown["archive"]["archived_lsn"]
            .as_str()
            .is_some_and(|a| parse_lsn(a) >= lsn)
    });
    let out = up.cli_ok(&[
        "cluster",
        "restore",
        "dst",
        "--from",
        "src",
        "--time",
        target.trim(),
        "--cloud",
        "local-b",
        "--wait",
    ]);
    let dst = out.lines().last().unwrap().trim().to_string();
    assert_eq!(
        psql_ok(&dst, "select string_agg(id::text, ',' order by id) from t").trim(),
        "1,2"
    );
    let verified = up.cli_ok(&["backup", "verify", "src"]);
    assert!(verified.contains("every checksum matches"), "{verified}");
}

fn parse_lsn(s: &str) -> u64 {
    highrise_pg::parse_lsn(s).unwrap_or_else(|| panic!("not an LSN: {s:?}"))
}

#[test]
fn point_in_time_restore_through_s3() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    let port = free_port();
    let objects = root.join("s3");
    std::fs::create_dir_all(objects.join("highrise")).unwrap();
    let _s3 = spawn(
        Command::new(program("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "hr-access", "--secret-key", "hr-secret-key"])
            .arg(&objects),
        "s3s-fs",
        &root.join("s3s.log"),
    );
    wait_listening(port, "s3s-fs");
    let endpoint = format!("aws_endpoint=http://127.0.0.1:{port}");
    let up = Up::start_with(
        &root,
        &[
            "--storage-url",
            "s3://highrise",
            "--storage-option",
            &endpoint,
            "--storage-option",
            "aws_access_key_id=hr-access",
            "--storage-option",
            "aws_secret_access_key=hr-secret-key",
            "--storage-option",
            "aws_region=us-east-1",
            "--storage-option",
            "aws_allow_http=true",
        ],
    );
    pitr_round_trip(&up);
    // The objects really are in the S3 server's directory, not under the data dir.
    assert!(!up
        .data_dir
        .join("objects")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    assert!(objects.join("highrise").read_dir().unwrap().next().is_some());
}

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (the same in every installation).
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// RFC 1123 date of now (the `x-ms-date` header).
fn http_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Creates a blob container with a SharedKey-signed request (object_store does not
/// create containers).
fn azurite_create_container(port: u16, container: &str) {
    use base64::Engine;
    use hmac::Mac;
    let date = http_date();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{port}/{AZURITE_ACCOUNT}/{container}?restype=container"
            ))
            .header("x-ms-date", &date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header("authorization", format!("SharedKey {AZURITE_ACCOUNT}:{sig}"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "create container: {status}");
}

#[test]
fn point_in_time_restore_through_azure_blob() {
    let tmp = temp_root();
    let root = tmp.path().to_path_buf();
    let port = free_port();
    let location = root.join("azurite");
    std::fs::create_dir_all(&location).unwrap();
    let _azurite = spawn(
        Command::new(program("azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck", "--location"])
            .arg(&location),
        "azurite-blob",
        &root.join("azurite.log"),
    );
    wait_listening(port, "azurite");
    azurite_create_container(port, "highrise");
    let endpoint = format!("azure_storage_endpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
    let account = format!("azure_storage_account_name={AZURITE_ACCOUNT}");
    let key = format!("azure_storage_account_key={AZURITE_KEY}");
    let up = Up::start_with(
        &root,
        &[
            "--storage-url",
            "az://highrise",
            "--storage-option",
            &endpoint,
            "--storage-option",
            &account,
            "--storage-option",
            &key,
            "--storage-option",
            "azure_allow_http=true",
        ],
    );
    pitr_round_trip(&up);
}
