//! Wire types shared by the control plane, the agent, the proxy and the CLI.
//!
//! This crate owns the JSON shapes that cross a process boundary and nothing else: no
//! I/O, no validation beyond what serde enforces (`deny_unknown_fields` on every request
//! body, so a typo is a 400 rather than a silently ignored field). The OpenAPI schemas are
//! derived here so the document the control plane serves is generated from these types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Seconds since the Unix epoch, the one time format on the wire.
pub type UnixSeconds = i64;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Every non-2xx answer of the API carries this body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_request`, `not_found`, `unauthorized`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// Tenancy
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// The cell its clusters run in (empty on a land without cells).
    #[serde(default)]
    pub cell: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// 1–63 characters: lowercase letters, digits and `-`, starting with a letter.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
}

/// A new org comes with its first admin API key; the secret is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedOrg {
    pub org: Org,
    pub api_key: CreatedApiKey,
}

/// One generation of the org's data key (the key itself never leaves the control plane
/// but for the org's own hosts).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DataKeyInfo {
    pub generation: u32,
    /// Whether it seals new objects (the newest); the others open what they sealed.
    pub current: bool,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1–63 characters: lowercase letters, digits and `-`, starting with a letter.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
}

/// A tenant network (a "VPC"): where private endpoints are placed, reachable from inside
/// that network only. The local land makes each one a Linux network namespace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Network {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// The network's address range; private endpoints take addresses in it.
    pub cidr: String,
    /// The land's handle for the network: in the local land, the network namespace
    /// clients run in (`ip netns exec <namespace> psql …`).
    pub namespace: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// 1–63 characters: lowercase letters, digits and `-`, starting with a letter.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// An IPv4 range, /16 to /29 (default `10.0.0.0/24`; host bits are cleared).
    /// Networks of different tenants may overlap: each is its own world.
    #[serde(default)]
    pub cidr: Option<String>,
}

/// A cluster's endpoint inside a tenant network: a listener of the proxies at an address
/// of that network, serving this cluster only, reachable from nowhere else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PrivateEndpoint {
    /// Also the name to present (`options=endpoint=<id>` or the TLS server name
    /// `<id>.<domain>`); optional on the endpoint's own address.
    pub id: String,
    pub cluster_id: String,
    pub network_id: String,
    pub network: String,
    /// Where it listens inside the network, `ip:port`.
    pub address: String,
    /// Connection URI without the password (from inside the network).
    pub connection_uri: String,
    /// Connection URI that verifies the proxy (see [`Cluster::verified_uri`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_uri: Option<String>,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrivateEndpoint {
    /// The network's name or id.
    pub network: String,
    /// An IPv4 address of the network to listen on (default: the first free one from the
    /// network's 10th address).
    #[serde(default)]
    pub address: Option<String>,
}

/// A cloud of the land, with the regions and zones a cluster can be placed in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CloudInfo {
    pub name: String,
    pub regions: Vec<RegionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegionInfo {
    pub name: String,
    pub zones: Vec<String>,
}

/// An org's limits, set by the operator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgQuotas {
    #[schema(minimum = 0)]
    pub max_clusters: i64,
    /// Primary and standbys of one cluster.
    #[schema(minimum = 1)]
    pub max_members_per_cluster: i64,
    /// Bytes of complete base backups in object storage.
    #[schema(minimum = 0)]
    pub max_storage_bytes: i64,
    /// Operations (create, switchover) running at once.
    #[schema(minimum = 1)]
    pub max_concurrent_operations: i64,
}

/// An org's quotas and what it uses of them now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    pub quotas: OrgQuotas,
    pub clusters: i64,
    pub running_operations: i64,
    pub storage_bytes: i64,
}

/// What a member or key may do, from most to least: `owner` (everything, including other
/// owners), `admin` (everything else: members, keys, projects, audit), `developer`
/// (clusters, backups, operations), `viewer` (read only), `billing` (the org's projects and
/// members; usage and invoices once billing lands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Developer,
    Viewer,
    Billing,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer, Role::Billing];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Billing => "billing",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| "a role is one of owner, admin, developer, viewer, billing".to_string())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    /// The one project the key may reach (every project when absent).
    pub project: Option<String>,
    /// The key stops working at this time.
    pub expires_at: Option<UnixSeconds>,
    /// The user who created it (absent for keys made by other keys).
    pub created_by: Option<String>,
    pub created_at: UnixSeconds,
    pub revoked_at: Option<UnixSeconds>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1–64 characters, no control characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// `developer` when omitted; at most the creator's own role.
    pub role: Option<Role>,
    /// Limit the key to this project (by name).
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub project: Option<String>,
    /// The key stops working this many seconds from now (a minute to ten years); it does
    /// not expire when omitted.
    #[schema(minimum = 60, maximum = 315360000)]
    pub expires_in_seconds: Option<i64>,
}

/// The only time the secret of a key is shown; the control plane keeps just its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    /// Pass as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// A person in an org: a user (email) with a role there.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgMember {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    /// `invited` until the invitation is accepted, then `active`.
    pub status: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteMember {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    pub role: Role,
}

/// A new member; the invitation token is shown only here. The invited person accepts it
/// with `POST /v1/invites/accept` (choosing a password if they have none yet).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitedMember {
    pub member: OrgMember,
    pub invite_token: String,
    pub invite_expires_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    /// The token the invitation gave (`hri_…`).
    #[schema(max_length = 300)]
    pub token: String,
    /// A new user's password (12–1024 characters), or an existing user's own.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// The org to sign in to (by name); needed only when the user belongs to several.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub org: Option<String>,
}

/// A session: an API key bound to the user, with the user's role in the org (a role change
/// or removal applies at once); it expires.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub user_id: String,
    pub email: String,
    pub org_id: String,
    pub org: String,
    pub role: Role,
    pub key_id: String,
    /// Pass as `Authorization: Bearer <secret>`.
    pub secret: String,
    pub expires_at: UnixSeconds,
}

/// Who the caller is: the org, role and scope its key or session acts with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// `user:<id>` for a session, `key:<id>` for an API key.
    pub actor: String,
    pub org_id: String,
    pub org: String,
    pub role: Role,
    /// The one project a project key reaches.
    pub project: Option<String>,
    /// The operator org's keys also run the land.
    pub operator: bool,
}

/// One entry of an org's audit log. Entries are chained: each one's `hash` covers its
/// fields and the previous entry's hash, keyed by a secret the metadata store does not
/// hold, so an edited or removed entry is detected by `POST /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the org's chain, from 1.
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `user:<id>` (a session), `key:<id>`, or what a failed caller presented.
    pub actor: String,
    /// E.g. `POST /v1/clusters`, `login`.
    pub action: String,
    /// What the call acted on, as an API path without `/v1/` (`clusters/web`,
    /// `members/ann@example.com`; a create names what it made).
    pub target: String,
    /// The caller's address.
    pub source: String,
    /// The HTTP status, or `ok`/`failed` for logins.
    pub result: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    pub entries_checked: u64,
    /// The first entry that does not match the chain, and why.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// 1–63 characters: lowercase letters, digits and `-`, starting with a letter.
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Project name; `default` when omitted.
    #[serde(default)]
    #[schema(pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub project: Option<String>,
    /// Cloud of the land to place the cluster on; the first cloud when omitted.
    #[serde(default)]
    pub cloud: Option<String>,
    /// Region within the cloud; the cloud's first region when omitted.
    #[serde(default)]
    pub region: Option<String>,
    /// Size: `small`, `medium` or `large`; `small` when omitted.
    #[serde(default)]
    #[schema(pattern = "^(small|medium|large)$")]
    pub plan: Option<String>,
    /// PostgreSQL major version; 15 is the one supported today.
    #[serde(default)]
    #[schema(minimum = 15, maximum = 15)]
    pub pg_version: Option<u32>,
    /// Number of standbys (0–3; 0 when omitted). They commit synchronously and take
    /// over when the primary is lost.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3)]
    pub replicas: Option<u32>,
    /// Run on spot capacity: members in distinct spot pools, switched over on a notice,
    /// on-demand while no pool has capacity. Without replicas, needs `durability: sync`.
    #[serde(default)]
    pub spot: Option<bool>,
    /// Put the standbys in other clouds than the primary (where the land has them).
    #[serde(default)]
    pub spread_clouds: Option<bool>,
    /// `async` (default: WAL reaches object storage within about a second of commit) or
    /// `sync` (a commit returns only once its WAL is in object storage).
    #[serde(default)]
    #[schema(pattern = "^(async|sync)$")]
    pub durability: Option<String>,
    /// When to take base backups and how many to keep; defaults apply when omitted.
    #[serde(default)]
    pub backup_policy: Option<BackupPolicy>,
    /// Create the cluster from another cluster's backups and WAL (point-in-time restore).
    #[serde(default)]
    pub restore: Option<RestoreFrom>,
    /// Storage autoscaling: before the disk nears the read-only mark, the members move to
    /// hosts with twice the disk (by replace-then-switchover), up to this many bytes (at
    /// most 1 PiB). Off when omitted or `0`.
    #[serde(default)]
    #[schema(maximum = 1125899906842624_u64)]
    pub storage_autoscale_max_bytes: Option<u64>,
    /// Object stores that keep the cluster's WAL and backups: `1` its cloud's; `2` (the
    /// default) also a second cloud's, so that losing a whole cloud loses no backup and
    /// the cluster can be restored elsewhere.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2)]
    pub backup_copies: Option<u32>,
    /// What happens when the cluster's whole cloud goes dark and no member is left
    /// elsewhere: `restore` (default) or `wait`.
    #[serde(default)]
    pub on_cloud_loss: Option<OnCloudLoss>,
    /// Whether the public endpoint (the proxies' listeners) takes connections (default
    /// true); `false` leaves the cluster reachable through private endpoints only.
    #[serde(default)]
    pub public: Option<bool>,
    /// The source networks the public endpoint takes connections from: CIDRs
    /// (`10.0.0.0/8`, `2001:db8::/32`) or single addresses, at most 64; absent or empty:
    /// any.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// The most sessions the tenant's role may hold at once (1–1000; PostgreSQL refuses
    /// the next with SQLSTATE 53300); absent or `0`: only the server's own
    /// `max_connections`. The role cannot raise it.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub connection_limit: Option<u32>,
}

