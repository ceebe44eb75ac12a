//! A relay's copy of a live stream: an edge that is not the stream's origin polls the origin's
//! playlist, fetches each new segment once and serves them from memory, so viewers spread over
//! edges while the origin sends each segment once per relay. The relay presents the stream's
//! relay key, so the origin neither asks it for a playback token nor counts it as a viewer.

use super::LiveStream;
use super::hls::Segment;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The header a relay presents to the origin, with [`super::relay_key`] of the stream.
pub(crate) const RELAY_HEADER: &str = "x-onda-relay";

/// One segment line of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: u64,
    pub duration_ms: u64,
    pub uri: String,
    pub discontinuity: bool,
}

/// The segments of a media playlist as this edge writes them (`{seq}.ts` URIs), and whether it
/// ended. Lines it does not know are ignored.
pub(crate) fn parse_playlist(text: &str) -> (Vec<Entry>, bool) {
    let mut out = Vec::new();
    let mut duration_ms = None;
    let mut discontinuity = false;
    let mut ended = false;
    for line in text.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d = d.split(',').next().unwrap_or_default();
            let (s, frac) = d.split_once('.').unwrap_or((d, ""));
            let frac = format!("{frac:0<3}");
            duration_ms = s
                .parse::<u64>()
                .ok()
                .zip(frac[..3].parse::<u64>().ok())
                .map(|(s, ms)| s * 1000 + ms);
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split('?').next().unwrap_or_default();
            if let (Some(seq), Some(d)) = (
                name.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok()),
                duration_ms.take(),
            ) {
                out.push(Entry {
                    seq,
                    duration_ms: d,
                    uri: name.to_string(),
                    discontinuity: std::mem::take(&mut discontinuity),
                });
            }
        }
    }
    (out, ended)
}

/// Keeps `stream`'s copy in step with `origin` until `stop`.
pub(crate) async fn run(
    stream: Arc<LiveStream>,
    origin: url::Url,
    relay_key: String,
    poll: Duration,
    stop: CancellationToken,
) {
    let http = onda_shared::http::client();
    let base = format!(
        "{}/hls/{}/",
        origin.as_str().trim_end_matches('/'),
        stream.name
    );
    loop {
        let wait = match step(&http, &stream, &base, &relay_key).await {
            Ok(()) => poll,
            Err(e) => {
                tracing::debug!(stream = %stream.name, "relay pull: {e}");
                stream.set_pulled(false);
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn step(
    http: &reqwest::Client,
    stream: &LiveStream,
    base: &str,
    relay_key: &str,
) -> Result<(), String> {
    let get = |url: String| {
        http.get(url)
            .header(RELAY_HEADER, relay_key)
            .timeout(Duration::from_secs(10))
            .send()
    };
    let r = get(format!("{base}index.m3u8"))
        .await
        .map_err(|e| format!("origin unreachable: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("origin answered {}", r.status().as_u16()));
    }
    let text = r.text().await.map_err(|e| e.to_string())?;
    let (entries, ended) = parse_playlist(&text);
    let have = stream.last_seq();
    for e in entries.iter().filter(|e| have.is_none_or(|h| e.seq > h)) {
        let r = get(format!("{base}{}", e.uri))
            .await
            .map_err(|e| format!("segment fetch failed: {e}"))?;
        if !r.status().is_success() {
            // Aged out of the origin's window before we got it: go on with the next.
            continue;
        }
        let data = r.bytes().await.map_err(|e| e.to_string())?;
        stream.push_segment(Segment::new(e.seq, e.duration_ms, data, e.discontinuity));
    }
    stream.set_ended(ended);
    stream.set_pulled(!ended && !entries.is_empty());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_parse_to_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
                    #EXTINF:2.000,\n7.ts?token=a\n#EXT-X-DISCONTINUITY\n#EXTINF:1.96,\n8.ts\n\
                    #EXTINF:x,\nbad.ts\n#EXT-X-ENDLIST\n";
        let (entries, ended) = parse_playlist(text);
        assert!(ended);
        assert_eq!(
            entries,
            [
                Entry {
                    seq: 7,
                    duration_ms: 2000,
                    uri: "7.ts".into(),
                    discontinuity: false
                },
                Entry {
                    seq: 8,
                    duration_ms: 1960,
                    uri: "8.ts".into(),
                    discontinuity: true
                },
            ]
        );
        assert_eq!(parse_playlist("garbage\n\n#EXTINF:\n").0, []);
    }
}
