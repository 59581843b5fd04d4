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
    /// Multi-value (list) columns.
    lists: Vec<String>,
    table: String,
}

impl Catalog {
    pub fn new(table: &str, schema: &datafusion::arrow::datatypes::Schema) -> Self {
        let mut columns = HashMap::new();
        let mut booleans = Vec::new();
        let mut lists = Vec::new();
        for f in schema.fields() {
            if matches!(
                f.data_type(),
                datafusion::arrow::datatypes::DataType::List(_)
            ) {
                lists.push(f.name().clone());
            }
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
            lists,
            table: table.to_string(),
        }
    }
}

impl Catalog {
    /// The canonical spelling of a column name (as written when it names no column).
    pub fn canonical(&self, name: &str) -> String {
        self.columns
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_else(|| name.to_string())
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

/// A token as SQL text, quotes inside strings and quoted names doubled (sqlparser prints them
/// bare: `'x'' OR ''1''=''1'` would come out as `'x' OR '1'='1'`).
pub(crate) fn sql_text(t: &Token) -> String {
    match t {
        // Strings whose content the tokenizer decoded (escapes, raw, triple quotes, unicode):
        // one plain string with the same content.
        Token::SingleQuotedString(s)
        | Token::TripleSingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s)
        | Token::SingleQuotedRawStringLiteral(s)
        | Token::TripleSingleQuotedRawStringLiteral(s)
        | Token::DoubleQuotedRawStringLiteral(s)
        | Token::TripleDoubleQuotedRawStringLiteral(s)
        | Token::TripleDoubleQuotedString(s)
        | Token::NationalStringLiteral(s) => format!("'{}'", s.replace('\'', "''")),
        Token::DollarQuotedString(d) => format!("'{}'", d.value.replace('\'', "''")),
        Token::HexStringLiteral(s) => format!("X'{}'", s.replace('\'', "''")),
        Token::SingleQuotedByteStringLiteral(s)
        | Token::TripleSingleQuotedByteStringLiteral(s)
        | Token::DoubleQuotedByteStringLiteral(s)
        | Token::TripleDoubleQuotedByteStringLiteral(s) => {
            format!("B'{}'", s.replace('\'', "''"))
        }
        Token::DoubleQuotedString(s) => format!("\"{}\"", s.replace('"', "\"\"")),
        Token::Word(w) if w.quote_style == Some('"') => {
            format!("\"{}\"", w.value.replace('"', "\"\""))
        }
        Token::Word(w) if w.quote_style == Some('`') => {
            format!("`{}`", w.value.replace('`', "``"))
        }
        other => other.to_string(),
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

/// The arguments of a call, split at its top-level commas, each as SQL text.
fn split_args(inner: &[Token]) -> Vec<String> {
    let mut args = vec![String::new()];
    let mut depth = 0usize;
    for t in inner {
        match t {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = args.last_mut() {
            last.push_str(&sql_text(t));
        }
    }
    let args: Vec<String> = args.into_iter().map(|a| a.trim().to_string()).collect();
    if args.len() == 1 && args[0].is_empty() {
        Vec::new()
    } else {
        args
    }
}

/// `p` of PERCENTILE and friends as a fraction for DataFusion's t-digest, when a number.
fn fraction(p: &str) -> Option<String> {
    let p: f64 = p.trim().parse().ok()?;
    (0.0..=100.0).contains(&p).then(|| format!("{}", p / 100.0))
}

/// The SQL type of LASTWITHTIME / FIRSTWITHTIME's `'dataType'` argument.
fn sql_type(pinot: &str) -> Option<&'static str> {
    Some(
        match pinot
            .trim()
            .trim_matches('\'')
            .to_ascii_uppercase()
            .as_str()
        {
            "INT" => "INT",
            "LONG" => "BIGINT",
            "FLOAT" => "FLOAT",
            "DOUBLE" => "DOUBLE",
            "BOOLEAN" => "BOOLEAN",
            "STRING" => "VARCHAR",
            _ => return None,
        },
    )
}

/// A Pinot function call `NAME(args) [FILTER (WHERE ...)]` as DataFusion SQL, or None when
/// `name` is not one the dialect rewrites (or has other arguments). `filter` is the call's
/// FILTER clause (or empty): it goes to the aggregate inside the rewrite.
fn pinot_call(name: &str, args: &[String], filter: &str) -> Option<String> {
    let a = |i: usize| args.get(i).map_or("", String::as_str);
    let n = args.len();
    // PERCENTILE95(x), PERCENTILEEST50(x), PERCENTILETDIGEST99(x): the percentile in the name.
    for family in ["PERCENTILETDIGEST", "PERCENTILEEST", "PERCENTILE"] {
        if let Some(p) = name.strip_prefix(family) {
            if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && n == 1 {
                let args = [a(0).to_string(), p.to_string()];
                return pinot_call(family, &args, filter);
            }
        }
    }
    Some(match (name, n) {
        ("SUMMV", 1) => format!("sum(mv_sum({})){filter}", a(0)),
        ("COUNTMV", 1) => format!("sum(mv_count({})){filter}", a(0)),
        ("MINMV", 1) => format!("min(mv_min({})){filter}", a(0)),
        ("MAXMV", 1) => format!("max(mv_max({})){filter}", a(0)),
        ("AVGMV", 1) => format!(
            "(sum(mv_sum({0})){filter} / sum(mv_count({0})){filter})",
            a(0)
        ),
        ("DISTINCTCOUNT", 1) => format!("count(DISTINCT {}){filter}", a(0)),
        ("DISTINCTCOUNTMV", 1) => format!(
            "CAST(cardinality(array_distinct(flatten(array_agg({}){filter}))) AS INT)",
            a(0)
        ),
        ("DISTINCTCOUNTHLL", 1 | 2) => format!("approx_distinct({}){filter}", a(0)),
        ("PERCENTILE", 2) => format!("pinot_percentile(array_agg({}){filter}, {})", a(0), a(1)),
        ("PERCENTILEEST", 2) => format!(
            "CAST(approx_percentile_cont({}) WITHIN GROUP (ORDER BY {}){filter} AS BIGINT)",
            fraction(a(1))?,
            a(0)
        ),
        ("PERCENTILETDIGEST", 2 | 3) => format!(
            "approx_percentile_cont({}) WITHIN GROUP (ORDER BY {}){filter}",
            fraction(a(1))?,
            a(0)
        ),
        ("MODE", 1) => format!("pinot_mode(array_agg({}){filter})", a(0)),
        ("MODE", 2) => format!("pinot_mode(array_agg({}){filter}, {})", a(0), a(1)),
        ("LASTWITHTIME", 3) => format!(
            "CAST(last_value({} ORDER BY {}){filter} AS {})",
            a(0),
            a(1),
            sql_type(a(2))?
        ),
        ("FIRSTWITHTIME", 3) => format!(
            "CAST(first_value({} ORDER BY {}){filter} AS {})",
            a(0),
            a(1),
            sql_type(a(2))?
        ),
        ("SUMPRECISION", 1..=3) => format!(
            "pinot_decimal_text(sum(CAST({} AS DECIMAL(38, 10))){filter})",
            a(0)
        ),
        // DataFusion plans SUBSTR as its own 1-based SUBSTRING: Pinot's is 0-based.
        ("SUBSTR", 2 | 3) if filter.is_empty() => format!("pinot_substr({})", args.join(", ")),
        ("ARRAYLENGTH" | "CARDINALITY", 1) if filter.is_empty() => {
            format!("CAST(cardinality({}) AS INT)", a(0))
        }
        // Pinot's third argument is the separator: CONCAT(a, b, sep) is a + sep + b.
        ("CONCAT", 3) if filter.is_empty() => format!("concat({}, {}, {})", a(0), a(2), a(1)),
        ("VALUEIN", 2..) if filter.is_empty() => format!(
            "array_intersect({}, make_array({}))",
            a(0),
            args[1..].join(", ")
        ),
        _ => return None,
    })
}

/// The name of the column holding one value of a grouped multi-value column (`coupon#value`).
const VALUE_SUFFIX: &str = "#value";

/// Most multi-value columns one GROUP BY may group by value: each multiplies the rows by its
/// values' count.
const MAX_GROUPED_LISTS: usize = 3;

/// How the dialect writes `VALUEIN(list, values...)`.
const VALUE_IN: &str = "array_intersect(";

/// A grouped multi-value expression, unnested to one row per value.
#[derive(Debug, Clone)]
struct Unnested {
    /// The token that names it in the query.
    token: Token,
    /// Its list, as SQL.
    list: String,
    /// The column of one value.
    value: String,
}

/// Positions of the clause keywords of the outermost SELECT (outside parentheses).
fn top_level_clauses(tokens: &[Token]) -> Vec<(usize, Keyword)> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(w) if depth == 0 && w.quote_style.is_none() => {
                if matches!(
                    w.keyword,
                    Keyword::SELECT
                        | Keyword::FROM
                        | Keyword::WHERE
                        | Keyword::GROUP
                        | Keyword::HAVING
                        | Keyword::ORDER
                        | Keyword::LIMIT
                        | Keyword::OFFSET
                        | Keyword::UNION
                        | Keyword::EXCEPT
                        | Keyword::INTERSECT
                ) {
                    out.push((i, w.keyword));
                }
            }
            _ => {}
        }
    }
    out
}

