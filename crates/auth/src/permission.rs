//! What a caller may do: permissions, and roles as named sets of them with default limits.
//! Built in: `viewer` reads, `member` works (embeddings, completions, its own workflows,
//! vectors), `admin` does everything. `[auth.roles.NAME]` adds roles or changes these.

use std::{collections::HashMap, sync::Arc};

use citadel_config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ModelsRead,
    HealthRead,
    MetricsRead,
    Reflection,
    WorkflowsRead,
    Embeddings,
    Completions,
    WorkflowsWrite,
    WorkflowsWatch,
    VectorsRead,
    VectorsWrite,
    /// Every principal's workflows, not only one's own.
    WorkflowsAll,
    KeysManage,
    /// Maintenance of the embedding cache (a flush).
    CacheManage,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::ModelsRead,
        Permission::HealthRead,
        Permission::MetricsRead,
        Permission::Reflection,
        Permission::WorkflowsRead,
        Permission::Embeddings,
        Permission::Completions,
        Permission::WorkflowsWrite,
        Permission::WorkflowsWatch,
        Permission::VectorsRead,
        Permission::VectorsWrite,
        Permission::WorkflowsAll,
        Permission::KeysManage,
        Permission::CacheManage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::ModelsRead => "models:read",
            Permission::HealthRead => "health:read",
            Permission::MetricsRead => "metrics:read",
            Permission::Reflection => "reflection",
            Permission::WorkflowsRead => "workflows:read",
            Permission::Embeddings => "embeddings",
            Permission::Completions => "completions",
            Permission::WorkflowsWrite => "workflows:write",
            Permission::WorkflowsWatch => "workflows:watch",
            Permission::VectorsRead => "vectors:read",
            Permission::VectorsWrite => "vectors:write",
            Permission::WorkflowsAll => "workflows:all",
            Permission::KeysManage => "keys:manage",
            Permission::CacheManage => "cache:manage",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether a call needing it counts against rate limits: the calls that use a model or
    /// queue work. Reads (models, health, one's workflows) are not counted, so a REST route
    /// made of several reads costs nothing and one call that works costs one request.
    pub fn is_metered(self) -> bool {
        matches!(
            self,
            Permission::Embeddings
                | Permission::Completions
                | Permission::WorkflowsWrite
                | Permission::VectorsRead
                | Permission::VectorsWrite
        )
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of permissions, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn all() -> Self {
        Permissions(Permission::ALL.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn of(list: &[Permission]) -> Self {
        Permissions(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .map(Permission::name)
            .collect()
    }
}

/// Requests and tokens per minute; 0 is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: u64,
    pub tpm: u64,
}

impl Limits {
    pub fn is_unlimited(self) -> bool {
        self.rpm == 0 && self.tpm == 0
    }
}

#[derive(Debug)]
pub struct Role {
    pub name: String,
    pub permissions: Permissions,
    pub limits: Limits,
}

/// The roles a deployment knows, by name.
#[derive(Debug, Clone)]
pub struct Roles(HashMap<String, Arc<Role>>);

const VIEWER: &[Permission] = &[
    Permission::ModelsRead,
    Permission::HealthRead,
    Permission::MetricsRead,
    Permission::Reflection,
    Permission::WorkflowsRead,
];

const MEMBER: &[Permission] = &[
    Permission::Embeddings,
    Permission::Completions,
    Permission::WorkflowsWrite,
    Permission::WorkflowsWatch,
    Permission::VectorsRead,
    Permission::VectorsWrite,
];

impl Roles {
    /// The built-in roles with `[auth.roles]` applied; an error names the key.
    pub fn from_config(config: &AuthConfig) -> Result<Roles, String> {
        let viewer = Permissions::of(VIEWER);
        let member = Permissions(viewer.0 | Permissions::of(MEMBER).0);
        let mut roles: HashMap<String, (Permissions, Limits)> = HashMap::from([
            ("viewer".to_string(), (viewer, Limits::default())),
            ("member".to_string(), (member, Limits::default())),
            ("admin".to_string(), (Permissions::all(), Limits::default())),
        ]);
        for (name, role) in &config.roles {
            let mut set = 0u32;
            for p in &role.permissions {
                set |= match p.as_str() {
                    "*" => Permissions::all().0,
                    p => match Permission::parse(p) {
                        Some(p) => p.bit(),
                        None => {
                            let known = Permissions::all().names().join(", ");
                            return Err(format!(
                                "auth.roles.{name}.permissions: unknown permission `{p}` \
                                 (known: {known}, or `*`)"
                            ));
                        }
                    },
                };
            }
            let existing = roles.get(name).map(|(p, _)| *p);
            let permissions = match (set, existing) {
                (0, Some(builtin)) => builtin,
                (0, None) => {
                    return Err(format!(
                        "auth.roles.{name}.permissions: a new role needs at least one permission"
                    ));
                }
                (set, _) => Permissions(set),
            };
            let limits = Limits {
                rpm: role.rpm,
                tpm: role.tpm,
            };
            roles.insert(name.clone(), (permissions, limits));
        }
        if !roles.contains_key(&config.default_role) {
            return Err(format!(
                "auth.default_role: `{}` is not a role (built in: viewer, member, admin)",
                config.default_role
            ));
        }
        Ok(Roles(
            roles
                .into_iter()
                .map(|(name, (permissions, limits))| {
                    let role = Role {
                        name: name.clone(),
                        permissions,
                        limits,
                    };
                    (name, Arc::new(role))
                })
                .collect(),
        ))
    }

    /// Only the built-in roles.
    pub fn builtin() -> Roles {
        Self::from_config(&AuthConfig::default()).unwrap_or_else(|_| Roles(HashMap::new()))
    }

    /// The role with every permission (always there: built in).
    pub fn admin(&self) -> Arc<Role> {
        self.get("admin").unwrap_or_else(|| {
            Arc::new(Role {
                name: "admin".to_string(),
                permissions: Permissions::all(),
                limits: Limits::default(),
            })
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Role>> {
        self.0.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_nest() {
        let roles = Roles::from_config(&AuthConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let get = |n: &str| roles.get(n).unwrap_or_else(|| panic!("no role {n}"));
        assert!(
            get("viewer")
                .permissions
                .contains(Permission::WorkflowsRead)
        );
        assert!(!get("viewer").permissions.contains(Permission::Embeddings));
        assert!(get("member").permissions.contains(Permission::Embeddings));
        assert!(!get("member").permissions.contains(Permission::WorkflowsAll));
        assert!(get("admin").permissions.contains(Permission::KeysManage));
    }

    #[test]
    fn unknown_permission_names_the_key() {
        let mut config = AuthConfig::default();
        config.roles.insert(
            "ops".into(),
            citadel_config::RoleConfig {
                permissions: vec!["embedings".into()],
                ..Default::default()
            },
        );
        let e = Roles::from_config(&config).err().unwrap_or_default();
        assert!(e.starts_with("auth.roles.ops.permissions"), "{e}");
    }
}
