//! Diesel table definitions shared by both backends. Must match
//! `migrations/sqlite` and `migrations/postgres`: every query in the integration
//! suite runs against both, so a mismatch fails there. (The audit tables are
//! defined beside their code in `audit.rs`.)

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
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
diesel::allow_tables_to_appear_in_same_query!(organizations, users, refresh_tokens, api_keys);
