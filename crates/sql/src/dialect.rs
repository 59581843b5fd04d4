//! The Pinot dialect, rewritten into DataFusion SQL at the token level.
//!
//! Pinot (Calcite) SQL differs from DataFusion's in a handful of lexical ways, so the rewrite
//! works on tokens rather than a syntax tree, and leaves everything it does not recognise alone:
//!
//! - column names are case-sensitive and keep their case (`productsOrdered`), and so do aliases
//!   (`AS itemName` names the result column `itemName`): both are quoted;
//! - dotted column names (`line_items.product.name`, quoted or not) are single columns;
//! - `SUMMV(x)`, `COUNTMV`, `MINMV`, `MAXMV`, `AVGMV` aggregate multi-value columns, and
//!   `DISTINCTCOUNT(x)` is `COUNT(DISTINCT x)`;
//! - `fraud_flag = 'true'` compares a boolean with a string;
//! - a query naming a `line_items.*` column sees one row per line item, one naming
//!   `coupon_codes.name` one row per coupon: `FROM orders` becomes a subquery that unnests the
//!   list columns of that grain (table `orders` itself keeps one row per order).
//!
//! `ago`, `DATETRUNC` and `ToDateTime` are functions (see [`crate::functions`]).

use std::collections::HashMap;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace, Word};
use ingest::schema::{COUPON_GRAIN, ITEM_GRAIN};

use crate::SqlError;

/// The row grain a query runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Order,
    Item,
    Coupon,
    ItemAndCoupon,
}

/// Names the dialect knows: the table's columns, and the grain columns.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// lowercase -> canonical spelling, for every column a query may name.
    columns: HashMap<String, String>,
    booleans: Vec<String>,
    table: String,
}

impl Catalog {
    pub fn new(table: &str, schema: &datafusion::arrow::datatypes::Schema) -> Self {
        let mut columns = HashMap::new();
        let mut booleans = Vec::new();
        for f in schema.fields() {
            columns.insert(f.name().to_lowercase(), f.name().clone());
            if f.data_type() == &datafusion::arrow::datatypes::DataType::Boolean {
                booleans.push(f.name().clone());
            }
        }
        for (name, _) in ITEM_GRAIN.iter().chain(std::iter::once(&COUPON_GRAIN)) {
            columns.insert(name.to_lowercase(), (*name).to_string());
        }
        Catalog {
            columns,
            booleans,
            table: table.to_string(),
        }
    }
}

/// Type names that may follow `AS` in `CAST(x AS type)`: never aliases.
const TYPE_NAMES: &[&str] = &[
    "TIMESTAMP",
    "DATE",
    "TIME",
    "INT",
    "INTEGER",
    "BIGINT",
    "SMALLINT",
    "TINYINT",
    "DOUBLE",
    "FLOAT",
    "REAL",
    "DECIMAL",
    "NUMERIC",
    "VARCHAR",
    "CHAR",
    "STRING",
    "TEXT",
    "BOOLEAN",
    "LONG",
    "INTERVAL",
    "BYTES",
];

fn is_space(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

fn next_significant(tokens: &[Token], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| !is_space(&tokens[j]))
}

fn prev_significant(tokens: &[Token], i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| !is_space(&tokens[j]))
}

fn quoted(value: &str) -> Token {
    Token::Word(Word {
        value: value.to_string(),
        quote_style: Some('"'),
        keyword: Keyword::NoKeyword,
    })
}

fn word(value: &str) -> Token {
    Token::Word(Word {
        value: value.to_string(),
        quote_style: None,
        keyword: Keyword::NoKeyword,
    })
}

fn unquoted(t: &Token) -> Option<&Word> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w),
        _ => None,
    }
}

/// For every `(`, the index of its matching `)` (None when it has none), in one pass.
fn matching_parens(tokens: &[Token]) -> Vec<Option<usize>> {
    let mut out = vec![None; tokens.len()];
    let mut open = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LParen => open.push(i),
            Token::RParen => {
                if let Some(o) = open.pop() {
                    out[o] = Some(i);
                }
            }
            _ => {}
        }
    }
    out
}

