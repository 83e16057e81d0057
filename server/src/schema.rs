//! Diesel table definitions shared by both backends. Must match
//! `migrations/sqlite` and `migrations/postgres`: every query in the integration
//! suite runs against both, so a mismatch fails there. (The audit tables are
//! defined beside their code in `audit.rs`.)

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
        enforcement -> Text,
        trust_policy -> Nullable<Text>,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        org_id -> Text,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        disabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        org_id -> Text,
        user_id -> Text,
        family_id -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        user_agent -> Nullable<Text>,
        client_address -> Nullable<Text>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        org_id -> Text,
        created_by -> Text,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        permissions -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(users -> organizations (org_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(api_keys -> users (created_by));

diesel::table! {
    agents (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        description -> Text,
        owner_id -> Text,
        status -> Text,
        status_reason -> Nullable<Text>,
        did -> Text,
        key_id -> Text,
        public_key -> Text,
        requested_capabilities -> Text,
        metadata -> Text,
        created_by -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        activated_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    agent_stats (agent_id) {
        agent_id -> Text,
        trust_score -> Double,
        actions_allowed -> BigInt,
        actions_denied -> BigInt,
        last_seen_at -> Nullable<BigInt>,
        trust_state -> Nullable<Text>,
        trust_confidence -> Double,
        trust_recorded_score -> Nullable<Double>,
        trust_suspended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    agent_keys (key_id) {
        key_id -> Text,
        agent_id -> Text,
        org_id -> Text,
        public_key -> Text,
        status -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    agent_challenges (id) {
        id -> Text,
        agent_id -> Text,
        challenge -> Text,
        audience -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    capabilities (org_id, name) {
        org_id -> Text,
        name -> Text,
        description -> Text,
        risk_level -> Text,
        min_trust -> Integer,
        created_by -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    agent_grants (id) {
        id -> Text,
        org_id -> Text,
        agent_id -> Text,
        capability -> Text,
        resource_pattern -> Nullable<Text>,
        expires_at -> Nullable<BigInt>,
        granted_by -> Text,
        granted_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    action_nonces (agent_id, nonce) {
        agent_id -> Text,
        nonce -> Text,
        issued_at -> BigInt,
    }
}

diesel::table! {
    trust_events (id) {
        id -> Text,
        org_id -> Text,
        agent_id -> Text,
        kind -> Text,
        details -> Text,
        occurred_at -> BigInt,
    }
}

diesel::table! {
    trust_history (id) {
        id -> Text,
        org_id -> Text,
        agent_id -> Text,
        recorded_at -> BigInt,
        score -> Double,
        confidence -> Double,
        previous_score -> Nullable<Double>,
        cause -> Text,
        details -> Text,
        contributions -> Text,
    }
}

diesel::joinable!(agent_keys -> agents (agent_id));
diesel::joinable!(agent_grants -> agents (agent_id));
diesel::joinable!(agent_stats -> agents (agent_id));
diesel::joinable!(agents -> organizations (org_id));
diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    refresh_tokens,
    api_keys,
    agents,
    agent_stats,
    agent_keys,
    agent_challenges,
    agent_grants,
    capabilities,
    action_nonces,
    trust_events,
    trust_history,
);
