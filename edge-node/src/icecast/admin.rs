//! Status and the Icecast admin routes: `/status-json.xsl`, `/admin/metadata`,
//! `/admin/listclients`, `/admin/listmounts`, `/admin/killsource`, `/admin/killclient`,
//! `/admin/moveclients`, `/admin/stats`, shaped as Icecast 2.4 shapes them.

use super::Icecast;
use crate::http::head::{RequestHead, basic_auth};
use crate::http::{Answer, Request, reply};
use crate::mount::{Control, Mount, Session};
use crate::sync::lock;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

const XML: &str = "text/xml; charset=utf-8";

fn rfc2822(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default()
}

fn iso8601(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
    );
    t.format(&fmt).unwrap_or_default()
}

pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn iceresponse(message: &str, ok: bool) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{}</return></iceresponse>\n",
        xml_escape(message),
        u8::from(ok)
    )
    .into_bytes()
}

fn is_admin(head: &RequestHead, ice: &Icecast) -> bool {
    let cfg = ice.config();
    basic_auth(head).is_some_and(|(u, p)| {
        !cfg.admin.password.is_empty()
            && u == cfg.admin.user
            && crate::constant_time_eq(p.as_bytes(), cfg.admin.password.as_bytes())
    })
}

/// Whether the caller may set the mount's title, as Icecast lets a mount's source credentials do:
/// `source` with the mount's password, or the DJ account that is on the air on it (a live DJ's
/// encoder sends its titles with the credentials it streams with). A DJ account is the mount's
/// own, so it never reaches another station's mount; and another DJ of the station, off the air,
/// gets no Argon2 verification at all.
async fn may_set_title(req: &Request, ice: &Icecast, mount: &Mount) -> bool {
    let Some((user, password)) = basic_auth(&req.head) else {
        return false;
    };
    let session = mount.session();
    // The credentials the source on air logged in with: no password check again, so its title
    // updates go on whatever the login checker is doing (lockouts, busy Argon2 slots).
    let digest = ice.logins.digest(&user, &password);
    if session
        .as_ref()
        .and_then(|s| s.info.credentials)
        .is_some_and(|c| c.matches(&digest))
    {
        return true;
    }
    let on_air = session.is_some_and(|s| s.info.user == user);
    if user != "source" && !on_air {
        return false;
    }
    // Anything else goes through the same bounded, throttled checker as a source login: a
    // title update is no way around the lockout or the limit on Argon2 checks.
    let (_, login) =
        super::source::authenticate(ice, &req.head, req.peer.ip(), &mount.path, &mount.config())
            .await;
    login == crate::auth::Login::Accepted
}

/// `example.org:8000` → `example.org`; `[::1]:8000` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.split(':').next().unwrap_or(host)
    }
}

fn host(req: &Request, ice: &Icecast) -> String {
    let cfg = ice.config();
    if !cfg.http.hostname.is_empty() {
        return cfg.http.hostname.clone();
    }
    req.head
        .header("host")
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ']))
        .map(str::to_string)
        .or_else(|| req.stream.local_addr().ok().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_string())
}

fn source_json(mount: &Mount, s: &Session, host: &str) -> Value {
    let cfg = mount.config();
    let info = &s.info;
    let or = |a: &str, b: &Option<String>| {
        if a.is_empty() {
            b.clone().unwrap_or_default()
        } else {
            a.to_string()
        }
    };
    let mut o = Map::new();
    o.insert("audio_info".into(), json!(info.audio_info));
    o.insert("genre".into(), json!(or(&info.genre, &cfg.genre)));
    // Each key of ice-audio-info becomes a stat under its own name, a number when it is one.
    for (k, v) in info
        .audio_info
        .split(';')
        .filter_map(|kv| kv.split_once('='))
    {
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            continue;
        }
        let value = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
        o.insert(k.to_string(), value);
    }
    if !o.contains_key("ice-bitrate") && !o.contains_key("bitrate") && info.bitrate > 0 {
        o.insert("bitrate".into(), json!(info.bitrate));
    }
    o.insert("listener_peak".into(), json!(mount.counters.peak.get()));
    o.insert("listeners".into(), json!(mount.listener_count()));
    o.insert(
        "listenurl".into(),
        json!(format!("http://{host}{}", mount.path)),
    );
    o.insert(
        "server_description".into(),
        json!(or(&info.description, &cfg.description)),
    );
    o.insert("server_name".into(), json!(or(&info.name, &cfg.name)));
    o.insert("server_type".into(), json!(info.content_type));
    o.insert("server_url".into(), json!(or(&info.url, &cfg.url)));
    o.insert("stream_start".into(), json!(rfc2822(s.connected_at)));
    o.insert(
        "stream_start_iso8601".into(),
        json!(iso8601(s.connected_at)),
    );
    let meta = s.metadata();
    match &meta.tags {
        // From an Ogg comment header: ARTIST and TITLE apart, as Icecast shows them.
        Some(tags) => {
            if !tags.artist.is_empty() {
                o.insert("artist".into(), json!(tags.artist));
            }
            if !tags.title.is_empty() {
                o.insert("title".into(), json!(tags.title));
            }
        }
        None if !meta.title.is_empty() => {
            o.insert("title".into(), json!(meta.title));
        }
        None => {}
    }
    o.insert("dummy".into(), Value::Null);
    Value::Object(o)
}

