//! Who may do what: the actions of the public API and the one pure rule that decides,
//! for a role and a key's scope, whether an action is allowed; and which roles a caller may
//! hand out. Handlers ask [`allows`] first; this module does no I/O.
//!
//! Scope: a key limited to one project reaches that project's clusters (and their backups,
//! events and operations) and sees only that project; org-wide actions (projects, members,
//! keys, audit) are refused to it.

use highrise_api::Role;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Clusters, their backups, events and operations: read.
    ReadClusters,
    /// Create, change, switch over, back up, restore, delete clusters.
    WriteClusters,
    ReadProjects,
    WriteProjects,
    /// Tenant networks: list them (a project key too: its clusters' private endpoints
    /// name them).
    ReadNetworks,
    /// Create and delete tenant networks.
    WriteNetworks,
    ReadMembers,
    /// Invite, change the role of, remove members.
    WriteMembers,
    ReadKeys,
    WriteKeys,
    ReadAudit,
    /// The org's metered usage, invoices and billing terms.
    ReadUsage,
    /// The org's hard limit on spend and its alert webhook.
    WriteBilling,
    /// Operator-only: create orgs, list the land's hosts (also needs the operator org).
    Operate,
}

/// Whether `role` may do `action`; `scoped` when the key is limited to one project.
pub fn allows(role: Role, scoped: bool, action: Action) -> bool {
    use Action::*;
    use Role::*;
    let by_role = match action {
        ReadClusters | ReadNetworks => matches!(role, Owner | Admin | Developer | Viewer),
        WriteClusters => matches!(role, Owner | Admin | Developer),
        ReadProjects | ReadMembers => true,
        ReadUsage | WriteBilling => matches!(role, Owner | Admin | Billing),
        WriteProjects | WriteNetworks | WriteMembers | ReadKeys | WriteKeys | ReadAudit | Operate => {
            matches!(role, Owner | Admin)
        }
    };
    let in_scope = !scoped || matches!(action, ReadClusters | WriteClusters | ReadProjects | ReadNetworks);
    by_role && in_scope
}

/// Whether a caller with role `caller` may give `role` to a member or a key: owners give
/// any role, admins any but owner, nobody else any.
pub fn may_grant(caller: Role, role: Role) -> bool {
    match caller {
        Role::Owner => true,
        Role::Admin => role != Role::Owner,
        _ => false,
    }
}

/// Whether a caller with role `caller` may change or remove a member who has `current`:
/// only owners touch owners.
pub fn may_manage(caller: Role, current: Role) -> bool {
    may_grant(caller, current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Role::*;

    #[test]
    fn the_role_matrix() {
        // (action, [owner, admin, developer, viewer, billing]) for a key of the whole org.
        let table: &[(Action, [bool; 5])] = &[
            (ReadClusters, [true, true, true, true, false]),
            (WriteClusters, [true, true, true, false, false]),
            (ReadProjects, [true, true, true, true, true]),
            (WriteProjects, [true, true, false, false, false]),
            (ReadNetworks, [true, true, true, true, false]),
            (WriteNetworks, [true, true, false, false, false]),
            (ReadMembers, [true, true, true, true, true]),
            (WriteMembers, [true, true, false, false, false]),
            (ReadKeys, [true, true, false, false, false]),
            (WriteKeys, [true, true, false, false, false]),
            (ReadAudit, [true, true, false, false, false]),
            (ReadUsage, [true, true, false, false, true]),
            (WriteBilling, [true, true, false, false, true]),
            (Operate, [true, true, false, false, false]),
        ];
        for (action, want) in table {
            for (role, want) in Role::ALL.into_iter().zip(want) {
                assert_eq!(allows(role, false, *action), *want, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn a_project_key_reaches_its_clusters_and_nothing_org_wide() {
        for role in Role::ALL {
            for action in [ReadClusters, WriteClusters, ReadProjects, ReadNetworks] {
                assert_eq!(
                    allows(role, true, action),
                    allows(role, false, action),
                    "{role} {action:?}"
                );
            }
            for action in [
                WriteProjects,
                WriteNetworks,
                ReadMembers,
                WriteMembers,
                ReadKeys,
                WriteKeys,
                ReadAudit,
                ReadUsage,
                WriteBilling,
                Operate,
            ] {
                assert!(!allows(role, true, action), "{role} {action:?}");
            }
        }
    }

    #[test]
    fn owners_alone_make_and_touch_owners() {
        for role in Role::ALL {
            assert!(may_grant(Owner, role));
            assert_eq!(may_grant(Admin, role), role != Owner);
            for caller in [Developer, Viewer, Billing] {
                assert!(!may_grant(caller, role));
                assert!(!may_manage(caller, role));
            }
        }
        assert!(!may_manage(Admin, Owner));
        assert!(may_manage(Admin, Admin));
    }
}