/// Pinot groups by each value of a multi-value column (`GROUP BY coupon`: one group per
/// coupon, an order counted in each of its coupons' groups). Where the outermost query groups
/// by such a column, its references in the select list, GROUP BY, HAVING and ORDER BY (outside
/// function calls) become the column of one value, `"coupon#value"` (a bare select item keeps
/// its name with `AS "coupon"`); WHERE keeps the list, with Pinot's any-value semantics. Only a
/// plain single-SELECT query reading the table once is rewritten. `GROUP BY VALUEIN(coupon,
/// 'A', 'B')` groups by the values of that filtered list the same way. Returns what to unnest.
fn group_by_values(tokens: &mut [Token], catalog: &Catalog) -> Result<Vec<Unnested>, SqlError> {
    let clauses = top_level_clauses(tokens);
    let reads = tokens
        .iter()
        .filter(|t| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(&catalog.table)))
        .count();
    let selects = clauses
        .iter()
        .filter(|(_, k)| *k == Keyword::SELECT)
        .count();
    let set_ops = clauses
        .iter()
        .any(|(_, k)| matches!(k, Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT));
    let Some(group_at) = clauses.iter().position(|(_, k)| *k == Keyword::GROUP) else {
        return Ok(Vec::new());
    };
    let Some(select_at) = clauses.iter().position(|(_, k)| *k == Keyword::SELECT) else {
        return Ok(Vec::new());
    };
    if reads != 1 || selects != 1 || set_ops {
        return Ok(Vec::new());
    }
    let len = tokens.len();
    let end_of = |at: usize| clauses.get(at + 1).map_or(len, |(i, _)| *i);
    let group_range = clauses[group_at].0..end_of(group_at);
    let is_list = |t: &Token| matches!(t, Token::Word(w) if w.quote_style == Some('"') && catalog.lists.contains(&w.value));
    let is_value_in = |t: &Token| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.starts_with(VALUE_IN));
    let items = select_items(&tokens[clauses[select_at].0 + 1..end_of(select_at)]);
    let mut grouped: Vec<Unnested> = Vec::new();
    // `GROUP BY 1` naming a multi-value select item: (position, the item's token).
    let mut ordinals: Vec<(usize, Token)> = Vec::new();
    let mut depth = 0usize;
    for i in group_range.clone() {
        let alone = prev_significant(tokens, i).is_some_and(|p| {
            tokens[p] == Token::Comma
                || matches!(&tokens[p], Token::Word(w) if w.keyword == Keyword::BY)
        }) && next_significant(tokens, i)
            .is_none_or(|n| n >= group_range.end || tokens[n] == Token::Comma);
        let by_position = match &tokens[i] {
            Token::Number(n, _) if depth == 0 && alone => n
                .parse::<usize>()
                .ok()
                .and_then(|k| k.checked_sub(1))
                .and_then(|k| items.get(k))
                .filter(|item| item.len() == 1 && (is_list(&item[0]) || is_value_in(&item[0])))
                .map(|item| item[0].clone()),
            _ => None,
        };
        if let Some(t) = &by_position {
            ordinals.push((i, t.clone()));
        }
        let t = by_position.as_ref().unwrap_or(&tokens[i]);
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(w)
                if depth == 0
                    && (is_list(t) || is_value_in(t))
                    && !grouped.iter().any(|g| g.token == *t) =>
            {
                let (list, value) = if is_list(t) {
                    (
                        format!("\"{}\"", w.value),
                        format!("{}{VALUE_SUFFIX}", w.value),
                    )
                } else {
                    (
                        w.value.clone(),
                        format!("valuein{}{VALUE_SUFFIX}", grouped.len()),
                    )
                };
                if grouped.len() == MAX_GROUPED_LISTS {
                    return Err(SqlError::ResourceLimit(format!(
                        "GROUP BY more than {MAX_GROUPED_LISTS} multi-value columns (every \
                         combination of their values is a row)"
                    )));
                }
                grouped.push(Unnested {
                    token: t.clone(),
                    list,
                    value,
                });
            }
            _ => {}
        }
    }
    if grouped.is_empty() {
        return Ok(grouped);
    }
    for (at, t) in ordinals {
        if let Some(g) = grouped.iter().find(|g| g.token == t) {
            tokens[at] = quoted(&g.value);
        }
    }
    // The ranges to rewrite: the select list and every clause after WHERE.
    let mut ranges = Vec::new();
    for (k, (at, keyword)) in clauses.iter().enumerate() {
        if matches!(
            keyword,
            Keyword::SELECT | Keyword::GROUP | Keyword::HAVING | Keyword::ORDER
        ) {
            ranges.push((*at, end_of(k), *keyword == Keyword::SELECT));
        }
    }
    for (start, end, is_select) in ranges.into_iter().rev() {
        let mut depth = 0usize;
        let mut i = start;
        while i < end {
            match &tokens[i] {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                Token::Word(w) if depth == 0 && grouped.iter().any(|g| g.token == tokens[i]) => {
                    let name = w.value.clone();
                    let Some(g) = grouped.iter().find(|g| g.token == tokens[i]) else {
                        break;
                    };
                    let list_column = is_list(&tokens[i]);
                    let value = quoted(&g.value);
                    // A bare select item keeps the column's name.
                    let bare = is_select
                        && list_column
                        && prev_significant(tokens, i).is_some_and(|p| {
                            matches!(&tokens[p], Token::Comma)
                                || matches!(&tokens[p], Token::Word(w) if w.keyword == Keyword::SELECT || w.keyword == Keyword::DISTINCT)
                        })
                        && next_significant(tokens, i).is_none_or(|n| {
                            n >= end
                                || matches!(&tokens[n], Token::Comma)
                        });
                    // One token for one (no splicing: linear however many items there are).
                    tokens[i] = if bare {
                        word(&format!(
                            "{} AS {}",
                            sql_text(&value),
                            sql_text(&quoted(&name))
                        ))
                    } else {
                        value
                    };
                }
                _ => {}
            }
            i += 1;
        }
    }
    Ok(grouped)
}

