//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the `.creds` parser and
//! the nkey signing a connect performs, exactly as `ConnectOptions` uses them.

use crate::options::ConnectOptions;

/// The CONNECT fields of nkey / JWT authentication: public nkey, JWT, signature.
pub type Connect = (Option<String>, Option<String>, Option<String>);

/// The user JWT and nkey seed of a `.creds` file, or why it is rejected.
pub fn parse_creds(contents: &str) -> Result<(String, String), String> {
    crate::auth::parse_creds(contents).map_err(|e| e.to_string())
}

/// What a connect with these `.creds` contents sends in CONNECT for `nonce`: the public nkey
/// (absent with a JWT), the JWT and the signature; an error text if the credentials do not
/// parse or the seed is no valid nkey.
pub fn sign_creds(contents: &str, nonce: Option<&str>) -> Result<Connect, String> {
    let opts = ConnectOptions::new()
        .credentials(contents)
        .map_err(|e| e.to_string())?;
    sign(&opts, nonce)
}

/// As [`sign_creds`] for a bare nkey seed (`ConnectOptions::nkey`).
pub fn sign_nkey(seed: &str, nonce: Option<&str>) -> Result<Connect, String> {
    sign(&ConnectOptions::new().nkey(seed), nonce)
}

fn sign(opts: &ConnectOptions, nonce: Option<&str>) -> Result<Connect, String> {
    let s = crate::auth::sign(opts, nonce).map_err(|e| e.to_string())?;
    Ok((s.nkey, s.jwt, s.sig))
}
