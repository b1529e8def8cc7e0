//! `ParseUserAgent`: browser, version and OS from the `user_agent` attribute, by
//! gcp-ingestion's rules (its `ParseUserAgent`, a short list of patterns, not a full parser).

use sluice::{Message, PCollection, PTransform};

/// The `User-Agent` header; removed once parsed.
pub const USER_AGENT: &str = "user_agent";
/// The browser found.
pub const USER_AGENT_BROWSER: &str = "user_agent_browser";
/// Its major version.
pub const USER_AGENT_VERSION: &str = "user_agent_version";
/// The operating system found.
pub const USER_AGENT_OS: &str = "user_agent_os";

/// How a browser's version follows its name.
#[derive(Clone, Copy, PartialEq)]
enum Version {
    /// Digits right after this separator.
    After(char),
    /// The digits after the last `/` that has digits after it, anywhere in the agent.
    LastSlash,
    /// A fixed version.
    Fixed(&'static str),
}

struct Browser {
    /// What is set as `user_agent_browser`.
    value: &'static str,
    /// The text that identifies it.
    pattern: &'static str,
    version: Version,
    /// The OS it implies, overriding any found.
    os: Option<&'static str>,
}

const fn browser(value: &'static str, version: Version) -> Browser {
    Browser {
        value,
        pattern: value,
        version,
        os: None,
    }
}

/// Best match first: of several browsers found, the earliest in this list wins.
const BROWSERS: [Browser; 11] = [
    browser("Edge", Version::After('/')),
    browser("Chrome", Version::After('/')),
    browser("Opera Mini", Version::LastSlash),
    browser("Opera Mobi", Version::LastSlash),
    browser("Opera", Version::LastSlash),
    browser("MSIE", Version::After(' ')),
    Browser {
        value: "MSIE",
        pattern: "Trident/7.0",
        version: Version::Fixed("11"),
        os: None,
    },
    browser("Safari", Version::LastSlash),
    Browser {
        value: "FxSync",
        pattern: "Firefox AndroidSync",
        version: Version::After(' '),
        os: Some("Android"),
    },
    Browser {
        value: "FxSync",
        pattern: "Firefox-iOS-Sync",
        version: Version::After('/'),
        os: Some("iOS"),
    },
    browser("Firefox", Version::After('/')),
];

/// `(value, pattern)`, best match first.
const OSES: [(&str, &str); 15] = [
    ("iPod", "iPod"),
    ("iPad", "iPad"),
    ("iPhone", "iPhone"),
    ("Android", "Android"),
    ("BlackBerry", "BlackBerry"),
    ("Linux", "Linux"),
    ("Macintosh", "Macintosh"),
    ("FirefoxOS", "Mozilla/5.0 (Mobile;"),
    ("Windows 10", "Windows NT 10.0"),
    ("Windows 8.1", "Windows NT 6.3"),
    ("Windows 8", "Windows NT 6.2"),
    ("Windows 7", "Windows NT 6.1"),
    ("Windows Vista", "Windows NT 6.0"),
    ("Windows XP", "Windows NT 5.1"),
    ("Windows 2000", "Windows NT 5.0"),
];

/// The ASCII digits at the start of `s`, if any.
fn leading_digits(s: &str) -> Option<&str> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (n > 0).then(|| &s[..n])
}

/// Browser, version and OS of a user agent, as gcp-ingestion finds them: the agent is scanned
/// left to right for the patterns (at each position browsers before OSes, in list order, as
/// its one alternation regex does); of the browsers found the best-ranked wins, its version
/// taken where it was found (or from a later sighting of the same browser that had one); the
/// same for the OS, unless the browser implies one.
///
/// ```
/// use sluice_transforms::decode::parse_user_agent;
/// let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0";
/// assert_eq!(parse_user_agent(ua), (Some("Firefox"), Some("124".to_string()), Some("Windows 10")));
/// ```
pub fn parse_user_agent(
    agent: &str,
) -> (Option<&'static str>, Option<String>, Option<&'static str>) {
    let mut best: Option<(usize, Option<&str>)> = None;
    let mut os: Option<usize> = None;
    let mut i = 0;
    while i < agent.len() {
        let here = &agent[i..];
        if let Some((rank, b)) = BROWSERS
            .iter()
            .enumerate()
            .find(|(_, b)| here.starts_with(b.pattern))
        {
            let after = &here[b.pattern.len()..];
            let version = match b.version {
                Version::After(sep) => after.strip_prefix(sep).and_then(leading_digits),
                _ => None,
            };
            match best {
                Some((r, _)) if r < rank => {}
                Some((r, None)) if r == rank => best = Some((r, version)),
                Some((r, Some(_))) if r == rank => {}
                _ => best = Some((rank, version)),
            }
            i += b.pattern.len() + version.map_or(0, |v| v.len() + 1);
            continue;
        }
        if let Some((rank, (_, pattern))) = OSES
            .iter()
            .enumerate()
            .find(|(_, (_, p))| here.starts_with(p))
        {
            if os.is_none_or(|o| rank < o) {
                os = Some(rank);
            }
            i += pattern.len();
            continue;
        }
        i += here.chars().next().map_or(1, char::len_utf8);
    }
    let Some((rank, version)) = best else {
        return (None, None, os.map(|o| OSES[o].0));
    };
    let b = &BROWSERS[rank];
    let version = match b.version {
        Version::Fixed(v) => Some(v.to_string()),
        Version::LastSlash => last_slash_version(agent),
        Version::After(_) => version.map(str::to_string),
    };
    (Some(b.value), version, b.os.or(os.map(|o| OSES[o].0)))
}

