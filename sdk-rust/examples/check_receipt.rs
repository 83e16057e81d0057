//! Checks a decision receipt offline: with a saved copy of the server's public keys
//! (its JWKS) and no request to the server, which may as well be stopped.
//!
//! ```sh
//! curl -s $AGENTID_URL/.well-known/jwks.json > jwks.json
//! cargo run -q -p agentid --example check_receipt -- jwks.json RECEIPT
//! ```
//!
//! The receipt must be signed by one of those keys, issued by `AGENTID_URL` (the
//! server's public URL) and not expired. Prints what it proves and exits 0; exits 1
//! when the receipt does not verify, 2 on a usage error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [jwks_file, receipt] = args.as_slice() else {
        eprintln!("usage: check_receipt JWKS_FILE RECEIPT (AGENTID_URL: the issuer)");
        return ExitCode::from(2);
    };
    let Ok(issuer) = std::env::var(agentid::ENV_URL) else {
        eprintln!("set {} to the server's public URL", agentid::ENV_URL);
        return ExitCode::from(2);
    };
    let jwks: agentid::Jwks = match std::fs::read_to_string(jwks_file)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(jwks) => jwks,
        Err(e) => {
            eprintln!("{jwks_file}: not a JWKS: {e}");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match agentid::relying_party::verify_receipt_with(&jwks, &issuer, receipt, None, now) {
        Ok(claims) => {
            println!(
                "receipt verified offline: {} {} on {} for agent {}, audit record {}",
                if claims.allowed { "allowed" } else { "denied" },
                claims.capability,
                claims.resource.as_deref().unwrap_or("-"),
                claims.sub,
                claims.audit_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the receipt does not verify: {e}");
            ExitCode::FAILURE
        }
    }
}
