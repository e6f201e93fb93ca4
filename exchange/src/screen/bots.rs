//! Known crawlers, bots, HTTP libraries and headless browsers by user agent: the `isbot` crate's
//! pattern list (a Rust port of the maintained omrilotan/isbot list: Googlebot, bingbot,
//! AhrefsBot, curl, python-requests, Go-http-client, HeadlessChrome, PhantomJS and some 350
//! more), compiled once into a single regular expression.

/// The bot matcher, built once per config.
pub struct Bots(isbot::Bots);

impl Bots {
    pub fn new() -> Self {
        Bots(isbot::Bots::default())
    }

    /// Whether `ua` is a known bot's user agent.
    pub fn is_bot(&self, ua: &str) -> bool {
        self.0.is_bot(ua)
    }
}

impl Default for Bots {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Bots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bots(isbot)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_bots_are_known_and_browsers_are_not() {
        let bots = Bots::new();
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        ] {
            assert!(bots.is_bot(ua), "{ua}");
        }
        // The first two are the load generator's (`loadtest/src/mix.rs`): load tests run with
        // the default config, bot list on.
        for ua in [
            "Mozilla/5.0 (X11; Linux x86_64)",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8)",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 Mobile Safari/537.36",
        ] {
            assert!(!bots.is_bot(ua), "{ua}");
        }
    }
}