/// What a cluster does when every member was in a cloud that went dark (its API failing,
/// its hosts silent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCloudLoss {
    /// Restore it automatically in a surviving cloud from the copy of its backups and WAL
    /// there: same endpoint and credentials; what the copy had not received is lost (at
    /// most the copy lag shown by `cluster show`).
    #[default]
    Restore,
    /// Wait for the cloud to come back.
    Wait,
}

/// Base backup schedule and retention of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// A base backup is taken when the last one is this old (60 s – 30 days).
    #[schema(minimum = 60, maximum = 2592000)]
    pub interval_seconds: i64,
    /// Keep at least this many complete backups (1–100)…
    #[schema(minimum = 1, maximum = 100)]
    pub retain_count: u32,
    /// …and every backup younger than this many days (0–3650).
    #[schema(minimum = 0, maximum = 3650)]
    pub retain_days: u32,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            interval_seconds: 86_400,
            retain_count: 7,
            retain_days: 7,
        }
    }
}

/// The source of a restore: a cluster of the same org (live or deleted) by name, and the
/// point to stop at (the end of its archived WAL when neither is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreFrom {
    /// Name of the source cluster (in the same project).
    pub from: String,
    /// Recover up to this time: with its UTC offset, in RFC 3339 (`2026-11-26T12:00:00Z`)
    /// or as psql prints it (`2026-11-26 12:00:00.123+00`), or Unix seconds. Not with
    /// `lsn`.
    #[serde(default)]
    pub time: Option<String>,
    /// Recover up to this WAL position (`0/3000060`). Not with `time`.
    #[serde(default)]
    pub lsn: Option<String>,
}

