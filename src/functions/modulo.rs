//! `MOD(a, b)`: Flink's remainder function, the same as `a % b` (DataFusion's
//! coercion of `%`, Arrow's remainder kernel).

use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Mod {
    signature: Signature,
}

impl Mod {
    pub fn new() -> Self {
        Mod {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for Mod {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [a, b] = arg_types else {
            return plan_err!("MOD takes two numbers");
        };
        if !(a.is_numeric() || a.is_null()) || !(b.is_numeric() || b.is_null()) {
            return plan_err!("MOD takes two numbers, not {a} and {b}");
        }
        let (a, b) = BinaryTypeCoercer::new(a, &Operator::Modulo, b).get_input_types()?;
        Ok(vec![a, b])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        BinaryTypeCoercer::new(&arg_types[0], &Operator::Modulo, &arg_types[1]).get_result_type()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let datum = |c: &ColumnarValue| -> Result<Box<dyn datafusion::arrow::array::Datum>> {
            Ok(match c {
                ColumnarValue::Array(a) => Box::new(a.clone()),
                ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
            })
        };
        let (a, b) = (datum(&args.args[0])?, datum(&args.args[1])?);
        let out = rem(a.as_ref(), b.as_ref())?;
        super::columnar(out, scalar)
    }
}
