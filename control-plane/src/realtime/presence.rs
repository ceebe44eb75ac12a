//! Who is online on this replica: sockets per user, so a user with two tabs stays online until
//! both close.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Presence {
    sockets: Mutex<HashMap<(String, String), usize>>,
}

impl Presence {
    /// Counts a new socket of the user; true when it is their first (they came online).
    pub fn connect(&self, tenant_id: &str, user_id: &str) -> bool {
        let mut map = onda_shared::sync::lock(&self.sockets);
        let n = map
            .entry((tenant_id.to_string(), user_id.to_string()))
            .or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts a socket gone; true when it was their last (they went offline).
    pub fn disconnect(&self, tenant_id: &str, user_id: &str) -> bool {
        let mut map = onda_shared::sync::lock(&self.sockets);
        let key = (tenant_id.to_string(), user_id.to_string());
        match map.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                map.remove(&key);
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn online(&self, tenant_id: &str, user_id: &str) -> bool {
        onda_shared::sync::lock(&self.sockets)
            .contains_key(&(tenant_id.to_string(), user_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_until_the_last_socket_closes() {
        let p = Presence::default();
        assert!(p.connect("t", "ana"));
        assert!(!p.connect("t", "ana"));
        assert!(p.online("t", "ana") && !p.online("t2", "ana"));
        assert!(!p.disconnect("t", "ana"));
        assert!(p.online("t", "ana"));
        assert!(p.disconnect("t", "ana"));
        assert!(!p.online("t", "ana"));
        assert!(!p.disconnect("t", "ana"));
    }
}