/// A base backup of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    pub id: String,
    pub cluster: String,
    /// `scheduled` or `manual`.
    pub kind: String,
    /// `pending`, `running`, `complete` or `failed`.
    pub status: String,
    pub created_at: UnixSeconds,
    pub finished_at: Option<UnixSeconds>,
    pub timeline: Option<u32>,
    /// WAL range the backup needs to be consistent (`X/Y`).
    pub start_lsn: Option<String>,
    pub end_lsn: Option<String>,
    /// Bytes of the files copied, and as stored (compressed, encrypted).
    pub size_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub error: Option<String>,
    /// The cluster's creation image plus all WAL since: restores from it can stop at any
    /// moment from the cluster's creation on.
    #[serde(default)]
    pub from_creation: bool,
}

/// The result of reading a backup back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupVerification {
    pub backup: String,
    /// Every copy is whole.
    pub ok: bool,
    /// Bytes read and checked, all copies together.
    pub checked_bytes: u64,
    /// What failed, naming the copy and the object.
    pub error: Option<String>,
    /// Each copy: the cluster's cloud's store, then the second cloud's.
    #[serde(default)]
    pub copies: Vec<CopyVerification>,
}

/// One copy of a backup, read back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopyVerification {
    /// The cloud whose object store holds this copy.
    pub cloud: String,
    /// Whole: every part and WAL chunk read back and checked.
    pub ok: bool,
    /// The second copy does not hold the backup yet (the copier runs behind the backup;
    /// see the cluster's `copy_lag_bytes`). Not a damage.
    pub pending: bool,
    pub checked_bytes: u64,
    pub error: Option<String>,
}

/// A primary's WAL archiving, as last reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArchiveState {
    /// Everything before this WAL position is in object storage.
    pub archived_lsn: Option<String>,
    /// WAL written but not yet in object storage, in bytes.
    pub lag_bytes: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterStatus {
    /// Accepted; capacity is being found and PostgreSQL is being created.
    Creating,
    /// The primary answers queries.
    Running,
    /// The primary is not healthy right now.
    Degraded,
    /// Deletion requested; the instance is being removed.
    Deleting,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: String,
    pub name: String,
    pub org_id: String,
    pub project: String,
    pub cloud: String,
    pub region: String,
    pub plan: String,
    pub pg_version: u32,
    pub replicas: u32,
    pub spot: bool,
    /// Standbys live in other clouds than the primary.
    pub spread_clouds: bool,
    /// The cloud the cluster was moved off (a move, an evacuation): none of its members
    /// stays or goes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_cloud: Option<String>,
    /// `async` or `sync` (see [`CreateCluster::durability`]).
    pub durability: String,
    pub backup_policy: BackupPolicy,
    /// The primary's WAL archiving, once it reports.
    pub archive: Option<ArchiveState>,
    /// The storage the plan includes, in bytes.
    pub storage_limit_bytes: u64,
    /// What the primary's data and WAL take, once measured.
    pub storage_used_bytes: Option<u64>,
    /// The storage guard's level on the primary (`read_only`: writes need an explicit
    /// read-write session until space is freed).
    pub storage_level: StorageLevel,
    /// Storage autoscaling's maximum disk, when on.
    pub storage_autoscale_max_bytes: Option<u64>,
    /// The disk size the members need (raised by autoscaling), when set.
    pub storage_disk_bytes: Option<u64>,
    /// Object stores that keep the cluster's WAL and backups (its cloud's, and a second
    /// cloud's with `2`).
    pub backup_copies: u32,
    /// The cloud whose store keeps the second copy, when there is one.
    pub copy_cloud: Option<String>,
    /// Bytes of objects the second copy lacked at the copier's last round (what a restore
    /// from it alone would miss).
    pub copy_lag_bytes: Option<u64>,
    /// What happens when the cluster's whole cloud goes dark.
    pub on_cloud_loss: OnCloudLoss,
    pub status: ClusterStatus,
    /// The stable name clients connect to through the proxy.
    pub endpoint: String,
    /// Whether the public endpoint takes connections.
    pub public: bool,
    /// Source networks the public endpoint takes connections from (empty: any).
    pub allowed_cidrs: Vec<String>,
    /// The most sessions the tenant's role may hold at once, when limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u32>,
    /// Fencing generation; increments whenever the primary changes.
    pub term: i64,
    pub database: String,
    pub user: String,
    /// Connection URI without the password.
    pub connection_uri: String,
    /// Connection URI that verifies the proxy: `sslmode=verify-full` with the host name
    /// `<endpoint>.<domain>` (sent as SNI; `hostaddr` says where to connect when the
    /// proxies have IP addresses). Add `sslrootcert=` a file with the CA certificate
    /// (`GET /v1/tls/ca`). Absent when the control plane has no CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_uri: Option<String>,
    pub members: Vec<Member>,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub instance_id: String,
    pub host_id: String,
    pub role: String,
    pub state: String,
    pub cloud: String,
    pub zone: String,
    /// `spot` or `on_demand`.
    pub market: String,
    /// `cloud/region/zone/instance-type` of the member's host, once launched.
    pub pool: String,
    /// The member's share of its host's list price, USD per hour, where the land prices it.
    pub price_hour: Option<String>,
    /// A spot notice on the member's host: the unix second it goes.
    pub notice_deadline: Option<i64>,
    /// Where the member's PostgreSQL listens (the host's network), once known.
    pub addr: Option<String>,
    /// A standby's replication lag behind the primary, in bytes of WAL, when known.
    pub lag_bytes: Option<u64>,
    /// The member's data, WAL and disk, once its agent has measured them.
    pub storage: Option<StorageUsage>,
    /// A standby: where its data directory came from.
    #[serde(default)]
    pub seed: Option<Seed>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCluster {
    /// New number of standbys (0–3); members are added or removed to match.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3)]
    pub replicas: Option<u32>,
    /// `async` or `sync`.
    #[serde(default)]
    #[schema(pattern = "^(async|sync)$")]
    pub durability: Option<String>,
    #[serde(default)]
    pub backup_policy: Option<BackupPolicy>,
    /// Storage autoscaling's maximum disk in bytes (see [`CreateCluster`]); `0` turns it off.
    #[serde(default)]
    #[schema(maximum = 1125899906842624_u64)]
    pub storage_autoscale_max_bytes: Option<u64>,
    /// A new plan: members of the new size are built and the primary switched over
    /// (a `move_cluster` operation), not restarted.
    #[serde(default)]
    #[schema(pattern = "^(small|medium|large)$")]
    pub plan: Option<String>,
    /// What happens when the cluster's whole cloud goes dark (see [`OnCloudLoss`]).
    #[serde(default)]
    pub on_cloud_loss: Option<OnCloudLoss>,
    /// Turn the public endpoint on or off (see [`CreateCluster`]).
    #[serde(default)]
    pub public: Option<bool>,
    /// A new allow-list for the public endpoint (see [`CreateCluster`]); `[]` admits any
    /// source again.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// A new limit on the tenant role's sessions (see [`CreateCluster`]); `0` lifts it.
    /// Sessions already open stay.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub connection_limit: Option<u32>,
}

/// Evacuate a cloud: move every cluster off it (`POST /v1/clouds/{cloud}/evacuate`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvacuateCloud {
    /// Where the clusters go; the first other cloud that answers (a region named like
    /// each cluster's first) when omitted.
    #[serde(default)]
    #[schema(max_length = 63)]
    pub to: Option<String>,
    /// Clusters moving at once (1–16; 2 when omitted).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub concurrency: Option<u32>,
}

