//! Client authentication (single user, token, users list, nkeys, no_auth_user) and
//! per-user publish/subscribe permissions, with nats-server's semantics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rnats_protocol::subject_matches;

/// Allow and deny lists for one direction. No allow list means everything is allowed;
/// deny always wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// `allow_responses`: a user may reply to requests it received, `max` times within `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    pub max: u32,
    pub expires: Duration,
}

impl Default for ResponsePermission {
    fn default() -> Self {
        ResponsePermission {
            max: 1,
            expires: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Option<SubjectRules>,
    pub subscribe: Option<SubjectRules>,
    pub allow_responses: Option<ResponsePermission>,
}

/// An entry of a subscribe list: `subject` or `subject queue`.
fn split_queue(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once(char::is_whitespace) {
        Some((subject, queue)) => (subject, Some(queue.trim())),
        None => (entry, None),
    }
}

fn publish_rule_matches(rule: &str, subject: &[u8]) -> bool {
    subject_matches(rule.as_bytes(), subject)
}

/// A SUB subject is checked as a literal against the rules (so `foo.>` permits `SUB foo.*`
/// but `foo.bar` does not), and a queue-qualified rule only fits queue subscriptions whose
/// queue matches.
fn subscribe_rule_matches(rule: &str, subject: &[u8], queue: Option<&[u8]>) -> bool {
    let (rule_subject, rule_queue) = split_queue(rule);
    if !subject_matches(rule_subject.as_bytes(), subject) {
        return false;
    }
    match (rule_queue, queue) {
        (None, _) => true,
        (Some(rq), Some(q)) => subject_matches(rq.as_bytes(), q),
        (Some(_), None) => false,
    }
}

impl Permissions {
    /// Whether publishing to `subject` is allowed by the publish rules (responses aside).
    pub fn can_publish(&self, subject: &[u8]) -> bool {
        match &self.publish {
            None => self.allow_responses.is_none(),
            Some(rules) => {
                let allowed = match &rules.allow {
                    None => true,
                    Some(allow) => allow.iter().any(|r| publish_rule_matches(r, subject)),
                };
                allowed && !rules.deny.iter().any(|r| publish_rule_matches(r, subject))
            }
        }
    }

    pub fn can_subscribe(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let Some(rules) = &self.subscribe else {
            return true;
        };
        let allowed = match &rules.allow {
            None => true,
            Some(allow) => allow
                .iter()
                .any(|r| subscribe_rule_matches(r, subject, queue)),
        };
        allowed
            && !rules
                .deny
                .iter()
                .any(|r| subscribe_rule_matches(r, subject, queue))
    }

    /// Whether a message on the concrete `subject` may be delivered (deny rules narrower
    /// than the subscription are applied here).
    pub fn can_deliver(&self, subject: &[u8]) -> bool {
        self.subscribe.as_ref().is_none_or(|rules| {
            !rules
                .deny
                .iter()
                .any(|r| publish_rule_matches(split_queue(r).0, subject))
        })
    }

    pub fn has_deliver_filter(&self) -> bool {
        self.subscribe.as_ref().is_some_and(|r| !r.deny.is_empty())
    }
}

/// A configured user.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// User name, or for nkey users the public key.
    pub name: String,
    /// Plain text, or a bcrypt hash (`$2a$…`).
    pub password: Option<String>,
    /// Public nkey (`U…`) for nkey users.
    pub nkey: Option<String>,
    pub permissions: Option<Arc<Permissions>>,
}

/// How clients authenticate, built from the options once at start.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    pub token: Option<String>,
    pub users: HashMap<String, User>,
    pub nkeys: HashMap<String, User>,
    pub no_auth_user: Option<String>,
}

/// The identity a connection authenticated as.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: Option<String>,
    pub permissions: Option<Arc<Permissions>>,
}

/// What a client sent in CONNECT for authentication.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
    pub token: Option<&'a str>,
    pub nkey: Option<&'a str>,
    pub sig: Option<&'a str>,
}

impl Credentials<'_> {
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.pass.is_none() && self.token.is_none() && self.nkey.is_none()
    }
}

