//! CREATE STREAM / Flink-style CREATE TABLE: the `WATERMARK FOR` clause and
//! `WITH (...)` options are cut out at token level, the rest is read by sqlparser.

use datafusion::sql::sqlparser::ast::{ColumnDef, Statement};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::statement::{CreateStream, WatermarkClause, WeirStatement};
use super::tokens::{self, dialect, is_space, is_word, matching_paren, significant, space};
use super::SqlError;

/// Reads `CREATE STREAM ...` or `CREATE TABLE ...` (a stream when it has a
/// `connector` option, as in Flink SQL; otherwise a stored table).
pub fn parse_create(mut toks: Vec<Token>, is_stream: bool) -> Result<WeirStatement, SqlError> {
    let text = tokens::text(&toks);
    if !is_stream {
        if let Some(ctas) = parse_create_table_as(&toks)? {
            return Ok(ctas);
        }
    }
    if is_stream {
        // CREATE STREAM → CREATE TABLE so sqlparser reads the column list.
        let sig = significant(&toks);
        toks[sig[1]] = Token::make_keyword("TABLE");
    }
    let open = toks
        .iter()
        .position(|t| *t == Token::LParen)
        .ok_or_else(|| SqlError::Syntax("expected a column list in parentheses".into()))?;
    let close = matching_paren(&toks, open)
        .ok_or_else(|| SqlError::Syntax("unbalanced parentheses in column list".into()))?;
    let watermark = take_watermark(&mut toks, open, close)?;
    let computed = take_computed(&mut toks, open)?;
    let options = take_with_options(&mut toks)?;
    let has_connector = options
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connector"));
    if !is_stream && !has_connector {
        if !computed.is_empty() {
            return Err(SqlError::Syntax(
                "computed columns (name AS expression) are only allowed on a stream".into(),
            ));
        }
        if watermark.is_some() {
            return Err(SqlError::Syntax(
                "WATERMARK is only allowed on a stream: use CREATE STREAM ... WITH (connector = ...)"
                    .into(),
            ));
        }
        let stmt = Parser::new(dialect())
            .with_tokens(with_options_back(toks, &options))
            .parse_statement()?;
        return Ok(WeirStatement::Sql(Box::new(stmt)));
    }
    let stmt = Parser::new(dialect()).with_tokens(toks).parse_statement()?;
    let Statement::CreateTable(ct) = stmt else {
        return Err(SqlError::Syntax(
            "expected CREATE STREAM name (columns)".into(),
        ));
    };
    let columns: Vec<ColumnDef> = ct.columns;
    Ok(WeirStatement::CreateStream(Box::new(CreateStream {
        name: ct.name.to_string(),
        columns,
        computed,
        watermark,
        options,
        if_not_exists: ct.if_not_exists,
        text,
    })))
}

/// Flink's `CREATE TABLE name WITH (...) AS query` (no column list: the
/// query's columns); `None` for any other CREATE TABLE.
fn parse_create_table_as(toks: &[Token]) -> Result<Option<WeirStatement>, SqlError> {
    let sig = significant(toks);
    let word = |i: usize| sig.get(i).map(|&j| &toks[j]);
    let mut k = 2; // CREATE TABLE
    if word(1).is_some_and(|t| is_word(t, "OR")) {
        k = 4; // CREATE OR REPLACE TABLE
    }
    let if_not_exists = ["IF", "NOT", "EXISTS"]
        .iter()
        .enumerate()
        .all(|(n, w)| word(k + n).is_some_and(|t| is_word(t, w)));
    if if_not_exists {
        k += 3;
    }
    let Some(Token::Word(name)) = word(k) else {
        return Ok(None);
    };
    if !word(k + 1).is_some_and(|t| is_word(t, "WITH")) || word(k + 2) != Some(&Token::LParen) {
        return Ok(None);
    }
    let close = matching_paren(toks, sig[k + 2])
        .ok_or_else(|| SqlError::Syntax("unbalanced parentheses in WITH options".into()))?;
    let Some(as_at) = sig.iter().position(|&i| i > close) else {
        return Ok(None);
    };
    if !is_word(&toks[sig[as_at]], "AS") {
        return Ok(None);
    }
    let mut head = toks[..=close].to_vec();
    let options = take_with_options(&mut head)?;
    let mut parser = Parser::new(dialect()).with_tokens(toks[sig[as_at] + 1..].to_vec());
    let query = parser.parse_query()?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        return Err(SqlError::Syntax(format!(
            "unexpected {rest} after the query"
        )));
    }
    let name = match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_ascii_lowercase(),
    };
    Ok(Some(WeirStatement::CreateTableAs(Box::new(
        super::statement::CreateTableAs {
            name,
            options,
            query,
            if_not_exists,
        },
    ))))
}

