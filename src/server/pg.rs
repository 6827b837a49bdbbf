//! The Postgres wire protocol: one handler set per connection, holding that
//! connection's `Session`; simple and extended query protocol, no auth.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Mutex;

use super::encode::{param_types, result_fields, statement_response};
use super::errors::{error_info, panic_info, session_error_info, user_error, INTERNAL};
use super::params;
use crate::session::{Described, Session};

/// The handlers pgwire asks for, for one client connection.
pub(crate) struct PgHandlers {
    conn: Arc<PgConnection>,
}

impl PgHandlers {
    pub(crate) fn new(session: Session) -> Self {
        PgHandlers {
            conn: Arc::new(PgConnection {
                session: Arc::new(Mutex::new(session)),
                parser: Arc::new(SqlText),
            }),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.conn.clone()
    }
}

/// One connection's state: its session.
pub(crate) struct PgConnection {
    session: Arc<Mutex<Session>>,
    parser: Arc<SqlText>,
}

/// Any user, any database, no password.
impl NoopStartupHandler for PgConnection {}

impl PgConnection {
    /// Runs `f` on the session in its own task, so that a panic inside the
    /// session becomes an XX000 error and the connection survives.
    async fn with_session<T, F, Fut>(&self, f: F) -> Result<T, Box<ErrorInfo>>
    where
        T: Send + 'static,
        F: FnOnce(tokio::sync::OwnedMutexGuard<Session>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let session = self.session.clone();
        let task = tokio::spawn(async move { f(session.lock_owned().await).await });
        task.await.map_err(|e| {
            Box::new(if e.is_panic() {
                let info = panic_info(e.into_panic().as_ref());
                tracing::error!(message = %info.message, "statement panicked");
                info
            } else {
                error_info(INTERNAL, "statement was cancelled")
            })
        })
    }

    /// Describes one statement; `Err` is ready to send to the client.
    async fn describe(&self, sql: &str) -> PgWireResult<Described> {
        let sql = sql.to_owned();
        self.with_session(move |mut s| async move { s.describe(&sql).await })
            .await
            .map_err(PgWireError::UserError)?
            .map_err(|e| user_error(session_error_info(&e)))
    }
}

#[async_trait]
impl SimpleQueryHandler for PgConnection {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        tracing::debug!(sql = query, "simple query");
        let sql = query.to_owned();
        let responses = self
            .with_session(move |mut s| async move {
                let results = s.execute(&sql).await;
                drop(s);
                if results.is_empty() {
                    // e.g. a query that is only a comment
                    return vec![Response::EmptyQuery];
                }
                let mut responses = Vec::with_capacity(results.len());
                for result in results {
                    let response = match result {
                        Ok(r) => statement_response(r, &Format::UnifiedText)
                            .unwrap_or_else(|e| Response::Error(Box::new(e.into()))),
                        Err(e) => Response::Error(Box::new(session_error_info(&e))),
                    };
                    let failed = matches!(response, Response::Error(_));
                    responses.push(response);
                    if failed {
                        break;
                    }
                }
                responses
            })
            .await;
        Ok(responses.unwrap_or_else(|info| vec![Response::Error(info)]))
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgConnection {
    type Statement = String;
    type QueryParser = SqlText;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let described = self.describe(&target.statement).await?;
        // Types the client gave in Parse win; the rest come from the session.
        let count = target.parameter_types.len().max(described.params.len());
        let params = (0..count)
            .map(|i| match target.parameter_types.get(i).cloned().flatten() {
                Some(t) => t,
                None => param_types(described.params.get(i).and_then(Option::as_ref)).0,
            })
            .collect();
        let fields = match &described.schema {
            Some(schema) => result_fields(schema, &Format::UnifiedText)?.to_vec(),
            None => vec![],
        };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let described = self.describe(&portal.statement.statement).await?;
        let fields: Vec<FieldInfo> = match &described.schema {
            Some(schema) => result_fields(schema, &portal.result_column_format)?.to_vec(),
            None => vec![],
        };
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = portal.statement.statement.clone();
        tracing::debug!(sql = %sql, params = portal.parameter_len(), "extended query");
        let params = self.decode_params(portal).await?;
        let format = portal.result_column_format.clone();
        self.with_session(move |mut s| async move {
            let result = s.execute_with_params(&sql, params).await;
            drop(s);
            match result {
                Ok(r) => statement_response(r, &format),
                Err(e) => Err(user_error(session_error_info(&e))),
            }
        })
        .await
        .map_err(PgWireError::UserError)?
    }
}

impl PgConnection {
    /// Decodes the Bind parameters (text or binary) with the types the
    /// session infers for the statement, as announced by Describe.
    async fn decode_params(&self, portal: &Portal<String>) -> PgWireResult<ParamValues> {
        if portal.parameter_len() == 0 {
            return Ok(ParamValues::List(vec![]));
        }
        let inferred = if params::all_typed_by_client(portal) {
            vec![]
        } else {
            // A statement that cannot be described fails in execute with a
            // better message; decode its parameters as text meanwhile.
            match self.describe(&portal.statement.statement).await {
                Ok(d) => d.params,
                Err(_) => vec![],
            }
        };
        params::decode(portal, &inferred)
    }
}

/// The extended protocol's "parsed statement" is its SQL text; the session
/// parses it when it is described or executed.
#[derive(Debug, Default)]
pub(crate) struct SqlText;

#[async_trait]
impl QueryParser for SqlText {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(sql.to_owned()))
    }

    fn get_parameter_types(&self, _stmt: &String) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &String,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}
