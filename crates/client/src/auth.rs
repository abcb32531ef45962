//! Authentication material that needs more than copying into CONNECT: nkey seeds and user
//! JWTs (`.creds` files), which sign the `nonce` of the server's INFO.

use data_encoding::BASE64URL_NOPAD;

use crate::error::{ConnectError, ConnectErrorKind};
use crate::options::{ConnectOptions, UserCredentials};

/// What goes into CONNECT for nkey / JWT authentication.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Signed {
    pub nkey: Option<String>,
    pub jwt: Option<String>,
    pub sig: Option<String>,
}

fn creds_err(why: impl Into<String>) -> ConnectError {
    ConnectError::with_source(ConnectErrorKind::Credentials, why.into())
}

/// Signs `nonce` for the nkey or user JWT of `opts`, if any. A user JWT wins over an nkey
/// (as in nats.go). Without a nonce (a server that does not ask for a signature) the key and
/// JWT are still sent, unsigned.
pub(crate) fn sign(opts: &ConnectOptions, nonce: Option<&str>) -> Result<Signed, ConnectError> {
    let (jwt, seed) = match &opts.user_credentials {
        Some(UserCredentials::File(path)) => {
            let contents = std::fs::read_to_string(path).map_err(|e| {
                creds_err(format!("cannot read credentials {}: {e}", path.display()))
            })?;
            let (jwt, seed) = parse_creds(&contents)
                .map_err(|e| creds_err(format!("{}: {e}", path.display())))?;
            (Some(jwt), seed)
        }
        Some(UserCredentials::Jwt { jwt, seed }) => (Some(jwt.clone()), seed.clone()),
        None => match &opts.nkey_seed {
            Some(seed) => (None, seed.clone()),
            None => return Ok(Signed::default()),
        },
    };
    let kp = nkeys::KeyPair::from_seed(seed.trim())
        .map_err(|e| creds_err(format!("invalid nkey seed: {e}")))?;
    let sig = match nonce {
        Some(nonce) => {
            let raw = kp
                .sign(nonce.as_bytes())
                .map_err(|e| creds_err(format!("cannot sign the nonce: {e}")))?;
            Some(BASE64URL_NOPAD.encode(&raw))
        }
        None => None,
    };
    Ok(Signed {
        nkey: jwt.is_none().then(|| kp.public_key()),
        jwt,
        sig,
    })
}

/// What is missing from a `.creds` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CredsError {
    #[error("no user JWT found (expected a -----BEGIN NATS USER JWT----- block)")]
    NoJwt,
    #[error("no user nkey seed found (expected a -----BEGIN USER NKEY SEED----- block)")]
    NoSeed,
    #[error("the nkey seed is not a user seed (SU…)")]
    NotUserSeed,
}

/// The user JWT and nkey seed of a `.creds` file:
///
/// ```text
/// -----BEGIN NATS USER JWT-----
/// eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ...
/// ------END NATS USER JWT------
///
/// ************************* IMPORTANT *************************
/// ...
/// -----BEGIN USER NKEY SEED-----
/// SUAM...
/// ------END USER NKEY SEED------
/// ```
///
/// A block is a line of 3+ dashes, one line of content, and another line of dashes; the first
/// block is the JWT, the second the seed. Without blocks the seed is the first line starting
/// with `SU`, and the JWT cannot be found.
pub(crate) fn parse_creds(contents: &str) -> Result<(String, String), CredsError> {
    let is_fence = |l: &str| {
        let l = l.trim();
        l.len() >= 6 && l.starts_with("---") && l.ends_with("---")
    };
    let lines: Vec<&str> = contents.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() {
        let body = lines[i + 1].trim();
        if is_fence(lines[i])
            && !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
            && is_fence(lines[i + 2])
        {
            blocks.push(body);
            i += 3;
        } else {
            i += 1;
        }
    }
    let jwt = blocks
        .first()
        .copied()
        .filter(|j| j.matches('.').count() == 2)
        .ok_or(CredsError::NoJwt)?;
    let seed = match blocks.get(1) {
        Some(s) => *s,
        None => lines
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("SU"))
            .ok_or(CredsError::NoSeed)?,
    };
    if !seed.starts_with("SU") {
        return Err(CredsError::NotUserSeed);
    }
    Ok((jwt.to_string(), seed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVIn0.c2ln";

    fn creds(seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn parses_decorated_creds() {
        let kp = nkeys::KeyPair::new_user();
        let seed = kp.seed().unwrap();
        assert_eq!(
            parse_creds(&creds(&seed)),
            Ok((JWT.to_string(), seed.clone()))
        );
        // CRLF line ends too.
        let crlf = creds(&seed).replace('\n', "\r\n");
        assert_eq!(parse_creds(&crlf), Ok((JWT.to_string(), seed)));
    }

    #[test]
    fn rejects_incomplete_creds() {
        assert!(parse_creds("").unwrap_err().to_string().contains("JWT"));
        let only_jwt =
            format!("-----BEGIN NATS USER JWT-----\n{JWT}\n------END NATS USER JWT------\n");
        assert!(
            parse_creds(&only_jwt)
                .unwrap_err()
                .to_string()
                .contains("seed")
        );
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        assert!(
            parse_creds(&creds(&account))
                .unwrap_err()
                .to_string()
                .contains("user seed")
        );
    }

    #[test]
    fn signs_the_nonce() {
        let kp = nkeys::KeyPair::new_user();
        let opts = ConnectOptions::new().nkey(kp.seed().unwrap());
        let s = sign(&opts, Some("abc")).unwrap();
        assert_eq!(s.nkey.as_deref(), Some(kp.public_key().as_str()));
        assert_eq!(s.jwt, None);
        let sig = BASE64URL_NOPAD.decode(s.sig.unwrap().as_bytes()).unwrap();
        kp.verify(b"abc", &sig).unwrap();

        let opts = ConnectOptions::new()
            .credentials(&creds(&kp.seed().unwrap()))
            .unwrap();
        let s = sign(&opts, Some("xyz")).unwrap();
        assert_eq!((s.nkey, s.jwt.as_deref()), (None, Some(JWT)));
        let sig = BASE64URL_NOPAD.decode(s.sig.unwrap().as_bytes()).unwrap();
        kp.verify(b"xyz", &sig).unwrap();

        let bad = ConnectOptions::new().nkey("SUNOTASEED");
        assert_eq!(
            sign(&bad, Some("n")).unwrap_err().kind(),
            ConnectErrorKind::Credentials
        );
        let missing = ConnectOptions::new().credentials_file("/nonexistent/user.creds");
        let e = sign(&missing, Some("n")).unwrap_err();
        assert_eq!(e.kind(), ConnectErrorKind::Credentials);
        assert!(e.to_string().contains("/nonexistent/user.creds"), "{e}");
        assert_eq!(
            sign(&ConnectOptions::new(), Some("n")).unwrap(),
            Signed::default()
        );
    }
}
