//! The statements Weir executes, read from SQL text.

use datafusion::sql::sqlparser::ast::{ColumnDef, Expr, Query, Statement};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::ddl::{parse_create, take_with_options};
use super::tokens::{self, dialect, is_word, significant, starts_with};
use super::SqlError;

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkClause {
    pub column: String,
    pub expr: Expr,
}

/// `CREATE STREAM` (or Flink's `CREATE TABLE ... WITH ('connector' = ...)`).
#[derive(Debug, Clone)]
pub struct CreateStream {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Flink's computed columns, `name AS expr`: (position among all the
    /// columns, name, expression).
    pub computed: Vec<(usize, String, datafusion::sql::sqlparser::ast::Expr)>,
    pub watermark: Option<WatermarkClause>,
    pub options: Vec<(String, String)>,
    pub if_not_exists: bool,
    /// The statement as written, kept in the catalog.
    pub text: String,
}

/// `CREATE MATERIALIZED VIEW name [WITH (...)] AS query [EMIT ON WINDOW CLOSE]`.
#[derive(Debug, Clone)]
pub struct CreateMaterializedView {
    pub name: String,
    pub query: Box<Query>,
    pub emit_on_window_close: bool,
    pub options: Vec<(String, String)>,
    pub if_not_exists: bool,
    /// The statement as written, kept in the catalog.
    pub text: String,
}

/// `CREATE SINK name FROM view WITH (...)`: the view's changes written out;
/// or `CREATE SINK name INTO table [(columns)] AS query`, which is what an
/// `INSERT INTO` a connector table runs as: a job writing the query's rows
/// to the table's connector.
#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: String,
    pub input: SinkInput,
    pub options: Vec<(String, String)>,
    pub if_not_exists: bool,
    pub text: String,
}

/// Flink's `CREATE TABLE name WITH ('connector' = ...) AS query`: a
/// connector table with the query's columns, and the INSERT INTO job
/// writing the query's rows to it.
#[derive(Debug, Clone)]
pub struct CreateTableAs {
    pub name: String,
    pub options: Vec<(String, String)>,
    pub query: Box<Query>,
    pub if_not_exists: bool,
}

/// What a sink writes out.
#[derive(Debug, Clone)]
pub enum SinkInput {
    /// A materialized view's changes.
    View(String),
    /// The rows of an `INSERT INTO table [(columns)] query`.
    Insert(Box<Statement>),
}

/// The kinds of catalog object a statement names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Stream,
    Table,
    /// A named query, planned into each statement that reads it.
    View,
    MaterializedView,
    Sink,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Stream => "stream",
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Sink => "sink",
        }
    }
}

/// What a `SHOW` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowKind {
    Streams,
    Tables,
    MaterializedViews,
    Views,
    Jobs,
    Watermarks,
    Sinks,
    /// `SHOW name`: a session variable.
    Variable(String),
}

/// One statement.
#[derive(Debug, Clone)]
pub enum WeirStatement {
    CreateStream(Box<CreateStream>),
    CreateMaterializedView(Box<CreateMaterializedView>),
    CreateSink(Box<CreateSink>),
    CreateTableAs(Box<CreateTableAs>),
    Drop {
        kind: ObjectKind,
        names: Vec<String>,
        if_exists: bool,
    },
    Show(ShowKind),
    Set {
        name: String,
        value: String,
    },
    /// `RESET name`, `SET name TO DEFAULT` (Some) or `RESET ALL` (None):
    /// back to the default.
    Reset(Option<String>),
    Flush,
    /// Checkpoint every job now.
    Checkpoint,
    Explain(Box<WeirStatement>),
    /// BEGIN / COMMIT / ROLLBACK: accepted, each statement commits by itself.
    Transaction(String),
    /// Everything DataFusion's SQL front end reads: SELECT, CREATE TABLE, INSERT, UPDATE, DELETE.
    Sql(Box<Statement>),
}

/// Reads every statement of a script.
pub fn parse_statements(sql: &str) -> Result<Vec<WeirStatement>, SqlError> {
    let all = tokens::tokenize(sql)?;
    tokens::split(all).into_iter().map(parse_one).collect()
}