/// Where one cluster of an evacuation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvacuationState {
    Waiting,
    Moving,
    Moved,
    /// Its move failed or was cancelled (`why` says).
    Failed,
    /// Not moved by the evacuation (`why` says).
    Staying,
}

/// An evacuation's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvacuationStatus {
    Running,
    /// No new move starts; running ones finish.
    Paused,
    Finished,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvacuationCluster {
    pub cluster_id: String,
    /// Its name and org, while it exists.
    pub name: Option<String>,
    pub org_id: Option<String>,
    pub state: EvacuationState,
    pub why: Option<String>,
    /// Its move operation, once started.
    pub operation_id: Option<String>,
}

/// How many clusters of an evacuation are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EvacuationCounts {
    pub waiting: u32,
    pub moving: u32,
    pub moved: u32,
    pub failed: u32,
    pub staying: u32,
}

/// Every cluster of a cloud moved off it, a few at a time; survives a control plane
/// restart.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Evacuation {
    pub id: String,
    pub cloud: String,
    pub to: Option<String>,
    pub concurrency: u32,
    pub status: EvacuationStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub counts: EvacuationCounts,
    /// In the order they move.
    pub clusters: Vec<EvacuationCluster>,
}

/// Where to move a cluster: its members are rebuilt there one by one and the primary
/// switched over (the connection string stays the same).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveCluster {
    /// The cloud to move to.
    #[schema(max_length = 63)]
    pub cloud: String,
    /// Its region; the one named like the cluster's present region, else its first.
    #[serde(default)]
    #[schema(max_length = 63)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Switchover {
    /// The standby to promote (instance id); the most advanced one when omitted.
    #[serde(default)]
    pub to: Option<String>,
}

/// Something that happened to a cluster (failover started, promoted X, member added).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterEvent {
    pub at: UnixSeconds,
    pub kind: String,
    pub message: String,
}

/// The answer to a create: the password of the owner role appears here and nowhere else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedCluster {
    pub cluster: Cluster,
    pub operation: Operation,
    pub password: String,
    /// Connection URI including the password.
    pub connection_uri: String,
    /// The verifying connection URI (see `Cluster::verified_uri`), with the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_uri: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    pub cloud: String,
    pub region: String,
    pub zone: String,
    /// The cell it serves (empty on a land without cells).
    #[serde(default)]
    pub cell: String,
    pub market: String,
    pub address: Option<String>,
    pub status: String,
    pub last_heartbeat: Option<UnixSeconds>,
    pub instances: u32,
    /// The host's own disk as last reported (absent on a shared file system).
    pub disk: Option<HostDisk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
    /// Cancelled on request (a move before its switchover): the cluster is as it was.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: String,
    pub kind: String,
    pub status: OperationStatus,
    pub cluster_id: Option<String>,
    pub error: Option<String>,
    pub created_at: UnixSeconds,
    pub updated_at: UnixSeconds,
    /// The step a running move, resize or key retirement is at.
    #[serde(default)]
    pub progress: Option<OperationProgress>,
    /// What it did, once finished, for a person (a key retirement: the generations
    /// retired and the objects sealed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The step of a multi-step operation: a move or resize builds its new members (1),
/// lets them catch up (2), switches the primary over (3), retires the old members (4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperationProgress {
    pub step: u32,
    pub steps: u32,
    /// What the step is doing.
    pub doing: String,
}

// ---------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------

/// An org's metered usage over a time range.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// The range's start and end (Unix seconds, whole hours: the hour holding `from`, up to
    /// the end of the hour holding `to`).
    pub from: UnixSeconds,
    pub to: UnixSeconds,
    /// Per cluster, dimension and place; per hour too when asked for (`hourly`), else
    /// summed over the range. Ordered by cluster, dimension, place, hour.
    pub records: Vec<UsageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageRecord {
    pub cluster_id: String,
    /// The cluster's name (also when it was deleted since).
    pub cluster: String,
    /// What was metered, e.g. `instance_ms:standard:spot` (instance time in milliseconds,
    /// by plan and market).
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    /// The hour's start (Unix seconds); absent in a sum over the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<UnixSeconds>,
    pub quantity: u64,
}

