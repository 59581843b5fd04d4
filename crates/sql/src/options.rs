//! Pinot's query options: `SET key = value;` statements before a query, and an
//! `OPTION(key=value, ...)` clause after it (the older form).
//!
//! Both are taken off the text before it is checked and rewritten. Options rtap can honour are
//! applied ([`QueryOptions::timeout_ms`], [`QueryOptions::max_response_bytes`],
//! [`QueryOptions::drop_results`], [`QueryOptions::null_handling`]); the other options Pinot
//! documents are accepted and listed in the response as ignored, and a name Pinot does not
//! know is listed as unknown: neither is ever an error, so a query written for Pinot runs.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::SqlError;

/// Options rtap applies. Keys compare without regard to case, as Pinot's do.
const APPLIED: &[&str] = &[
    "timeoutMs",
    "maxQueryResponseSizeBytes",
    "maxServerResponseSizeBytes",
    "dropResults",
    "enableNullHandling",
];

/// Pinot's other query options (`CommonConstants.Broker.Request.QueryOptionKey`, Pinot 1.x):
/// accepted without effect. rtap has one engine and one server, so the routing, trimming and
/// multistage options have nothing to act on.
const ACCEPTED: &[&str] = &[
    "useMultistageEngine",
    "extraPassiveTimeoutMs",
    "skipUpsert",
    "skipUpsertView",
    "upsertViewFreshnessMs",
    "useStarTree",
    "scanStarTreeNodes",
    "routingOptions",
    "useScanReorderOpt",
    "maxExecutionThreads",
    "minSegmentGroupTrimSize",
    "minServerGroupTrimSize",
    "minBrokerGroupTrimSize",
    "serverReturnFinalResult",
    "serverReturnFinalResultKeyUnpartitioned",
    "groupTrimThreshold",
    "groupTrimSize",
    "numGroupsLimit",
    "numGroupsWarningLimit",
    "maxInitialResultHolderCapacity",
    "minInitialIndexedTableCapacity",
    "mseMinGroupTrimSize",
    "mseMaxInitialResultHolderCapacity",
    "numReplicaGroupsToQuery",
    "orderByAlgorithm",
    "multistageLeafLimit",
    "serverNullHandling",
    "explainPlanVerbose",
    "inferPartitionHint",
    "useFixedReplica",
    "explainAskingServers",
    "filteredAggregationsSkipEmptyGroups",
    "optimizeMaxInitialResultHolderCapacity",
    "isSecondaryWorkload",
    "workloadName",
    "trace",
    "debugOptions",
    "responseFormat",
    "clientQueryId",
    "maxRowsInJoin",
    "joinOverflowMode",
    "maxRowsInWindow",
    "windowOverflowMode",
    "skipIndexes",
    "skipPlannerRules",
    "usePlannerRules",
    "inPredicatePreSorted",
    "inPredicateLookupAlgorithm",
    "maxStreamingPendingBlocks",
    "queryIdForCancellation",
    "useSpools",
    "useBroadcastDistribution",
    "useLeafServerForIntermediateStage",
    "useMultistageEngineForLiteralOnly",
    "accurateGroupByWithoutOrderBy",
    "regexDictSizeThreshold",
    "sortAggregateLimitThreshold",
    "sortAggregateSingleThreadedNumSegmentsThreshold",
    "chunkSizeExtractFinalResult",
    "maxQueryResponseSize",
    "numThreadsExtractFinalResult",
    "getCursor",
    "cursorNumRows",
    "ignoreMissingSegments",
    "timeseriesStartTimeSeconds",
    "applicationName",
    "collectGcStats",
    "lateMaterialization",
];

/// What a query's options say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// `timeoutMs`: the query's time limit, never above `sql.timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// `maxQueryResponseSizeBytes` / `maxServerResponseSizeBytes`: a smaller answer limit.
    pub max_response_bytes: Option<usize>,
    /// `dropResults=true`: run the query, answer its statistics without rows.
    pub drop_results: bool,
    /// `enableNullHandling=true`: an aggregate over no rows answers null, not Pinot's default.
    pub null_handling: bool,
    /// Known Pinot options that rtap accepts without effect, as written.
    pub ignored: Vec<String>,
    /// Options Pinot does not document, as written.
    pub unknown: Vec<String>,
}

fn canonical(name: &str, list: &[&'static str]) -> Option<&'static str> {
    list.iter().copied().find(|k| k.eq_ignore_ascii_case(name))
}

fn truthy(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

impl QueryOptions {
    fn set(&mut self, key: &str, value: &str) -> Result<(), SqlError> {
        let number = |what: &str| {
            value.parse::<u64>().map_err(|_| {
                SqlError::Invalid(format!(
                    "query option {what} takes a whole number, got {value:?}"
                ))
            })
        };
        match canonical(key, APPLIED) {
            Some("timeoutMs") => {
                let ms = number("timeoutMs")?;
                if ms == 0 {
                    return Err(SqlError::Invalid(
                        "query option timeoutMs must be at least 1".into(),
                    ));
                }
                self.timeout_ms = Some(ms);
            }
            Some(k @ ("maxQueryResponseSizeBytes" | "maxServerResponseSizeBytes")) => {
                let bytes = usize::try_from(number(k)?).unwrap_or(usize::MAX);
                self.max_response_bytes =
                    Some(self.max_response_bytes.map_or(bytes, |b| b.min(bytes)));
            }
            Some("dropResults") => self.drop_results = truthy(value),
            Some("enableNullHandling") => self.null_handling = truthy(value),
            _ => match canonical(key, ACCEPTED) {
                Some(k) => self.ignored.push(k.to_string()),
                None => self.unknown.push(key.to_string()),
            },
        }
        Ok(())
    }
}

/// The text of an option's key or value token.
fn token_text(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) => Some(w.value.clone()),
        Token::Number(n, _) => Some(n.clone()),
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(s.clone()),
        _ => None,
    }
}

fn significant(tokens: &[Token]) -> Vec<(usize, &Token)> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .collect()
}