fn password_matches(given: &str, configured: &str) -> bool {
    if configured.starts_with("$2") {
        return bcrypt::verify(given, configured).unwrap_or(false);
    }
    given.len() == configured.len()
        && given
            .bytes()
            .zip(configured.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn decode_sig(sig: &str) -> Option<Vec<u8>> {
    use data_encoding::{BASE64, BASE64URL_NOPAD};
    let sig = sig.trim();
    BASE64URL_NOPAD
        .decode(sig.as_bytes())
        .or_else(|_| BASE64.decode(sig.as_bytes()))
        .or_else(|_| data_encoding::BASE64URL.decode(sig.as_bytes()))
        .ok()
}

impl Authenticator {
    /// Whether clients must present credentials (INFO `auth_required`).
    pub fn required(&self) -> bool {
        (self.token.is_some() || !self.users.is_empty() || !self.nkeys.is_empty())
            && self.no_auth_user.is_none()
    }

    /// Whether any authentication is configured at all.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || !self.users.is_empty() || !self.nkeys.is_empty()
    }

    /// Whether INFO must carry a nonce for nkey signatures.
    pub fn needs_nonce(&self) -> bool {
        !self.nkeys.is_empty()
    }

    /// Checks CONNECT credentials; `nonce` is the one sent in this connection's INFO.
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        nonce: Option<&str>,
    ) -> Option<Authenticated> {
        if !self.enabled() {
            return Some(Authenticated {
                user: None,
                permissions: None,
            });
        }
        if creds.is_empty() {
            let user = self.users.get(self.no_auth_user.as_deref()?)?;
            return Some(Authenticated {
                user: Some(user.name.clone()),
                permissions: user.permissions.clone(),
            });
        }
        if let Some(nkey) = creds.nkey {
            let user = self.nkeys.get(nkey)?;
            let (nonce, sig) = (nonce?, decode_sig(creds.sig?)?);
            let key = nkeys::KeyPair::from_public_key(nkey).ok()?;
            key.verify(nonce.as_bytes(), &sig).ok()?;
            return Some(Authenticated {
                user: Some(user.name.clone()),
                permissions: user.permissions.clone(),
            });
        }
        if let Some(expected) = &self.token {
            return creds
                .token
                .is_some_and(|t| password_matches(t, expected))
                .then_some(Authenticated {
                    user: None,
                    permissions: None,
                });
        }
        let user = self.users.get(creds.user?)?;
        let ok = match (&user.password, creds.pass) {
            (Some(configured), Some(given)) => password_matches(given, configured),
            (None, _) => true,
            (Some(_), None) => false,
        };
        ok.then(|| Authenticated {
            user: Some(user.name.clone()),
            permissions: user.permissions.clone(),
        })
    }
}

/// Credentials a connection authenticated with, kept so a configuration reload can check
/// them again.
#[derive(Debug, Clone, Default)]
pub struct StoredCredentials {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    pub nkey: Option<String>,
}

impl StoredCredentials {
    pub fn from(creds: &Credentials<'_>) -> Self {
        StoredCredentials {
            user: creds.user.map(Into::into),
            pass: creds.pass.map(Into::into),
            token: creds.token.map(Into::into),
            nkey: creds.nkey.map(Into::into),
        }
    }
}

impl Authenticator {
    /// Checks kept credentials against a new configuration. An nkey user passes while the
    /// key is still configured (its nonce signature was verified at CONNECT).
    pub fn reauthenticate(&self, creds: &StoredCredentials) -> Option<Authenticated> {
        if let Some(nkey) = &creds.nkey {
            let user = self.nkeys.get(nkey)?;
            return Some(Authenticated {
                user: Some(user.name.clone()),
                permissions: user.permissions.clone(),
            });
        }
        let borrowed = Credentials {
            user: creds.user.as_deref(),
            pass: creds.pass.as_deref(),
            token: creds.token.as_deref(),
            nkey: None,
            sig: None,
        };
        self.authenticate(&borrowed, None)
    }
}

/// Reply subjects a connection may publish to because of `allow_responses`.
#[derive(Default)]
pub struct ResponseGrants {
    grants: HashMap<Box<[u8]>, (u32, Instant)>,
}

impl ResponseGrants {
    pub fn grant(&mut self, reply: &[u8], perm: ResponsePermission) {
        let now = Instant::now();
        if self.grants.len() > 4096 {
            self.grants.retain(|_, (_, exp)| *exp > now);
        }
        self.grants
            .insert(reply.into(), (perm.max, now + perm.expires));
    }

