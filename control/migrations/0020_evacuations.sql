-- Evacuating a cloud (issue 11): every cluster that was in the cloud when it began is
-- moved off it, a few at a time; each cluster's state (waiting, moving, moved, failed,
-- staying) and its move operation are kept, so a restarted control plane carries on.
CREATE TABLE evacuations (
    id TEXT PRIMARY KEY,
    cloud TEXT NOT NULL,
    to_cloud TEXT,
    concurrency BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE evacuation_clusters (
    evacuation_id TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    why TEXT,
    operation_id TEXT,
    PRIMARY KEY (evacuation_id, cluster_id)
);
