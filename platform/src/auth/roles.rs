//! Roles, permissions and the RBAC matrix every route checks.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a principal is, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including user management and the audit log.
    Admin,
    /// Builds agents: manages API keys and reads any agent's data.
    Developer,
    /// A voice agent or service (API key): its own data and what it was granted.
    Agent,
    /// An end user: self-service and room tokens.
    User,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Agent => "agent",
            Role::User => "user",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "admin" => Role::Admin,
            "developer" => Role::Developer,
            "agent" => Role::Agent,
            "user" => Role::User,
            _ => return None,
        })
    }
}

/// A route-level permission; each handler requires exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Own account: `me`, logout, own export/delete.
    SelfService,
    /// Create, list and change users; export or delete any user.
    ManageUsers,
    /// Create, list and revoke API keys.
    ManageApiKeys,
    /// Read and verify the audit log; rotate encryption keys.
    Security,
    /// Agent documents, files and grants (further scoped per agent).
    AgentData,
    /// Mint gateway room tokens.
    MintRoomToken,
    /// Use the PII redaction service.
    Redact,
    /// Publish and read events.
    Events,
    /// Register webhooks, read and replay deliveries; integrations.
    ManageWebhooks,
    /// Use the AI endpoints (chat, speech, embeddings, moderation).
    Ai,
    /// Send notifications.
    Notify,
    /// Set budgets, prices and read costs of any agent.
    ManageCosts,
    /// Register agent instances, heartbeat, discover and route (the agent registry).
    Registry,
    /// Define SLAs and read their alerts.
    Monitoring,
}

impl Permission {
    /// A stable name for audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::SelfService => "self_service",
            Permission::ManageUsers => "manage_users",
            Permission::ManageApiKeys => "manage_api_keys",
            Permission::Security => "security",
            Permission::AgentData => "agent_data",
            Permission::MintRoomToken => "mint_room_token",
            Permission::Redact => "redact",
            Permission::Events => "events",
            Permission::ManageWebhooks => "manage_webhooks",
            Permission::Ai => "ai",
            Permission::Notify => "notify",
            Permission::ManageCosts => "manage_costs",
            Permission::Registry => "registry",
            Permission::Monitoring => "monitoring",
        }
    }
}

/// The RBAC matrix.
pub fn role_allows(role: Role, permission: Permission) -> bool {
    use Permission as P;
    use Role as R;
    match permission {
        P::SelfService => true,
        P::ManageUsers | P::Security => role == R::Admin,
        P::ManageApiKeys => matches!(role, R::Admin | R::Developer),
        P::AgentData | P::Redact => matches!(role, R::Admin | R::Developer | R::Agent),
        P::MintRoomToken => matches!(role, R::Admin | R::Developer | R::User),
        P::Events | P::Notify | P::Registry => {
            matches!(role, R::Admin | R::Developer | R::Agent)
        }
        P::ManageWebhooks | P::ManageCosts | P::Monitoring => {
            matches!(role, R::Admin | R::Developer)
        }
        P::Ai => true,
    }
}

/// Scopes an API key may carry.
pub const SCOPES: [&str; 9] = [
    "db:read",
    "db:write",
    "files:read",
    "files:write",
    "kb:read",
    "kb:write",
    "ai",
    "events",
    "registry",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_spot_checks() {
        assert!(role_allows(Role::Admin, Permission::ManageUsers));
        assert!(!role_allows(Role::Developer, Permission::ManageUsers));
        assert!(!role_allows(Role::User, Permission::AgentData));
        assert!(!role_allows(Role::Agent, Permission::MintRoomToken));
        assert!(role_allows(Role::Agent, Permission::AgentData));
        for r in ["admin", "developer", "agent", "user"] {
            assert_eq!(Role::parse(r).unwrap().as_str(), r);
        }
        assert!(Role::parse("root").is_none());
    }
}