fn parse_one(mut toks: Vec<Token>) -> Result<WeirStatement, SqlError> {
    // Flink's `EXECUTE STATEMENT SET BEGIN INSERT ...; INSERT ...; END;`:
    // each INSERT runs as it comes (the closing END reads as a COMMIT), as
    // in `BEGIN STATEMENT SET; ... END;`.
    if starts_with(&toks, &["EXECUTE", "STATEMENT", "SET", "BEGIN"]) {
        let sig = significant(&toks);
        if sig.len() > 4 {
            toks.drain(..sig[4]);
        }
    }
    tokens::rewrite_window_tvf(&mut toks);
    tokens::rewrite_session_partition(&mut toks);
    tokens::rewrite_lookup(&mut toks);
    let sig = significant(&toks);
    let word = |i: usize| -> String {
        match sig.get(i).map(|&j| &toks[j]) {
            Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            _ => String::new(),
        }
    };
    match word(0).as_str() {
        // Flink's CREATE TEMPORARY TABLE / VIEW: kept like any other.
        "CREATE" if word(1) == "TEMPORARY" => {
            let mut toks = toks;
            toks.remove(sig[1]);
            parse_one(toks)
        }
        "CREATE" => {
            let mut k = 1;
            if word(1) == "OR" {
                k = 3; // OR REPLACE
            }
            match word(k).as_str() {
                "STREAM" | "SOURCE" => parse_create(toks, true),
                "TABLE" => parse_create(toks, false),
                "MATERIALIZED" => parse_create_mv(toks),
                "SINK" => parse_create_sink(toks),
                _ => parse_sql(toks),
            }
        }
        "EXPLAIN" => {
            let first = sig[0];
            let mut rest = toks[first + 1..].to_vec();
            // EXPLAIN [ANALYZE|VERBOSE] is read as plain EXPLAIN.
            while let Some(p) = rest.iter().position(|t| !tokens::is_space(t)) {
                if is_word(&rest[p], "ANALYZE") || is_word(&rest[p], "VERBOSE") {
                    rest.drain(..=p);
                } else {
                    break;
                }
            }
            Ok(WeirStatement::Explain(Box::new(parse_one(rest)?)))
        }
        "DROP" => parse_drop(&toks),
        "SHOW" => {
            let rest: Vec<String> = sig[1..].iter().map(|&i| toks[i].to_string()).collect();
            let kind = match word(1).as_str() {
                "STREAMS" | "SOURCES" => ShowKind::Streams,
                "TABLES" => ShowKind::Tables,
                "MATERIALIZED" if word(2) == "VIEWS" => ShowKind::MaterializedViews,
                "VIEWS" => ShowKind::Views,
                "JOBS" => ShowKind::Jobs,
                "SINKS" => ShowKind::Sinks,
                "WATERMARKS" => ShowKind::Watermarks,
                _ if rest.len() == 1 => ShowKind::Variable(rest[0].to_ascii_lowercase()),
                _ => {
                    return Err(SqlError::Syntax(format!(
                        "unknown SHOW {}: expected STREAMS, TABLES, MATERIALIZED VIEWS, JOBS, WATERMARKS or a variable name",
                        rest.join(" ")
                    )))
                }
            };
            Ok(WeirStatement::Show(kind))
        }
        "FLUSH" if sig.len() == 1 => Ok(WeirStatement::Flush),
        "CHECKPOINT" if sig.len() == 1 => Ok(WeirStatement::Checkpoint),
        "SET" => parse_set(&toks, &sig),
        "RESET" if sig.len() == 2 && !word(1).is_empty() => Ok(match word(1).as_str() {
            "ALL" => WeirStatement::Reset(None),
            _ => WeirStatement::Reset(Some(word(1).to_ascii_lowercase())),
        }),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" => {
            Ok(WeirStatement::Transaction(word(0)))
        }
        _ => parse_sql(toks),
    }
}

fn parse_sql(toks: Vec<Token>) -> Result<WeirStatement, SqlError> {
    let mut parser = Parser::new(dialect()).with_tokens(toks);
    let stmt = parser.parse_statement()?;
    Ok(WeirStatement::Sql(Box::new(stmt)))
}