/// Parses `key = value` (value: a word, a number or a quoted string, optionally negative) from
/// the significant tokens at `at`; returns the pair and the position after it.
fn pair(sig: &[(usize, &Token)], at: usize) -> Option<(String, String, usize)> {
    let key = token_text(sig.get(at)?.1)?;
    if *sig.get(at + 1)?.1 != Token::Eq {
        return None;
    }
    let (negative, value_at) = match sig.get(at + 2)?.1 {
        Token::Minus => (true, at + 3),
        _ => (false, at + 2),
    };
    let value = token_text(sig.get(value_at)?.1)?;
    let value = if negative { format!("-{value}") } else { value };
    Some((key, value, value_at + 1))
}

/// Takes `SET k = v;` statements off the front and an `OPTION(...)` clause off the end of
/// `sql`; returns the query's own text and its options.
pub fn split(sql: &str) -> Result<(String, QueryOptions), SqlError> {
    let mut options = QueryOptions::default();
    let starts_with_set = sql
        .trim_start()
        .get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case("set"));
    let has_option = sql.to_ascii_uppercase().contains("OPTION");
    if !starts_with_set && !has_option {
        return Ok((sql.to_string(), options));
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| SqlError::Parse(e.to_string()))?;
    let sig = significant(&tokens);
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));

    // Leading SET statements, each ended by a semicolon.
    let mut at = 0;
    while sig.get(at).is_some_and(|(_, t)| is_word(t, "SET")) {
        let Some((key, value, next)) = pair(&sig, at + 1) else {
            return Err(SqlError::Parse(
                "SET takes a query option and a value: SET timeoutMs = 1000; SELECT ...".into(),
            ));
        };
        if sig.get(next).map(|(_, t)| *t) != Some(&Token::SemiColon) {
            return Err(SqlError::Parse(format!(
                "SET {key} = {value} must be followed by ';' and the query"
            )));
        }
        options.set(&key, &value)?;
        at = next + 1;
    }
    let start = sig.get(at).map_or(tokens.len(), |(i, _)| *i);

    // A trailing OPTION(k=v, ...), before any semicolons.
    let mut end_sig = sig.len();
    while end_sig > at && *sig[end_sig - 1].1 == Token::SemiColon {
        end_sig -= 1;
    }
    let mut end = sig.get(end_sig).map_or(tokens.len(), |(i, _)| *i);
    if end_sig >= at + 3 && *sig[end_sig - 1].1 == Token::RParen {
        // Find the OPTION ( that this ) closes: no parentheses inside an option list.
        let open = (at..end_sig - 1)
            .rev()
            .find(|&k| matches!(sig[k].1, Token::LParen | Token::RParen));
        if let Some(open) = open.filter(|&k| *sig[k].1 == Token::LParen && k > at) {
            if is_word(sig[open - 1].1, "OPTION") {
                let mut k = open + 1;
                while k < end_sig - 1 {
                    let Some((key, value, next)) = pair(&sig, k) else {
                        return Err(SqlError::Parse(
                            "OPTION takes key=value pairs separated by commas: \
                             OPTION(timeoutMs=1000)"
                                .into(),
                        ));
                    };
                    options.set(&key, &value)?;
                    k = next;
                    if *sig[k].1 == Token::Comma {
                        k += 1;
                    }
                }
                end = sig[open - 1].0;
            }
        }
    }
    let text: String = tokens[start..end.max(start)]
        .iter()
        .map(crate::dialect::sql_text)
        .collect();
    Ok((text, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_statements_and_option_clauses() {
        let (q, o) = split(
            "SET timeoutMs = 1500; set useMultistageEngine=true; SELECT 1 FROM orders OPTION(enableNullHandling=true, fooBar='x');",
        )
        .expect("splits");
        assert_eq!(q.trim(), "SELECT 1 FROM orders");
        assert_eq!(o.timeout_ms, Some(1500));
        assert!(o.null_handling);
        assert_eq!(o.ignored, vec!["useMultistageEngine".to_string()]);
        assert_eq!(o.unknown, vec!["fooBar".to_string()]);
        let (q, o) = split("SELECT option FROM t").expect("a column named option");
        assert_eq!(q, "SELECT option FROM t");
        assert_eq!(o, QueryOptions::default());
        assert!(matches!(
            split("SET timeoutMs = 10 SELECT 1"),
            Err(SqlError::Parse(_))
        ));
        assert!(matches!(
            split("SET timeoutMs = 'soon'; SELECT 1"),
            Err(SqlError::Invalid(_))
        ));
        assert!(matches!(
            split("SELECT 1 OPTION(timeoutMs)"),
            Err(SqlError::Parse(_))
        ));
        let (_, o) = split(
            "SELECT 1 OPTION(maxQueryResponseSizeBytes=5000,maxServerResponseSizeBytes=9000)",
        )
        .expect("splits");
        assert_eq!(o.max_response_bytes, Some(5000));
    }
}
