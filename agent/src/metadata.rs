//! The host's instance metadata endpoint, watched for a spot notice and for where the
//! control plane is.
//!
//! Two shapes are read, as the clouds publish them: AWS
//! `latest/meta-data/spot/instance-action` (404 until a notice, then
//! `{"action": "terminate"|"stop", "time": "<RFC 3339>"}`) and GCP
//! `computeMetadata/v1/instance/preempted` (`TRUE` once preempted; no deadline, the
//! control plane assumes the cloud's documented notice). The first notice seen is kept and
//! reported at once — the heartbeat task is woken — and in every heartbeat after. AWS
//! reads go through IMDSv2 (a session token from `PUT latest/api/token`, renewed before it
//! expires or when refused), which EC2 hosts launched by Highrise require; where no token
//! is handed out (GCP, IMDSv1) they go without.

use crate::Shared;
use highrise_api::SpotNotice;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the endpoint is read (the clouds advise every 5 s; the notice is short).
const POLL: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

/// How long an IMDSv2 token is asked for, and how long before that it is renewed.
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
const TOKEN_RENEW: Duration = Duration::from_secs(21_000);

/// An IMDSv2 session token and when it was handed out; when the endpoint last handed out
/// none (it is asked again after a minute, not at every look).
#[derive(Default)]
struct Imds {
    token: Option<(String, std::time::Instant)>,
    refused: Option<std::time::Instant>,
}

impl Imds {
    /// The current token, asked for when there is none or it is about to expire; `None`
    /// where the endpoint hands out none.
    async fn token(&mut self, client: &reqwest::Client, base: &str) -> Option<String> {
        let fresh = self.token.as_ref().is_some_and(|(_, at)| at.elapsed() < TOKEN_RENEW);
        let refused = self.refused.is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if !fresh && !refused {
            let answer = match client
                .put(format!("{base}/latest/api/token"))
                .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL.as_secs().to_string())
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                _ => None,
            };
            let now = std::time::Instant::now();
            self.token = answer.map(|t| (t.trim().to_string(), now));
            self.refused = self.token.is_none().then_some(now);
        }
        self.token.as_ref().map(|(t, _)| t.clone())
    }

    /// The token was refused (expired, revoked): a new one at the next look.
    fn forget(&mut self) {
        self.token = None;
        self.refused = None;
    }
}

/// One look at the metadata endpoint: a notice, if the cloud has posted one.
async fn look(client: &reqwest::Client, base: &str, imds: &mut Imds) -> Option<SpotNotice> {
    let mut get = client
        .get(format!("{base}/latest/meta-data/spot/instance-action"))
        .timeout(Duration::from_secs(2));
    if let Some(token) = imds.token(client, base).await {
        get = get.header("X-aws-ec2-metadata-token", token);
    }
    let aws = get.send().await.ok();
    if aws
        .as_ref()
        .is_some_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED)
    {
        imds.forget();
    }
    let aws = aws.filter(|r| r.status().is_success());
    if let Some(r) = aws {
        let body: InstanceAction = match r.json().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("unreadable spot instance-action: {e}");
                return None;
            }
        };
        let deadline = humantime::parse_rfc3339(&body.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        if deadline.is_none() {
            tracing::warn!(time = %body.time, "spot instance-action time is not RFC 3339; reporting without it");
        }
        tracing::warn!(action = %body.action, deadline = ?deadline, "spot notice on the metadata endpoint");
        return Some(SpotNotice {
            deadline,
            source: "aws-instance-action".into(),
        });
    }
    let gcp = client
        .get(format!("{base}/computeMetadata/v1/instance/preempted"))
        .header("Metadata-Flavor", "Google")
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    let text = gcp.text().await.ok()?;
    (text.trim() == "TRUE").then(|| {
        tracing::warn!("preempted flag on the metadata endpoint");
        SpotNotice {
            deadline: None,
            source: "gcp-preempted".into(),
        }
    })
}

/// Watches `base` until a notice appears (then keeps it) or the agent stops.
pub async fn watch_notice(client: reqwest::Client, base: String, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut imds = Imds::default();
    loop {
        if let Some(n) = look(&client, &base, &mut imds).await {
            *shared.notice.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
            shared.observed_changed.notify_one();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Where the control plane is now: the URL the agent started with, then whatever the
/// host's metadata (its user data) says, so a control plane that moved to a new address
/// is found again without touching the host.
#[derive(Clone)]
pub struct ControlUrl(Arc<std::sync::RwLock<String>>);

impl ControlUrl {
    pub fn new(url: &str) -> Self {
        Self(Arc::new(std::sync::RwLock::new(url.trim_end_matches('/').to_string())))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `url` into use; returns whether it changed.
    fn set(&self, url: &str) -> bool {
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        let url = url.trim_end_matches('/');
        if *cur == url {
            return false;
        }
        *cur = url.to_string();
        true
    }
}

/// How often the metadata is asked where the control plane is.
const CONTROL_URL_POLL: Duration = Duration::from_secs(1);

/// Reads `{base}/highrise/control-url` every second until `stop`; a new URL (absolute
/// http or https) is taken into use at once.
pub async fn follow_control_url(
    client: reqwest::Client,
    base: String,
    control: ControlUrl,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let said = async {
            let r = client
                .get(format!("{base}/highrise/control-url"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())?;
            r.text().await.ok()
        };
        if let Some(url) = said.await.map(|t| t.trim().to_string()) {
            let valid = reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !valid {
                tracing::warn!(url = %url, "ignore an unusable control plane URL from the metadata");
            } else if control.set(&url) {
                tracing::warn!(url = %url, "the control plane moved: following it");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CONTROL_URL_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}