/// Removes Flink's computed columns, `name AS expr`, from the column list
/// opened at `open`: (position among all the columns, name, expression).
fn take_computed(
    toks: &mut Vec<Token>,
    open: usize,
) -> Result<Vec<(usize, String, datafusion::sql::sqlparser::ast::Expr)>, SqlError> {
    let close = matching_paren(toks, open)
        .ok_or_else(|| SqlError::Syntax("unbalanced parentheses in column list".into()))?;
    // The column definitions: runs between top-level commas (WATERMARK is out).
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, open + 1);
    for (i, t) in toks.iter().enumerate().take(close).skip(open + 1) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                parts.push((from, i));
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push((from, close));
    let mut computed = Vec::new();
    let mut kept: Vec<Vec<Token>> = Vec::new();
    for (position, &(from, to)) in parts.iter().enumerate() {
        let sig: Vec<usize> = (from..to).filter(|&i| !is_space(&toks[i])).collect();
        let name = sig.first().and_then(|&i| match &toks[i] {
            Token::Word(w) => Some(w.value.clone()),
            _ => None,
        });
        match (name, sig.get(1)) {
            (Some(name), Some(&as_at)) if is_word(&toks[as_at], "AS") => {
                let expr = Parser::new(dialect())
                    .with_tokens(toks[as_at + 1..to].to_vec())
                    .parse_expr()?;
                computed.push((position, name, expr));
            }
            _ => kept.push(toks[from..to].to_vec()),
        }
    }
    if !computed.is_empty() {
        let mut list = Vec::new();
        for (i, part) in kept.into_iter().enumerate() {
            if i > 0 {
                list.push(Token::Comma);
            }
            list.extend(part);
        }
        toks.splice(open + 1..close, list);
    }
    Ok(computed)
}

/// Removes `[,] WATERMARK FOR col AS expr` from the column list between `open` and `close`.
fn take_watermark(
    toks: &mut Vec<Token>,
    open: usize,
    close: usize,
) -> Result<Option<WatermarkClause>, SqlError> {
    let mut depth = 0;
    let mut at = None;
    for (i, t) in toks.iter().enumerate().take(close).skip(open) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 1 && is_word(t, "WATERMARK") => {
                at = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(start) = at else { return Ok(None) };
    // The clause ends at the next top-level comma or the closing parenthesis.
    let mut depth = 0;
    let mut end = close;
    for (i, t) in toks.iter().enumerate().take(close).skip(start) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let clause: Vec<Token> = toks[start..end].to_vec();
    let sig = significant(&clause);
    if sig.len() < 4 || !is_word(&clause[sig[1]], "FOR") || !is_word(&clause[sig[3]], "AS") {
        return Err(SqlError::Syntax(
            "expected WATERMARK FOR <column> AS <column> - INTERVAL '...'".into(),
        ));
    }
    let column = match &clause[sig[2]] {
        Token::Word(w) => w.value.clone(),
        other => {
            return Err(SqlError::Syntax(format!(
                "expected a column name, found {other}"
            )))
        }
    };
    let expr_tokens = clause[sig[3] + 1..].to_vec();
    let expr = Parser::new(dialect())
        .with_tokens(expr_tokens)
        .parse_expr()?;
    // Remove the clause and the comma before it (or after it, if it came first).
    let prev_comma = (open + 1..start)
        .rev()
        .find(|&i| !is_space(&toks[i]))
        .filter(|&i| toks[i] == Token::Comma);
    match prev_comma {
        Some(c) => {
            toks.drain(c..end);
        }
        None => {
            let until = if end < close { end + 1 } else { end };
            toks.drain(start..until);
        }
    }
    Ok(Some(WatermarkClause { column, expr }))
}

/// Removes a top-level `WITH ( key = value, ... )` and returns its pairs.
/// Keys are identifiers (dotted ones too) or quoted strings, as in Flink.
pub fn take_with_options(toks: &mut Vec<Token>) -> Result<Vec<(String, String)>, SqlError> {
    let mut depth = 0;
    let mut with_at = None;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 0 && is_word(t, "WITH") => {
                let next = (i + 1..toks.len()).find(|&j| !is_space(&toks[j]));
                if next.is_some_and(|j| toks[j] == Token::LParen) {
                    with_at = Some((i, next.unwrap()));
                    break;
                }
            }
            _ => {}
        }
    }
    let Some((with, open)) = with_at else {
        return Ok(Vec::new());
    };
    let close = matching_paren(toks, open)
        .ok_or_else(|| SqlError::Syntax("unbalanced parentheses in WITH options".into()))?;
    let inner: Vec<Token> = toks[open + 1..close]
        .iter()
        .filter(|t| !is_space(t))
        .cloned()
        .collect();
    let mut pairs = Vec::new();
    for entry in inner.split(|t| *t == Token::Comma) {
        let eq = entry.iter().position(|t| *t == Token::Eq).ok_or_else(|| {
            SqlError::Syntax(format!(
                "expected key = 'value' in WITH options, found {}",
                tokens::text(entry)
            ))
        })?;
        let key: String = entry[..eq].iter().map(option_text).collect();
        let value: String = entry[eq + 1..].iter().map(option_text).collect();
        if key.is_empty() || value.is_empty() {
            return Err(SqlError::Syntax(
                "empty key or value in WITH options".into(),
            ));
        }
        pairs.push((key, value));
    }
    toks.drain(with..=close);
    Ok(pairs)
}

