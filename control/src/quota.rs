//! Per-org quotas: how many clusters, members per cluster, bytes of backups in object
//! storage and operations at once an org may have, and the one pure rule that says whether
//! a request fits. The store applies it inside the transaction that would create the
//! thing, so a refused request leaves nothing behind and two racing requests cannot both
//! squeeze under a limit.

/// An org's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub clusters: i64,
    pub members_per_cluster: i64,
    pub storage_bytes: i64,
    pub concurrent_operations: i64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            clusters: 20,
            members_per_cluster: 4,
            storage_bytes: 100 << 30,
            concurrent_operations: 10,
        }
    }
}

/// What an org uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Live clusters (not being deleted).
    pub clusters: i64,
    pub running_operations: i64,
    /// Bytes of complete base backups in object storage.
    pub storage_bytes: i64,
}

/// What a request would add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A new cluster with this many members (primary and standbys).
    NewCluster { members: i64 },
    /// An existing cluster grown or shrunk to this many members.
    Members(i64),
    /// A new operation (switchover) on an existing cluster.
    Operation,
    /// A new base backup.
    Backup,
}

/// A quota a request would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota {name} reached: {detail}; free some or ask the operator to raise it")]
pub struct Exceeded {
    /// `max_clusters`, `max_members_per_cluster`, `max_storage_bytes`,
    /// `max_concurrent_operations`.
    pub name: &'static str,
    pub detail: String,
}

fn exceeded(name: &'static str, detail: String) -> Result<(), Exceeded> {
    Err(Exceeded { name, detail })
}

/// Whether `ask` fits `q` given `used`.
pub fn check(q: &Quotas, used: &Usage, ask: Ask) -> Result<(), Exceeded> {
    let members = match ask {
        Ask::NewCluster { members } | Ask::Members(members) => Some(members),
        Ask::Operation | Ask::Backup => None,
    };
    if let Some(m) = members {
        if m > q.members_per_cluster {
            return exceeded(
                "max_members_per_cluster",
                format!("{m} members asked, at most {} per cluster", q.members_per_cluster),
            );
        }
    }
    if matches!(ask, Ask::NewCluster { .. }) && used.clusters >= q.clusters {
        return exceeded(
            "max_clusters",
            format!("the org has {} of {} clusters", used.clusters, q.clusters),
        );
    }
    if matches!(ask, Ask::NewCluster { .. } | Ask::Operation) && used.running_operations >= q.concurrent_operations {
        return exceeded(
            "max_concurrent_operations",
            format!(
                "{} of {} operations are running; wait for one to end",
                used.running_operations, q.concurrent_operations
            ),
        );
    }
    if matches!(ask, Ask::NewCluster { .. } | Ask::Backup) && used.storage_bytes >= q.storage_bytes {
        return exceeded(
            "max_storage_bytes",
            format!("backups use {} of {} bytes", used.storage_bytes, q.storage_bytes),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_quota_refuses_what_passes_it_and_nothing_else() {
        let q = Quotas {
            clusters: 2,
            members_per_cluster: 3,
            storage_bytes: 1000,
            concurrent_operations: 1,
        };
        let idle = Usage::default();
        let full = Usage {
            clusters: 2,
            running_operations: 1,
            storage_bytes: 1000,
        };
        // (usage, ask, the quota that refuses, if any)
        let table: &[(Usage, Ask, Option<&str>)] = &[
            (idle, Ask::NewCluster { members: 3 }, None),
            (idle, Ask::NewCluster { members: 4 }, Some("max_members_per_cluster")),
            (idle, Ask::Members(4), Some("max_members_per_cluster")),
            (full, Ask::Members(3), None),
            (full, Ask::Members(1), None),
            (
                Usage { clusters: 2, ..idle },
                Ask::NewCluster { members: 1 },
                Some("max_clusters"),
            ),
            (Usage { clusters: 1, ..idle }, Ask::NewCluster { members: 1 }, None),
            (
                Usage {
                    running_operations: 1,
                    ..idle
                },
                Ask::NewCluster { members: 1 },
                Some("max_concurrent_operations"),
            ),
            (
                Usage {
                    running_operations: 1,
                    ..idle
                },
                Ask::Operation,
                Some("max_concurrent_operations"),
            ),
            (
                Usage {
                    running_operations: 1,
                    ..idle
                },
                Ask::Backup,
                None,
            ),
            (
                Usage {
                    storage_bytes: 1000,
                    ..idle
                },
                Ask::Backup,
                Some("max_storage_bytes"),
            ),
            (
                Usage {
                    storage_bytes: 999,
                    ..idle
                },
                Ask::Backup,
                None,
            ),
            (
                Usage {
                    storage_bytes: 1000,
                    ..idle
                },
                Ask::NewCluster { members: 1 },
                Some("max_storage_bytes"),
            ),
            (
                Usage {
                    storage_bytes: 1000,
                    ..idle
                },
                Ask::Operation,
                None,
            ),
        ];
        for (used, ask, want) in table {
            let got = check(&q, used, *ask).err().map(|e| e.name);
            assert_eq!(got, *want, "{used:?} {ask:?}");
        }
        let e = check(&q, &full, Ask::NewCluster { members: 1 }).unwrap_err();
        assert!(
            e.to_string().contains("quota max_clusters reached: the org has 2 of 2"),
            "{e}"
        );
    }
}