/// An org's invoice for a calendar month (UTC): its usage priced by the list-price book.
/// Amounts are decimal strings in `currency` (never floats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Invoice {
    /// `YYYY-MM`.
    pub month: String,
    /// `draft` while the month runs (the bill so far), `closed` after it until it is
    /// issued (six hours after the month ends), `issued` once frozen under its number.
    pub status: String,
    /// The invoice's number (`HR-000042`), once issued.
    pub number: Option<String>,
    pub issued_at: Option<UnixSeconds>,
    pub period_start: UnixSeconds,
    pub period_end: UnixSeconds,
    pub currency: String,
    /// The price book's version the lines were priced with.
    pub price_book: String,
    /// Per cluster, dimension, place and price in force; ordered by cluster.
    pub lines: Vec<InvoiceLine>,
    /// The sum of the lines' amounts.
    pub total: String,
    /// Drawn down from the total: the org's credits first, then its prepaid commitment.
    pub credits_applied: String,
    pub commitment_applied: String,
    /// `total - credits_applied - commitment_applied`.
    pub due: String,
    /// The cloud marketplace the org pays through (`aws`, `azure`, `gcp`): the amount due
    /// is charged there, from the usage reported hour by hour.
    pub marketplace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLine {
    /// Usage of an earlier month recorded after that month's invoice was issued, carried
    /// here (its hours are before this invoice's period).
    pub carried: bool,
    pub cluster_id: String,
    pub cluster: String,
    pub dimension: String,
    pub cloud: String,
    pub region: String,
    /// The first and last hour (starts, Unix seconds) priced on this line.
    pub first_hour: UnixSeconds,
    pub last_hour: UnixSeconds,
    pub quantity: u64,
    /// `unit_price` per `per` units of the dimension (e.g. per 3,600,000 instance-ms: an
    /// hour).
    pub unit_price: String,
    pub per: u64,
    /// `quantity × unit_price / per`, rounded once to the cent.
    pub amount: String,
}

/// The org's billing terms and how its spend stands against them. Amounts are decimal
/// strings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BillingStatus {
    /// This month (`YYYY-MM`, UTC) and what its usage has cost so far.
    pub month: String,
    pub month_spent: String,
    /// New clusters are refused while this month's spend is at or over it.
    pub hard_limit: Option<String>,
    /// Where spend alerts are sent (a JSON `SpendAlert` in a POST).
    pub alert_webhook: Option<String>,
    pub commitment: Option<CommitmentStatus>,
    /// Credits granted, oldest first, and what issued invoices have not drawn down of them.
    pub credits: Vec<Credit>,
    pub credit_balance: String,
    /// The cloud marketplace the org pays through: its clusters run on that cloud only.
    pub marketplace: Option<MarketplaceLink>,
    /// Newest first.
    pub alerts: Vec<SpendAlert>,
}

/// An org's link to a cloud marketplace (set by the operator when the marketplace's
/// subscription arrives).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceLink {
    /// `aws`, `azure` or `gcp`.
    pub marketplace: String,
    /// AWS: the customer's 12-digit account id; Azure: the SaaS subscription id (a GUID);
    /// GCP: the usage reporting id.
    pub account: String,
    /// AWS only: the License Manager licence ARN of the customer's entitlement.
    #[serde(default)]
    pub licence: Option<String>,
    /// When it was linked (ignored in a request).
    #[serde(default)]
    pub linked_at: Option<UnixSeconds>,
}

/// One hour of an org's usage for its marketplace, as the outbox holds it: what was sent,
/// and what the marketplace answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MarketplaceRecord {
    /// `aws`, `azure` or `gcp`.
    pub marketplace: String,
    /// The marketplace account it is sent to.
    pub account: String,
    /// The marketplace's dimension, e.g. `small_spot_seconds`.
    pub dimension: String,
    /// The hour's start.
    pub hour: UnixSeconds,
    /// In the dimension's unit (seconds): the whole units used since the link that earlier
    /// records do not carry.
    pub quantity: u64,
    /// `pending` (to be sent), `accepted`, `conflict` (an operator must look: sent with
    /// its answer lost and now past the deadline, or held differently by the
    /// marketplace), `rejected` (refused for good), `expired` (too late; its usage went
    /// out with a later hour).
    pub state: String,
    /// Calls that carried it.
    pub attempts: u32,
    /// It went out in a call whose answer was lost: the marketplace may hold it.
    pub in_doubt: bool,
    pub last_error: Option<String>,
    /// The marketplace's receipt: AWS metering record id, Azure usage event id, GCP
    /// operation id.
    pub receipt: Option<String>,
    pub staged_at: UnixSeconds,
    pub settled_at: Option<UnixSeconds>,
}

/// An org's marketplace records, oldest hour first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MarketplaceRecords {
    pub org_id: String,
    pub records: Vec<MarketplaceRecord>,
}

/// A prepaid commitment and its drawdown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitmentStatus {
    pub amount: String,
    pub from: UnixSeconds,
    pub to: UnixSeconds,
    /// What the org's usage in the period has cost so far (usage is kept by the hour: the
    /// hour holding `from` counts whole).
    pub spent: String,
    /// `amount - spent`, not below zero; spend beyond the amount is billed.
    pub balance: String,
}

/// A credit the operator grants an org (an SLA credit, a promotion): invoices draw it down
/// before the commitment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditGrant {
    /// USD, up to 12 digits and two decimals, above zero.
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,2})?$")]
    pub amount: String,
    /// Why it was granted (shown to the org).
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

/// A credit granted to an org.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credit {
    pub id: String,
    pub amount: String,
    pub reason: String,
    pub granted_at: UnixSeconds,
}

/// A spend alert: the spend reached `threshold` percent of a budget (a commitment).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SpendAlert {
    pub org_id: String,
    /// What the budget is: `commitment:<from>-<to>`.
    pub period: String,
    pub threshold: u32,
    pub spent: String,
    pub budget: String,
    pub fired_at: UnixSeconds,
    /// When the webhook took it.
    #[serde(default)]
    pub delivered_at: Option<UnixSeconds>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// What the org sets of its billing (each field replaces what was set; `null` clears).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// A monthly spend limit in USD (`123.45`): new clusters are refused once reached.
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    pub hard_limit: Option<String>,
    /// An `http(s)://` URL spend alerts are POSTed to: a host name or IPv4 address, an
    /// optional port, an optional path (printable ASCII).
    #[schema(pattern = "^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[!-~]{0,2000})?$")]
    pub alert_webhook: Option<String>,
}

/// A prepaid commitment an operator records for an org.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCommitment {
    /// USD (`1000`, `1000.50`).
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    pub amount: String,
    /// The period, Unix seconds: `from` before `to`.
    #[schema(minimum = 0, maximum = 9_999_999_999_i64)]
    pub from: UnixSeconds,
    #[schema(minimum = 0, maximum = 9_999_999_999_i64)]
    pub to: UnixSeconds,
}