    /// Uses up one response to `subject`; false when there is no live grant.
    pub fn take(&mut self, subject: &[u8]) -> bool {
        let Some((left, expires)) = self.grants.get_mut(subject) else {
            return false;
        };
        if *expires < Instant::now() || *left == 0 {
            self.grants.remove(subject);
            return false;
        }
        *left -= 1;
        if *left == 0 {
            self.grants.remove(subject);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectRules> {
        Some(SubjectRules {
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn publish_allow_and_deny() {
        let p = Permissions {
            publish: rules(Some(&["orders.>", "status"]), &["orders.secret"]),
            ..Default::default()
        };
        assert!(p.can_publish(b"orders.new"));
        assert!(p.can_publish(b"status"));
        assert!(!p.can_publish(b"orders.secret"));
        assert!(!p.can_publish(b"other"));
        let open = Permissions {
            publish: rules(None, &["admin.>"]),
            ..Default::default()
        };
        assert!(open.can_publish(b"x"));
        assert!(!open.can_publish(b"admin.a"));
    }

    #[test]
    fn subscribe_checks_sub_subject_as_literal() {
        let p = Permissions {
            subscribe: rules(Some(&["foo.>", "bar.baz"]), &[]),
            ..Default::default()
        };
        assert!(p.can_subscribe(b"foo.*", None));
        assert!(p.can_subscribe(b"foo.bar", None));
        assert!(!p.can_subscribe(b"bar.*", None));
        assert!(p.can_subscribe(b"bar.baz", None));
        let q = Permissions {
            subscribe: rules(Some(&["work.* workers"]), &[]),
            ..Default::default()
        };
        assert!(q.can_subscribe(b"work.a", Some(b"workers")));
        assert!(!q.can_subscribe(b"work.a", None));
        assert!(!q.can_subscribe(b"work.a", Some(b"others")));
    }

    #[test]
    fn narrower_deny_filters_delivery() {
        let p = Permissions {
            subscribe: rules(None, &["secret.*"]),
            ..Default::default()
        };
        assert!(p.can_subscribe(b">", None));
        assert!(!p.can_subscribe(b"secret.x", None));
        assert!(!p.can_deliver(b"secret.x"));
        assert!(p.can_deliver(b"public.x"));
    }

    #[test]
    fn allow_responses_only_blocks_other_publishes() {
        let p = Permissions {
            allow_responses: Some(ResponsePermission::default()),
            ..Default::default()
        };
        assert!(!p.can_publish(b"anything"));
        let mut grants = ResponseGrants::default();
        grants.grant(
            b"_INBOX.1",
            ResponsePermission {
                max: 2,
                expires: Duration::from_secs(60),
            },
        );
        assert!(grants.take(b"_INBOX.1"));
        assert!(grants.take(b"_INBOX.1"));
        assert!(!grants.take(b"_INBOX.1"));
    }

    #[test]
    fn users_tokens_bcrypt_and_nkeys() {
        let mut auth = Authenticator::default();
        let hash = bcrypt::hash("pw", 4).unwrap();
        auth.users.insert(
            "a".into(),
            User {
                name: "a".into(),
                password: Some(hash),
                ..Default::default()
            },
        );
        auth.users.insert(
            "b".into(),
            User {
                name: "b".into(),
                password: Some("plain".into()),
                ..Default::default()
            },
        );
        let ok = |u, p| {
            auth.authenticate(
                &Credentials {
                    user: Some(u),
                    pass: Some(p),
                    ..Default::default()
                },
                None,
            )
            .is_some()
        };
        assert!(ok("a", "pw"));
        assert!(!ok("a", "nope"));
        assert!(ok("b", "plain"));
        assert!(!ok("c", "plain"));
        assert!(auth.authenticate(&Credentials::default(), None).is_none());
        auth.no_auth_user = Some("b".into());
        assert_eq!(
            auth.authenticate(&Credentials::default(), None)
                .unwrap()
                .user
                .as_deref(),
            Some("b")
        );
        assert!(!auth.required());

        let kp = nkeys::KeyPair::new_user();
        let mut nk = Authenticator::default();
        nk.nkeys.insert(
            kp.public_key(),
            User {
                name: kp.public_key(),
                nkey: Some(kp.public_key()),
                ..Default::default()
            },
        );
        let nonce = "abcdefghijklmno";
        let sig = data_encoding::BASE64URL_NOPAD.encode(&kp.sign(nonce.as_bytes()).unwrap());
        let pk = kp.public_key();
        let creds = Credentials {
            nkey: Some(&pk),
            sig: Some(&sig),
            ..Default::default()
        };
        assert!(nk.authenticate(&creds, Some(nonce)).is_some());
        assert!(nk.authenticate(&creds, Some("other-nonce")).is_none());
    }
}
