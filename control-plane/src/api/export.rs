//! CSV answers (`format=csv`): RFC 4180 through the csv crate, so names and descriptions with
//! commas or quotes stay one field, formula-like fields defused, served as an attachment.

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
        let fields: Vec<F> = r.into_iter().collect();
        w.write_record(fields.iter().map(|f| defuse(f.as_ref())))
            .map_err(fail)?;
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

/// A field a spreadsheet would run as a formula (song titles and names come from users) gets a
/// leading apostrophe, the OWASP advice for CSV injection; our numbers never start so.
fn defuse(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match field.first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => {
            let mut v = Vec::with_capacity(field.len() + 1);
            v.push(b'\'');
            v.extend_from_slice(field);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(field),
    }
}

/// Micro-units as a decimal amount with six places ("4.990000").
pub fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_plain_text_is_not() {
        assert_eq!(defuse(b"=HYPERLINK(1)").as_ref(), b"'=HYPERLINK(1)");
        assert_eq!(defuse(b"@SUM").as_ref(), b"'@SUM");
        assert_eq!(defuse(b"Artist - Song").as_ref(), b"Artist - Song");
        assert_eq!(defuse(b"4.990000").as_ref(), b"4.990000");
        assert_eq!(defuse(b"").as_ref(), b"");
    }
}