/// gcp-ingestion's `.*/(?<version>\d+)`: the digits after the last `/` followed by a digit.
fn last_slash_version(agent: &str) -> Option<String> {
    // `.` does not cross a line break: the first line that has one counts
    agent
        .split('\n')
        .filter_map(|line| {
            line.match_indices('/')
                .rev()
                .find_map(|(at, _)| leading_digits(&line[at + 1..]))
        })
        .next()
        .map(str::to_string)
}

/// Sets `user_agent_browser`, `user_agent_version` and `user_agent_os` from the `user_agent`
/// attribute and removes it (gcp-ingestion's `ParseUserAgent`, see [`parse_user_agent`]). A
/// message without `user_agent` passes unchanged. Never fails.
///
/// ```
/// use sluice::Message;
/// use sluice_transforms::decode::ParseUserAgent;
/// let mut m = Message::new("{}").with_attribute(
///     "user_agent",
///     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1",
/// );
/// ParseUserAgent::apply(&mut m);
/// assert_eq!(m.attribute("user_agent_browser"), Some("Safari"));
/// assert_eq!(m.attribute("user_agent_version"), Some("604"));
/// assert_eq!(m.attribute("user_agent_os"), Some("iPhone"));
/// assert_eq!(m.attribute("user_agent"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParseUserAgent {
    _private: (),
}

impl ParseUserAgent {
    /// The step.
    pub fn new() -> Self {
        ParseUserAgent::default()
    }

    /// What the step does to one message.
    pub fn apply(message: &mut Message) {
        let Some(agent) = message.attributes.remove(USER_AGENT) else {
            return;
        };
        let (browser, version, os) = parse_user_agent(&agent);
        let a = &mut message.attributes;
        for (name, value) in [
            (USER_AGENT_BROWSER, browser.map(str::to_string)),
            (USER_AGENT_VERSION, version),
            (USER_AGENT_OS, os.map(str::to_string)),
        ] {
            if let Some(v) = value {
                a.insert(name.to_string(), v);
            }
        }
    }
}

impl<'s> PTransform<PCollection<'s, Message>> for ParseUserAgent {
    type Output = PCollection<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.map(|mut m: Message| {
            ParseUserAgent::apply(&mut m);
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ua: &str) -> (Option<&'static str>, Option<String>, Option<&'static str>) {
        parse_user_agent(ua)
    }

    #[test]
    fn ranks_and_versions() {
        // Chrome outranks Safari, whose token every Chrome agent carries
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(
            p(chrome),
            (Some("Chrome"), Some("120".into()), Some("Linux"))
        );
        let edge = "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 Chrome/70.0 Safari/537.36 Edge/18.17763";
        assert_eq!(
            p(edge),
            (Some("Edge"), Some("18".into()), Some("Windows 7"))
        );
        let ie11 = "Mozilla/5.0 (Windows NT 6.3; Trident/7.0; rv:11.0) like Gecko";
        assert_eq!(
            p(ie11),
            (Some("MSIE"), Some("11".into()), Some("Windows 8.1"))
        );
        let ie8 = "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0)";
        assert_eq!(p(ie8), (Some("MSIE"), Some("8".into()), Some("Windows XP")));
        let sync = "Firefox AndroidSync 1.60.0.1 (Firefox)";
        assert_eq!(p(sync), (Some("FxSync"), Some("1".into()), Some("Android")));
        let ios_sync = "Firefox-iOS-Sync/108.1b24234 (iPad; iPhone OS 16.0) (Firefox)";
        assert_eq!(
            p(ios_sync),
            (Some("FxSync"), Some("108".into()), Some("iOS"))
        );
        let fxos = "Mozilla/5.0 (Mobile; rv:26.0) Gecko/26.0 Firefox/26.0";
        assert_eq!(
            p(fxos),
            (Some("Firefox"), Some("26".into()), Some("FirefoxOS"))
        );
        // a later sighting of the same browser fills a missing version
        assert_eq!(
            p("Firefox Firefox/3"),
            (Some("Firefox"), Some("3".into()), None)
        );
        let opera = "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16";
        assert_eq!(
            p(opera),
            (Some("Opera Mini"), Some("12".into()), Some("Android"))
        );
        assert_eq!(p("curl/8.0"), (None, None, None));
        assert_eq!(p(""), (None, None, None));
        assert_eq!(p("ünï Linux çødé"), (None, None, Some("Linux")));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(ua in "\\PC{0,80}") {
            let _ = parse_user_agent(&ua);
        }
    }
}