fn option_text(t: &Token) -> String {
    match t {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Word(w) => w.value.clone(),
        other => other.to_string(),
    }
}

/// Puts plain-table options back in sqlparser's form (it accepts `WITH (k = v)`).
fn with_options_back(mut toks: Vec<Token>, options: &[(String, String)]) -> Vec<Token> {
    if options.is_empty() {
        return toks;
    }
    toks.push(space());
    toks.push(Token::make_keyword("WITH"));
    toks.push(Token::LParen);
    for (i, (k, v)) in options.iter().enumerate() {
        if i > 0 {
            toks.push(Token::Comma);
        }
        toks.push(Token::make_word(k, None));
        toks.push(Token::Eq);
        toks.push(Token::SingleQuotedString(v.clone()));
    }
    toks.push(Token::RParen);
    toks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_statements;

    #[test]
    fn reads_weir_stream_ddl() {
        let stmts = parse_statements(
            "CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
             WITH (connector = 'file', path = 'bids.csv', format = 'csv', csv.header = 'true')",
        )
        .unwrap();
        let WeirStatement::CreateStream(s) = &stmts[0] else {
            panic!("not a stream: {stmts:?}")
        };
        assert_eq!(s.name, "bids");
        assert_eq!(s.columns.len(), 3);
        let wm = s.watermark.as_ref().unwrap();
        assert_eq!(wm.column, "ts");
        assert_eq!(wm.expr.to_string(), "ts - INTERVAL '5' SECOND");
        assert_eq!(
            s.options,
            vec![
                ("connector".to_string(), "file".to_string()),
                ("path".to_string(), "bids.csv".to_string()),
                ("format".to_string(), "csv".to_string()),
                ("csv.header".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn reads_flink_table_ddl_as_stream() {
        let stmts = parse_statements(
            "CREATE TABLE bids (WATERMARK FOR ts AS ts, auction BIGINT, ts TIMESTAMP(3))
             WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'json')",
        )
        .unwrap();
        let WeirStatement::CreateStream(s) = &stmts[0] else {
            panic!("not a stream")
        };
        assert_eq!(s.columns.len(), 2);
        assert_eq!(s.watermark.as_ref().unwrap().expr.to_string(), "ts");
        assert_eq!(s.options[0], ("connector".into(), "filesystem".into()));
    }

    #[test]
    fn computed_columns_leave_the_column_list_with_their_places() {
        let stmts = parse_statements(
            "CREATE TABLE b (a BIGINT, twice AS a * 2, s VARCHAR, both AS concat(s, ',', a),
               p AS PROCTIME(), WATERMARK FOR p AS p)
             WITH ('connector' = 'filesystem', 'path' = 'b.csv', 'format' = 'csv')",
        )
        .unwrap();
        let WeirStatement::CreateStream(s) = &stmts[0] else {
            panic!("not a stream: {stmts:?}")
        };
        let names: Vec<String> = s.columns.iter().map(|c| c.name.to_string()).collect();
        assert_eq!(names, vec!["a", "s"]);
        let computed: Vec<(usize, &str, String)> = s
            .computed
            .iter()
            .map(|(i, n, e)| (*i, n.as_str(), e.to_string()))
            .collect();
        assert_eq!(
            computed,
            vec![
                (1, "twice", "a * 2".to_string()),
                (3, "both", "concat(s, ',', a)".to_string()),
                (4, "p", "PROCTIME()".to_string()),
            ]
        );
        assert_eq!(s.watermark.as_ref().unwrap().column, "p");
    }

    #[test]
    fn plain_table_stays_a_table() {
        let stmts = parse_statements("CREATE TABLE prices (symbol TEXT PRIMARY KEY, price DOUBLE)")
            .unwrap();
        assert!(
            matches!(&stmts[0], WeirStatement::Sql(s) if matches!(**s, Statement::CreateTable(_)))
        );
    }
}
