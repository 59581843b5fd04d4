//! People and places: US cities with their real ZIP prefixes and area codes (from
//! `data/locations.csv`, so state, city, zip code and phone number agree), and first names,
//! surnames and street names (`data/names.txt`). All compiled in; nothing is fetched at run time.

use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct Location {
    pub state: &'static str,
    pub state_name: &'static str,
    pub city: &'static str,
    /// The first three digits of the city's ZIP codes.
    pub zip3: &'static str,
    pub area_code: &'static str,
}

#[derive(Debug)]
pub struct Geo {
    pub locations: Vec<Location>,
    pub first_names: Vec<&'static str>,
    pub last_names: Vec<&'static str>,
    pub streets: Vec<&'static str>,
}

impl Geo {
    pub fn get() -> &'static Geo {
        static GEO: OnceLock<Geo> = OnceLock::new();
        GEO.get_or_init(Geo::build)
    }

    fn build() -> Geo {
        let locations = include_str!("../data/locations.csv")
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|line| {
                let f: Vec<&'static str> = line.split(',').collect();
                assert_eq!(f.len(), 5, "locations.csv: bad row {line:?}");
                Location {
                    state: f[0],
                    state_name: f[1],
                    city: f[2],
                    zip3: f[3],
                    area_code: f[4],
                }
            })
            .collect();
        let mut first_names = Vec::new();
        let mut last_names = Vec::new();
        let mut streets = Vec::new();
        let mut section = None;
        for line in include_str!("../data/names.txt").lines().map(str::trim) {
            match line {
                "" => {}
                l if l.starts_with('#') => {}
                "[first]" => section = Some(&mut first_names),
                "[last]" => section = Some(&mut last_names),
                "[street]" => section = Some(&mut streets),
                name => {
                    if let Some(list) = section.as_mut() {
                        list.push(name);
                    }
                }
            }
        }
        Geo {
            locations,
            first_names,
            last_names,
            streets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_complete_and_well_formed() {
        let g = Geo::get();
        let mut states: Vec<&str> = g.locations.iter().map(|l| l.state).collect();
        states.sort_unstable();
        states.dedup();
        assert_eq!(states.len(), 51, "50 states and DC: {states:?}");
        for l in &g.locations {
            assert_eq!(l.zip3.len(), 3, "{l:?}");
            assert!(l.zip3.bytes().all(|b| b.is_ascii_digit()), "{l:?}");
            assert_eq!(l.area_code.len(), 3, "{l:?}");
            assert!(l.area_code.bytes().all(|b| b.is_ascii_digit()), "{l:?}");
            assert!(!l.area_code.starts_with(['0', '1']), "{l:?}");
        }
        assert!(g.first_names.len() >= 150);
        assert!(g.last_names.len() >= 150);
        assert!(g.streets.len() >= 80);
    }
}