/// The margin report of an org's month (operators): per cluster, what its usage is billed
/// at list prices and what the land charges for it. Amounts are exact decimal strings
/// (to 6 places: seconds of usage still show), percentages to 2 places.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MarginReport {
    pub org_id: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub clusters: Vec<ClusterMargin>,
    pub price: String,
    pub cost: String,
    pub margin: String,
    pub margin_pct: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterMargin {
    pub cluster_id: String,
    pub cluster: String,
    /// What it used, e.g. `instance_ms:small:spot`.
    pub dimensions: Vec<String>,
    pub price: String,
    pub cost: String,
    pub margin: String,
    /// `margin / price` in percent (absent when nothing was billed).
    pub margin_pct: Option<String>,
}

/// A month's invoice in a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceSummary {
    pub month: String,
    pub status: String,
    pub number: Option<String>,
    pub total: String,
    pub due: String,
    pub currency: String,
}

// ---------------------------------------------------------------------------------------
// Agent <-> control plane
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterHost {
    pub host_id: String,
    pub bootstrap_token: String,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// Host-scoped token for every later call of this agent.
    pub host_token: String,
}

/// What one host should run. The agent keeps the last copy on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DesiredState {
    /// Content hash; the agent sends it back as `known` to long-poll for a change.
    pub version: String,
    pub instances: Vec<InstanceSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceSpec {
    pub id: String,
    pub cluster_id: String,
    pub pg_version: u32,
    pub database: String,
    pub owner: String,
    /// SCRAM-SHA-256 verifier of the owner's password; the password itself never leaves
    /// the control plane's answer to the create call.
    pub owner_scram: String,
    pub term: i64,
    /// Memory budget in MiB, from the plan.
    pub memory_mb: u32,
    /// Allow at least this many connections: what the cluster's biggest member allows
    /// (its plan, or what it runs with), so a smaller standby can follow a bigger primary.
    #[serde(default)]
    pub min_connections: Option<u32>,
    /// `primary` or `standby`.
    pub role: String,
    /// A standby's primary, `ip:port`, once that primary runs.
    pub primary_addr: Option<String>,
    /// A standby's password for the cluster's replication role.
    pub replication_password: Option<String>,
    /// SCRAM verifier of the replication role (the primary creates the role).
    pub replication_scram: String,
    /// A primary's standbys that must confirm commits (`ANY sync_quorum (...)`).
    pub sync_standbys: Vec<String>,
    pub sync_quorum: u32,
    /// Stop the server and keep it stopped (a primary drained for a switchover).
    #[serde(default)]
    pub stopped: bool,
    /// Where the cluster's WAL and backups go (a primary archives there).
    #[serde(default)]
    pub storage: Option<StorageSpec>,
    /// `async` or `sync`: whether commits wait for the WAL archiver.
    #[serde(default)]
    pub durability: String,
    /// A base backup the primary should take now (its id).
    #[serde(default)]
    pub backup: Option<String>,
    /// Create the data directory from object storage instead of empty: a primary
    /// restores (archive recovery, then promotion); a standby is seeded with the cluster's
    /// own base backup and archived WAL, then streams the rest from its primary (falling
    /// back to a copy of the primary when the seed fails).
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
    /// The storage the plan includes, in bytes (data and WAL): the storage guard's limit
    /// besides the disk itself.
    #[serde(default)]
    pub storage_limit_bytes: Option<u64>,
    /// A primary: another member's storage is past the read-only mark (a standby whose disk
    /// fills would stop), so new transactions default to read-only here too.
    #[serde(default)]
    pub storage_read_only: bool,
    /// The cluster's server certificate: the member serves TCP over TLS only, and a
    /// standby verifies its primary by the same name and CA (`sslmode=verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MemberTls>,
    /// The most sessions the owner role may hold at once (a primary sets it on the role;
    /// standbys receive it by replication); `None`: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u32>,
}

/// A cluster's TLS identity, the same on every member: a certificate for `server_name`
/// (which names the cluster, so a server of another cluster cannot pass for it) issued
/// by the land's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberTls {
    pub server_name: String,
    /// PEM.
    pub cert: String,
    /// PEM; sent to the cluster's hosts only.
    pub key: String,
    /// The CA's certificate (PEM) a standby verifies its primary with.
    pub ca: String,
}

/// A cluster's corner of object storage and the tenant's data key to seal it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StorageSpec {
    /// `file:///dir`, `s3://bucket`, `az://container`.
    pub url: String,
    /// Client options of the store (endpoint, credentials).
    pub options: std::collections::BTreeMap<String, String>,
    /// `<org>/<cluster>`.
    pub prefix: String,
    /// The tenant's newest data key, hex: what seals.
    pub data_key: String,
    /// Its generation (1 before any rotation).
    #[serde(default = "first_generation")]
    pub data_key_generation: u32,
    /// The tenant's older data keys still kept: they open what they sealed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older_data_keys: Vec<DataKey>,
}

fn first_generation() -> u32 {
    1
}

