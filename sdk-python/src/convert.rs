//! Values crossing the boundary: Rust values become plain Python objects (dicts,
//! lists, strings, numbers) through their JSON form, and JSON text from Python
//! becomes `serde_json::Value`. Nothing is interpreted here.

use pyo3::prelude::*;
use serde::Serialize;

use crate::error::{invalid_input, NativeError};

/// `value` as plain Python objects (what `json.loads` makes of its JSON form).
pub fn to_py<T: Serialize>(py: Python<'_>, value: &T) -> Result<PyObject, NativeError> {
    let text = serde_json::to_string(value)
        .map_err(|e| invalid_input(format!("could not convert a value for Python: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// JSON text (from `json.dumps` in the Python package) as a value.
pub fn parse_json(
    what: &str,
    text: Option<&str>,
) -> Result<Option<serde_json::Value>, NativeError> {
    text.map(|t| {
        serde_json::from_str(t).map_err(|e| invalid_input(format!("{what} is not valid JSON: {e}")))
    })
    .transpose()
}
