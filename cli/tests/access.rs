//! Who may do what, against the real `highrise up`: the role matrix for every endpoint,
//! project-scoped, expired and revoked keys, members signing in with sessions whose role
//! follows their membership, the hash-chained audit log (tampering found), and the limit
//! on failed sign-ins from one address.

mod common;

use common::*;
use serde_json::{json, Value};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(up: &Up) -> Self {
        Self::from_addr(up, "127.0.0.1")
    }

    fn from_addr(up: &Up, ip: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
            base: up.api_url.clone(),
        }
    }

    /// `(status, body)` of `method path` with `key` (none when empty) and a JSON body.
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, key, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    /// A new key of `role` (limited to `project` when given).
    async fn key(&self, owner: &str, name: &str, role: &str, project: Option<&str>) -> String {
        let v = self
            .ok(
                "POST",
                "/v1/api-keys",
                owner,
                Some(json!({ "name": name, "role": role, "project": project })),
            )
            .await;
        v["secret"].as_str().unwrap().to_string()
    }
}

const ROLES: [&str; 5] = ["owner", "admin", "developer", "viewer", "billing"];

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers_each_role_as_the_matrix_says() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let c = Client::new(&up);
    // A tenant org, with its owner key; clusters in two projects (not waited for: the
    // matrix needs their rows, not their servers).
    let org = c
        .ok("POST", "/v1/orgs", &up.api_key, Some(json!({ "name": "acme" })))
        .await;
    let owner = org["api_key"]["secret"].as_str().unwrap().to_string();
    c.ok("POST", "/v1/projects", &owner, Some(json!({ "name": "staging" })))
        .await;
    let web = c
        .ok("POST", "/v1/clusters", &owner, Some(json!({ "name": "web" })))
        .await;
    let web_id = web["cluster"]["id"].as_str().unwrap().to_string();
    let web_op = web["operation"]["id"].as_str().unwrap().to_string();
    let api = c
        .ok(
            "POST",
            "/v1/clusters",
            &owner,
            Some(json!({ "name": "api", "project": "staging" })),
        )
        .await;
    let api_op = api["operation"]["id"].as_str().unwrap().to_string();

    let mut keys = Vec::new();
    for role in ROLES {
        keys.push((role, c.key(&owner, role, role, None).await));
    }

    // (method, path, body, [owner, admin, developer, viewer, billing]). Writes are sent
    // so that an allowed caller gets a harmless refusal of the request itself (a bad
    // name, an unknown object) — anything but 401/403 — and a forbidden one 403.
    let denied = 403;
    let bad = 400;
    let nf = 404;
    let web_path = format!("/v1/clusters/{web_id}");
    let cases: Vec<(&str, String, Option<Value>, [u16; 5])> = vec![
        ("GET", "/v1/clusters".into(), None, [200, 200, 200, 200, denied]),
        ("GET", web_path.clone(), None, [200, 200, 200, 200, denied]),
        (
            "GET",
            "/v1/clusters/web/events".into(),
            None,
            [200, 200, 200, 200, denied],
        ),
        (
            "GET",
            "/v1/clusters/web/backups".into(),
            None,
            [200, 200, 200, 200, denied],
        ),
        (
            "GET",
            "/v1/clusters/web/metrics".into(),
            None,
            [200, 200, 200, 200, denied],
        ),
        ("GET", "/v1/operations".into(), None, [200, 200, 200, 200, denied]),
        (
            "GET",
            format!("/v1/operations/{web_op}"),
            None,
            [200, 200, 200, 200, denied],
        ),
        (
            "POST",
            "/v1/clusters".into(),
            Some(json!({ "name": "Bad" })),
            [bad, bad, bad, denied, denied],
        ),
        (
            "PATCH",
            web_path.clone(),
            Some(json!({ "replicas": 9 })),
            [bad, bad, bad, denied, denied],
        ),
        ("DELETE", "/v1/clusters/nope".into(), None, [nf, nf, nf, denied, denied]),
        // No standby to switch over to: a conflict with the cluster as it is.
        (
            "POST",
            "/v1/clusters/web/switchover".into(),
            Some(json!({})),
            [409, 409, 409, denied, denied],
        ),
        (
            "POST",
            "/v1/clusters/nope/backups".into(),
            None,
            [nf, nf, nf, denied, denied],
        ),
        (
            "POST",
            "/v1/clusters/web/backups/bk_nope/verify".into(),
            None,
            [nf, nf, nf, denied, denied],
        ),
        (
            "GET",
            "/v1/backups?cluster=web".into(),
            None,
            [200, 200, 200, 200, denied],
        ),
        (
            "POST",
            "/v1/backups/bk_nope/verify".into(),
            None,
            [nf, nf, nf, denied, denied],
        ),
        ("GET", "/v1/projects".into(), None, [200; 5]),
        ("GET", "/v1/me".into(), None, [200; 5]),
        ("GET", "/v1/clouds".into(), None, [200; 5]),
        (
            "POST",
            "/v1/projects".into(),
            Some(json!({ "name": "Bad" })),
            [bad, bad, denied, denied, denied],
        ),
        (
            "DELETE",
            "/v1/projects/nope".into(),
            None,
            [nf, nf, denied, denied, denied],
        ),
        ("GET", "/v1/members".into(), None, [200; 5]),
        (
            "POST",
            "/v1/members".into(),
            Some(json!({ "email": "not-an-email", "role": "viewer" })),
            [bad, bad, denied, denied, denied],
        ),
        (
            "PATCH",
            "/v1/members/nobody@example.com".into(),
            Some(json!({ "role": "viewer" })),
            [nf, nf, denied, denied, denied],
        ),
        (
            "DELETE",
            "/v1/members/nobody@example.com".into(),
            None,
            [nf, nf, denied, denied, denied],
        ),
        ("GET", "/v1/api-keys".into(), None, [200, 200, denied, denied, denied]),
        (
            "POST",
            "/v1/api-keys".into(),
            Some(json!({ "name": "" })),
            [bad, bad, denied, denied, denied],
        ),
        (
            "DELETE",
            "/v1/api-keys/key_nope".into(),
            None,
            [nf, nf, denied, denied, denied],
        ),
        ("GET", "/v1/audit".into(), None, [200, 200, denied, denied, denied]),
        ("GET", "/v1/usage".into(), None, [200, 200, denied, denied, 200]),
        ("GET", "/v1/invoices".into(), None, [200, 200, denied, denied, 200]),
        ("GET", "/v1/billing".into(), None, [200, 200, denied, denied, 200]),
        (
            "PUT",
            "/v1/billing".into(),
            Some(json!({ "hard_limit": "1.234", "alert_webhook": null })),
            [bad, bad, denied, denied, bad],
        ),
        (
            "PUT",
            "/v1/orgs/acme/marketplace".into(),
            Some(json!({ "marketplace": "gcp", "account": "x" })),
            [denied, denied, denied, denied, denied],
        ),
        (
            "GET",
            "/v1/orgs/acme/margin".into(),
            None,
            [denied, denied, denied, denied, denied],
        ),
        (
            "PUT",
            "/v1/orgs/acme/commitment".into(),
            Some(json!({ "amount": "100", "from": 0, "to": 1 })),
            [denied, denied, denied, denied, denied],
        ),
        (
            "POST",
            "/v1/orgs/acme/credits".into(),
            Some(json!({ "amount": "100", "reason": "mine" })),
            [denied, denied, denied, denied, denied],
        ),
        (
            "GET",
            "/v1/invoices/2026-13".into(),
            None,
            [bad, bad, denied, denied, bad],
        ),
        ("GET", "/v1/usage?from=-1".into(), None, [bad, bad, denied, denied, bad]),
        (
            "POST",
            "/v1/audit/verify".into(),
            None,
            [200, 200, denied, denied, denied],
        ),
        // Operator-only, whatever the tenant's role.
        ("POST", "/v1/orgs".into(), Some(json!({ "name": "other" })), [denied; 5]),
        ("GET", "/v1/hosts".into(), None, [denied; 5]),
        ("GET", "/v1/orgs/acme/quotas".into(), None, [denied; 5]),
        (
            "PUT",
            "/v1/orgs/acme/quotas".into(),
            Some(
                json!({ "max_clusters": 9, "max_members_per_cluster": 2, "max_storage_bytes": 1, "max_concurrent_operations": 1 }),
            ),
            [denied; 5],
        ),
        ("GET", "/v1/quotas".into(), None, [200; 5]),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, want) in &cases {
        for ((role, key), want) in keys.iter().zip(want) {
            let (got, v) = c.call(method, path, key, body.clone()).await;
            if got != *want {
                wrong.push(format!("{role:<9} {method} {path}: {got} (want {want}) {v}"));
            }
            if got == 403 {
                assert_eq!(v["error"]["code"], "forbidden", "{v}");
            }
        }
    }
    assert!(wrong.is_empty(), "role matrix mismatches:\n{}", wrong.join("\n"));

    // Nobody hands out more than they have.
    let admin = &keys[1].1;
    let (s, _) = c
        .call(
            "POST",
            "/v1/api-keys",
            admin,
            Some(json!({ "name": "x", "role": "owner" })),
        )
        .await;
    assert_eq!(s, 403);

    // A project key sees its project only: other projects' clusters and operations are
    // not found, by name or id; org-wide resources are refused.
    let scoped = c.key(&owner, "ci", "developer", Some("staging")).await;
    let me = c.ok("GET", "/v1/me", &scoped, None).await;
    assert_eq!(
        (me["role"].as_str(), me["project"].as_str()),
        (Some("developer"), Some("staging"))
    );
    let listed = c.ok("GET", "/v1/clusters", &scoped, None).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api"]);
    let projects = c.ok("GET", "/v1/projects", &scoped, None).await;
    assert_eq!(projects.as_array().unwrap().len(), 1);
    assert_eq!(projects[0]["name"], "staging");
    for path in [
        web_path.clone(),
        "/v1/clusters/web?project=default".into(),
        format!("/v1/operations/{web_op}"),
        "/v1/clusters?project=default".into(),
        "/v1/clusters/web/backups?project=default".into(),
        "/v1/backups?cluster=web&project=default".into(),
    ] {
        assert_eq!(c.call("GET", &path, &scoped, None).await.0, 404, "{path}");
    }
    assert_eq!(c.ok("GET", "/v1/clusters/api", &scoped, None).await["name"], "api");
    c.ok("GET", &format!("/v1/operations/{api_op}"), &scoped, None).await;
    let ops = c.ok("GET", "/v1/operations", &scoped, None).await;
    assert!(
        ops.as_array().unwrap().iter().all(|o| o["id"] != web_op.as_str()),
        "{ops}"
    );
    assert_eq!(
        c.call("DELETE", &format!("{web_path}?project=default"), &scoped, None)
            .await
            .0,
        404
    );
    for path in [
        "/v1/members",
        "/v1/api-keys",
        "/v1/audit",
        "/v1/usage",
        "/v1/invoices",
        "/v1/billing",
    ] {
        assert_eq!(c.call("GET", path, &scoped, None).await.0, 403, "{path}");
    }

    // Revoked and expired keys are refused.
    let viewer_id = c
        .ok("GET", "/v1/api-keys", &owner, None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok("DELETE", &format!("/v1/api-keys/{viewer_id}"), &owner, None).await;
    assert_eq!(c.call("GET", "/v1/projects", &keys[3].1, None).await.0, 401);
    let (s, _) = c
        .call(
            "POST",
            "/v1/api-keys",
            &owner,
            Some(json!({ "name": "old", "expires_in_seconds": 10 })),
        )
        .await;
    assert_eq!(s, 400, "an end under a minute away is refused");
    let short = c
        .ok(
            "POST",
            "/v1/api-keys",
            &owner,
            Some(json!({ "name": "short", "expires_in_seconds": 60 })),
        )
        .await;
    assert!(short["key"]["expires_at"].as_i64().is_some());
    let (short_id, short) = (
        short["key"]["id"].as_str().unwrap().to_string(),
        short["secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(c.call("GET", "/v1/projects", &short, None).await.0, 200);
    // Its minute passes (moved in the store rather than waited for).
    let db = format!("sqlite://{}", up.data_dir.join("control.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = expires_at - 61 WHERE id = ?")
        .bind(&short_id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(c.call("GET", "/v1/projects", &short, None).await.0, 401);
    tokio::task::spawn_blocking(move || drop(up)).await.unwrap();
}

/// Invites `email` with `role` and accepts with `password`; returns the user id.
async fn join(c: &Client, owner: &str, email: &str, role: &str, password: &str) -> String {
    let inv = c
        .ok(
            "POST",
            "/v1/members",
            owner,
            Some(json!({ "email": email, "role": role })),
        )
        .await;
    assert_eq!(inv["member"]["status"], "invited");
    let token = inv["invite_token"].as_str().unwrap();
    let m = c
        .ok(
            "POST",
            "/v1/invites/accept",
            "",
            Some(json!({ "token": token, "password": password })),
        )
        .await;
    assert_eq!(m["status"], "active");
    // An invitation works once.
    let (s, _) = c
        .call(
            "POST",
            "/v1/invites/accept",
            "",
            Some(json!({ "token": token, "password": password })),
        )
        .await;
    assert_eq!(s, 401);
    m["user_id"].as_str().unwrap().to_string()
}

async fn login(c: &Client, email: &str, password: &str) -> (u16, Value) {
    c.call(
        "POST",
        "/v1/login",
        "",
        Some(json!({ "email": email, "password": password })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn members_sign_in_their_actions_are_audited_and_tampering_is_found() {
    let up = std::sync::Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let c = Client::new(&up);
    let org = c
        .ok("POST", "/v1/orgs", &up.api_key, Some(json!({ "name": "acme" })))
        .await;
    let owner = org["api_key"]["secret"].as_str().unwrap().to_string();
    let alice = join(&c, &owner, "Alice@Example.com", "admin", "correct horse battery").await;
    let bob = join(&c, &owner, "bob@example.com", "viewer", "tr0ub4dor&3 staple").await;
    let (s, _) = c
        .call(
            "POST",
            "/v1/members",
            &owner,
            Some(json!({ "email": "carol@example.com", "role": "viewer" })),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = c
        .call(
            "POST",
            "/v1/members",
            &owner,
            Some(json!({ "email": "bob@example.com", "role": "admin" })),
        )
        .await;
    assert_eq!(s, 409, "{v}");

    // Sessions: wrong passwords are refused alike for known and unknown emails.
    assert_eq!(login(&c, "alice@example.com", "wrong password!").await.0, 401);
    assert_eq!(login(&c, "nobody@example.com", "wrong password!").await.0, 401);
    let (s, a) = login(&c, "alice@example.com", "correct horse battery").await;
    assert_eq!(s, 200, "{a}");
    assert_eq!((a["role"].as_str(), a["org"].as_str()), (Some("admin"), Some("acme")));
    let a_key = a["secret"].as_str().unwrap().to_string();
    // A second session of Alice's ends with logout; the first goes on. A key is no session.
    let (_, a2) = login(&c, "alice@example.com", "correct horse battery").await;
    let a2 = a2["secret"].as_str().unwrap().to_string();
    assert_eq!(c.call("POST", "/v1/logout", &a2, None).await.0, 204);
    assert_eq!(c.call("GET", "/v1/me", &a2, None).await.0, 401);
    assert_eq!(c.call("GET", "/v1/me", &a_key, None).await.0, 200);
    assert_eq!(c.call("POST", "/v1/logout", &owner, None).await.0, 409);
    let (_, b) = login(&c, "bob@example.com", "tr0ub4dor&3 staple").await;
    let b_key = b["secret"].as_str().unwrap().to_string();

    // A sequence of actions by the two users.
    c.ok("POST", "/v1/projects", &a_key, Some(json!({ "name": "alpha" })))
        .await;
    assert_eq!(
        c.call("POST", "/v1/projects", &b_key, Some(json!({ "name": "beta" })))
            .await
            .0,
        403
    );
    c.ok("DELETE", "/v1/projects/alpha", &a_key, None).await;
    let denied = c.ok("GET", "/v1/audit?target=projects/beta", &a_key, None).await;
    assert_eq!(denied[0]["actor"], format!("user:{bob}"));
    assert_eq!(denied[0]["result"], "403");
    let entries = c.ok("GET", "/v1/audit?target=projects/al", &a_key, None).await;
    let seen: Vec<(String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (ua, ub) = (format!("user:{alice}"), format!("user:{bob}"));
    assert_eq!(
        seen,
        [
            (ua.clone(), "POST /v1/projects".into(), "201".into()),
            (ua.clone(), "DELETE /v1/projects/{project}".into(), "204".into()),
        ]
    );
    assert!(entries.as_array().unwrap().iter().all(|e| e["source"] == "127.0.0.1"));
    // Sign-ins are there too, the failed one included; the actor filter works.
    let all = c.ok("GET", "/v1/audit?limit=1000", &owner, None).await;
    let logins: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login")
        .map(|e| (e["actor"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        logins,
        [
            ("login:alice@example.com", "failed"),
            (ua.as_str(), "ok"),
            (ua.as_str(), "ok"),
            (ub.as_str(), "ok")
        ]
    );
    let by_bob = c.ok("GET", &format!("/v1/audit?actor={ub}"), &owner, None).await;
    assert!(by_bob.as_array().unwrap().iter().all(|e| e["actor"] == ub.as_str()));
    // Paged: two at a time gives the same entries in the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/audit?limit=2", up.api_url);
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let resp = c.http.get(url).bearer_auth(&owner).send().await.unwrap();
        cursor = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = resp.json().await.unwrap();
        assert!(page.as_array().unwrap().len() <= 2);
        paged.extend(page.as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()));
        if cursor.is_none() {
            break;
        }
    }
    let seqs: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(paged, seqs);

    // A role change applies to a live session at once; a removal ends it.
    assert_eq!(
        c.call("POST", "/v1/clusters", &b_key, Some(json!({ "name": "Bad" })))
            .await
            .0,
        403
    );
    c.ok(
        "PATCH",
        "/v1/members/bob@example.com",
        &a_key,
        Some(json!({ "role": "developer" })),
    )
    .await;
    assert_eq!(
        c.call("POST", "/v1/clusters", &b_key, Some(json!({ "name": "Bad" })))
            .await
            .0,
        400
    );
    // An admin may not make an owner.
    assert_eq!(
        c.call(
            "PATCH",
            "/v1/members/bob@example.com",
            &a_key,
            Some(json!({ "role": "owner" }))
        )
        .await
        .0,
        403
    );
    c.ok("DELETE", &format!("/v1/members/{bob}"), &a_key, None).await;
    assert_eq!(c.call("GET", "/v1/projects", &b_key, None).await.0, 401);
    assert_eq!(login(&c, "bob@example.com", "tr0ub4dor&3 staple").await.0, 403);

    // The CLI reads the same log and checks the chain.
    let u = up.clone();
    let out = tokio::task::spawn_blocking(move || {
        let env_key = format!("--api-key={owner}");
        let listed = u.cli_ok(&["audit", "list", "--target", "projects/", &env_key]);
        let verified = u.cli_ok(&["audit", "verify", &env_key]);
        (listed, verified, owner)
    })
    .await
    .unwrap();
    assert!(out.0.contains("DELETE /v1/projects/{project}"), "{}", out.0);
    assert!(out.1.contains("audit log intact"), "{}", out.1);
    let owner = out.2;

    // Editing or removing an entry in the store directly is found.
    let db = format!("sqlite://{}", up.data_dir.join("control.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let org_id = org["org"]["id"].as_str().unwrap();
    let target_seq = seqs[seqs.len() / 2];
    sqlx::query("UPDATE audit_log SET result = '200' WHERE org_id = ? AND seq = ?")
        .bind(org_id)
        .bind(target_seq)
        .execute(&pool)
        .await
        .unwrap();
    let v = c.ok("POST", "/v1/audit/verify", &owner, None).await;
    assert_eq!(
        (v["ok"].as_bool(), v["first_bad_seq"].as_i64()),
        (Some(false), Some(target_seq)),
        "{v}"
    );
    let u = up.clone();
    let key = owner.clone();
    let cli = tokio::task::spawn_blocking(move || u.cli(&["audit", "verify", &format!("--api-key={key}")]))
        .await
        .unwrap();
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("broken"), "{cli:?}");
    // Put the field back: intact again; then remove an entry.
    sqlx::query("UPDATE audit_log SET result = ? WHERE org_id = ? AND seq = ?")
        .bind(
            all.as_array().unwrap().iter().find(|e| e["seq"] == target_seq).unwrap()["result"]
                .as_str()
                .unwrap(),
        )
        .bind(org_id)
        .bind(target_seq)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(c.ok("POST", "/v1/audit/verify", &owner, None).await["ok"], true);
    sqlx::query("DELETE FROM audit_log WHERE org_id = ? AND seq = 2")
        .bind(org_id)
        .execute(&pool)
        .await
        .unwrap();
    let v = c.ok("POST", "/v1/audit/verify", &owner, None).await;
    assert_eq!(
        (v["ok"].as_bool(), v["first_bad_seq"].as_i64()),
        (Some(false), Some(2)),
        "{v}"
    );
    pool.close().await;
    let up = std::sync::Arc::try_unwrap(up).ok().unwrap();
    tokio::task::spawn_blocking(move || drop(up)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_limited_per_address_while_others_sign_in() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let c = Client::new(&up);
    let org = c
        .ok("POST", "/v1/orgs", &up.api_key, Some(json!({ "name": "acme" })))
        .await;
    let owner = org["api_key"]["secret"].as_str().unwrap().to_string();
    join(&c, &owner, "dana@example.com", "viewer", "a long enough password").await;
    let (spray, other) = (Client::from_addr(&up, "127.0.0.3"), Client::from_addr(&up, "127.0.0.4"));
    for n in 0..20 {
        let (s, _) = login(&spray, &format!("guess{n}@example.com"), "password123456").await;
        assert_eq!(s, 401, "attempt {n}");
    }
    // That address is refused now, even with the right password; another is not.
    let (s, v) = login(&spray, "dana@example.com", "a long enough password").await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_failed_authentications");
    let (s, v) = login(&other, "dana@example.com", "a long enough password").await;
    assert_eq!(s, 200, "{v}");
    // A new user's password must be long enough; nothing is created by a refused one.
    let inv = c
        .ok(
            "POST",
            "/v1/members",
            &owner,
            Some(json!({ "email": "eve@example.com", "role": "viewer" })),
        )
        .await;
    let (s, _) = c
        .call(
            "POST",
            "/v1/invites/accept",
            "",
            Some(json!({ "token": inv["invite_token"], "password": "short" })),
        )
        .await;
    assert_eq!(s, 400);
    let members = c.ok("GET", "/v1/members", &owner, None).await;
    let eve = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "eve@example.com")
        .unwrap();
    assert_eq!(eve["status"], "invited");
    tokio::task::spawn_blocking(move || drop(up)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reached_quota_is_named_and_nothing_is_half_created() {
    let up = std::sync::Arc::new(tokio::task::spawn_blocking(Up::start).await.unwrap());
    let c = Client::new(&up);
    let org = c
        .ok("POST", "/v1/orgs", &up.api_key, Some(json!({ "name": "acme" })))
        .await;
    let owner = org["api_key"]["secret"].as_str().unwrap().to_string();
    // The operator sets the quotas with the CLI; a tenant may not.
    let u = up.clone();
    let shown = tokio::task::spawn_blocking(move || {
        u.cli_ok(&[
            "org",
            "set-quotas",
            "acme",
            "--clusters",
            "1",
            "--members-per-cluster",
            "2",
        ]);
        assert!(u.cli_ok(&["whoami"]).contains("(operator): owner"));
        assert!(u.cli_ok(&["cloud", "list"]).contains("local-b"));
        u.cli_ok(&["org", "quotas", "--output", "json"])
    })
    .await
    .unwrap();
    let own: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        own["quotas"]["max_clusters"], 20,
        "the operator's own org keeps the defaults"
    );
    let (s, _) = c
        .call(
            "PUT",
            "/v1/orgs/acme/quotas",
            &owner,
            Some(json!({ "max_clusters": 99, "max_members_per_cluster": 9, "max_storage_bytes": 1, "max_concurrent_operations": 9 })),
        )
        .await;
    assert_eq!(s, 403);

    c.ok("POST", "/v1/clusters", &owner, Some(json!({ "name": "one" })))
        .await;
    let refused = [
        (json!({ "name": "two" }), "max_clusters"),
        (json!({ "name": "two", "replicas": 2 }), "max_members_per_cluster"),
    ];
    for (body, quota) in refused {
        let (s, v) = c.call("POST", "/v1/clusters", &owner, Some(body)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("quota_exceeded")), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(quota), "{v}");
    }
    let (s, v) = c
        .call("PATCH", "/v1/clusters/one", &owner, Some(json!({ "replicas": 2 })))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_members_per_cluster"),
        "{v}"
    );
    // Nothing of the refused requests was left behind.
    let clusters = c.ok("GET", "/v1/clusters", &owner, None).await;
    assert_eq!(clusters.as_array().unwrap().len(), 1);
    assert_eq!(clusters[0]["replicas"], 0);
    let ops = c.ok("GET", "/v1/operations", &owner, None).await;
    assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
    let usage = c.ok("GET", "/v1/quotas", &owner, None).await;
    assert_eq!(
        (usage["clusters"].as_i64(), usage["quotas"]["max_clusters"].as_i64()),
        (Some(1), Some(1))
    );
    // Within the quota, growing works.
    c.ok("PATCH", "/v1/clusters/one", &owner, Some(json!({ "replicas": 1 })))
        .await;
    let up = std::sync::Arc::try_unwrap(up).ok().unwrap();
    tokio::task::spawn_blocking(move || drop(up)).await.unwrap();
}