/// A Pinot aggregate call `NAME(inner)` as DataFusion tokens, or None when `name` is not one.
fn pinot_aggregate(name: &str, inner: &[Token]) -> Option<Vec<Token>> {
    let call = |f: &str, reduce: &str| -> Vec<Token> {
        let mut v = vec![word(f), Token::LParen, word(reduce), Token::LParen];
        v.extend_from_slice(inner);
        v.extend([Token::RParen, Token::RParen]);
        v
    };
    Some(match name {
        "SUMMV" => call("sum", "mv_sum"),
        "COUNTMV" => call("sum", "mv_count"),
        "MINMV" => call("min", "mv_min"),
        "MAXMV" => call("max", "mv_max"),
        "AVGMV" => {
            let mut v = vec![Token::LParen];
            v.extend(call("sum", "mv_sum"));
            v.push(Token::Div);
            v.extend(call("sum", "mv_count"));
            v.push(Token::RParen);
            v
        }
        "DISTINCTCOUNT" => {
            let mut v = vec![
                word("count"),
                Token::LParen,
                word("DISTINCT"),
                Token::Whitespace(Whitespace::Space),
            ];
            v.extend_from_slice(inner);
            v.push(Token::RParen);
            v
        }
        _ => return None,
    })
}

/// The rewritten query and the grain it runs at.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub sql: String,
    pub grain: Grain,
}