/// One generation of a tenant's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataKey {
    pub generation: u32,
    /// Hex.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreSpec {
    /// The store to read: the first of the source's stores that holds the backup.
    pub storage: StorageSpec,
    /// The source's other stores (its backups' copies), in order: read when `storage`
    /// fails — a damaged or missing object, a store that does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<StorageSpec>,
    pub backup_id: String,
    pub target_time: Option<String>,
    pub target_lsn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Creating,
    Running,
    Unhealthy,
    Failed,
    /// Stopped on purpose (desired state says so).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ObservedInstance {
    pub id: String,
    pub state: InstanceState,
    /// Where PostgreSQL listens, `ip:port`.
    pub addr: Option<String>,
    pub error: Option<String>,
    /// What the server says of itself: `true` while it is a standby.
    #[serde(default)]
    pub in_recovery: Option<bool>,
    /// A primary's flushed WAL position; a standby's received-and-flushed position.
    #[serde(default)]
    pub lsn: Option<u64>,
    /// A standby: its WAL receiver is streaming from a primary right now.
    #[serde(default)]
    pub streaming: Option<bool>,
    /// A primary: the standbys its running configuration waits for.
    #[serde(default)]
    pub sync_standbys: Vec<String>,
    /// A primary: the standbys PostgreSQL counts toward its synchronous commits right
    /// now (caught up and streaming).
    #[serde(default)]
    pub sync_streaming: Vec<String>,
    /// The term of the spec the instance runs.
    #[serde(default)]
    pub term: i64,
    /// A primary: everything before this WAL position is in object storage.
    #[serde(default)]
    pub archived_lsn: Option<u64>,
    /// A primary: why archiving fails right now.
    #[serde(default)]
    pub archive_error: Option<String>,
    /// What the data directory holds and its file system's room, measured every few
    /// seconds (absent until first measured).
    #[serde(default)]
    pub storage: Option<StorageUsage>,
    /// A standby: where its data directory came from.
    #[serde(default)]
    pub seed: Option<Seed>,
    /// The running server's `max_connections` (a standby must allow as many as its
    /// primary).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// The data key generation the instance's WAL archiver seals with (a primary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing_generation: Option<u32>,
    /// Client sessions connected now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Transactions committed and rolled back since the server's statistics began
    /// (cumulative; a restart may start it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xacts: Option<u64>,
}

/// One sample of an instance's metrics, as its agent last reported them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MetricSample {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub connections: Option<u32>,
    /// Transactions so far (cumulative).
    pub xacts: Option<u64>,
    /// The instance's WAL position (a primary's flushed, a standby's received).
    pub lsn: Option<u64>,
    /// A primary: everything before this WAL position is in object storage.
    pub archived_lsn: Option<u64>,
    /// Data and WAL on disk.
    pub storage_bytes: Option<u64>,
}

/// A member's recent samples.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberMetrics {
    pub instance_id: String,
    /// `primary` or `standby`.
    pub role: String,
    pub cloud: String,
    /// Oldest first.
    pub samples: Vec<MetricSample>,
}

/// A cluster's recent metrics, per member: a live view kept by the control plane in
/// memory (it starts afresh when the control plane restarts).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterMetrics {
    /// At most one sample per member this often.
    pub sample_every_ms: i64,
    /// How far back the samples go.
    pub window_ms: i64,
    pub members: Vec<MemberMetrics>,
}

/// Where a standby's data directory came from, and how much of it its primary sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Seed {
    /// `backup`: a base backup and the archived WAL since, from object storage (the
    /// primary only streams what came after); `primary`: a copy of the running primary
    /// (`pg_basebackup`).
    pub from: String,
    /// The base backup it was built from (`from` = `backup`).
    pub backup_id: Option<String>,
    /// Bytes of data files the primary itself sent for the copy (`0` from a backup).
    pub primary_bytes: u64,
    /// Where the standby began streaming WAL from its primary: everything before came
    /// with the seed.
    pub stream_start_lsn: Option<u64>,
}

/// What an instance's data directory holds and how much room its disk has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StorageUsage {
    /// Bytes of data files (everything but WAL).
    pub data_bytes: u64,
    /// Bytes of WAL kept (`pg_wal`).
    pub wal_bytes: u64,
    /// Free bytes of the disk the data directory is on.
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// Bytes the agent holds back on the disk to release when it fills (not free room).
    #[serde(default)]
    pub disk_reserve_bytes: u64,
    /// What the storage guard does about it (see [`StorageLevel`]).
    #[serde(default)]
    pub level: StorageLevel,
}

/// The storage guard's level: how full the fuller of the plan's storage and the disk is,
/// and what follows. `warning` from 80%; `read_only` from 90% (new transactions default
/// to read-only; a session that asks for read-write — `SET SESSION CHARACTERISTICS AS
/// TRANSACTION READ WRITE` — can still delete, truncate and vacuum); `critical` from 95%
/// (running write transactions are cancelled too); `full` when the disk filled anyway and
/// the agent released its reserve so PostgreSQL keeps running (read-only). Read-write
/// again below 85%.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StorageLevel {
    #[default]
    Normal,
    Warning,
    ReadOnly,
    Critical,
    Full,
}

impl StorageLevel {
    pub const ALL: [StorageLevel; 5] = [
        StorageLevel::Normal,
        StorageLevel::Warning,
        StorageLevel::ReadOnly,
        StorageLevel::Critical,
        StorageLevel::Full,
    ];

    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageLevel::Normal => "normal",
            StorageLevel::Warning => "warning",
            StorageLevel::ReadOnly => "read_only",
            StorageLevel::Critical => "critical",
            StorageLevel::Full => "full",
        }
    }
}

impl std::str::FromStr for StorageLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StorageLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown storage level {s:?}"))
    }
}

/// What became of a requested base backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupReport {
    pub id: String,
    /// `complete` or `failed`.
    pub status: String,
    pub timeline: Option<u32>,
    pub start_lsn: Option<u64>,
    pub end_lsn: Option<u64>,
    pub size_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub error: Option<String>,
    /// The copy is the cluster's creation image (its template): a restore from it can
    /// stop at any moment since the cluster was created.
    #[serde(default)]
    pub from_creation: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub instances: Vec<ObservedInstance>,
    /// Base backups finished since the desired state asked for them.
    #[serde(default)]
    pub backups: Vec<BackupReport>,
    /// The host's cloud says it is taking the host away.
    #[serde(default)]
    pub notice: Option<SpotNotice>,
    /// The host's own disk (absent when the host's directory is on a shared file system).
    #[serde(default)]
    pub disk: Option<HostDisk>,
    /// Every usage counter the agent keeps, read as the heartbeat left; a closed one is
    /// sent until a heartbeat carrying it was answered with success.
    #[serde(default)]
    pub meters: Vec<MeterReading>,
}