fn parse_create_mv(mut toks: Vec<Token>) -> Result<WeirStatement, SqlError> {
    let text = tokens::text(&toks);
    // Trailing EMIT ON WINDOW CLOSE.
    let sig = significant(&toks);
    let n = sig.len();
    let mut emit_on_window_close = false;
    if n >= 4 {
        let tail = &sig[n - 4..];
        if ["EMIT", "ON", "WINDOW", "CLOSE"]
            .iter()
            .zip(tail)
            .all(|(w, &i)| is_word(&toks[i], w))
        {
            emit_on_window_close = true;
            toks.truncate(tail[0]);
        }
    }
    // Options come before AS: take them only from the part before the query.
    let as_at = significant(&toks)
        .into_iter()
        .find(|&i| is_word(&toks[i], "AS"))
        .ok_or_else(|| {
            SqlError::Syntax("expected AS <query> in CREATE MATERIALIZED VIEW".into())
        })?;
    let mut head: Vec<Token> = toks[..as_at].to_vec();
    let options = take_with_options(&mut head)?;
    head.extend_from_slice(&toks[as_at..]);
    let stmt = Parser::new(dialect()).with_tokens(head).parse_statement()?;
    match stmt {
        Statement::CreateView(view) if view.materialized => Ok(
            WeirStatement::CreateMaterializedView(Box::new(CreateMaterializedView {
                name: view.name.to_string(),
                query: view.query,
                emit_on_window_close,
                options,
                if_not_exists: view.if_not_exists,
                text,
            })),
        ),
        _ => Err(SqlError::Syntax(
            "expected CREATE MATERIALIZED VIEW name AS query".into(),
        )),
    }
}

fn parse_create_sink(mut toks: Vec<Token>) -> Result<WeirStatement, SqlError> {
    let text = tokens::text(&toks);
    let bad = || {
        SqlError::Syntax("expected CREATE SINK name FROM view WITH (connector = 'file', path = '...', format = 'json') or CREATE SINK name INTO table AS query".into())
    };
    let name_of = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    let sig = significant(&toks);
    let mut k = 2;
    let mut if_not_exists = false;
    if sig.len() > 4
        && is_word(&toks[sig[2]], "IF")
        && is_word(&toks[sig[3]], "NOT")
        && is_word(&toks[sig[4]], "EXISTS")
    {
        if_not_exists = true;
        k = 5;
    }
    if sig.len() > k + 1 && is_word(&toks[sig[k + 1]], "INTO") {
        let name = name_of(&toks[sig[k]]).ok_or_else(bad)?;
        let insert = insert_of(toks[sig[k + 1]..].to_vec())?;
        return Ok(WeirStatement::CreateSink(Box::new(CreateSink {
            name,
            input: SinkInput::Insert(Box::new(insert)),
            options: Vec::new(),
            if_not_exists,
            text,
        })));
    }
    let options = take_with_options(&mut toks)?;
    let sig = significant(&toks);
    let words: Vec<&Token> = sig.iter().map(|&i| &toks[i]).collect();
    if words.len() != k + 3 || !is_word(words[k + 1], "FROM") {
        return Err(bad());
    }
    let name = name_of(words[k]).ok_or_else(bad)?;
    let from = name_of(words[k + 2]).ok_or_else(bad)?;
    Ok(WeirStatement::CreateSink(Box::new(CreateSink {
        name,
        input: SinkInput::View(from),
        options,
        if_not_exists,
        text,
    })))
}

/// `INTO table [(columns)] [AS] query` read as the INSERT statement it is.
fn insert_of(mut toks: Vec<Token>) -> Result<Statement, SqlError> {
    let bad = || SqlError::Syntax("expected INTO table [(columns)] AS query".into());
    // Past the table's (possibly qualified) name and its column list.
    let sig = significant(&toks);
    let mut at = 1;
    while at + 1 < sig.len() && toks[sig[at + 1]] == Token::Period {
        at += 2;
    }
    at += 1;
    if sig.get(at).is_some_and(|&i| toks[i] == Token::LParen) {
        let close = tokens::matching_paren(&toks, sig[at]).ok_or_else(bad)?;
        at = sig.iter().position(|&i| i > close).unwrap_or(sig.len());
    }
    if let Some(&i) = sig.get(at).filter(|&&i| is_word(&toks[i], "AS")) {
        toks.remove(i);
    }
    toks.insert(0, tokens::space());
    toks.insert(0, Token::make_keyword("INSERT"));
    let mut parser = Parser::new(dialect()).with_tokens(toks);
    match parser.parse_statement()? {
        s @ Statement::Insert(_) => Ok(s),
        _ => Err(bad()),
    }
}

