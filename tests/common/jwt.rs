//! Clerk-style session tokens for tests: an RSA key pair made with `openssl` for the run,
//! its JWK, and claims as Clerk's v2 tokens carry them.

use std::{
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://clerk.citadel.test";
pub const ORIGIN: &str = "http://localhost:3000";

/// An RSA key pair made with `openssl` for this run, and its JWK.
pub struct RsaKey {
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

impl RsaKey {
    pub fn generate(kid: &str) -> RsaKey {
        let dir = std::env::temp_dir().join(format!("citadel-auth-{}-{kid}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("private.pem");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl is needed to make test keys (Debian: apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let private_path = private.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private_path,
        ]);
        let public_pem = openssl(&["pkey", "-in", private_path, "-pubout"]);
        let modulus = openssl(&["rsa", "-in", private_path, "-noout", "-modulus"]);
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&bytes), "e": "AQAB"});
        RsaKey {
            kid: kid.to_string(),
            private_pem: std::fs::read_to_string(&private).unwrap(),
            public_pem,
            jwk,
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a valid Clerk v2 session token for `sub`, with `role` as `o.rol` when given.
pub fn claims(sub: &str, role: Option<&str>) -> Value {
    let now = now();
    let mut c = json!({"sub": sub, "iss": ISSUER, "azp": ORIGIN, "iat": now - 2,
        "nbf": now - 2, "exp": now + 60, "sid": format!("sess_{sub}"), "v": 2});
    if let Some(role) = role {
        c["o"] = json!({"id": "org_1", "slg": "citadel", "rol": role, "per": "", "fpm": ""});
    }
    c
}