/// `ORDER BY 2` where the second select item is an expression over aggregates
/// (`PERCENTILE(x, 90)`, `ROUND(SUM(x))`): DataFusion cannot order by the position of such an
/// item, so the outermost ORDER BY gets the item's expression (without its alias) instead.
fn order_by_positions(tokens: &mut Vec<Token>) {
    let clauses = top_level_clauses(tokens);
    let end_of = |at: usize| clauses.get(at + 1).map_or(tokens.len(), |(i, _)| *i);
    let (Some(select), Some(order)) = (
        clauses.iter().position(|(_, k)| *k == Keyword::SELECT),
        clauses.iter().rposition(|(_, k)| *k == Keyword::ORDER),
    ) else {
        return;
    };
    let items = select_items(&tokens[clauses[select].0 + 1..end_of(select)]);
    // Only items that compute something: a position of a plain column works as it is.
    let computed = |item: &[Token]| {
        item.iter().any(|t| {
            *t == Token::LParen
                || matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.contains('('))
        })
    };
    let (start, end) = (clauses[order].0, end_of(order));
    // Copies are bounded: at most as many bytes as the query has (ORDER BY 1, 1, 1, ... of a
    // long item would otherwise copy it without end); past that, positions stay as written.
    let bytes = |ts: &[Token]| ts.iter().map(|t| sql_text(t).len()).sum::<usize>();
    let mut budget = bytes(tokens);
    let mut replaced: Vec<(usize, &Vec<Token>)> = Vec::new();
    for i in start..end {
        let Token::Number(n, _) = &tokens[i] else {
            continue;
        };
        let alone = prev_significant(tokens, i).is_some_and(|p| {
            tokens[p] == Token::Comma || matches!(&tokens[p], Token::Word(w) if w.keyword == Keyword::BY)
        }) && next_significant(tokens, i).is_none_or(|n| {
            n >= end
                || tokens[n] == Token::Comma
                || matches!(&tokens[n], Token::Word(w) if matches!(w.keyword, Keyword::ASC | Keyword::DESC | Keyword::NULLS))
        });
        let item = n
            .parse::<usize>()
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|k| items.get(k));
        if let Some(item) = item.filter(|it| alone && computed(it)) {
            let size = bytes(item);
            if size > budget {
                break;
            }
            budget -= size;
            replaced.push((i, item));
        }
    }
    if replaced.is_empty() {
        return;
    }
    let copied: usize = replaced.iter().map(|(_, item)| item.len()).sum();
    let mut out = Vec::with_capacity(tokens.len() + copied);
    let mut next = replaced.into_iter().peekable();
    for (i, t) in tokens.iter().enumerate() {
        match next.peek() {
            Some((at, item)) if *at == i => {
                out.extend(item.iter().cloned());
                next.next();
            }
            _ => out.push(t.clone()),
        }
    }
    *tokens = out;
}