fn parse_drop(toks: &[Token]) -> Result<WeirStatement, SqlError> {
    let sig = significant(toks);
    let words: Vec<&Token> = sig.iter().map(|&i| &toks[i]).collect();
    let (kind, mut k) = if starts_with(toks, &["DROP", "MATERIALIZED", "VIEW"]) {
        (ObjectKind::MaterializedView, 3)
    } else if starts_with(toks, &["DROP", "STREAM"]) || starts_with(toks, &["DROP", "SOURCE"]) {
        (ObjectKind::Stream, 2)
    } else if starts_with(toks, &["DROP", "TABLE"]) {
        (ObjectKind::Table, 2)
    } else if starts_with(toks, &["DROP", "SINK"]) {
        (ObjectKind::Sink, 2)
    } else if starts_with(toks, &["DROP", "VIEW"]) {
        (ObjectKind::View, 2)
    } else if starts_with(toks, &["DROP", "TEMPORARY", "VIEW"]) {
        (ObjectKind::View, 3)
    } else if starts_with(toks, &["DROP", "TEMPORARY", "TABLE"]) {
        (ObjectKind::Table, 3)
    } else {
        return Err(SqlError::Syntax(
            "expected DROP STREAM, DROP TABLE, DROP VIEW, DROP MATERIALIZED VIEW or DROP SINK"
                .into(),
        ));
    };
    let mut if_exists = false;
    if words.len() > k + 1 && is_word(words[k], "IF") && is_word(words[k + 1], "EXISTS") {
        if_exists = true;
        k += 2;
    }
    let mut names = Vec::new();
    let mut expect_name = true;
    for t in &words[k..] {
        match t {
            Token::Word(w) if expect_name => {
                names.push(if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_ascii_lowercase()
                });
                expect_name = false;
            }
            Token::Comma if !expect_name => expect_name = true,
            _ if is_word(t, "CASCADE") || is_word(t, "RESTRICT") => {
                return Err(SqlError::Syntax(format!(
                    "DROP ... {t} is not supported: drop dependent objects first"
                )))
            }
            other => return Err(SqlError::Syntax(format!("unexpected {other} in DROP"))),
        }
    }
    if names.is_empty() || expect_name {
        return Err(SqlError::Syntax("expected a name after DROP".into()));
    }
    Ok(WeirStatement::Drop {
        kind,
        names,
        if_exists,
    })
}

fn parse_set(toks: &[Token], sig: &[usize]) -> Result<WeirStatement, SqlError> {
    let mut k = 1;
    if sig.len() > 1 && (is_word(&toks[sig[1]], "SESSION") || is_word(&toks[sig[1]], "LOCAL")) {
        k = 2;
    }
    let name = sig
        .get(k)
        .map(|&i| match &toks[i] {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            // Flink's `SET 'parallelism.default' = '2'`.
            Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
            other => other.to_string(),
        })
        .ok_or_else(|| SqlError::Syntax("expected SET name = value".into()))?;
    let mut v = k + 1;
    if sig
        .get(v)
        .is_some_and(|&i| toks[i] == Token::Eq || is_word(&toks[i], "TO"))
    {
        v += 1;
    }
    let value: Vec<String> = sig[v.min(sig.len())..]
        .iter()
        .map(|&i| match &toks[i] {
            Token::SingleQuotedString(s) => s.clone(),
            Token::Word(w) => w.value.clone(),
            other => other.to_string(),
        })
        .collect();
    if value.is_empty() {
        return Err(SqlError::Syntax(format!("expected a value for SET {name}")));
    }
    if sig.len() == v + 1 && is_word(&toks[sig[v]], "DEFAULT") {
        return Ok(WeirStatement::Reset(Some(name)));
    }
    Ok(WeirStatement::Set {
        name,
        value: value.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mv_with_emit_on_window_close() {
        let s = parse_statements(
            "CREATE MATERIALIZED VIEW m AS SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE b, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start EMIT ON WINDOW CLOSE",
        )
        .unwrap();
        let WeirStatement::CreateMaterializedView(mv) = &s[0] else {
            panic!()
        };
        assert!(mv.emit_on_window_close);
        assert_eq!(mv.name, "m");
        assert!(mv
            .query
            .to_string()
            .contains("TUMBLE(b, ts, INTERVAL '1' MINUTE)"));
    }

    #[test]
    fn reads_drop_show_set_flush() {
        let s = parse_statements(
            "DROP MATERIALIZED VIEW IF EXISTS a, b; SHOW MATERIALIZED VIEWS; SET parallelism = 2; FLUSH; show jobs",
        )
        .unwrap();
        assert!(
            matches!(&s[0], WeirStatement::Drop { kind: ObjectKind::MaterializedView, names, if_exists: true } if names == &["a", "b"])
        );
        assert!(matches!(
            &s[1],
            WeirStatement::Show(ShowKind::MaterializedViews)
        ));
        assert!(
            matches!(&s[2], WeirStatement::Set { name, value } if name == "parallelism" && value == "2")
        );
        assert!(matches!(&s[3], WeirStatement::Flush));
        assert!(matches!(&s[4], WeirStatement::Show(ShowKind::Jobs)));
    }
}
