//! A count of holders in all and per client address, admitting up to two caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which cap turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The cap over every client.
    Total,
    /// The cap for one client address.
    Client,
}

/// Holders counted in all and per client; shared by every worker.
#[derive(Debug)]
pub struct Counter {
    total_cap: usize,
    client_cap: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted holder; leaving (drop) frees its place.
#[derive(Debug)]
pub struct Place {
    counter: Arc<Counter>,
    client: IpAddr,
}

impl Counter {
    /// A counter admitting `total_cap` holders in all and `client_cap` per client.
    pub fn new(total_cap: usize, client_cap: usize) -> Arc<Self> {
        Arc::new(Counter {
            total_cap,
            client_cap,
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a place for `client`, or says which cap is full.
    pub fn enter(self: &Arc<Self>, client: IpAddr) -> Result<Place, Full> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.total >= self.total_cap {
            return Err(Full::Total);
        }
        let mine = held.per_client.entry(client).or_insert(0);
        if *mine >= self.client_cap {
            return Err(Full::Client);
        }
        *mine += 1;
        held.total += 1;
        Ok(Place {
            counter: self.clone(),
            client,
        })
    }

    /// Holders now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().map(|h| h.total).unwrap_or(0)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.counter.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        // Forget a client with no places left, so the map stays as small as the crowd.
        if let Some(n) = held.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_client_and_in_all_and_places_come_back() {
        let c = Counter::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = c.enter(a).unwrap_or_else(|e| panic!("{e:?}"));
        let _a2 = c.enter(a).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.enter(a).unwrap_err(), Full::Client);
        let _b1 = c.enter(b).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.enter(b).unwrap_err(), Full::Total);
        drop(a1);
        assert_eq!(c.held(), 2);
        assert!(c.enter(b).is_ok());
        assert_eq!(c.held(), 2, "the place taken above was dropped at once");
    }
}