/// The `/status-json.xsl` document: `source` is an object for one live mount, an array for
/// several, absent for none.
pub(crate) fn status_json(ice: &Icecast, host: &str) -> Value {
    let sources: Vec<Value> = ice
        .mounts()
        .iter()
        .filter_map(|m| m.session().map(|s| source_json(m, &s, host)))
        .collect();
    let mut stats = Map::new();
    stats.insert("admin".into(), json!("icemaster@localhost"));
    stats.insert("host".into(), json!(host_without_port(host)));
    stats.insert("location".into(), json!("Earth"));
    stats.insert("server_id".into(), json!(crate::http::SERVER));
    stats.insert("server_start".into(), json!(rfc2822(ice.started)));
    stats.insert("server_start_iso8601".into(), json!(iso8601(ice.started)));
    match sources.len() {
        0 => {}
        1 => {
            stats.insert(
                "source".into(),
                sources.into_iter().next().unwrap_or(Value::Null),
            );
        }
        _ => {
            stats.insert("source".into(), Value::Array(sources));
        }
    }
    json!({ "icestats": stats })
}

pub(crate) async fn serve(req: &mut Request, ice: Arc<Icecast>) {
    let path = req.head.path.clone();
    let (status, ctype, body): (u16, &str, Vec<u8>) = match path.as_str() {
        "/status-json.xsl" => {
            let host = host(req, &ice);
            let doc = status_json(&ice, &host);
            (
                200,
                "application/json; charset=UTF-8",
                doc.to_string().into_bytes(),
            )
        }
        "/admin/metadata" | "/admin/metadata.xsl" => metadata(req, &ice).await,
        _ if !is_admin(&req.head, &ice) => {
            (401, "text/plain", b"You need to authenticate\n".to_vec())
        }
        "/admin/listclients" | "/admin/listclients.xsl" => listclients(req, &ice),
        "/admin/listmounts" | "/admin/listmounts.xsl" => (200, XML, listmounts(&ice)),
        // What master/slave relays poll: the mounts that have a source, one per line.
        "/admin/streamlist.txt" => {
            let list: String = ice
                .mounts()
                .iter()
                .filter(|m| m.session().is_some())
                .map(|m| format!("{}\n", m.path))
                .collect();
            (200, "text/plain; charset=utf-8", list.into_bytes())
        }
        "/admin/killsource" | "/admin/killsource.xsl" => killsource(req, &ice),
        "/admin/killclient" | "/admin/killclient.xsl" => killclient(req, &ice),
        "/admin/moveclients" | "/admin/moveclients.xsl" => moveclients(req, &ice),
        "/admin/stats" | "/admin/stats.xsl" | "/admin/" | "/admin" => {
            let host = host(req, &ice);
            (200, XML, stats_xml(&ice, &host))
        }
        _ => (404, XML, iceresponse("Unknown admin command", false)),
    };
    let challenge: &[(&str, &str)] = if status == 401 {
        &[("WWW-Authenticate", "Basic realm=\"Icecast2 Server\"")]
    } else {
        &[]
    };
    let answer = Answer {
        status,
        content_type: ctype,
        cache_control: "no-cache",
        headers: challenge,
        body: &body,
        head_only: req.head.method == "HEAD",
    };
    let _ = reply(req, &answer).await;
}

fn mount_param(req: &Request, ice: &Icecast) -> Result<Arc<Mount>, (u16, &'static str, Vec<u8>)> {
    let name = req.head.query_param("mount").unwrap_or_default();
    ice.mount(&name).ok_or_else(|| {
        (
            400,
            XML,
            iceresponse(&format!("Mount {name:?} does not exist"), false),
        )
    })
}