/// One reading of a usage counter an agent or a proxy keeps on its disk: cumulative, never
/// going down across its restarts (see `highrise_billing::meter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterReading {
    /// What is counted for: an instance id (an agent's counters), an endpoint (a proxy's).
    pub source: String,
    pub kind: MeterKind,
    /// The counter (in the kind's unit).
    pub value: u64,
    /// When it was read, Unix milliseconds on the host's clock.
    pub at_ms: i64,
    /// When the counter started from 0, Unix milliseconds on the host's clock.
    pub since_ms: i64,
    /// The source is gone (the instance deleted): this is the last reading.
    #[serde(default)]
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// Milliseconds the instance existed on its host (from its creation there to its
    /// deletion; time the host was down and PostgreSQL not running does not count).
    InstanceMs,
    /// MiB-milliseconds of the host's disk the instance's data directory (data and WAL)
    /// held: its size as last measured, over time.
    DiskMibMs,
    /// Bytes a proxy relayed from clients to an endpoint's server (the PostgreSQL
    /// protocol's bytes, before TLS).
    ProxyBytesIn,
    /// Bytes a proxy relayed from an endpoint's server to its clients.
    ProxyBytesOut,
    /// MiB-milliseconds of a cloud's object store a cluster's objects (WAL, base backups,
    /// the second copy) held: measured by the control plane itself, never sent.
    ObjectStorageMibMs,
}

impl MeterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterKind::InstanceMs => "instance_ms",
            MeterKind::DiskMibMs => "disk_mib_ms",
            MeterKind::ProxyBytesIn => "proxy_bytes_in",
            MeterKind::ProxyBytesOut => "proxy_bytes_out",
            MeterKind::ObjectStorageMibMs => "object_storage_mib_ms",
        }
    }
}

/// A proxy's traffic counters (`POST /v1/proxy/usage`): per endpoint it relayed for, the
/// bytes each way, kept on the proxy's disk across its restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyUsage {
    /// The proxy's name, stable across its restarts (its counters are its own).
    pub proxy: String,
    /// Where the proxy runs: traffic is recorded (and priced) there.
    pub cloud: String,
    pub region: String,
    /// `proxy_bytes_in` and `proxy_bytes_out` readings, `source` the endpoint.
    pub readings: Vec<MeterReading>,
}

/// The most readings one [`ProxyUsage`] may carry (a proxy with more sends several).
pub const MAX_PROXY_READINGS: usize = 10_000;

/// What the control plane did with a proxy's readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProxyUsageTaken {
    /// Readings that added usage (possibly none).
    pub taken: usize,
    /// Readings not newer than the last one taken (sent before): nothing added.
    pub stale: usize,
    /// Readings of endpoints no cluster has (deleted before the proxy's first report).
    pub unknown: usize,
}

/// A host's disk as its agent last read it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostDisk {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Held back by the agent, released when the disk fills (see [`StorageLevel`]).
    pub reserve_bytes: u64,
    /// The reserve is released: the disk filled despite the storage guard.
    pub reserve_released: bool,
}

/// A spot notice as the host's metadata endpoint gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpotNotice {
    /// Unix second the host dies at, where the cloud says (AWS `instance-action`);
    /// otherwise the control plane assumes the cloud's documented notice length.
    pub deadline: Option<i64>,
    /// Which metadata document said so (`aws-instance-action`, `gcp-preempted`).
    pub source: String,
}

// ---------------------------------------------------------------------------------------
// Proxy <-> control plane
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteTable {
    pub version: String,
    pub routes: Vec<Route>,
    /// The CA (PEM) that signs the servers' certificates: a route with a `server_name`
    /// is reached over TLS verified with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ca: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Route {
    pub endpoint: String,
    pub cluster_id: String,
    /// Current primary, `ip:port`; none while a switch is in progress (the proxy then
    /// holds new connections until a primary is routed again).
    pub addr: Option<String>,
    pub term: i64,
    /// Told to every new session as a warning before it is ready (the database is
    /// read-only because its storage is nearly full, and what to do).
    #[serde(default)]
    pub notice: Option<String>,
    /// Whether the public listeners may open sessions on the endpoint.
    #[serde(default = "yes")]
    pub public: bool,
    /// Source networks the public listeners admit (CIDRs); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Set for a private endpoint: the listener inside a tenant network that serves it
    /// (and nothing else); the public listeners refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<PrivateListener>,
    /// The name the cluster's servers' certificates carry: the proxy connects to them over
    /// TLS and verifies that name (`None`: plain TCP, a land without a CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The role that logs in through the proxy and its SCRAM verifier: the proxy
    /// authenticates the client itself and logs in to the server with the key the client
    /// proved (`None`: the exchange passes through to the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<RouteLogin>,
}

/// The cluster's owner as the proxy authenticates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteLogin {
    pub user: String,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as the server keeps it.
    pub scram: String,
}

/// Where a private endpoint listens: an address inside a tenant network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct PrivateListener {
    pub network_id: String,
    /// The land's handle for the network (the local land: a network namespace's name).
    pub namespace: String,
    /// `ip:port` inside the network.
    pub listen: String,
}

fn yes() -> bool {
    true
}

/// Content hash used as a version for long-polled documents (FNV-1a over the JSON).
pub fn content_version<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

// `time` and `lsn` exclude each other, which a derived schema cannot say: the schema is
// one of three shapes (neither, time, lsn), each closed.
impl utoipa::PartialSchema for RestoreFrom {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        use utoipa::openapi::KnownFormat;
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let from = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"))
                .description(Some("Name of the source cluster (in the same project)."))
        };
        let time = OneOfBuilder::new()
            .description(Some(
                "Recover up to this time: RFC 3339 with its UTC offset, or Unix seconds \
                 (psql's `2026-11-26 12:00:00.123+00` is accepted too).",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]{1,10}(\\.[0-9]{1,6})?$")),
            );
        let lsn = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))
            .description(Some("Recover up to this WAL position (`0/3000060`)."));
        let closed = || {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("from", from())
                .required("from")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        OneOfBuilder::new()
            .description(Some(
                "The cluster whose backups and WAL a new cluster starts from, and the point to stop at \
                 (the end of its archived WAL when neither time nor lsn is given).",
            ))
            .item(closed().property("time", null()).property("lsn", null()))
            .item(closed().property("time", time).required("time").property("lsn", null()))
            .item(closed().property("lsn", lsn).required("lsn").property("time", null()))
            .into()
    }
}

impl ToSchema for RestoreFrom {}
