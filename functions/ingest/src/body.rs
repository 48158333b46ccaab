//! Reading the request body as a stream, bounded: a body over the limit is refused
//! (413) as soon as it is known to be, without holding more than the limit in memory.

use futures::StreamExt;
use spin_sdk::http::IncomingRequest;
use toaster_core::problem::Problem;

/// The whole body, or 413 if it is longer than `max_bytes` (by its `Content-Length`
/// or, without one, by what arrives).
pub async fn read_limited(
    req: IncomingRequest,
    content_length: Option<&str>,
    max_bytes: usize,
) -> Result<Vec<u8>, Problem> {
    let declared = content_length.and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes as u64) {
        return Err(Problem::payload_too_large(max_bytes));
    }
    let capacity = declared.map_or(0, |length| length as usize);
    let mut body = Vec::with_capacity(capacity);
    let mut chunks = req.into_body_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            eprintln!(
                "ingest: reading the request body failed: {}",
                e.to_debug_string()
            );
            Problem::bad_request("the request body could not be read")
        })?;
        if !fits(body.len(), chunk.len(), max_bytes) {
            return Err(Problem::payload_too_large(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn fits(read: usize, more: usize, max_bytes: usize) -> bool {
    read.checked_add(more)
        .is_some_and(|total| total <= max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive() {
        assert!(fits(0, 10, 10));
        assert!(fits(6, 4, 10));
        assert!(!fits(6, 5, 10));
        assert!(!fits(usize::MAX, 1, usize::MAX));
    }
}