/// Decodes a query value sent in ISO-8859-1 (`charset=ISO-8859-1`, what old encoders send).
fn latin1_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            let raw = v.replace('+', " ");
            percent_encoding::percent_decode_str(&raw)
                .map(char::from)
                .collect()
        })
    })
}

async fn metadata(req: &Request, ice: &Icecast) -> (u16, &'static str, Vec<u8>) {
    // Authentication first: an unauthenticated caller learns nothing, not even whether the
    // mount exists.
    let name = req.head.query_param("mount").unwrap_or_default();
    let mount = ice.mount(&name);
    let allowed = is_admin(&req.head, ice)
        || match &mount {
            Some(m) => may_set_title(req, ice, m).await,
            None => false,
        };
    if !allowed {
        return (
            401,
            XML,
            iceresponse(
                "Authentication required: admin or this mount's source credentials",
                false,
            ),
        );
    }
    let Some(mount) = mount else {
        return (
            400,
            XML,
            iceresponse(&format!("Mount {name:?} does not exist"), false),
        );
    };
    if req.head.query_param("mode").as_deref() != Some("updinfo") {
        return (
            400,
            XML,
            iceresponse("Only mode=updinfo is supported", false),
        );
    }
    let latin1 = req.head.query_param("charset").is_some_and(|c| {
        matches!(
            c.to_ascii_lowercase().as_str(),
            "iso-8859-1" | "latin1" | "latin-1"
        )
    });
    let get = |name: &str| {
        if latin1 {
            latin1_param(&req.head.query, name)
        } else {
            req.head.query_param(name)
        }
    };
    let title = match (get("song"), get("artist"), get("title")) {
        (Some(song), _, _) => song,
        (None, Some(a), Some(t)) if !a.is_empty() => format!("{a} - {t}"),
        (None, _, Some(t)) => t,
        (None, Some(a), None) => a,
        (None, None, None) => {
            return (
                400,
                XML,
                iceresponse("Give song=, or artist= and title=", false),
            );
        }
    };
    let Some(session) = mount.session() else {
        return (400, XML, iceresponse("Source does not exist", false));
    };
    let title: String = title.chars().filter(|c| !c.is_control()).collect();
    session.set_title(&title, &get("url").unwrap_or_default());
    tracing::info!(mount = %mount.path, title, "metadata updated");
    (200, XML, iceresponse("Metadata update successful", true))
}

fn listclients(req: &Request, ice: &Icecast) -> (u16, &'static str, Vec<u8>) {
    let mount = match mount_param(req, ice) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let mut x = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    let _ = write!(x, "<source mount=\"{}\">", xml_escape(&mount.path));
    let table = lock(&mount.listeners);
    let _ = write!(x, "<Listeners>{}</Listeners>", table.len());
    let mut entries: Vec<_> = table.values().collect();
    entries.sort_by_key(|e| e.id);
    for e in entries {
        let _ = write!(
            x,
            "<listener id=\"{id}\"><IP>{}</IP><UserAgent>{}</UserAgent><Connected>{}</Connected><ID>{id}</ID></listener>",
            e.ip,
            xml_escape(&e.user_agent),
            e.connected_at.elapsed().as_secs(),
            id = e.id
        );
    }
    x.push_str("</source></icestats>\n");
    (200, XML, x.into_bytes())
}

fn listmounts(ice: &Icecast) -> Vec<u8> {
    let mut x = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    for m in ice.mounts() {
        if let Some(s) = m.session() {
            let _ = write!(
                x,
                "<source mount=\"{}\"><listeners>{}</listeners><Connected>{}</Connected><content-type>{}</content-type></source>",
                xml_escape(&m.path),
                m.listener_count(),
                s.started.elapsed().as_secs(),
                xml_escape(&s.info.content_type)
            );
        }
    }
    x.push_str("</icestats>\n");
    x.into_bytes()
}

fn killsource(req: &Request, ice: &Icecast) -> (u16, &'static str, Vec<u8>) {
    let mount = match mount_param(req, ice) {
        Ok(m) => m,
        Err(e) => return e,
    };
    match mount.session() {
        Some(s) => {
            s.kill();
            mount.detach(&s);
            tracing::info!(mount = %mount.path, "source killed by admin");
            (200, XML, iceresponse("Source Removed", true))
        }
        None => (400, XML, iceresponse("Source does not exist", false)),
    }
}

