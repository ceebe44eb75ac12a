//! CSV answers (`format=csv`): RFC 4180 through the csv crate, so names and descriptions with
//! commas or quotes stay one field, served as an attachment.

use super::error::{ApiError, ApiResult};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Whether `format` asks for CSV; JSON is the default, anything else is a 400.
pub fn wants_csv(format: Option<&str>) -> ApiResult<bool> {
    match format.unwrap_or("json") {
        "json" => Ok(false),
        "csv" => Ok(true),
        other => Err(ApiError::BadRequest(format!(
            "format = {other:?}: use \"json\" or \"csv\""
        ))),
    }
}

/// A CSV document with a header row, downloaded as `filename`.
pub fn csv<R, I, F>(filename: &str, header_row: &[&str], rows: R) -> ApiResult<Response>
where
    R: IntoIterator<Item = I>,
    I: IntoIterator<Item = F>,
    F: AsRef<[u8]>,
{
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::Internal(anyhow::anyhow!("cannot write CSV: {e}"));
    w.write_record(header_row).map_err(fail)?;
    for r in rows {
        w.write_record(r).map_err(fail)?;
    }
    let body = w
        .into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot write CSV: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Micro-units as a decimal amount with six places ("4.990000").
pub fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}
