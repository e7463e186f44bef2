//! Which keys of a config file changed between two versions of its text
//! (SIGHUP: what a reload could not apply is named, not silently ignored).

use toml::{Table, Value};

fn flatten(prefix: &str, table: &Table, out: &mut Vec<(String, Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// The dotted keys (`smtp.max_message_size`) whose values differ, were
/// added or were removed, sorted. Text that does not parse changes nothing
/// here (loading it reports the error).
pub fn changed_keys(old: &str, new: &str) -> Vec<String> {
    let (Ok(old), Ok(new)) = (old.parse::<Table>(), new.parse::<Table>()) else {
        return Vec::new();
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &old, &mut a);
    flatten("", &new, &mut b);
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.iter().find(|(k2, _)| k2 == k).map(|(_, v2)| v2) != Some(v))
        .chain(b.iter().filter(|(k, _)| !a.iter().any(|(k2, _)| k2 == k)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_changed_added_and_removed_keys() {
        let old = "[smtp]\nmax_message_size = 1\n[policy]\nblock_score = 10.0\n[server]\nhostname = \"a\"\n";
        let new =
            "[smtp]\nmax_message_size = 2\n[policy]\nblock_score = 10.0\nmode = \"observe\"\n";
        assert_eq!(
            changed_keys(old, new),
            ["policy.mode", "server.hostname", "smtp.max_message_size"]
        );
        assert!(changed_keys(old, old).is_empty());
    }
}