pub fn rewrite(sql: &str, catalog: &Catalog) -> Result<Rewritten, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| SqlError::Parse(e.to_string()))?;

    // White space and comments become one space per run: the passes below look at a token's
    // neighbours, and a run of thousands of spaces between two words would make every look
    // long (the rewrite quadratic in the query's length).
    let mut tokens = {
        let mut squeezed = Vec::with_capacity(tokens.len());
        for t in tokens {
            if is_space(&t) {
                if !squeezed.last().is_some_and(is_space) {
                    squeezed.push(Token::Whitespace(Whitespace::Space));
                }
            } else {
                squeezed.push(t);
            }
        }
        squeezed
    };

    // One statement: drop trailing semicolons, refuse a second statement.
    while tokens
        .last()
        .is_some_and(|t| is_space(t) || *t == Token::SemiColon)
    {
        tokens.pop();
    }
    if tokens.contains(&Token::SemiColon) {
        return Err(SqlError::Refused("one statement per query".into()));
    }

    // Dotted column names become one quoted identifier.
    let mut merged = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some(w) = unquoted(&tokens[i]) {
            let mut parts = vec![w.value.clone()];
            let mut j = i;
            while j + 2 < tokens.len() && tokens[j + 1] == Token::Period {
                match &tokens[j + 2] {
                    Token::Word(next) => {
                        parts.push(next.value.clone());
                        j += 2;
                    }
                    _ => break,
                }
            }
            // Longest prefix that names a column.
            let mut taken = false;
            for n in (2..=parts.len()).rev() {
                let name = parts[..n].join(".").to_lowercase();
                if let Some(canonical) = catalog.columns.get(&name) {
                    merged.push(quoted(canonical));
                    i += 2 * (n - 1) + 1;
                    taken = true;
                    break;
                }
            }
            if taken {
                continue;
            }
        }
        merged.push(tokens[i].clone());
        i += 1;
    }
    let mut tokens = merged;

    // Aliases (`AS name`), spelled as written.
    let mut aliases: HashMap<String, String> = HashMap::new();
    for i in 0..tokens.len() {
        if let Token::Word(w) = &tokens[i] {
            if w.keyword == Keyword::AS {
                if let Some(j) = next_significant(&tokens, i) {
                    if let Token::Word(a) = &tokens[j] {
                        let upper = a.value.to_uppercase();
                        if a.quote_style.is_some() || !TYPE_NAMES.contains(&upper.as_str()) {
                            aliases.insert(a.value.to_lowercase(), a.value.clone());
                        }
                    }
                }
            }
        }
    }

    // Quote column names and aliases (not function names, not type names after AS).
    for i in 0..tokens.len() {
        let Some(w) = unquoted(&tokens[i]) else {
            continue;
        };
        let next = next_significant(&tokens, i).map(|j| &tokens[j]);
        if next == Some(&Token::LParen) {
            continue;
        }
        let lower = w.value.to_lowercase();
        let after_as = prev_significant(&tokens, i)
            .is_some_and(|j| matches!(&tokens[j], Token::Word(p) if p.keyword == Keyword::AS));
        if after_as && TYPE_NAMES.contains(&w.value.to_uppercase().as_str()) {
            continue;
        }
        if after_as {
            if let Some(alias) = aliases.get(&lower) {
                tokens[i] = quoted(alias);
                continue;
            }
        }
        if let Some(canonical) = catalog.columns.get(&lower) {
            tokens[i] = quoted(canonical);
        } else if let Some(alias) = aliases.get(&lower) {
            tokens[i] = quoted(alias);
        }
    }

    // Pinot aggregate functions, in one pass: the matching parentheses are found once, and the
    // output is built as a new list (no splicing), so the rewrite is linear in the query's
    // length. The arguments of a replaced call are copied as they are.
    let matches = matching_parens(&tokens);
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let name = unquoted(&tokens[i]).map(|w| w.value.to_uppercase());
        let open = next_significant(&tokens, i).filter(|&j| tokens[j] == Token::LParen);
        if let (Some(name), Some(open)) = (name, open) {
            if let Some(close) = matches[open] {
                if let Some(replacement) = pinot_aggregate(&name, &tokens[open + 1..close]) {
                    out.extend(replacement);
                    i = close + 1;
                    continue;
                }
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    let mut tokens = out;

    // A boolean column compared with 'true' / 'false'.
    for i in 0..tokens.len() {
        let Token::SingleQuotedString(s) = &tokens[i] else {
            continue;
        };
        let value = s.to_lowercase();
        if value != "true" && value != "false" {
            continue;
        }
        let is_compare = |j: usize| matches!(tokens[j], Token::Eq | Token::Neq);
        let other = match prev_significant(&tokens, i) {
            Some(p) if is_compare(p) => prev_significant(&tokens, p),
            _ => next_significant(&tokens, i)
                .filter(|&n| is_compare(n))
                .and_then(|n| next_significant(&tokens, n)),
        };
        let is_bool_column = other.is_some_and(|j| {
            matches!(&tokens[j], Token::Word(w) if w.quote_style.is_some() && catalog.booleans.contains(&w.value))
        });
        if is_bool_column {
            tokens[i] = word(if value == "true" { "TRUE" } else { "FALSE" });
        }
    }

    // The grain, and the table it reads.
    let names: Vec<&str> = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) if w.quote_style.is_some() => Some(w.value.as_str()),
            _ => None,
        })
        .collect();
    let items: Vec<(&str, &str)> = ITEM_GRAIN
        .iter()
        .copied()
        .filter(|(n, _)| names.contains(n))
        .collect();
    let coupons = names.contains(&COUPON_GRAIN.0);
    let grain = match (items.is_empty(), coupons) {
        (true, false) => Grain::Order,
        (false, false) => Grain::Item,
        (true, true) => Grain::Coupon,
        (false, true) => Grain::ItemAndCoupon,
    };
    if grain != Grain::Order {
        let mut source = catalog.table.clone();
        if !items.is_empty() {
            let unnests: Vec<String> = items
                .iter()
                .map(|(grain_col, list)| format!("unnest(\"{list}\") AS \"{grain_col}\""))
                .collect();
            source = format!("(SELECT *, {} FROM {source})", unnests.join(", "));
        }
        if coupons {
            let (grain_col, list) = COUPON_GRAIN;
            let inner = if items.is_empty() {
                source
            } else {
                format!("{source} AS {}", catalog.table)
            };
            source = format!("(SELECT *, unnest(\"{list}\") AS \"{grain_col}\" FROM {inner})");
        }
        let mut i = 0;
        while i < tokens.len() {
            let is_table = matches!(&tokens[i], Token::Word(w) if w.value.eq_ignore_ascii_case(&catalog.table));
            let after_from = prev_significant(&tokens, i)
                .is_some_and(|j| matches!(&tokens[j], Token::Word(p) if p.keyword == Keyword::FROM || p.keyword == Keyword::JOIN));
            if is_table && after_from {
                let aliased = next_significant(&tokens, i).is_some_and(|j| {
                    matches!(&tokens[j], Token::Word(w) if w.keyword == Keyword::AS || (w.keyword == Keyword::NoKeyword && w.quote_style.is_none()))
                });
                let text = if aliased {
                    source.clone()
                } else {
                    format!("{source} AS {}", catalog.table)
                };
                tokens[i] = word(&text);
            }
            i += 1;
        }
    }

    let sql: String = tokens.iter().map(|t| t.to_string()).collect();
    Ok(Rewritten { sql, grain })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new("orders", &ingest::schema::order_schema())
    }

    fn rw(sql: &str) -> String {
        rewrite(sql, &catalog()).expect("rewrites").sql
    }

    #[test]
    fn columns_and_aliases_keep_their_case() {
        assert_eq!(
            rw("SELECT MAX(productsOrdered) AS productsOrdered, COUNT(*) AS n FROM orders ORDER BY n"),
            "SELECT MAX(\"productsOrdered\") AS \"productsOrdered\", COUNT(*) AS \"n\" FROM orders ORDER BY \"n\""
        );
        assert_eq!(
            rw("SELECT PRODUCTSORDERED FROM orders"),
            "SELECT \"productsOrdered\" FROM orders"
        );
        assert_eq!(
            rw("SELECT CAST(time_ms AS TIMESTAMP) FROM orders"),
            "SELECT CAST(\"time_ms\" AS TIMESTAMP) FROM orders"
        );
    }

    #[test]
    fn dotted_names_and_grains() {
        let r = rewrite(
            "SELECT line_items.product.name AS itemName, SUMMV(line_items.quantity) AS quantity FROM orders WHERE time_ms > ago('PT1M') GROUP BY line_items.product.name",
            &catalog(),
        )
        .expect("rewrites");
        assert_eq!(r.grain, Grain::Item);
        assert!(
            r.sql.contains("sum(mv_sum(\"line_items.quantity\"))"),
            "{}",
            r.sql
        );
        assert!(r.sql.contains("FROM (SELECT *, unnest(\"itemNames\") AS \"line_items.product.name\", unnest(\"itemQtys\") AS \"line_items.quantity\" FROM orders) AS orders"), "{}", r.sql);
        let r = rewrite(
            "SELECT \"coupon_codes.name\", COUNT(*) FROM orders GROUP BY 1",
            &catalog(),
        )
        .expect("rw");
        assert_eq!(r.grain, Grain::Coupon);
        assert_eq!(
            rewrite("SELECT COUNT(*) FROM orders", &catalog())
                .expect("rw")
                .grain,
            Grain::Order
        );
    }

    #[test]
    fn boolean_strings_and_multi_statements() {
        assert_eq!(
            rw("SELECT COUNT(*) FROM orders WHERE fraud_flag='true'"),
            "SELECT COUNT(*) FROM orders WHERE \"fraud_flag\"=TRUE"
        );
        assert_eq!(
            rw("SELECT 1 FROM orders WHERE 'false' = fraud_flag;"),
            "SELECT 1 FROM orders WHERE FALSE = \"fraud_flag\""
        );
        assert_eq!(
            rw("SELECT 1 FROM orders WHERE delivered = 'true'"),
            "SELECT 1 FROM orders WHERE \"delivered\" = 'true'"
        );
        assert!(matches!(
            rewrite("SELECT 1; DROP TABLE orders", &catalog()),
            Err(SqlError::Refused(_))
        ));
    }
}
