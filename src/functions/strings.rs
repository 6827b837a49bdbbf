//! Flink's string functions that DataFusion lacks: `SPLIT_INDEX(s, sep, i)`
//! and `REGEXP_EXTRACT(s, regex[, group])`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

use super::{ArgColumn, FunctionError};

fn compile(pattern: &str) -> Result<Regex, FunctionError> {
    Regex::new(pattern).map_err(|e| FunctionError::BadRegex {
        function: "REGEXP_EXTRACT",
        message: e.to_string(),
    })
}

/// Which of the two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringFn {
    SplitIndex,
    RegexpExtract,
}

/// A string function of Flink's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FlinkString {
    kind: StringFn,
    signature: Signature,
}

impl FlinkString {
    pub fn new(kind: StringFn) -> Self {
        FlinkString {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn upper(&self) -> &'static str {
        match self.kind {
            StringFn::SplitIndex => "SPLIT_INDEX",
            StringFn::RegexpExtract => "REGEXP_EXTRACT",
        }
    }
}

impl ScalarUDFImpl for FlinkString {
    fn name(&self) -> &str {
        match self.kind {
            StringFn::SplitIndex => "split_index",
            StringFn::RegexpExtract => "regexp_extract",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.upper();
        let arity_ok = match self.kind {
            StringFn::SplitIndex => arg_types.len() == 3,
            StringFn::RegexpExtract => (2..=3).contains(&arg_types.len()),
        };
        if !arity_ok {
            return match self.kind {
                StringFn::SplitIndex => plan_err!("{name} takes (text, separator, index)"),
                StringFn::RegexpExtract => plan_err!("{name} takes (text, regex[, group])"),
            };
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| match (i, t) {
                (_, DataType::Null) if i < 2 => Ok(DataType::Utf8),
                (0 | 1, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                    Ok(DataType::Utf8)
                }
                (2, t) if t.is_integer() || t == &DataType::Null => Ok(DataType::Int64),
                (2, t) => plan_err!("{name}'s third argument must be an integer, not {t}"),
                (_, t) => plan_err!("{name} takes text, not {t}"),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    /// Checks a constant regular expression when the query is planned.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if self.kind == StringFn::RegexpExtract {
            if let Some(p) = super::constant_text(args.scalar_arguments, 1) {
                compile(p)?;
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = ArgColumn::new(&args.args[0], &DataType::Utf8)?;
        let second = ArgColumn::new(&args.args[1], &DataType::Utf8)?;
        let index = match args.args.get(2) {
            Some(a) => Some(ArgColumn::new(a, &DataType::Int64)?),
            None => None,
        };
        let scalar = [Some(&text), Some(&second), index.as_ref()]
            .iter()
            .all(|a| a.is_none_or(|a| a.constant));
        let rows = if scalar { 1 } else { args.number_rows };
        let (texts, seconds) = (
            text.array.as_string::<i32>(),
            second.array.as_string::<i32>(),
        );
        let indexes = index
            .as_ref()
            .map(|a| (a, a.array.as_primitive::<Int64Type>()));
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        let mut regex: Option<(&str, Regex)> = None;
        for i in 0..rows {
            let idx = match indexes {
                Some((a, values)) if values.is_null(a.row(i)) => None,
                Some((a, values)) => Some(values.value(a.row(i))),
                None => Some(0),
            };
            let (t, sep) = (text.row(i), second.row(i));
            if texts.is_null(t) || seconds.is_null(sep) || idx.is_none() {
                out.append_null();
                continue;
            }
            let (s, sep_or_re, idx) = (texts.value(t), seconds.value(sep), idx.unwrap_or(0));
            let value = match self.kind {
                StringFn::SplitIndex => split_index(s, sep_or_re, idx),
                StringFn::RegexpExtract => {
                    if regex.as_ref().is_none_or(|(p, _)| *p != sep_or_re) {
                        regex = Some((sep_or_re, compile(sep_or_re)?));
                    }
                    let re = &regex.as_ref().expect("compiled above").1;
                    regexp_extract(re, s, idx)
                }
            };
            out.append_option(value);
        }
        let out: ArrayRef = Arc::new(out.finish());
        super::columnar(out, scalar)
    }
}

/// The `index`-th (from 0) piece of `s` split at every `sep`; `None` when
/// there is no such piece. As in Flink: an empty string has no pieces, and
/// an empty separator splits at whitespace.
fn split_index<'a>(s: &'a str, sep: &str, index: i64) -> Option<&'a str> {
    let index = usize::try_from(index).ok()?;
    if s.is_empty() {
        return None;
    }
    if sep.is_empty() {
        s.split(char::is_whitespace).nth(index)
    } else {
        s.split(sep).nth(index)
    }
}

/// Group `group` (0: the whole match) of the first match of `re` in `s`;
/// `None` when nothing matches, the group does not exist or took no part.
fn regexp_extract<'a>(re: &Regex, s: &'a str, group: i64) -> Option<&'a str> {
    let group = usize::try_from(group).ok()?;
    if group >= re.captures_len() {
        return None;
    }
    re.captures(s)?.get(group).map(|m| m.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_index_as_flink_documents_it() {
        assert_eq!(split_index("Jack,John,Mary", ",", 2), Some("Mary"));
        assert_eq!(split_index("Jack,John,Mary", ",", 3), None);
        assert_eq!(split_index("Jack,John,Mary", ",", -1), None);
        assert_eq!(split_index("a,,b,", ",", 1), Some(""));
        assert_eq!(split_index("a,,b,", ",", 3), Some(""));
        assert_eq!(split_index("a::b", "::", 1), Some("b"));
        assert_eq!(split_index("", ",", 0), None);
        assert_eq!(split_index("a b", "", 1), Some("b"));
        let url = "https://www.nexmark.com/ab/cd/ef/item.htm?query=1";
        assert_eq!(split_index(url, "/", 3), Some("ab"));
        assert_eq!(split_index(url, "/", 5), Some("ef"));
    }

    #[test]
    fn regexp_extract_as_flink_documents_it() {
        let re = Regex::new("foo(.*?)(bar)").unwrap();
        assert_eq!(regexp_extract(&re, "foothebar", 2), Some("bar"));
        assert_eq!(regexp_extract(&re, "foothebar", 1), Some("the"));
        assert_eq!(regexp_extract(&re, "foothebar", 0), Some("foothebar"));
        assert_eq!(regexp_extract(&re, "foothebar", 3), None);
        assert_eq!(regexp_extract(&re, "nothing", 1), None);
        let re = Regex::new("(&|^)channel_id=([^&]*)").unwrap();
        assert_eq!(
            regexp_extract(&re, "item.htm?query=1&channel_id=42&x=1", 2),
            Some("42")
        );
        assert_eq!(regexp_extract(&re, "channel_id=7", 2), Some("7"));
        let re = Regex::new("a(x)?b").unwrap();
        assert_eq!(regexp_extract(&re, "ab", 1), None);
    }
}
