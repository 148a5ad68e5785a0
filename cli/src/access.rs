//! Client commands for who may do what: projects, members, API keys, signing in, and the
//! audit log.

use crate::client::{print_json, urlencode, utc, Api, Conn, Output};
use crate::up::{default_client_config_path, write_private, ClientConfig};
use anyhow::{bail, Context, Result};
use highrise_api::{
    AcceptInvite, ApiKey, AuditEntry, AuditVerification, CreateApiKey, CreateProject, CreatedApiKey, InviteMember,
    InvitedMember, Login, Me, OrgMember, Project, Role, Session, UpdateMember,
};

#[derive(clap::Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the org's projects.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an empty project.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum MemberCommand {
    /// Invite someone by email; prints the invitation token to give them (shown once).
    Invite {
        email: String,
        /// owner, admin, developer, viewer or billing.
        #[arg(long, default_value = "developer")]
        role: Role,
        #[command(flatten)]
        conn: Conn,
    },
    /// Accept an invitation (a new user chooses a password: from $HIGHRISE_PASSWORD,
    /// --password-stdin, or a prompt).
    Accept {
        token: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the org's members.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a member's role.
    SetRole {
        /// Email or user id.
        user: String,
        role: Role,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a member (their sessions end).
    Remove {
        /// Email or user id.
        user: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; prints its secret (shown once). With --project, the key reaches
    /// that project only.
    Create {
        name: String,
        /// owner, admin, developer, viewer or billing (at most your own).
        #[arg(long, default_value = "developer")]
        role: Role,
        /// The key stops working after this long (e.g. 30d, 12h).
        #[arg(long)]
        expires: Option<humantime::Duration>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the org's API keys.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke an API key at once.
    Revoke {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Your email.
    #[arg(long)]
    email: String,
    /// The org to sign in to (needed when you belong to several).
    #[arg(long)]
    org: Option<String>,
    /// Read the password from standard input (else $HIGHRISE_PASSWORD, else a prompt).
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    conn: Conn,
}

/// Who the configured key or session acts as.
pub async fn whoami(args: WhoamiArgs) -> Result<()> {
    let api = Api::from(&args.conn)?;
    let me: Me = api.send(api.http.get(format!("{}/v1/me", api.url))).await?;
    if args.conn.output == Output::Json {
        return print_json(&me);
    }
    let scope = me
        .project
        .as_deref()
        .map_or(String::new(), |p| format!(", project {p} only"));
    let operator = if me.operator { " (operator)" } else { "" };
    println!("{} in org {}{operator}: {}{scope}", me.actor, me.org, me.role);
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// The org's audit log, oldest first (owners and admins).
    List {
        /// Only this actor's entries (user:<id>, key:<id>).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries whose target starts with this (e.g. "cluster shop").
        #[arg(long)]
        target: Option<String>,
        /// Only entries this recent (e.g. 1h, 7d).
        #[arg(long)]
        since: Option<humantime::Duration>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check the audit log's hash chain: an edited or removed entry is reported.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
}

/// A password from $HIGHRISE_PASSWORD, standard input, or a prompt.
fn read_password(from_stdin: bool, prompt: &str) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(p) = std::env::var("HIGHRISE_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password(prompt).context("read the password (or pass --password-stdin)")
}

pub async fn project(cmd: ProjectCommand) -> Result<()> {
    match cmd {
        ProjectCommand::Create { name, conn } => {
            let api = Api::from(&conn)?;
            let p: Project = api
                .send(
                    api.http
                        .post(format!("{}/v1/projects", api.url))
                        .json(&CreateProject { name }),
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&p);
            }
            println!("project {} ({})", p.name, p.id);
            Ok(())
        }
        ProjectCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let list: Vec<Project> = api.list(&format!("{}/v1/projects", api.url), &[]).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!("{:<24} {:<22} CREATED", "NAME", "ID");
            for p in list {
                println!("{:<24} {:<22} {}", p.name, p.id, utc(p.created_at));
            }
            Ok(())
        }
        ProjectCommand::Delete { name, conn } => {
            let api = Api::from(&conn)?;
            api.send_empty(api.http.delete(format!("{}/v1/projects/{}", api.url, urlencode(&name))))
                .await?;
            println!("project {name} deleted");
            Ok(())
        }
    }
}

pub async fn member(cmd: MemberCommand) -> Result<()> {
    match cmd {
        MemberCommand::Invite { email, role, conn } => {
            let api = Api::from(&conn)?;
            let m: InvitedMember = api
                .send(
                    api.http
                        .post(format!("{}/v1/members", api.url))
                        .json(&InviteMember { email, role }),
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&m);
            }
            println!("invited {} as {}", m.member.email, m.member.role);
            println!(
                "invitation token (shown only now; valid until {}): {}",
                utc(m.invite_expires_at),
                m.invite_token
            );
            println!("they accept it with: highrise member accept <token>");
            Ok(())
        }
        MemberCommand::Accept {
            token,
            password_stdin,
            conn,
        } => {
            let api = Api::from_url_only(&conn)?;
            let password = read_password(password_stdin, "password (a new one if you have none yet): ")?;
            let m: OrgMember = api
                .send(
                    api.http
                        .post(format!("{}/v1/invites/accept", api.url))
                        .json(&AcceptInvite { token, password }),
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&m);
            }
            println!(
                "{} joined as {}; sign in with: highrise login --email {}",
                m.email, m.role, m.email
            );
            Ok(())
        }
        MemberCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let list: Vec<OrgMember> = api.list(&format!("{}/v1/members", api.url), &[]).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!("{:<32} {:<10} {:<8} USER", "EMAIL", "ROLE", "STATUS");
            for m in list {
                println!("{:<32} {:<10} {:<8} {}", m.email, m.role, m.status, m.user_id);
            }
            Ok(())
        }
        MemberCommand::SetRole { user, role, conn } => {
            let api = Api::from(&conn)?;
            let m: OrgMember = api
                .send(
                    api.http
                        .patch(format!("{}/v1/members/{}", api.url, urlencode(&user)))
                        .json(&UpdateMember { role }),
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&m);
            }
            println!("{} is now {}", m.email, m.role);
            Ok(())
        }
        MemberCommand::Remove { user, conn } => {
            let api = Api::from(&conn)?;
            api.send_empty(api.http.delete(format!("{}/v1/members/{}", api.url, urlencode(&user))))
                .await?;
            println!("{user} removed");
            Ok(())
        }
    }
}

