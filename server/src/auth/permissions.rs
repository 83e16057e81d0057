//! Roles and permissions.
//!
//! A permission names one kind of operation (`agents:write`). A role is a fixed set
//! of permissions; an API key carries an explicit subset of its creator's. Handlers
//! ask for a permission, never for a role. An empty set grants nothing: absence of a
//! scope never means "everything".

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One kind of operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum Permission {
    #[serde(rename = "org:manage")]
    OrgManage,
    #[serde(rename = "users:read")]
    UsersRead,
    #[serde(rename = "users:manage")]
    UsersManage,
    #[serde(rename = "keys:manage")]
    KeysManage,
    #[serde(rename = "agents:read")]
    AgentsRead,
    #[serde(rename = "agents:write")]
    AgentsWrite,
    #[serde(rename = "capabilities:grant")]
    CapabilitiesGrant,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "alerts:read")]
    AlertsRead,
    #[serde(rename = "alerts:manage")]
    AlertsManage,
    #[serde(rename = "trust:attest")]
    TrustAttest,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::OrgManage,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::KeysManage,
        Permission::AgentsRead,
        Permission::AgentsWrite,
        Permission::CapabilitiesGrant,
        Permission::AuditRead,
        Permission::AlertsRead,
        Permission::AlertsManage,
        Permission::TrustAttest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgManage => "org:manage",
            Permission::UsersRead => "users:read",
            Permission::UsersManage => "users:manage",
            Permission::KeysManage => "keys:manage",
            Permission::AgentsRead => "agents:read",
            Permission::AgentsWrite => "agents:write",
            Permission::CapabilitiesGrant => "capabilities:grant",
            Permission::AuditRead => "audit:read",
            Permission::AlertsRead => "alerts:read",
            Permission::AlertsManage => "alerts:manage",
            Permission::TrustAttest => "trust:attest",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

/// A user's role within their organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Developer,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Owner, Role::Admin, Role::Developer, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The permissions of the role; the table in `docs/permissions.md`.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        let list: &[Permission] = match self {
            Role::Owner => Permission::ALL,
            Role::Admin => &[
                UsersRead,
                UsersManage,
                KeysManage,
                AgentsRead,
                AgentsWrite,
                CapabilitiesGrant,
                AuditRead,
                AlertsRead,
                AlertsManage,
                TrustAttest,
            ],
            Role::Developer => &[
                UsersRead,
                KeysManage,
                AgentsRead,
                AgentsWrite,
                AuditRead,
                AlertsRead,
            ],
            Role::Viewer => &[UsersRead, AgentsRead, AuditRead, AlertsRead],
        };
        PermissionSet(list.iter().copied().collect())
    }

    /// Whether someone with this role may give `other` to a user (nobody grants
    /// more than they hold; only owners make owners).
    pub fn may_assign(self, other: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => other != Role::Owner,
            _ => false,
        }
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &PermissionSet) -> PermissionSet {
        PermissionSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    pub fn to_vec(&self) -> Vec<Permission> {
        self.0.iter().copied().collect()
    }

    /// Storage form: names separated by spaces.
    pub fn to_storage(&self) -> String {
        self.0
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads the storage form; unknown names are dropped (never widened).
    pub fn from_storage(s: &str) -> PermissionSet {
        PermissionSet(s.split_whitespace().filter_map(Permission::parse).collect())
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        PermissionSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_nested() {
        assert!(Role::Viewer
            .permissions()
            .is_subset(&Role::Developer.permissions()));
        assert!(Role::Developer
            .permissions()
            .is_subset(&Role::Admin.permissions()));
        assert!(Role::Admin
            .permissions()
            .is_subset(&Role::Owner.permissions()));
    }

    #[test]
    fn viewers_cannot_write_and_developers_cannot_manage_users() {
        assert!(!Role::Viewer.permissions().contains(Permission::AgentsWrite));
        assert!(!Role::Viewer.permissions().contains(Permission::KeysManage));
        assert!(!Role::Developer
            .permissions()
            .contains(Permission::UsersManage));
    }

    #[test]
    fn storage_round_trips_and_never_widens() {
        let set: PermissionSet = [Permission::AgentsRead, Permission::AuditRead]
            .into_iter()
            .collect();
        assert_eq!(PermissionSet::from_storage(&set.to_storage()), set);
        assert_eq!(
            PermissionSet::from_storage("agents:read everything:all").to_vec(),
            vec![Permission::AgentsRead]
        );
        assert_eq!(PermissionSet::from_storage(""), PermissionSet::default());
    }

    #[test]
    fn the_permission_table_is_documented() {
        let doc = include_str!("../../../docs/permissions.md");
        for p in Permission::ALL {
            assert!(
                doc.contains(&format!("`{}`", p.as_str())),
                "{} missing",
                p.as_str()
            );
        }
    }
}