fn killclient(req: &Request, ice: &Icecast) -> (u16, &'static str, Vec<u8>) {
    let mount = match mount_param(req, ice) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let id: Option<u64> = req.head.query_param("id").and_then(|v| v.parse().ok());
    let table = lock(&mount.listeners);
    match id.and_then(|id| table.get(&id)) {
        Some(e) => {
            e.control.send(Control::Kill);
            (
                200,
                XML,
                iceresponse(&format!("Client {} removed", e.id), true),
            )
        }
        None => (400, XML, iceresponse("Client not found", false)),
    }
}

fn moveclients(req: &Request, ice: &Icecast) -> (u16, &'static str, Vec<u8>) {
    let mount = match mount_param(req, ice) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let dest = req.head.query_param("destination").unwrap_or_default();
    if dest == mount.path {
        return (
            400,
            XML,
            iceresponse("Source and destination are the same mount", false),
        );
    }
    // Refuse instead of reporting success for a move that cannot happen.
    if ice.mount(&dest).is_none() {
        return (
            400,
            XML,
            iceresponse(&format!("Destination {dest:?} does not exist"), false),
        );
    }
    if ice.resolve(&dest).is_none() {
        return (
            400,
            XML,
            iceresponse(
                &format!("Nothing is playing on destination {dest:?}"),
                false,
            ),
        );
    }
    let table = lock(&mount.listeners);
    let n = table.len();
    if let Some(d) = ice.mount(&dest)
        && let Some(max) = d.config().max_listeners
        && d.listener_count() + n as u64 > max
    {
        return (
            400,
            XML,
            iceresponse(
                &format!("Destination {dest:?} has no room for {n} more listeners"),
                false,
            ),
        );
    }
    for e in table.values() {
        e.control.send(Control::Move(dest.clone()));
    }
    (
        200,
        XML,
        iceresponse(
            &format!(
                "Clients moved from {} to {dest} ({n} listeners)",
                mount.path
            ),
            true,
        ),
    )
}

fn stats_xml(ice: &Icecast, host: &str) -> Vec<u8> {
    let mounts = ice.mounts();
    let live: Vec<_> = mounts
        .iter()
        .filter_map(|m| m.session().map(|s| (m, s)))
        .collect();
    let listeners: u64 = mounts.iter().map(|m| m.listener_count()).sum();
    let mut x = String::from("<?xml version=\"1.0\"?>\n<icestats>");
    let _ = write!(
        x,
        "<admin>icemaster@localhost</admin><host>{}</host><location>Earth</location><server_id>{}</server_id><server_start>{}</server_start><server_start_iso8601>{}</server_start_iso8601><listeners>{listeners}</listeners><sources>{}</sources>",
        xml_escape(host),
        xml_escape(crate::http::SERVER),
        rfc2822(ice.started),
        iso8601(ice.started),
        live.len()
    );
    for (m, s) in live {
        let cfg = m.config();
        let _ = write!(
            x,
            "<source mount=\"{}\"><listeners>{}</listeners><listener_peak>{}</listener_peak><max_listeners>{}</max_listeners><server_name>{}</server_name><server_type>{}</server_type><title>{}</title><total_bytes_sent>{}</total_bytes_sent><slow_listeners>{}</slow_listeners><source_ip>{}</source_ip><stream_start>{}</stream_start><total_bytes_read>{}</total_bytes_read><listenurl>http://{}{}</listenurl></source>",
            xml_escape(&m.path),
            m.listener_count(),
            m.counters.peak.get(),
            cfg.max_listeners
                .map_or_else(|| "unlimited".to_string(), |v| v.to_string()),
            xml_escape(&if s.info.name.is_empty() {
                cfg.name.clone().unwrap_or_default()
            } else {
                s.info.name.clone()
            }),
            xml_escape(&s.info.content_type),
            xml_escape(&s.metadata().title),
            m.counters.bytes_sent.get(),
            m.counters.dropped_slow.get(),
            xml_escape(&s.info.ip),
            rfc2822(s.connected_at),
            s.end(),
            xml_escape(host),
            xml_escape(&m.path),
        );
    }
    x.push_str("</icestats>\n");
    x.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(xml_escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(
            latin1_param("song=Caf%E9+Ol%E9&x=1", "song").as_deref(),
            Some("Café Olé")
        );
        assert_eq!(host_without_port("[::1]:8000"), "[::1]");
        assert_eq!(host_without_port("radio.example:8000"), "radio.example");
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(rfc2822(t), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(iso8601(t), "1970-01-01T00:00:00+0000");
    }
}