pub async fn api_key(cmd: ApiKeyCommand) -> Result<()> {
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            expires,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let expires_in_seconds = match expires {
                Some(d) => Some(i64::try_from(d.as_secs()).context("--expires is too far away")?),
                None => None,
            };
            let k: CreatedApiKey = api
                .send(api.http.post(format!("{}/v1/api-keys", api.url)).json(&CreateApiKey {
                    name,
                    role: Some(role),
                    project: conn.project.clone(),
                    expires_in_seconds,
                }))
                .await?;
            if conn.output == Output::Json {
                return print_json(&k);
            }
            println!("API key {} ({}{})", k.key.id, k.key.role, scope_note(&k.key));
            println!("secret (shown only now): {}", k.secret);
            Ok(())
        }
        ApiKeyCommand::List { conn } => {
            let api = Api::from(&conn)?;
            let list: Vec<ApiKey> = api.list(&format!("{}/v1/api-keys", api.url), &[]).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            println!(
                "{:<22} {:<20} {:<10} {:<14} {:<21} STATE",
                "ID", "NAME", "ROLE", "PROJECT", "EXPIRES"
            );
            for k in list {
                println!(
                    "{:<22} {:<20} {:<10} {:<14} {:<21} {}",
                    k.id,
                    k.name,
                    k.role,
                    k.project.as_deref().unwrap_or("*"),
                    k.expires_at.map_or("never".into(), utc),
                    if k.revoked_at.is_some() { "revoked" } else { "active" }
                );
            }
            Ok(())
        }
        ApiKeyCommand::Revoke { id, conn } => {
            let api = Api::from(&conn)?;
            api.send_empty(api.http.delete(format!("{}/v1/api-keys/{}", api.url, urlencode(&id))))
                .await?;
            println!("API key {id} revoked");
            Ok(())
        }
    }
}

