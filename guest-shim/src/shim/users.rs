//! Resolving a user and groups in the container's own `/etc/passwd` and `/etc/group`.
//! Pure parsing; the caller reads the files.

use hatchery_protocol::UserSpec;

/// Ids a [`UserSpec`] resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    /// User id.
    pub(crate) uid: u32,
    /// Primary group id.
    pub(crate) gid: u32,
    /// Supplementary group ids.
    pub(crate) groups: Vec<u32>,
}

/// Why a user could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// No such user in passwd (and not numeric).
    NoUser(String),
    /// No such group in group (and not numeric).
    NoGroup(String),
}

fn passwd_entry<'a>(passwd: &'a str, user: &str) -> Option<(&'a str, u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let uid: u32 = f.next()?.parse().ok()?;
        let gid: u32 = f.next()?.parse().ok()?;
        (name == user || user.parse::<u32>().ok() == Some(uid)).then_some((name, uid, gid))
    })
}

fn group_id(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let mut f = line.split(':');
        let gname = f.next()?;
        let _pw = f.next()?;
        let gid: u32 = f.next()?.parse().ok()?;
        (gname == name).then_some(gid)
    })
}

fn resolve_group(group_file: &str, name: &str) -> Result<u32, ResolveError> {
    group_id(group_file, name)
        .or_else(|| name.parse().ok())
        .ok_or_else(|| ResolveError::NoGroup(name.to_string()))
}

/// Resolves `spec`: names are looked up first, then numeric ids are accepted as they are.
pub(crate) fn resolve(
    spec: &UserSpec,
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, ResolveError> {
    let (uid, primary) = match passwd_entry(passwd, &spec.user) {
        Some((_, uid, gid)) => (uid, Some(gid)),
        None => match spec.user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => return Err(ResolveError::NoUser(spec.user.clone())),
        },
    };
    let gid = match &spec.group {
        Some(g) => resolve_group(group, g)?,
        None => primary.unwrap_or(uid),
    };
    let groups = spec
        .supplementary
        .iter()
        .map(|g| resolve_group(group, g))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ResolvedUser { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nalice:x:1000:\naudio:x:29:alice\n";

    fn spec(u: &str, g: Option<&str>, s: &[&str]) -> UserSpec {
        UserSpec {
            user: u.into(),
            group: g.map(Into::into),
            supplementary: s.iter().map(|x| x.to_string()).collect(),
        }
    }

    #[test]
    fn by_name_with_primary_group() {
        let r = resolve(&spec("alice", None, &[]), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (1000, 1000, vec![]));
    }

    #[test]
    fn explicit_and_supplementary_groups() {
        let r = resolve(
            &spec("alice", Some("nogroup"), &["audio", "7"]),
            PASSWD,
            GROUP,
        )
        .unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (1000, 65534, vec![29, 7]));
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let r = resolve(&spec("4242", None, &[]), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 4242));
        let r = resolve(&spec("65534", None, &[]), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 65534));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve(&spec("mallory", None, &[]), PASSWD, GROUP),
            Err(ResolveError::NoUser("mallory".into()))
        );
        assert_eq!(
            resolve(&spec("alice", Some("wheel"), &[]), PASSWD, GROUP),
            Err(ResolveError::NoGroup("wheel".into()))
        );
    }
}