/// The items of a select list, split at top-level commas, each without `AS alias` and the
/// white space around it.
fn select_items(list: &[Token]) -> Vec<Vec<Token>> {
    let first = list.iter().position(|t| !is_space(t)).unwrap_or(list.len());
    let list = match list.get(first) {
        Some(Token::Word(w)) if matches!(w.keyword, Keyword::DISTINCT | Keyword::ALL) => {
            &list[first + 1..]
        }
        _ => list,
    };
    let mut items: Vec<Vec<Token>> = vec![Vec::new()];
    let mut depth = 0usize;
    for t in list {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(item) = items.last_mut() {
            item.push(t.clone());
        }
    }
    for item in &mut items {
        let mut depth = 0usize;
        let alias_at = item.iter().position(|t| {
            match t {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth == 0 && matches!(t, Token::Word(w) if w.keyword == Keyword::AS)
        });
        if let Some(at) = alias_at {
            item.truncate(at);
        }
        while item.last().is_some_and(is_space) {
            item.pop();
        }
        let first = item.iter().position(|t| !is_space(t)).unwrap_or(item.len());
        item.drain(..first);
    }
    items
}

/// Pinot's function calls rewritten, in one pass over `tokens`: the matching parentheses are
/// found once and the output is built as a new list (no splicing). The arguments (and FILTER
/// clause) of a replaced call are rewritten first, so Pinot calls nest; a FILTER clause after a
/// replaced call moves to the aggregate inside the replacement.
fn rewrite_calls(tokens: &[Token]) -> Vec<Token> {
    let matches = matching_parens(tokens);
    let mut out = Vec::with_capacity(tokens.len());
    rewrite_range(tokens, &matches, 0..tokens.len(), &mut out);
    out
}

/// [`rewrite_calls`] over `range`: every token is rewritten once (a call that is not Pinot's
/// keeps its already rewritten arguments), so nested calls cost linear time.
fn rewrite_range(
    tokens: &[Token],
    matches: &[Option<usize>],
    range: std::ops::Range<usize>,
    out: &mut Vec<Token>,
) {
    let end = range.end;
    let mut i = range.start;
    while i < end {
        let name = unquoted(&tokens[i]).map(|w| w.value.to_uppercase());
        let open = next_significant(tokens, i).filter(|&j| j < end && tokens[j] == Token::LParen);
        let close = open.and_then(|o| matches[o]).filter(|&c| c < end);
        if let (Some(name), Some(open), Some(close)) = (name, open, close) {
            if is_pinot_name(&name) {
                let mut inner = Vec::new();
                rewrite_range(tokens, matches, open + 1..close, &mut inner);
                let args = split_args(&inner);
                // Whether the call is rewritten does not depend on its FILTER clause.
                if pinot_call(&name, &args, "").is_some() {
                    let filter = next_significant(tokens, close)
                        .filter(|&f| f < end && matches!(unquoted(&tokens[f]), Some(w) if w.keyword == Keyword::FILTER))
                        .and_then(|f| next_significant(tokens, f).filter(|&o| o < end && tokens[o] == Token::LParen))
                        .and_then(|o| matches[o])
                        .filter(|&e| e < end);
                    let mut filter_tokens = Vec::new();
                    if let Some(e) = filter {
                        rewrite_range(tokens, matches, close + 1..e + 1, &mut filter_tokens);
                    }
                    let filter_text: String = filter_tokens.iter().map(sql_text).collect();
                    if let Some(replacement) = pinot_call(&name, &args, &filter_text) {
                        out.push(word(&replacement));
                        i = filter.unwrap_or(close) + 1;
                        continue;
                    }
                }
                out.extend_from_slice(&tokens[i..=open]);
                out.extend(inner);
                out.push(tokens[close].clone());
                i = close + 1;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
}

/// Names [`pinot_call`] may rewrite (with the right arguments).
fn is_pinot_name(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "SUMMV",
        "COUNTMV",
        "MINMV",
        "MAXMV",
        "AVGMV",
        "DISTINCTCOUNT",
        "DISTINCTCOUNTMV",
        "DISTINCTCOUNTHLL",
        "PERCENTILE",
        "PERCENTILEEST",
        "PERCENTILETDIGEST",
        "MODE",
        "LASTWITHTIME",
        "FIRSTWITHTIME",
        "SUMPRECISION",
        "ARRAYLENGTH",
        "CARDINALITY",
        "CONCAT",
        "VALUEIN",
        "SUBSTR",
    ];
    NAMES.contains(&name) || name.starts_with("PERCENTILE")
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
    let out = rewrite_calls(&tokens);
    let mut tokens = out;

    order_by_positions(&mut tokens);
    let grouped_lists = if grain == Grain::Order {
        group_by_values(&mut tokens, catalog)?
    } else {
        Vec::new()
    };

    if grain != Grain::Order || !grouped_lists.is_empty() {
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
        // GROUP BY a multi-value column: one row per value beside the list (filters still see
        // the list); several such columns give every combination, as Pinot's groups do.
        for g in &grouped_lists {
            source = format!(
                "(SELECT *, unnest({}) AS \"{}\" FROM {source} AS {})",
                g.list, g.value, catalog.table
            );
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

    let sql: String = tokens.iter().map(sql_text).collect();
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
    fn group_by_a_multi_value_column_groups_its_values() {
        let sql = rw("SELECT coupon, COUNT(*) FROM orders WHERE coupon = 'A' GROUP BY coupon ORDER BY coupon");
        assert_eq!(
            sql,
            "SELECT \"coupon#value\" AS \"coupon\", COUNT(*) FROM (SELECT *, unnest(\"coupon\") AS \"coupon#value\" FROM orders AS orders) AS orders WHERE \"coupon\" = 'A' GROUP BY \"coupon#value\" ORDER BY \"coupon#value\""
        );
        // Inside a function call, in a subquery, or with the table read twice: left alone.
        for q in [
            "SELECT COUNTMV(coupon) FROM orders GROUP BY customer_city",
            "SELECT n FROM (SELECT coupon AS n FROM orders GROUP BY coupon) t",
            "SELECT a.coupon FROM orders a JOIN orders b ON a.order_id = b.order_id GROUP BY a.coupon",
        ] {
            assert!(!rw(q).contains("#value"), "{q}: {}", rw(q));
        }
        let sql =
            rw("SELECT VALUEIN(coupon, 'A'), COUNT(*) FROM orders GROUP BY VALUEIN(coupon, 'A')");
        assert!(
            sql.contains(
                "unnest(array_intersect(\"coupon\", make_array('A'))) AS \"valuein0#value\""
            ),
            "{sql}"
        );
    }

    #[test]
    fn order_by_the_position_of_a_computed_item() {
        assert_eq!(
            rw("SELECT customer_state, ROUND(SUM(order_total)) AS r, COUNT(*) FROM orders GROUP BY 1 ORDER BY 2 DESC, 3"),
            "SELECT \"customer_state\", ROUND(SUM(\"order_total\")) AS \"r\", COUNT(*) FROM orders GROUP BY 1 ORDER BY ROUND(SUM(\"order_total\")) DESC, COUNT(*)"
        );
        // A plain column's position, a position past the list, a number in an expression: as written.
        assert_eq!(
            rw("SELECT customer_state, COUNT(*) FROM orders GROUP BY 1 ORDER BY 1, 5, 2 + 1"),
            "SELECT \"customer_state\", COUNT(*) FROM orders GROUP BY 1 ORDER BY 1, 5, 2 + 1"
        );
    }

    #[test]
    fn order_by_positions_copy_a_bounded_amount() {
        let long = format!("LENGTH('{}')", "x".repeat(10_000));
        let sql = format!(
            "SELECT {long} FROM orders ORDER BY {}",
            vec!["1"; 1_000].join(", ")
        );
        let out = rw(&sql);
        assert!(
            out.len() < 3 * sql.len(),
            "{} bytes from {}",
            out.len(),
            sql.len()
        );
    }

    #[test]
    fn nested_calls_cost_linear_time() {
        // 40 levels of a call that is not rewritten (CONCAT with 2 arguments): 2^40 steps if
        // each level rewrote its arguments again.
        let sql = format!(
            "SELECT {}customer_city{} FROM orders",
            "CONCAT(".repeat(40),
            ", 'a')".repeat(40)
        );
        let out = rw(&sql);
        assert_eq!(out.matches("CONCAT(").count(), 40, "{out}");
        let sql = format!(
            "SELECT {}1{} FROM orders",
            "SUMMV(".repeat(40),
            ")".repeat(40)
        );
        assert_eq!(rw(&sql).matches("mv_sum(").count(), 40);
    }

    #[test]
    fn nested_calls_and_quotes() {
        assert_eq!(
            rw("SELECT DISTINCTCOUNT(SUBSTR(customer_city, 0, 3)) FROM orders WHERE customer_name = 'it''s'"),
            "SELECT count(DISTINCT pinot_substr(\"customer_city\", 0, 3)) FROM orders WHERE \"customer_name\" = 'it''s'"
        );
    }

    #[test]
    fn pinot_calls_take_their_filter_inside() {
        assert_eq!(
            rw("SELECT SUMMV(itemQtys) FILTER (WHERE fraud_flag = 'true') FROM orders"),
            "SELECT sum(mv_sum(\"itemQtys\")) FILTER (WHERE \"fraud_flag\" = TRUE) FROM orders"
        );
        assert_eq!(
            rw("SELECT PERCENTILE90(risk_score) FILTER (WHERE x > 1) FROM orders"),
            "SELECT pinot_percentile(array_agg(\"risk_score\") FILTER (WHERE x > 1), 90) FROM orders"
        );
        // Not a Pinot call with these arguments: as written.
        assert_eq!(
            rw("SELECT PERCENTILE(risk_score) FROM orders"),
            "SELECT PERCENTILE(\"risk_score\") FROM orders"
        );
        assert_eq!(
            rw("SELECT CONCAT('a', 'b', '-') FROM orders"),
            "SELECT concat('a', '-', 'b') FROM orders"
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
