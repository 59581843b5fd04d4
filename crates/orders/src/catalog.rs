//! rtap's own product catalog: about 2,000 SKUs in 65 categories, built from the category and
//! brand tables in `data/` with a fixed seed, so every run and every seed of the generator sees
//! the same products with the same SKU ids and prices.
//!
//! A product is brand x product line x size. Prices are log-normal around the category's
//! median (so the whole catalog is skewed low, median near $35), scaled by size, clamped to
//! 2.99..249.99 and ending in .99. Popularity is skewed too: the generator draws from a seeded
//! permutation with a power law, so "top items" rankings are stable and meaningful.

use std::sync::OnceLock;

use crate::rng::Rng;

/// Fixed: the catalog must not depend on the order seed.
const CATALOG_SEED: u64 = 0x7274_6170_4341_5431; // "rtapCAT1"
/// SKUs per category; 65 categories give 2,015 products.
const SKUS_PER_CATEGORY: usize = 31;
/// Spread of prices around the category median (log-normal sigma).
const PRICE_SIGMA: f64 = 0.45;
/// Exponent of the popularity power law: the top SKU gets about 0.9% of all picks.
const POPULARITY_EXPONENT: f64 = 1.6;
const MIN_PRICE_CENTS: i64 = 299;
const MAX_PRICE_CENTS: i64 = 24_999;

#[derive(Debug, Clone)]
pub struct CatalogProduct {
    pub product_id: String,
    pub name: String,
    pub category: &'static str,
    pub price_cents: i64,
    /// Aquarium or terrarium equipment: an order with one pays an environmental fee.
    pub env_fee: bool,
}

#[derive(Debug)]
pub struct Catalog {
    pub products: Vec<CatalogProduct>,
    pub categories: Vec<&'static str>,
    /// Product indices, most popular first.
    popularity: Vec<usize>,
}

struct CategoryRow {
    name: &'static str,
    group: &'static str,
    env_fee: bool,
    median: f64,
    kinds: Vec<&'static str>,
    sizes: Vec<&'static str>,
}

fn parse_categories(text: &'static str) -> Vec<CategoryRow> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&'static str> = line.split(',').collect();
            assert_eq!(f.len(), 6, "categories.csv: bad row {line:?}");
            CategoryRow {
                name: f[0],
                group: f[1],
                env_fee: f[2] == "1",
                median: f[3].parse().expect("categories.csv: bad price_median"),
                kinds: f[4].split('|').collect(),
                sizes: f[5].split('|').collect(),
            }
        })
        .collect()
}

fn parse_brands(text: &'static str) -> Vec<(&'static str, Vec<&'static str>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (group, brands) = line.split_once(':').expect("brands.txt: missing ':'");
            (
                group.trim(),
                brands.trim().split('|').map(str::trim).collect(),
            )
        })
        .collect()
}

impl Catalog {
    /// The catalog, built once per process.
    pub fn get() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(Catalog::build)
    }

    fn build() -> Catalog {
        let categories = parse_categories(include_str!("../data/categories.csv"));
        let brands = parse_brands(include_str!("../data/brands.txt"));
        let mut rng = Rng::for_key(CATALOG_SEED, 0, 0);
        let mut products = Vec::with_capacity(categories.len() * SKUS_PER_CATEGORY);
        for cat in &categories {
            let group_brands = brands
                .iter()
                .find(|(g, _)| *g == cat.group)
                .or_else(|| brands.iter().find(|(g, _)| *g == "general"))
                .map(|(_, b)| b.as_slice())
                .expect("brands.txt: no brands for group and no 'general' group");
            let combos = group_brands.len() * cat.kinds.len() * cat.sizes.len();
            let mut taken = vec![false; combos];
            for _ in 0..SKUS_PER_CATEGORY.min(combos) {
                let mut c = rng.below(combos as u64) as usize;
                while taken[c] {
                    c = (c + 1) % combos;
                }
                taken[c] = true;
                let brand = group_brands[c % group_brands.len()];
                let kind = cat.kinds[c / group_brands.len() % cat.kinds.len()];
                let size_index = c / (group_brands.len() * cat.kinds.len());
                let size = cat.sizes[size_index];
                let size_factor =
                    1.45_f64.powf(size_index as f64 - (cat.sizes.len() - 1) as f64 / 2.0);
                let price = cat.median * (PRICE_SIGMA * rng.normal()).exp() * size_factor;
                let cents =
                    ((price.floor() as i64) * 100 + 99).clamp(MIN_PRICE_CENTS, MAX_PRICE_CENTS);
                products.push(CatalogProduct {
                    product_id: format!("SKU-{:05}", products.len() + 1),
                    name: format!("{brand} {kind} ({size})"),
                    category: cat.name,
                    price_cents: cents,
                    env_fee: cat.env_fee,
                });
            }
        }
        let mut popularity: Vec<usize> = (0..products.len()).collect();
        for i in (1..popularity.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            popularity.swap(i, j);
        }
        Catalog {
            products,
            categories: categories.iter().map(|c| c.name).collect(),
            popularity,
        }
    }

    /// Draws a product index, popular products more often.
    pub fn draw(&self, rng: &mut Rng) -> usize {
        let rank = (rng.unit().powf(POPULARITY_EXPONENT) * self.popularity.len() as f64) as usize;
        self.popularity[rank.min(self.popularity.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_the_promised_shape() {
        let c = Catalog::get();
        assert!(
            (1900..=2100).contains(&c.products.len()),
            "{} SKUs",
            c.products.len()
        );
        assert!(
            (60..=70).contains(&c.categories.len()),
            "{} categories",
            c.categories.len()
        );
        let mut prices: Vec<i64> = c.products.iter().map(|p| p.price_cents).collect();
        prices.sort_unstable();
        assert_eq!(*prices.first().expect("non-empty"), MIN_PRICE_CENTS);
        assert!(*prices.last().expect("non-empty") <= MAX_PRICE_CENTS);
        let median = prices[prices.len() / 2];
        assert!(
            (2800..=4200).contains(&median),
            "median price {median} cents"
        );
        let mean = prices.iter().sum::<i64>() / prices.len() as i64;
        assert!(
            mean > median,
            "prices should be skewed low: mean {mean} median {median}"
        );
        let mut ids: Vec<&str> = c.products.iter().map(|p| p.product_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), c.products.len(), "SKU ids are unique");
        let mut names: Vec<&str> = c.products.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), c.products.len(), "product names are unique");
        assert!(c.products.iter().any(|p| p.env_fee));
    }

    #[test]
    fn catalog_is_stable() {
        // Pinned so that a change to the catalog's construction is a deliberate one.
        let c = Catalog::get();
        assert_eq!(c.products[0].product_id, "SKU-00001");
        assert_eq!(c.products[0].category, c.categories[0]);
    }
}