fn scope_note(k: &ApiKey) -> String {
    let mut s = String::new();
    if let Some(p) = &k.project {
        s.push_str(&format!(", project {p} only"));
    }
    if let Some(t) = k.expires_at {
        s.push_str(&format!(", until {}", utc(t)));
    }
    s
}

/// Signs in and keeps the session key in the client config (the API URL stays).
pub async fn login(args: LoginArgs) -> Result<()> {
    let api = Api::from_url_only(&args.conn)?;
    let password = read_password(args.password_stdin, "password: ")?;
    let s: Session = api
        .send(api.http.post(format!("{}/v1/login", api.url)).json(&Login {
            email: args.email,
            password,
            org: args.org,
        }))
        .await?;
    let path = default_client_config_path().context("no place for the client config: set HIGHRISE_CONFIG or HOME")?;
    let saved: Option<ClientConfig> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let cfg = ClientConfig {
        api_url: api.url.clone(),
        api_key: s.secret.clone(),
        land_url: saved.and_then(|c| c.land_url),
    };
    write_private(&path, &serde_json::to_vec_pretty(&cfg)?)?;
    if args.conn.output == Output::Json {
        return print_json(&s);
    }
    println!(
        "signed in to {} as {} ({}) until {}; the session is in {}",
        s.org,
        s.email,
        s.role,
        utc(s.expires_at),
        path.display()
    );
    Ok(())
}

/// Ends the session in the client config (and removes it from there).
pub async fn logout(args: WhoamiArgs) -> Result<()> {
    let api = Api::from(&args.conn)?;
    api.send_empty(api.http.post(format!("{}/v1/logout", api.url))).await?;
    if let Some(path) = default_client_config_path() {
        let saved: Option<ClientConfig> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(mut cfg) = saved {
            cfg.api_key = String::new();
            write_private(&path, &serde_json::to_vec_pretty(&cfg)?)?;
        }
    }
    println!("signed out");
    Ok(())
}

pub async fn audit(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::List {
            actor,
            target,
            since,
            conn,
        } => {
            let api = Api::from(&conn)?;
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(a) = actor {
                q.push(("actor", a));
            }
            if let Some(t) = target {
                q.push(("target", t));
            }
            if let Some(d) = since {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .context("read the clock")?;
                q.push(("since", now.saturating_sub(*d).as_secs().to_string()));
            }
            let list: Vec<AuditEntry> = api.list(&format!("{}/v1/audit", api.url), &q).await?;
            if conn.output == Output::Json {
                return print_json(&list);
            }
            for e in list {
                println!(
                    "{:>5} {} {:<28} {:<36} {:<30} {:<15} {}",
                    e.seq,
                    utc(e.at_ms.div_euclid(1000)),
                    e.actor,
                    e.action,
                    e.target,
                    e.source,
                    e.result
                );
            }
            Ok(())
        }
        AuditCommand::Verify { conn } => {
            let api = Api::from(&conn)?;
            let v: AuditVerification = api.send(api.http.post(format!("{}/v1/audit/verify", api.url))).await?;
            if conn.output == Output::Json {
                print_json(&v)?;
            } else if v.ok {
                println!("audit log intact: {} entries checked", v.entries_checked);
            }
            if !v.ok {
                bail!(
                    "audit log broken at entry {}: {}",
                    v.first_bad_seq.unwrap_or_default(),
                    v.problem.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
