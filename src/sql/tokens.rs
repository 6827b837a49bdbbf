//! Token-level helpers: splitting a script into statements and rewriting
//! Flink's `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))` into `TUMBLE(t, ts, ...)`,
//! a SESSION or COUNT_WINDOW window's `t PARTITION BY k` into trailing
//! arguments, and a lookup join's `t FOR SYSTEM_TIME AS OF x` into `"t$lookup"`.

use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace, Word};

use super::SqlError;

/// The dialect Weir parses with (DataFusion's default).
pub fn dialect() -> &'static dyn Dialect {
    &GenericDialect {}
}

/// Tokenizes `sql` (whitespace and comments included).
pub fn tokenize(sql: &str) -> Result<Vec<Token>, SqlError> {
    Ok(Tokenizer::new(dialect(), sql).tokenize()?)
}

/// Splits tokens into statements at top-level semicolons, dropping empty ones.
pub fn split(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for t in tokens {
        if t == Token::SemiColon {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(t);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(trim)
        .filter(|s: &Vec<Token>| !s.is_empty())
        .collect()
}

/// Whether a token is whitespace or a comment.
pub fn is_space(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

fn trim(mut toks: Vec<Token>) -> Vec<Token> {
    while toks.last().is_some_and(is_space) {
        toks.pop();
    }
    let start = toks.iter().position(|t| !is_space(t)).unwrap_or(toks.len());
    toks.drain(..start);
    toks
}

/// The text of tokens, as written.
pub fn text(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Indices of the non-whitespace tokens.
pub fn significant(tokens: &[Token]) -> Vec<usize> {
    (0..tokens.len())
        .filter(|&i| !is_space(&tokens[i]))
        .collect()
}

/// Whether token `t` is the keyword (or identifier) `word`, case-insensitively.
pub fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Whether the significant tokens start with `words`.
pub fn starts_with(tokens: &[Token], words: &[&str]) -> bool {
    let sig = significant(tokens);
    words.len() <= sig.len() && words.iter().zip(&sig).all(|(w, &i)| is_word(&tokens[i], w))
}

/// Index of the parenthesis closing the one opened at `open`.
pub fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites Flink's window table-valued function spelling
/// `TABLE(F(TABLE t, DESCRIPTOR(c), args...))` to `F(t, c, args...)`.
pub fn rewrite_window_tvf(tokens: &mut Vec<Token>) {
    let mut i = 0;
    while i < tokens.len() {
        if is_word(&tokens[i], "TABLE") {
            let sig: Vec<usize> = (i + 1..tokens.len())
                .filter(|&j| !is_space(&tokens[j]))
                .take(3)
                .collect();
            if sig.len() == 3
                && tokens[sig[0]] == Token::LParen
                && matches!(&tokens[sig[1]], Token::Word(w) if is_window_fn(&w.value))
                && tokens[sig[2]] == Token::LParen
            {
                if let Some(close) = matching_paren(tokens, sig[0]) {
                    tokens.remove(close);
                    tokens.drain(i..=sig[0]);
                    // Inside the call: drop `TABLE` before the table name and unwrap DESCRIPTOR(...).
                    let call_open = sig[2] - (sig[0] - i + 1);
                    if let Some(call_close) = matching_paren(tokens, call_open) {
                        rewrite_args(tokens, call_open, call_close);
                    }
                    continue;
                }
            }
        }
        i += 1;
    }
}

fn rewrite_args(tokens: &mut Vec<Token>, open: usize, mut close: usize) {
    let mut j = open + 1;
    while j < close {
        if is_word(&tokens[j], "TABLE") && depth_between(tokens, open, j) == 1 {
            tokens.remove(j);
            close -= 1;
            continue;
        }
        if is_word(&tokens[j], "DESCRIPTOR") {
            if let Some(p) = (j + 1..close).find(|&k| !is_space(&tokens[k])) {
                if tokens[p] == Token::LParen {
                    if let Some(pc) = matching_paren(tokens, p) {
                        tokens.remove(pc);
                        tokens.drain(j..=p);
                        close -= 2 + (p - j);
                        continue;
                    }
                }
            }
        }
        j += 1;
    }
}

/// Moves the partition columns of `SESSION(t PARTITION BY k, ts, gap)`
/// (or `PARTITION BY (k1, k2)`) to the end: `SESSION(t, ts, gap, k)`;
/// likewise for COUNT_WINDOW.
pub fn rewrite_session_partition(tokens: &mut Vec<Token>) {
    let mut i = 0;
    while i < tokens.len() {
        let open = (i + 1..tokens.len()).find(|&j| !is_space(&tokens[j]));
        let partitioned = ["SESSION", "COUNT_WINDOW"]
            .iter()
            .any(|w| is_word(&tokens[i], w));
        let (true, Some(open)) = (partitioned, open) else {
            i += 1;
            continue;
        };
        i += 1;
        if tokens[open] != Token::LParen {
            continue;
        }
        let Some(close) = matching_paren(tokens, open) else {
            continue;
        };
        // The first argument ends at the first comma at the call's own depth.
        let Some(comma) = (open + 1..close)
            .find(|&j| tokens[j] == Token::Comma && depth_between(tokens, open, j) == 1)
        else {
            continue;
        };
        let sig: Vec<usize> = (open + 1..comma)
            .filter(|&j| !is_space(&tokens[j]))
            .collect();
        let Some(p) = sig.iter().position(|&j| is_word(&tokens[j], "PARTITION")) else {
            continue;
        };
        if !sig.get(p + 1).is_some_and(|&j| is_word(&tokens[j], "BY")) {
            continue;
        }
        let mut keys = trim(tokens[sig[p + 1] + 1..comma].to_vec());
        if keys.first() == Some(&Token::LParen) && matching_paren(&keys, 0) == Some(keys.len() - 1)
        {
            keys = keys[1..keys.len() - 1].to_vec();
        }
        let mut moved = vec![Token::Comma, space()];
        moved.extend(keys);
        tokens.splice(close..close, moved);
        tokens.drain(sig[p]..comma);
    }
}

/// Rewrites Flink's lookup-join spelling `t FOR SYSTEM_TIME AS OF x.p` to
/// the relation `"t$lookup"`: table `t`, looked up as each row comes.
pub fn rewrite_lookup(tokens: &mut Vec<Token>) {
    let words = ["FOR", "SYSTEM_TIME", "AS", "OF"];
    let mut i = 0;
    while i < tokens.len() {
        let sig: Vec<usize> = (i..tokens.len())
            .filter(|&j| !is_space(&tokens[j]))
            .take(6)
            .collect();
        let matches = sig.len() == 6
            && matches!(&tokens[sig[0]], Token::Word(_))
            && words
                .iter()
                .zip(&sig[1..5])
                .all(|(w, &j)| is_word(&tokens[j], w));
        if !matches {
            i += 1;
            continue;
        }
        // The time expression runs to the next alias, condition or join at its depth.
        let mut end = sig[5];
        let mut depth = 0i32;
        while end < tokens.len() {
            match &tokens[end] {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => break,
                Token::Word(w)
                    if depth == 0
                        && [
                            "AS", "ON", "JOIN", "WHERE", "INNER", "LEFT", "GROUP", "USING",
                        ]
                        .iter()
                        .any(|k| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k)) =>
                {
                    break
                }
                _ => {}
            }
            end += 1;
        }
        let Token::Word(table) = &tokens[sig[0]] else {
            unreachable!("checked above")
        };
        let name = Token::Word(Word {
            value: format!("{}$lookup", table.value),
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        });
        tokens.splice(sig[0]..end, [name, space()]);
        i = sig[0] + 1;
    }
}

fn depth_between(tokens: &[Token], open: usize, at: usize) -> i32 {
    tokens[open..at].iter().fold(0, |d, t| match t {
        Token::LParen => d + 1,
        Token::RParen => d - 1,
        _ => d,
    })
}

fn is_window_fn(name: &str) -> bool {
    ["TUMBLE", "HOP", "CUMULATE", "SESSION", "COUNT_WINDOW"]
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// A single space token.
pub fn space() -> Token {
    Token::Whitespace(Whitespace::Space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let toks = tokenize("SELECT 'a;b'; -- c;\n SELECT 2;;").unwrap();
        let parts: Vec<String> = split(toks).iter().map(|s| text(s)).collect();
        assert_eq!(parts, vec!["SELECT 'a;b'", "SELECT 2"]);
    }

    #[test]
    fn rewrites_flink_window_tvf() {
        let mut toks = tokenize(
            "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY x",
        )
        .unwrap();
        rewrite_window_tvf(&mut toks);
        assert_eq!(
            text(&toks),
            "SELECT * FROM TUMBLE( bids, ts, INTERVAL '10' SECOND) GROUP BY x"
        );
    }

    #[test]
    fn a_lookup_table_becomes_its_lookup_relation() {
        let mut toks =
            tokenize("SELECT * FROM b JOIN side FOR SYSTEM_TIME AS OF b.p AS s ON b.k = s.key")
                .unwrap();
        rewrite_lookup(&mut toks);
        assert_eq!(
            text(&toks),
            "SELECT * FROM b JOIN \"side$lookup\" AS s ON b.k = s.key"
        );
    }

    #[test]
    fn moves_session_partition_columns_to_the_end() {
        let rewrite = |sql: &str| {
            let mut toks = tokenize(sql).unwrap();
            rewrite_window_tvf(&mut toks);
            rewrite_session_partition(&mut toks);
            text(&toks)
        };
        assert_eq!(
            rewrite("SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '10' SECOND))"),
            "SELECT * FROM SESSION( bid , ts, INTERVAL '10' SECOND, bidder)"
        );
        assert_eq!(
            rewrite("SELECT * FROM SESSION(b PARTITION BY (k, f(x, y)), ts, g)"),
            "SELECT * FROM SESSION(b , ts, g, k, f(x, y))"
        );
        assert_eq!(
            rewrite("SELECT * FROM SESSION(b, ts, g)"),
            "SELECT * FROM SESSION(b, ts, g)"
        );
        assert_eq!(rewrite("SELECT session FROM t"), "SELECT session FROM t");
    }
}
